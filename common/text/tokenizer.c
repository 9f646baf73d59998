/* tokenizer.c: JaColBERTv2's tokenizer (HF BertJapaneseTokenizer: NFKC +
 * MeCab + WordPiece) and ColBERT's query/document framing.
 *
 * Pipeline for one text (shared/reference/model.md §2):
 *   1. validate (UTF-8, no NUL, size limit);
 *   2. cut around literal "[PAD]" "[UNK]" "[CLS]" "[SEP]" "[MASK]": each is
 *      one token (HF PreTrainedTokenizer.tokenize);
 *   3. each other chunk: NFKC (normalize.c) -> MeCab surfaces -> Python
 *      str.split() of each surface -> WordPiece (greedy longest match,
 *      "##" continuations, > 100 code points or an unmatchable position ->
 *      one [UNK]).
 *
 * MeCab input pieces: HF gives MeCab each chunk whole. We do too up to
 * TOK_MECAB_PIECE (60 KiB); a longer chunk is given in pieces cut at a newline
 * (else after "。", else at a space, else at a safe character boundary),
 * because MeCab's lattice costs ~400 bytes of memory per input byte with
 * UniDic (measured: 612 MB RSS for a 1 MB text) and keeps it in the ctx.
 * Only texts over 60 KiB can differ from HF, and then only around the cut.
 *
 * unidic-lite compatibility (lite_compat): unidic-lite removed UniDic's
 * one-character alphabet and digit entries, so in it ASCII letter runs and
 * digit runs come out whole (unknown-word grouping). UniDic 3.1.1 (Debian)
 * still has them and splits "iPhone" into i|Phone and "123" into 1|2|3. We
 * tell MeCab, with lattice boundary constraints, that each maximal run of
 * letters (UniDic's ALPHA class: [A-Za-z] and Latin letters such as é) and
 * each run of [0-9] (after NFKC) is exactly one word, as unidic-lite's
 * unknown-word grouping makes them. That makes the HF unit-test sentence
 * come out as in HF; it is an approximation of unidic-lite, not a copy (its
 * lexicon and costs also differ from 3.1.1).
 *
 * Observed word splits here (Debian UniDic 3.1.1, mecab-ipadic-utf8
 * 2.7.0-20070801; tests/unit/text/test_text_tokenizer.c asserts them):
 *
 *   input                UniDic         UniDic+compat    IPAdic
 *   iPhone               i|Phone        iPhone           iPhone
 *   123                  1|2|3          123              123
 *   iPhone15Pro          i|Phone|1|5|Pro iPhone|15|Pro   iPhone|15|Pro
 *   2024年3月            2|0|2|4|年|3|月 2024|年|3|月     2024|年|3|月
 *   COVID-19             COVID|-|1|9    COVID|-|19       COVID|-|19
 *   東北大学             東北|大学      東北|大学        東北大学
 *   株式会社             株式|会社      株式|会社        株式会社
 *   アップルストア       アップル|ストア (same)           アップルストア
 *   ネットニュースサイト ネット|ニュース|サイト (same)    ネットニュースサイト
 *   研究所               研究|所        研究|所          研究所
 *   一昨日から雨が降り続いている
 *              UniDic: 一昨|日|から|雨|が|降り|続い|て|いる
 *              IPAdic: 一昨日|から|雨|が|降り続い|て|いる
 *
 * IPAdic keeps ASCII runs whole by itself (no compat needed; it is off by
 * default there) but uses longer word units, which WordPiece then cuts into
 * pieces the model rarely saw in training: 東北大学 -> 東北 ##大 ##学,
 * 株式会社 -> 株式 ##会 ##社, アップルストア -> アップル ##スト ##ア, where
 * UniDic gives whole-word ids. The HF test sentence
 * " \tｱｯﾌﾟﾙストアでiPhone８ が  \n 発売された　。  " gives with IPAdic
 * アップル ##スト ##ア で iPhone 8 が 発売 さ れ た 。 (12 ids instead of 11).
 *
 * Thread-safety: jp_tok is immutable after create and shared; a jp_tok_ctx
 * (MeCab tagger + lattice + scratch) is used by one thread at a time.
 * Allocation: create functions allocate; tokenising reuses the ctx's
 * buffers and grows them only for a text longer than any seen before. */
#include <limits.h>
#include <mecab.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "text/text_int.h"
#include "text/tokenizer.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"

/* Largest piece of text given to MeCab in one call (see the file comment):
 * 60 KiB is far above a passage (JSQuAD paragraphs are < 3 KiB, doc_maxlen
 * 256 tokens is ~1 KiB) and bounds what a ctx's lattice keeps (measured with
 * UniDic: a 1 MiB text peaks at 0.33 GB RSS, most of it mmapped dictionary
 * pages, instead of 0.61 GB when given whole). It must stay below 65535:
 * MeCab stores a node's length in an unsigned short, and with lite-compat
 * a piece of letters only is one node (at 64 KiB its length wrapped to 0
 * and the word vanished). */
#define TOK_MECAB_PIECE (60u << 10)

/* Default per-text input limit (the contract's "0 = 4 MiB"). */
#define TOK_DEFAULT_MAX_TEXT (4u << 20)

/* Upper bound for query_maxlen / doc_maxlen: BERT models have at most 512
 * positions; 8192 leaves room for long-context models and still stops a
 * typo from sizing buffers in the gigabytes. */
#define TOK_MAX_FRAME 8192

/* Debian's dictionary directories (shared/reference/stack.md §7). */
#define TOK_DIC_UNIDIC "/var/lib/mecab/dic/unidic"
#define TOK_DIC_IPADIC "/var/lib/mecab/dic/ipadic-utf8"

/* Python's string.punctuation: ColBERT's skiplist is built from it. */
static const char k_punctuation[] = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/* The special-token strings HF splits the raw text around. */
static const char *const k_special[5] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};

struct jp_tok {
  jp_vocab *vocab;
  struct jp_tok_opts opts;   /* resolved: mecab_dicdir = dicdir, lite_compat 0/1 */
  char *dicdir;              /* the dictionary directory used */
  enum jp_dict_kind kind;
  int lite;                  /* lite-compat constraints on */
  mecab_model_t *model;      /* shared by every ctx's tagger */
  int32_t special_id[5];     /* ids of k_special[] */
  uint8_t *skip;             /* bit per vocab id: in the punctuation skiplist */
};

struct jp_tok_ctx {
  const jp_tok *t;
  mecab_t *tagger;
  mecab_lattice_t *lat;
  struct tok_nfkc nf;        /* NFKC output of the current MeCab piece */
};

/* ---- word stream ----------------------------------------------------------
 * tok_run walks a text and calls fn once per word (WordPiece input) or
 * special token. fn returns 0 to go on, 1 to stop early (enough tokens),
 * or a negative error. */
typedef int (*tok_word_fn)(void *ud, const char *w, size_t len, uint32_t off,
                           int32_t special_id);

int tok__validate(const jp_tok *t, const char *text, size_t len)
{
  if (!text && len) return jp_err(JP_EINVAL, "text is NULL with length %zu", len);
  if (len > t->opts.max_text_bytes)
    return jp_err(JP_ETOOBIG, "text is %zu bytes, over the limit of %zu (max_text_bytes)", len,
                  t->opts.max_text_bytes);
  return len ? tok__utf8_check(text, len) : 0;
}

static inline int is_alpha(unsigned char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static inline int is_digit(unsigned char c)
{
  return c >= '0' && c <= '9';
}

/* MeCab character class for lite-compat runs, as UniDic's char.def defines
 * ALPHA (ASCII and Latin letters: U+00C0-U+00FF, Latin Extended A/B up to
 * U+0236, U+1E00-U+1EF9) and NUMERIC
 * ([0-9]; the other NUMERIC characters are NFKC'd to digits or letters).
 * unidic-lite groups such runs into one unknown word, so "café" stays one
 * word as "iPhone" does. 1 = ALPHA, 2 = NUMERIC, 0 = other. */
static inline int lite_class(uint32_t cp)
{
  if (cp < 0x80) return is_alpha((unsigned char)cp) ? 1 : is_digit((unsigned char)cp) ? 2 : 0;
  if ((cp >= 0xC0 && cp <= 0x236) || (cp >= 0x1E00 && cp <= 0x1EF9)) return 1;
  return 0;
}

/* Bytes of the MeCab SPACE-class character that ends just before s[p], or
 * 0. The class is U+0020 U+0009 U+000A U+000B in both UniDic's and IPAdic's
 * char.def (their U+00D0 SPACE line is overridden by the later
 * U+00C0..U+00FF ALPHA range: MeCab keeps "aÐb" one word). */
static size_t mecab_space_before(const unsigned char *s, size_t p)
{
  if (p >= 1 && (s[p - 1] == ' ' || s[p - 1] == '\t' || s[p - 1] == '\n' || s[p - 1] == '\v'))
    return 1;
  return 0;
}

/* lite-compat: each maximal run of one class must be exactly one MeCab
 * node: a token boundary at both ends, none inside.
 *
 * A run's start boundary goes before the spaces that precede it: MeCab
 * looks a node up from where the previous one ended, skips spaces, and in
 * constrained mode takes the next TOKEN_BOUNDARY as the end of the span to
 * fill; a boundary right after the spaces would leave it an empty span and
 * MeCab 0.996 then dies (CHECK_DIE "new_node->feature", exit of the whole
 * process). The fuzz test in test_text_tokenizer.c guards this. */
static void set_lite_constraints(mecab_lattice_t *lat, const char *s, size_t n)
{
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    size_t k;
    int cls = lite_class(tok__utf8_decode(u + i, &k));
    if (!cls) {
      i += k;
      continue;
    }
    size_t j = i + k;
    while (j < n) {
      size_t k2;
      if (lite_class(tok__utf8_decode(u + j, &k2)) != cls) break;
      for (size_t q = j; q < j + k2; q++)
        mecab_lattice_set_boundary_constraint(lat, q, MECAB_INSIDE_TOKEN);
      j += k2;
    }
    size_t st = i, sp;
    while ((sp = mecab_space_before(u, st)) > 0) st -= sp;
    mecab_lattice_set_boundary_constraint(lat, st, MECAB_TOKEN_BOUNDARY);
    for (size_t q = i + 1; q < i + k; q++)
      mecab_lattice_set_boundary_constraint(lat, q, MECAB_INSIDE_TOKEN);
    mecab_lattice_set_boundary_constraint(lat, j, MECAB_TOKEN_BOUNDARY);
    i = j;
  }
}

/* NFKC + MeCab over one piece s[0..len) at original offset `base`; words go
 * to fn. */
static int run_piece(jp_tok_ctx *c, const char *s, size_t len, uint32_t base, tok_word_fn fn,
                     void *ud)
{
  int rc = tok__nfkc(&c->nf, s, len, base);
  if (rc < 0) return rc;
  if (c->nf.len == 0) return 0;
  const char *buf = c->nf.buf;
  mecab_lattice_set_sentence2(c->lat, buf, c->nf.len);
  if (c->t->lite) set_lite_constraints(c->lat, buf, c->nf.len);
  if (!mecab_parse_lattice(c->tagger, c->lat))
    return jp_err(JP_EINTERNAL, "MeCab failed: %s", mecab_lattice_strerror(c->lat));
  for (const mecab_node_t *nd = mecab_lattice_get_bos_node(c->lat)->next;
       nd && nd->stat != MECAB_EOS_NODE; nd = nd->next) {
    /* node->surface points into buf and is NOT NUL-terminated. */
    const char *p = nd->surface, *end = nd->surface + nd->length;
    /* WordpieceTokenizer: whitespace_tokenize(surface) = str.split(). */
    while (p < end) {
      size_t sp;
      while (p < end && (sp = tok__pyspace_len(p, end)) > 0) p += sp;
      if (p >= end) break;
      const char *w = p;
      while (p < end && tok__pyspace_len(p, end) == 0) {
        unsigned char b = (unsigned char)*p;
        p += b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
      }
      rc = fn(ud, w, (size_t)(p - w), c->nf.map[w - buf], -1);
      if (rc != 0) return rc;
    }
  }
  return 0;
}

/* Where to end a MeCab piece that starts at s[0] and must hold at most
 * TOK_MECAB_PIECE bytes; more than that are available (s[TOK_MECAB_PIECE]
 * is readable). */
static size_t piece_cut(const char *s)
{
  const unsigned char *u = (const unsigned char *)s;
  size_t hi = TOK_MECAB_PIECE, lo = TOK_MECAB_PIECE / 2;
  for (size_t i = hi; i > lo; i--)
    if (u[i - 1] == '\n') return i;
  for (size_t i = hi; i >= lo + 3; i--)
    if (u[i - 3] == 0xE3 && u[i - 2] == 0x80 && u[i - 1] == 0x82) return i;   /* 。 */
  for (size_t i = hi; i > lo; i--)
    if (u[i - 1] == ' ' || u[i - 1] == '\t') return i;
  /* No natural place: a character start where NFKC can restart, not inside
   * an ASCII letter or digit run (lite-compat would split that word). */
  for (size_t i = hi; i > lo; i--) {
    if ((u[i] & 0xC0) == 0x80) continue;
    size_t k;
    uint32_t cp = tok__utf8_decode(u + i, &k);
    if (!tok__nfkc_safe_start(cp)) continue;
    if ((is_alpha(u[i]) && is_alpha(u[i - 1])) || (is_digit(u[i]) && is_digit(u[i - 1])))
      continue;
    return i;
  }
  size_t i = hi;
  while (i > 1 && (u[i] & 0xC0) == 0x80) i--;
  return i;
}

static int run_chunk(jp_tok_ctx *c, const char *s, size_t len, uint32_t base, tok_word_fn fn,
                     void *ud)
{
  size_t pos = 0;
  while (pos < len) {
    size_t k = len - pos;
    if (k > TOK_MECAB_PIECE) k = piece_cut(s + pos);
    int rc = run_piece(c, s + pos, k, base + (uint32_t)pos, fn, ud);
    if (rc != 0) return rc;
    pos += k;
  }
  return 0;
}

/* Which special token starts at s (n bytes available), or -1. */
static int special_at(const char *s, size_t n)
{
  for (int i = 0; i < 5; i++) {
    size_t l = strlen(k_special[i]);
    if (n >= l && memcmp(s, k_special[i], l) == 0) return i;
  }
  return -1;
}

/* Returns 0, or 1 if fn asked to stop, or a negative error. */
static int tok_run(jp_tok_ctx *c, const char *text, size_t len, tok_word_fn fn, void *ud)
{
  int rc = tok__validate(c->t, text, len);
  if (rc < 0) return rc;
  size_t pos = 0, scan = 0;
  while (scan < len) {
    const char *br = memchr(text + scan, '[', len - scan);
    if (!br) break;
    size_t at = (size_t)(br - text);
    int sp = special_at(br, len - at);
    if (sp < 0) {
      scan = at + 1;
      continue;
    }
    if (at > pos) {
      rc = run_chunk(c, text + pos, at - pos, (uint32_t)pos, fn, ud);
      if (rc != 0) return rc;
    }
    size_t l = strlen(k_special[sp]);
    rc = fn(ud, br, l, (uint32_t)at, c->t->special_id[sp]);
    if (rc != 0) return rc;
    pos = scan = at + l;
  }
  if (pos < len) return run_chunk(c, text + pos, len - pos, (uint32_t)pos, fn, ud);
  return 0;
}

/* ---- WordPiece --------------------------------------------------------- */

/* Ids of one word into pieces[] (room for TOK_MAX_WORD_CHARS); returns the
 * count. HF WordpieceTokenizer.tokenize for a single whitespace-free word. */
static size_t wordpiece(const jp_vocab *v, const char *w, size_t len, int32_t *pieces)
{
  int32_t unk = jp_vocab_special(v)->unk;
  /* Code point starts; more than TOK_MAX_WORD_CHARS code points -> [UNK]. */
  uint16_t bnd[TOK_MAX_WORD_CHARS + 1];
  size_t nc = 0, i = 0;
  while (i < len) {
    if (nc == TOK_MAX_WORD_CHARS) {
      pieces[0] = unk;
      return 1;
    }
    bnd[nc++] = (uint16_t)i;
    unsigned char b = (unsigned char)w[i];
    i += b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
  }
  bnd[nc] = (uint16_t)len;   /* <= 400 bytes: 100 code points of <= 4 */

  size_t np = 0, start = 0;
  while (start < nc) {
    int cont = start > 0;
    size_t maxb = tok__vocab_max_key(v, cont);
    size_t end = nc;
    while (end > start && (size_t)(bnd[end] - bnd[start]) > maxb) end--;
    int32_t id = -1;
    for (; end > start; end--) {
      id = tok__vocab_find(v, cont, w + bnd[start], (size_t)(bnd[end] - bnd[start]));
      if (id >= 0) break;
    }
    if (id < 0) {
      pieces[0] = unk;   /* any unmatchable position: the whole word */
      return 1;
    }
    pieces[np++] = id;
    start = end;
  }
  return np;
}

struct ids_sink {
  const jp_vocab *v;
  int32_t *ids;          /* may be NULL when cap == 0 */
  uint32_t *offs;        /* may be NULL */
  size_t cap;
  size_t n;              /* tokens seen so far (all, not only written) */
  size_t stop;           /* return 1 once n > stop (SIZE_MAX: never) */
};

static int ids_word(void *ud, const char *w, size_t len, uint32_t off, int32_t special_id)
{
  struct ids_sink *s = ud;
  int32_t pieces[TOK_MAX_WORD_CHARS];
  size_t np;
  if (special_id >= 0) {
    pieces[0] = special_id;
    np = 1;
  } else {
    np = wordpiece(s->v, w, len, pieces);
  }
  for (size_t i = 0; i < np; i++) {
    if (s->n < s->cap) {
      s->ids[s->n] = pieces[i];
      if (s->offs) s->offs[s->n] = off;
    }
    s->n++;
  }
  return s->n > s->stop ? 1 : 0;
}

/* Tokens of text into ids[0..cap); *n = all of them, or (when stop is not
 * SIZE_MAX) at least stop + 1 once there are more than stop. */
static int tok_ids_upto(jp_tok_ctx *c, const char *text, size_t len, int32_t *ids, size_t cap,
                        uint32_t *offs, size_t stop, size_t *n)
{
  struct ids_sink s = {c->t->vocab, ids, offs, cap, 0, stop};
  int rc = tok_run(c, text, len, ids_word, &s);
  *n = s.n;
  return rc < 0 ? rc : 0;
}

/* ---- public: tokenising ------------------------------------------------ */

int jp_tok_ids(jp_tok_ctx *c, const char *text, size_t len, int32_t *ids, size_t cap,
               size_t *n_out, uint32_t *offsets)
{
  if (!c || !n_out || (cap && !ids)) return jp_err(JP_EINVAL, "jp_tok_ids: NULL argument");
  *n_out = 0;
  return tok_ids_upto(c, text, len, ids, cap, offsets, SIZE_MAX, n_out);
}

struct words_sink {
  void (*fn)(void *ud, const char *surface, size_t len);
  void *ud;
};

static int words_word(void *ud, const char *w, size_t len, uint32_t off, int32_t special_id)
{
  struct words_sink *s = ud;
  s->fn(s->ud, w, len);
  return 0;
}

int jp_tok_words(jp_tok_ctx *c, const char *text, size_t len,
                 void (*fn)(void *ud, const char *surface, size_t len), void *ud)
{
  if (!c || !fn) return jp_err(JP_EINVAL, "jp_tok_words: NULL argument");
  struct words_sink s = {fn, ud};
  int rc = tok_run(c, text, len, words_word, &s);
  return rc < 0 ? rc : 0;
}

int jp_tok_query(jp_tok_ctx *c, const char *text, size_t len, int32_t *ids, uint8_t *attn,
                 int *n_real)
{
  if (!c || !ids || !attn) return jp_err(JP_EINVAL, "jp_tok_query: NULL argument");
  const jp_tok *t = c->t;
  const struct jp_special_ids *sp = jp_vocab_special(t->vocab);
  size_t L = (size_t)t->opts.query_maxlen, cap = L - 3, n = 0;
  /* Tokens past cap are never needed: stop as soon as one is seen. */
  int rc = tok_ids_upto(c, text, len, ids + 2, cap, NULL, cap, &n);
  if (rc < 0) return rc;
  if (n > cap) n = cap;
  ids[0] = sp->cls;
  ids[1] = t->opts.q_marker_id;
  ids[2 + n] = sp->sep;
  for (size_t i = 0; i < n + 3; i++) attn[i] = 1;
  for (size_t i = n + 3; i < L; i++) {
    ids[i] = sp->mask;
    attn[i] = t->opts.attend_to_mask_tokens ? 1 : 0;
  }
  if (n_real) *n_real = (int)(n + 3);
  return 0;
}

int jp_tok_doc(jp_tok_ctx *c, const char *text, size_t len, int32_t *ids, uint8_t *keep,
               int *n_out, int *truncated)
{
  if (!c || !ids || !keep || !n_out) return jp_err(JP_EINVAL, "jp_tok_doc: NULL argument");
  const jp_tok *t = c->t;
  const struct jp_special_ids *sp = jp_vocab_special(t->vocab);
  size_t cap = (size_t)t->opts.doc_maxlen - 3, n = 0;
  int rc = tok_ids_upto(c, text, len, ids + 2, cap, NULL, cap, &n);
  if (rc < 0) return rc;
  if (truncated) *truncated = n > cap;
  if (n > cap) n = cap;
  ids[0] = sp->cls;
  ids[1] = t->opts.d_marker_id;
  ids[2 + n] = sp->sep;
  /* ColBERT's keep-mask: id not in the skiplist and not [PAD] (a literal
   * "[PAD]" typed in the text is id 0 and gets dropped like padding). */
  for (size_t i = 0; i < n + 3; i++) {
    int skip = t->opts.mask_punctuation && jp_tok_is_skiplisted(t, ids[i]);
    keep[i] = (skip || ids[i] == sp->pad) ? 0 : 1;
  }
  *n_out = (int)(n + 3);
  return 0;
}

int jp_tok_is_skiplisted(const jp_tok *t, int32_t id)
{
  if (!t || id < 0 || id >= jp_vocab_size(t->vocab)) return 0;
  return (t->skip[id >> 3] >> (id & 7)) & 1;
}

/* ---- objects ------------------------------------------------------------- */

void jp_tok_opts_default(struct jp_tok_opts *o)
{
  memset(o, 0, sizeof *o);
  o->mecab_dicdir = NULL;
  o->lite_compat = -1;
  o->query_maxlen = 32;           /* JaColBERTv2 artifact.metadata */
  o->doc_maxlen = 256;            /* JaColBERTv2 artifact.metadata */
  o->q_marker_id = 5;             /* "[unused0]" in bert-base-japanese-v3 */
  o->d_marker_id = 6;             /* "[unused1]" */
  o->attend_to_mask_tokens = 0;
  o->mask_punctuation = 1;
  o->max_text_bytes = 0;          /* 4 MiB */
}

static int dir_has_dicrc(const char *dir)
{
  char p[PATH_MAX];
  if (jp_path_join(p, sizeof p, dir, "dicrc") < 0) return 0;
  return access(p, R_OK) == 0;
}

static int resolve_dicdir(const struct jp_tok_opts *o, char **out)
{
  const char *d = o->mecab_dicdir;
  const char *why = "opts.mecab_dicdir";
  if (!d || !*d) {
    const char *env = getenv("JAPLAID_MECAB_DICDIR");
    if (env && *env) {
      d = env;
      why = "$JAPLAID_MECAB_DICDIR";
    }
  }
  if (!d || !*d) {
    if (dir_has_dicrc(TOK_DIC_UNIDIC)) d = TOK_DIC_UNIDIC;
    else if (dir_has_dicrc(TOK_DIC_IPADIC)) d = TOK_DIC_IPADIC;
    else
      return jp_err(JP_ENOTFOUND,
                    "no MeCab dictionary found (tried " TOK_DIC_UNIDIC " and " TOK_DIC_IPADIC
                    "): install unidic-mecab or mecab-ipadic-utf8, or set JAPLAID_MECAB_DICDIR");
  } else if (!dir_has_dicrc(d)) {
    return jp_err(JP_ENOTFOUND, "MeCab dictionary directory %s (from %s) has no readable dicrc",
                  d, why);
  }
  *out = jp_strdup(d);
  return *out ? 0 : JP_ENOMEM;
}

/* The dictionary family, from its dicrc (IPAdic's names itself in a comment,
 * UniDic's has "unidic" output formats), else from the directory name. */
static enum jp_dict_kind detect_kind(const char *dir)
{
  char p[PATH_MAX];
  enum jp_dict_kind k = JP_DICT_OTHER;
  if (jp_path_join(p, sizeof p, dir, "dicrc") == 0) {
    char *rc = NULL;
    size_t n = 0;
    /* dicrc files are a few KB; 1 MiB bounds a wrong file. */
    if (jp_read_file(p, 1u << 20, &rc, &n) == 0) {
      if (strcasestr(rc, "ipadic")) k = JP_DICT_IPADIC;
      else if (strcasestr(rc, "unidic")) k = JP_DICT_UNIDIC;
      jp_free(rc);
    }
  }
  if (k == JP_DICT_OTHER) {
    if (strcasestr(dir, "unidic")) k = JP_DICT_UNIDIC;
    else if (strcasestr(dir, "ipadic")) k = JP_DICT_IPADIC;
  }
  return k;
}

static int build_skiplist(jp_tok *t)
{
  int nv = jp_vocab_size(t->vocab);
  t->skip = jp_calloc((size_t)nv / 8 + 1, 1);
  if (!t->skip) return JP_ENOMEM;
  jp_tok_ctx *c = NULL;
  int rc = jp_tok_ctx_create(t, &c);
  if (rc < 0) return rc;
  /* ColBERT: for each punctuation character, the first id the tokenizer
   * gives for that character alone. */
  for (const char *p = k_punctuation; *p; p++) {
    int32_t id;
    size_t n = 0;
    rc = tok_ids_upto(c, p, 1, &id, 1, NULL, 0, &n);
    if (rc < 0) break;
    if (n >= 1) t->skip[id >> 3] |= (uint8_t)(1u << (id & 7));
  }
  jp_tok_ctx_destroy(c);
  return rc < 0 ? rc : 0;
}

int jp_tok_create(jp_vocab *vocab, const struct jp_tok_opts *opts, jp_tok **out)
{
  if (!out) {
    jp_vocab_free(vocab);
    return jp_err(JP_EINVAL, "jp_tok_create: NULL out");
  }
  *out = NULL;
  if (!vocab) return jp_err(JP_EINVAL, "jp_tok_create: NULL vocab");
  struct jp_tok_opts o;
  if (opts) o = *opts;
  else jp_tok_opts_default(&o);
  int nv = jp_vocab_size(vocab);
  int rc = 0;
  if (o.q_marker_id < 0 || o.q_marker_id >= nv || o.d_marker_id < 0 || o.d_marker_id >= nv)
    rc = jp_err(JP_EINVAL, "marker ids %d/%d out of range for a vocab of %d", o.q_marker_id,
                o.d_marker_id, nv);
  else if (o.query_maxlen < 3 || o.query_maxlen > TOK_MAX_FRAME || o.doc_maxlen < 3 ||
           o.doc_maxlen > TOK_MAX_FRAME)
    rc = jp_err(JP_EINVAL, "query_maxlen %d / doc_maxlen %d must be in 3..%d", o.query_maxlen,
                o.doc_maxlen, TOK_MAX_FRAME);
  else if (o.lite_compat < -1 || o.lite_compat > 1)
    rc = jp_err(JP_EINVAL, "lite_compat must be -1, 0 or 1 (got %d)", o.lite_compat);
  else if (o.max_text_bytes >= UINT32_MAX)
    /* Offsets are uint32_t. */
    rc = jp_err(JP_EINVAL, "max_text_bytes must be below 4 GiB");
  if (rc < 0) {
    jp_vocab_free(vocab);
    return rc;
  }
  if (o.max_text_bytes == 0) o.max_text_bytes = TOK_DEFAULT_MAX_TEXT;

  jp_tok *t = jp_calloc(1, sizeof *t);
  if (!t) {
    jp_vocab_free(vocab);
    return JP_ENOMEM;
  }
  t->vocab = vocab;
  rc = resolve_dicdir(&o, &t->dicdir);
  if (rc < 0) goto fail;
  t->kind = detect_kind(t->dicdir);
  t->lite = o.lite_compat == -1 ? t->kind == JP_DICT_UNIDIC : o.lite_compat;
  o.lite_compat = t->lite;
  o.mecab_dicdir = t->dicdir;
  t->opts = o;
  for (int i = 0; i < 5; i++) {
    const struct jp_special_ids *sp = jp_vocab_special(vocab);
    const int32_t ids[5] = {sp->pad, sp->unk, sp->cls, sp->sep, sp->mask};
    t->special_id[i] = ids[i];
  }

  /* -r /dev/null: ignore /etc/mecabrc (its dicdir is a Debian alternatives
   * link); everything MeCab needs is in the dictionary's own dicrc. argv
   * form, so a path with spaces stays one argument. */
  char *argv[] = {"japlaid", "-r", "/dev/null", "-d", t->dicdir, NULL};
  t->model = mecab_model_new(5, argv);
  if (!t->model) {
    const char *m = mecab_strerror(NULL);
    rc = jp_err(JP_EIO, "MeCab cannot load dictionary %s: %s", t->dicdir, m ? m : "?");
    goto fail;
  }
  rc = build_skiplist(t);
  if (rc < 0) goto fail;
  JP_LOG_DEBUG("tokenizer: MeCab dictionary %s (%s), lite_compat %d", t->dicdir,
               t->kind == JP_DICT_UNIDIC   ? "UniDic"
               : t->kind == JP_DICT_IPADIC ? "IPAdic"
                                           : "other",
               t->lite);
  *out = t;
  return 0;

fail:
  jp_tok_destroy(t);
  return rc;
}

void jp_tok_destroy(jp_tok *t)
{
  if (!t) return;
  if (t->model) mecab_model_destroy(t->model);
  jp_vocab_free(t->vocab);
  jp_free(t->dicdir);
  jp_free(t->skip);
  jp_free(t);
}

const jp_vocab *jp_tok_vocab(const jp_tok *t) { return t ? t->vocab : NULL; }
const struct jp_tok_opts *jp_tok_get_opts(const jp_tok *t) { return t ? &t->opts : NULL; }
enum jp_dict_kind jp_tok_dict_kind(const jp_tok *t) { return t ? t->kind : JP_DICT_OTHER; }
const char *jp_tok_dicdir(const jp_tok *t) { return t ? t->dicdir : NULL; }
int jp_tok_lite_compat(const jp_tok *t) { return t ? t->lite : 0; }

int jp_tok_ctx_create(const jp_tok *t, jp_tok_ctx **out)
{
  if (!t || !out) return jp_err(JP_EINVAL, "jp_tok_ctx_create: NULL argument");
  *out = NULL;
  jp_tok_ctx *c = jp_calloc(1, sizeof *c);
  if (!c) return JP_ENOMEM;
  c->t = t;
  tok__nfkc_init(&c->nf);
  c->tagger = mecab_model_new_tagger(t->model);
  c->lat = c->tagger ? mecab_model_new_lattice(t->model) : NULL;
  if (!c->tagger || !c->lat) {
    jp_tok_ctx_destroy(c);
    return jp_err(JP_EINTERNAL, "MeCab: cannot create a tagger/lattice");
  }
  *out = c;
  return 0;
}

const jp_tok *tok__ctx_tok(const jp_tok_ctx *c)
{
  return c->t;
}

void jp_tok_ctx_destroy(jp_tok_ctx *c)
{
  if (!c) return;
  if (c->lat) mecab_lattice_destroy(c->lat);
  if (c->tagger) mecab_destroy(c->tagger);
  tok__nfkc_fini(&c->nf);
  jp_free(c);
}
