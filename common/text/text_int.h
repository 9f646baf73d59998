/* text_int.h: internals shared by the files of common/text/ (and reached by
 * its unit tests). Not part of the public API: nothing outside common/text/
 * and tests/unit/text/ includes it.
 *
 *   vocab.c      jp_vocab + the byte-slice hash used by WordPiece
 *   normalize.c  UTF-8 validation, NFKC with a map back to input offsets,
 *                Python str.isspace()
 *   tokenizer.c  MeCab, special tokens, WordPiece, ColBERT framing
 *   split.c      passage splitting
 *
 * Thread-safety and allocation are stated per function. */
#ifndef JP_TEXT_INT_H
#define JP_TEXT_INT_H
#include <stddef.h>
#include <stdint.h>

#include "text/tokenizer.h"

/* HF BertJapaneseTokenizer's WordpieceTokenizer.max_input_chars_per_word:
 * a word of more code points than this becomes one [UNK]. */
#define TOK_MAX_WORD_CHARS 100

/* ---- tokenizer.c ------------------------------------------------------ */

/* The input checks every tokenising call makes: NULL with a length, size
 * over opts.max_text_bytes (JP_ETOOBIG), invalid UTF-8 or NUL (JP_EINVAL
 * with the byte offset). */
int tok__validate(const jp_tok *t, const char *text, size_t len);

/* The tokenizer a ctx belongs to. */
const jp_tok *tok__ctx_tok(const jp_tok_ctx *c);

/* ---- vocab.c ------------------------------------------------------------ */

/* Id of a WordPiece candidate: the exact vocab entry `s[0..len)` when
 * cont == 0, or "##" + `s[0..len)` when cont == 1 (so continuation pieces
 * need no copy with the prefix). -1 when absent. Pure lookup; any thread. */
int32_t tok__vocab_find(const jp_vocab *v, int cont, const char *s, size_t len);

/* Longest key in bytes that tok__vocab_find can match for cont 0 / 1, so
 * WordPiece never probes a longer substring. */
size_t tok__vocab_max_key(const jp_vocab *v, int cont);

/* ---- normalize.c ---------------------------------------------------------- */

/* Strict UTF-8 check of s[0..len): no overlong forms, no surrogates, nothing
 * above U+10FFFF, and no NUL byte (MeCab and C strings stop at NUL, Python
 * would not: rejecting keeps the two from disagreeing). JP_EINVAL naming the
 * byte offset. Any thread, no allocation. */
int tok__utf8_check(const char *s, size_t len);
/* The same check without recording an error: offset of the first bad byte,
 * or -1 when s[0..len) is valid. */
long tok__utf8_find_bad(const char *s, size_t len);

/* Decode one code point of already-validated UTF-8 at s; *n = its bytes. */
static inline uint32_t tok__utf8_decode(const unsigned char *s, size_t *n)
{
  uint32_t c = s[0];
  if (c < 0x80) { *n = 1; return c; }
  if (c < 0xE0) { *n = 2; return ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu); }
  if (c < 0xF0) {
    *n = 3;
    return ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
  }
  *n = 4;
  return ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) |
         (s[3] & 0x3Fu);
}

/* Bytes of the Python-whitespace character (str.isspace()) at p, or 0.
 * p < end; the text is valid UTF-8. */
size_t tok__pyspace_len(const char *p, const char *end);

/* Output of NFKC: the normalised bytes plus, for every output byte, the byte
 * offset in the caller's original text of the input that produced it (the
 * start of the smallest independently-normalisable run of characters, which
 * is the character itself except for combining sequences). Owned by a ctx;
 * one thread at a time. Buffers grow and are kept (freed by _fini). */
struct tok_nfkc {
  char *buf;            /* normalised bytes, NUL-terminated */
  uint32_t *map;        /* map[i] = original offset of output byte i */
  size_t len;           /* bytes in buf */
  size_t cap;           /* capacity of buf and map, in bytes/entries */
  int32_t *u32;         /* utf8proc scratch (code points, then re-encoded bytes) */
  size_t u32_cap;       /* entries in u32 */
};
void tok__nfkc_init(struct tok_nfkc *n);
void tok__nfkc_fini(struct tok_nfkc *n);
/* Replace n's content with NFKC(s[0..len)); map entries are base + offset
 * within s. s is validated UTF-8 without NUL. 0 or JP_ENOMEM. The result is
 * byte-identical to utf8proc_map(STABLE|COMPOSE|COMPAT) of the whole input
 * (tested), computed per safe segment so that the map is exact and no
 * allocation happens once the buffers are large enough. One exception, on
 * purpose: utf8proc 2.8 drops U+11A7 after a Hangul LV syllable (it treats
 * the T base as a T jamo); Python keeps it, and so do we. */
int tok__nfkc(struct tok_nfkc *n, const char *s, size_t len, uint32_t base);

/* 1 if a normalisation segment may start at code point cp: nothing before
 * cp can reorder with or compose into cp's decomposition. Exposed for the
 * tests. Any thread (the table behind it is built once, under pthread_once). */
int tok__nfkc_safe_start(uint32_t cp);

#endif /* JP_TEXT_INT_H */
