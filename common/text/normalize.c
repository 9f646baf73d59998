/* normalize.c: UTF-8 validation and Unicode NFKC with an offset map.
 *
 * HF's MecabTokenizer runs unicodedata.normalize("NFKC") on each chunk
 * before MeCab. We do the same with utf8proc, but passage splitting needs to
 * know where each normalised byte came from in the user's text (NFKC changes
 * lengths: "ｱ" 3 bytes -> "ア" 3 bytes, "Ａ" 3 -> "A" 1, "㍿" 3 -> "株式会社"
 * 12). So the text is cut into segments that normalise independently and
 * each segment is normalised on its own; every output byte maps to the start
 * of its segment.
 *
 * A segment may start before code point c when the first code point f of
 * c's compatibility decomposition is a starter (canonical combining class
 * 0) that is never the second element of a canonical composition: canonical
 * reordering never moves marks across a starter, and nothing before c can
 * compose with f or, being blocked by f, with anything after it. The set of
 * "second elements" is taken from utf8proc's own decomposition data (every
 * code point after the first in a full canonical decomposition), built once,
 * so it follows the installed utf8proc's Unicode version. The unit test
 * checks segment-wise output against utf8proc_map of the whole text. (U+11A7,
 * the Hangul T base, is no T jamo and starts a segment, so "LV" + U+11A7
 * keeps both as Python does; utf8proc_map of the whole text drops U+11A7.)
 *
 * Thread-safety: tok__nfkc uses the caller's struct tok_nfkc (one per ctx);
 * the two static bitmaps are built once under pthread_once and then only
 * read. Allocation: tok__nfkc grows the struct's buffers (jp_grow) and keeps
 * them; nothing else allocates. */
#include <pthread.h>
#include <string.h>
#include <utf8proc.h>

#include "text/text_int.h"
#include "util/err.h"
#include "util/mem.h"

/* NFKC as Python's unicodedata.normalize("NFKC") and utf8proc_NFKC. */
#define NFKC_OPTS ((utf8proc_option_t)(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT))

#define N_CODEPOINTS 0x110000u

/* Bit set: a segment may NOT start at this code point. */
static uint8_t g_unsafe[N_CODEPOINTS / 8];
/* Bit set: the code point has a decomposition (NFKC may change it alone). */
static uint8_t g_decomp[N_CODEPOINTS / 8];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static inline int bit_get(const uint8_t *b, uint32_t cp)
{
  return (b[cp >> 3] >> (cp & 7)) & 1;
}

static inline void bit_set(uint8_t *b, uint32_t cp)
{
  b[cp >> 3] |= (uint8_t)(1u << (cp & 7));
}

/* Hangul syllables decompose algorithmically (not through decomp_seqindex). */
static inline int is_hangul_syllable(uint32_t cp)
{
  return cp >= 0xAC00 && cp <= 0xD7A3;
}

/* Longest full decomposition in Unicode is 18 code points (U+FDFA); 32
 * leaves room for future versions. */
#define DECOMP_MAX 32

static void tables_build(void)
{
  utf8proc_int32_t d[DECOMP_MAX];
  int bc = 0;
  /* Pass 1: second elements of canonical compositions, and which code
   * points have any decomposition. */
  static uint8_t second[N_CODEPOINTS / 8];
  for (uint32_t cp = 0x80; cp < N_CODEPOINTS; cp++) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
    if (p->decomp_seqindex == UINT16_MAX && !is_hangul_syllable(cp)) continue;
    bit_set(g_decomp, cp);
    bc = 0;
    utf8proc_ssize_t n =
        utf8proc_decompose_char((utf8proc_int32_t)cp, d, DECOMP_MAX, UTF8PROC_DECOMPOSE, &bc);
    for (utf8proc_ssize_t i = 1; i < n && n <= DECOMP_MAX; i++)
      if ((uint32_t)d[i] < N_CODEPOINTS) bit_set(second, (uint32_t)d[i]);
  }
  /* Pass 2: unsafe = the first code point of the NFKC decomposition is a
   * non-starter or a possible second element. */
  for (uint32_t cp = 0x80; cp < N_CODEPOINTS; cp++) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    uint32_t f = cp;
    if (bit_get(g_decomp, cp)) {
      bc = 0;
      utf8proc_ssize_t n = utf8proc_decompose_char((utf8proc_int32_t)cp, d, DECOMP_MAX,
                                                   NFKC_OPTS, &bc);
      if (n >= 1 && n <= DECOMP_MAX) f = (uint32_t)d[0];
    }
    const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)f);
    if (p->combining_class != 0 || bit_get(second, f)) bit_set(g_unsafe, cp);
  }
}

int tok__nfkc_safe_start(uint32_t cp)
{
  if (cp < 0x80) return 1;
  if (cp >= N_CODEPOINTS) return 0;
  pthread_once(&g_once, tables_build);
  return !bit_get(g_unsafe, cp);
}

long tok__utf8_find_bad(const char *str, size_t len)
{
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i];
    if (c < 0x80) {
      if (c == 0) return (long)i;
      i++;
      continue;
    }
    size_t need;
    uint32_t min, cp;
    if (c >= 0xC2 && c <= 0xDF) {
      need = 1; min = 0x80; cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      need = 2; min = 0x800; cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 3; min = 0x10000; cp = c & 0x07;
    } else {
      return (long)i;          /* continuation byte, C0/C1 overlong lead, F5+ */
    }
    if (len - i <= need) {
      /* Not enough bytes left: still report the first bad one precisely. */
      for (size_t k = 1; i + k < len; k++)
        if ((s[i + k] & 0xC0) != 0x80) return (long)i;
      return (long)i;
    }
    for (size_t k = 1; k <= need; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return (long)i;
      cp = (cp << 6) | (s[i + k] & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return (long)i;
    i += need + 1;
  }
  return -1;
}

int tok__utf8_check(const char *s, size_t len)
{
  long bad = tok__utf8_find_bad(s, len);
  if (bad < 0) return 0;
  if (s[bad] == 0) return jp_err(JP_EINVAL, "text has a NUL byte at byte offset %ld", bad);
  return jp_err(JP_EINVAL, "text is not valid UTF-8 at byte offset %ld (byte 0x%02X)", bad,
                (unsigned)(unsigned char)s[bad]);
}

size_t tok__pyspace_len(const char *ps, const char *pend)
{
  const unsigned char *p = (const unsigned char *)ps;
  size_t avail = (size_t)((const unsigned char *)pend - p);
  unsigned c = p[0];
  /* Python str.isspace(): \t \n \v \f \r, the separators 0x1C-0x1F, space,
   * U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F,
   * U+3000 (checked against CPython 3.11 over all code points). */
  if (c < 0x80) return ((c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20)) ? 1 : 0;
  if (c == 0xC2 && avail >= 2) return (p[1] == 0x85 || p[1] == 0xA0) ? 2 : 0;
  if (c == 0xE1 && avail >= 3) return (p[1] == 0x9A && p[2] == 0x80) ? 3 : 0;
  if (c == 0xE2 && avail >= 3) {
    if (p[1] == 0x80)
      return (p[2] <= 0x8A || p[2] == 0xA8 || p[2] == 0xA9 || p[2] == 0xAF) ? 3 : 0;
    return (p[1] == 0x81 && p[2] == 0x9F) ? 3 : 0;
  }
  if (c == 0xE3 && avail >= 3) return (p[1] == 0x80 && p[2] == 0x80) ? 3 : 0;
  return 0;
}

void tok__nfkc_init(struct tok_nfkc *n)
{
  memset(n, 0, sizeof *n);
}

void tok__nfkc_fini(struct tok_nfkc *n)
{
  if (!n) return;
  jp_free(n->buf);
  jp_free(n->map);
  jp_free(n->u32);
  memset(n, 0, sizeof *n);
}

/* Room for `extra` more bytes plus the terminating NUL. */
static int nfkc_reserve(struct tok_nfkc *n, size_t extra)
{
  size_t need = n->len + extra + 1;
  if (need <= n->cap) return 0;
  size_t cap_b = n->cap, cap_m = n->cap;
  int rc = jp_grow((void **)&n->buf, &cap_b, need, 1, 0);
  if (rc < 0) return rc;
  rc = jp_grow((void **)&n->map, &cap_m, need, sizeof *n->map, 0);
  if (rc < 0) {
    /* buf grew, map did not: keep the smaller capacity so both stay valid. */
    n->cap = cap_b < cap_m ? cap_b : cap_m;
    if (n->cap < n->len + 1) n->cap = n->len + 1;
    return rc;
  }
  n->cap = cap_b < cap_m ? cap_b : cap_m;
  return 0;
}

static inline void nfkc_put(struct tok_nfkc *n, const char *b, size_t k, uint32_t orig)
{
  memcpy(n->buf + n->len, b, k);
  for (size_t i = 0; i < k; i++) n->map[n->len + i] = orig;
  n->len += k;
}

/* Normalise one segment that may change (the slow path). */
static int nfkc_segment(struct tok_nfkc *n, const char *s, size_t k, uint32_t orig)
{
  for (;;) {
    utf8proc_ssize_t m = utf8proc_decompose((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)k,
                                            (utf8proc_int32_t *)n->u32,
                                            (utf8proc_ssize_t)n->u32_cap, NFKC_OPTS);
    if (m < 0)
      return jp_err(JP_EINTERNAL, "utf8proc: %s", utf8proc_errmsg(m));
    if ((size_t)m > n->u32_cap) {
      int rc = jp_grow((void **)&n->u32, &n->u32_cap, (size_t)m, sizeof *n->u32, 0);
      if (rc < 0) return rc;
      continue;
    }
    utf8proc_ssize_t b = utf8proc_reencode((utf8proc_int32_t *)n->u32, m, NFKC_OPTS);
    if (b < 0) return jp_err(JP_EINTERNAL, "utf8proc: %s", utf8proc_errmsg(b));
    int rc = nfkc_reserve(n, (size_t)b);
    if (rc < 0) return rc;
    nfkc_put(n, (const char *)n->u32, (size_t)b, orig);
    return 0;
  }
}

int tok__nfkc(struct tok_nfkc *n, const char *str, size_t len, uint32_t base)
{
  pthread_once(&g_once, tables_build);
  n->len = 0;
  /* NFKC mostly keeps or shrinks Japanese text; expansions grow on demand. */
  int rc = nfkc_reserve(n, len);
  if (rc < 0) return rc;
  if (n->u32_cap == 0) {
    rc = jp_grow((void **)&n->u32, &n->u32_cap, DECOMP_MAX * 4, sizeof *n->u32, 0);
    if (rc < 0) return rc;
  }
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < len) {
    /* ASCII run: every byte but the last is a segment of its own (the last
     * may take combining marks that follow it). */
    if (s[i] < 0x80) {
      size_t r = i + 1;
      while (r < len && s[r] < 0x80) r++;
      if (r - 1 > i) {
        rc = nfkc_reserve(n, r - 1 - i);
        if (rc < 0) return rc;
        memcpy(n->buf + n->len, s + i, r - 1 - i);
        for (size_t k = i; k < r - 1; k++) n->map[n->len + k - i] = base + (uint32_t)k;
        n->len += r - 1 - i;
        i = r - 1;
      }
    }
    size_t k;
    uint32_t cp = tok__utf8_decode(s + i, &k);
    int simple = cp < 0x80 || !bit_get(g_decomp, cp);
    size_t j = i + k;
    while (j < len) {
      size_t k2;
      uint32_t cp2 = tok__utf8_decode(s + j, &k2);
      if (cp2 < 0x80 || !bit_get(g_unsafe, cp2)) break;
      simple = 0;
      j += k2;
    }
    if (simple) {
      rc = nfkc_reserve(n, k);
      if (rc < 0) return rc;
      nfkc_put(n, str + i, k, base + (uint32_t)i);
    } else {
      rc = nfkc_segment(n, str + i, j - i, base + (uint32_t)i);
      if (rc < 0) return rc;
    }
    i = j;
  }
  n->buf[n->len] = '\0';
  return 0;
}
