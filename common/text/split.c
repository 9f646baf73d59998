/* split.c: cut long documents into passages measured in the model's own
 * WordPiece tokens (see split.h for the contract).
 *
 * 1. Units: the text is cut after each sentence end (。！？!? or a newline),
 *    taking along what directly follows it (more ends, closing brackets and
 *    quotes, spaces), so a unit is a whole sentence. Each unit is counted by
 *    tokenising it alone.
 * 2. A unit of more than max_tokens tokens is cut at MeCab word starts (the
 *    offsets jp_tok_ids reports), as late as still fits; a single word that
 *    does not fit is cut between characters.
 * 3. Packing: units are added to a passage while the sum of their counts
 *    fits; the passage is then tokenised as a whole and, if MeCab's context
 *    makes it longer than max_tokens, shortened by whole units until it
 *    fits. The next passage starts with whole trailing units of the previous
 *    one worth at most overlap_tokens (and always leaves room for one new
 *    unit, so every passage advances).
 *
 * Guarantees: spans are in order, their union is the whole text, and each
 * tokenised alone has at most max_tokens tokens, with one exception that
 * cannot be avoided: a single character whose NFKC form alone gives more
 * than max_tokens tokens (at most 18, U+FDFA) comes back as a span of its
 * own. Texts that fit come back as one span (checked by tokenising the whole
 * text when the sum of its unit counts is at most 2 * max_tokens; a longer
 * one cannot plausibly fit and is not tokenised whole).
 *
 * Thread-safety: as the ctx. Allocation: scratch arrays per call (units,
 * token ids and offsets of over-long units) and *out. */
#include <stdint.h>
#include <string.h>

#include "text/split.h"
#include "text/text_int.h"
#include "util/err.h"
#include "util/mem.h"

struct unit {
  size_t off, len;      /* bytes of the text */
  size_t ntok;          /* tokens when tokenised alone */
};

struct split_state {
  jp_tok_ctx *c;
  const char *text;
  size_t max;           /* max_tokens */
  struct unit *u;       /* units */
  size_t nu, cap_u;
  int32_t *ids;         /* token scratch for cutting an over-long unit */
  uint32_t *offs;
  size_t cap_t;
};

static int count_span(struct split_state *s, size_t off, size_t len, size_t *n)
{
  return jp_tok_ids(s->c, s->text + off, len, NULL, 0, n, NULL);
}

static int push_unit(struct unit **u, size_t *nu, size_t *cap, size_t off, size_t len,
                     size_t ntok)
{
  int rc = jp_grow((void **)u, cap, *nu + 1, sizeof **u, 0);
  if (rc < 0) return rc;
  (*u)[*nu].off = off;
  (*u)[*nu].len = len;
  (*u)[*nu].ntok = ntok;
  (*nu)++;
  return 0;
}

/* Bytes of a sentence-ending character at u[i], or 0. */
static size_t sent_end_len(const unsigned char *u, size_t n, size_t i)
{
  unsigned c = u[i];
  if (c == '\n' || c == '\r' || c == '!' || c == '?') return 1;
  if (i + 2 < n) {
    if (c == 0xE3 && u[i + 1] == 0x80 && u[i + 2] == 0x82) return 3;          /* 。 */
    if (c == 0xEF && u[i + 1] == 0xBC && (u[i + 2] == 0x81 || u[i + 2] == 0x9F))
      return 3;                                                             /* ！ ？ */
  }
  return 0;
}

/* Bytes of a character that stays with the sentence before it, or 0:
 * closing brackets and quotes, and spaces. */
static size_t sent_tail_len(const unsigned char *u, size_t n, size_t i)
{
  unsigned c = u[i];
  if (c == ' ' || c == '\t' || c == ')' || c == '"' || c == '\'' || c == ']') return 1;
  if (i + 2 < n && c == 0xE3 && u[i + 1] == 0x80) {
    unsigned d = u[i + 2];
    /* U+3000 space, 」 』 】 〕 〉 》 */
    if (d == 0x80 || d == 0x8D || d == 0x8F || d == 0x91 || d == 0x95 || d == 0x89 || d == 0x8B)
      return 3;
  }
  if (i + 2 < n && c == 0xEF && u[i + 1] == 0xBC && u[i + 2] == 0x89) return 3;   /* ） */
  if (i + 2 < n && c == 0xE2 && u[i + 1] == 0x80 && (u[i + 2] == 0x9D || u[i + 2] == 0x99))
    return 3;                                                                 /* ” ’ */
  return 0;
}

static int make_sentences(struct split_state *s, size_t len)
{
  const unsigned char *u = (const unsigned char *)s->text;
  size_t start = 0, i = 0;
  while (i < len) {
    size_t k = sent_end_len(u, len, i);
    if (!k) {
      unsigned char b = u[i];
      i += b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
      continue;
    }
    size_t j = i + k;
    for (;;) {
      if (j >= len) break;
      size_t k2 = sent_end_len(u, len, j);
      if (!k2) k2 = sent_tail_len(u, len, j);
      if (!k2) break;
      j += k2;
    }
    int rc = push_unit(&s->u, &s->nu, &s->cap_u, start, j - start, 0);
    if (rc < 0) return rc;
    start = i = j;
  }
  if (start < len) return push_unit(&s->u, &s->nu, &s->cap_u, start, len - start, 0);
  return 0;
}

/* Cut one word [w0, w1) that alone has more than max tokens, starting at
 * `from` (w0 <= from < w1), between characters: the longest prefix that
 * fits, or one character when even that does not. */
static int cut_chars(struct split_state *s, size_t from, size_t w1, size_t *cut, size_t *ntok)
{
  const unsigned char *u = (const unsigned char *)s->text;
  size_t best = 0, best_n = 0, b = from;
  while (b < w1) {
    unsigned char c = u[b];
    b += c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    size_t n;
    int rc = count_span(s, from, b - from, &n);
    if (rc < 0) return rc;
    if (n > s->max && best) break;
    best = b;
    best_n = n;
    if (n > s->max) break;   /* the first character alone: the exception */
  }
  *cut = best;
  *ntok = best_n;
  return 0;
}

/* Replace the over-long unit `x` by pieces of at most max tokens each,
 * appended to out/nout. */
static int cut_unit(struct split_state *s, const struct unit *x, struct unit **out, size_t *nout,
                    size_t *cap_out)
{
  if (x->ntok > s->cap_t) {
    int32_t *ids = jp_malloc(x->ntok * sizeof *ids);
    uint32_t *offs = jp_malloc(x->ntok * sizeof *offs);
    if (!ids || !offs) {
      jp_free(ids);
      jp_free(offs);
      return JP_ENOMEM;
    }
    jp_free(s->ids);
    jp_free(s->offs);
    s->ids = ids;
    s->offs = offs;
    s->cap_t = x->ntok;
  }
  size_t m;
  int rc = jp_tok_ids(s->c, s->text + x->off, x->len, s->ids, s->cap_t, &m, s->offs);
  if (rc < 0) return rc;
  if (m > s->cap_t) m = s->cap_t;   /* same text, same count: cannot happen */
  const uint32_t *O = s->offs;      /* word starts relative to x->off, non-decreasing */
  size_t end = x->len, pos = 0, ti = 0;
  while (pos < end) {
    while (ti < m && O[ti] < pos) ti++;
    /* First guess: the first max tokens from ti, ended at a word start. */
    size_t k = m - ti > s->max ? ti + s->max : m;
    size_t cut = 0, n = 0;
    int fits = 0;
    for (;;) {
      if (k < m)
        while (k > ti && O[k] == O[k - 1]) k--;
      /* k == ti: no word start left after pos, unless the rest of the unit
       * has no token of its own (ti == m) and is tried whole once. */
      if (k == ti && !(k == m && !fits && cut == 0)) break;
      cut = k == m ? end : O[k];
      rc = count_span(s, x->off + pos, cut - pos, &n);
      if (rc < 0) return rc;
      if (n <= s->max) {
        fits = 1;
        break;
      }
      if (k == ti) break;
      k--;                          /* MeCab's context added tokens: back off */
    }
    if (!fits) {
      size_t w1 = end;
      for (size_t q = ti; q < m; q++)
        if (O[q] > pos) {
          w1 = O[q];
          break;
        }
      rc = cut_chars(s, x->off + pos, x->off + w1, &cut, &n);
      if (rc < 0) return rc;
      cut -= x->off;
    }
    rc = push_unit(out, nout, cap_out, x->off + pos, cut - pos, n);
    if (rc < 0) return rc;
    pos = cut;
  }
  return 0;
}

static int push_span(struct jp_span **sp, size_t *n, size_t *cap, size_t off, size_t len)
{
  int rc = jp_grow((void **)sp, cap, *n + 1, sizeof **sp, 0);
  if (rc < 0) return rc;
  (*sp)[*n].off = off;
  (*sp)[*n].len = len;
  (*n)++;
  return 0;
}

int jp_split_passages(jp_tok_ctx *c, const char *text, size_t len, int max_tokens,
                      int overlap_tokens, struct jp_span **out, int *n_out)
{
  if (!c || !out || !n_out) return jp_err(JP_EINVAL, "jp_split_passages: NULL argument");
  *out = NULL;
  *n_out = 0;
  if (max_tokens < 1 || overlap_tokens < 0)
    return jp_err(JP_EINVAL, "max_tokens must be >= 1 and overlap_tokens >= 0 (got %d, %d)",
                  max_tokens, overlap_tokens);
  int rc = tok__validate(tok__ctx_tok(c), text, len);
  if (rc < 0) return rc;

  struct split_state s = {.c = c, .text = text, .max = (size_t)max_tokens};
  struct unit *units = NULL;
  size_t nunits = 0, cap_units = 0;
  struct jp_span *spans = NULL;
  size_t nspans = 0, cap_spans = 0;
  size_t ov = (size_t)overlap_tokens;

  if (len == 0) {
    rc = push_span(&spans, &nspans, &cap_spans, 0, 0);
    goto done;
  }
  rc = make_sentences(&s, len);
  if (rc < 0) goto done;
  size_t sum = 0;
  for (size_t i = 0; i < s.nu; i++) {
    rc = count_span(&s, s.u[i].off, s.u[i].len, &s.u[i].ntok);
    if (rc < 0) goto done;
    sum += s.u[i].ntok;
  }
  if (sum <= 2 * s.max) {
    size_t n;
    rc = count_span(&s, 0, len, &n);
    if (rc < 0) goto done;
    if (n <= s.max) {
      rc = push_span(&spans, &nspans, &cap_spans, 0, len);
      goto done;
    }
  }
  for (size_t i = 0; i < s.nu; i++) {
    if (s.u[i].ntok <= s.max) rc = push_unit(&units, &nunits, &cap_units, s.u[i].off,
                                              s.u[i].len, s.u[i].ntok);
    else rc = cut_unit(&s, &s.u[i], &units, &nunits, &cap_units);
    if (rc < 0) goto done;
  }

  size_t i = 0;
  while (i < nunits) {
    size_t j = i, tot = 0;
    while (j < nunits && tot + units[j].ntok <= s.max) tot += units[j++].ntok;
    if (j == i) j = i + 1;        /* the one-character exception */
    for (;;) {
      size_t off = units[i].off, n;
      size_t l = units[j - 1].off + units[j - 1].len - off;
      if (j == i + 1) {
        rc = push_span(&spans, &nspans, &cap_spans, off, l);
        break;
      }
      rc = count_span(&s, off, l, &n);
      if (rc < 0) goto done;
      if (n <= s.max) {
        rc = push_span(&spans, &nspans, &cap_spans, off, l);
        break;
      }
      j--;
    }
    if (rc < 0) goto done;
    if (j >= nunits) break;
    /* Overlap: whole trailing units worth <= ov tokens, leaving room for
     * unit j, never reaching back to i (so each passage advances). */
    size_t k = j, o = 0;
    while (k - 1 > i && o + units[k - 1].ntok <= ov &&
           o + units[k - 1].ntok + units[j].ntok <= s.max) {
      o += units[k - 1].ntok;
      k--;
    }
    i = k;
  }

done:
  jp_free(s.u);
  jp_free(s.ids);
  jp_free(s.offs);
  jp_free(units);
  if (rc < 0) {
    jp_free(spans);
    return rc;
  }
  if (nspans > INT32_MAX) {
    jp_free(spans);
    return jp_err(JP_ETOOBIG, "too many passages");
  }
  *out = spans;
  *n_out = (int)nspans;
  return 0;
}
