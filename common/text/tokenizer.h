/* tokenizer.h: JaColBERTv2's tokenizer, exactly as HF BertJapaneseTokenizer
 * (NFKC + MeCab + WordPiece) followed by ColBERT's query/document framing.
 *
 * Index and queries must agree on ids token for token, so every step follows
 * shared/reference/model.md §2 and plaid.md §1.3-1.4: literal special-token
 * strings ("[SEP]" typed in the text) stay single tokens; each other chunk is
 * NFKC-normalised (utf8proc), cut into MeCab surfaces, and WordPiece'd
 * (greedy longest match, "##" continuations, a word of more than 100 code
 * points or with an unmatchable position becomes one [UNK]).
 *
 * Objects:
 *   jp_vocab   vocab.txt, immutable after load, shared by all threads.
 *   jp_tok     vocab + MeCab model + ColBERT settings; immutable, shared.
 *   jp_tok_ctx per-thread state (MeCab tagger and lattice, scratch buffers).
 *              A ctx is used by one thread at a time; create one per thread.
 *
 * Allocation: create functions allocate; tokenising writes into caller
 * buffers and reuses the ctx's scratch (no allocation once warm, except when
 * a text is longer than any seen before on that ctx).
 *
 * Bad input: invalid UTF-8 and NUL bytes give JP_EINVAL naming the byte
 * offset; a text over opts.max_text_bytes gives JP_ETOOBIG; empty text is
 * valid (a query of only [CLS] [Q] [SEP] + [MASK]s, a doc of
 * [CLS] [D] [SEP]). */
#ifndef JP_TOKENIZER_H
#define JP_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>

/* ---- vocabulary --------------------------------------------------------- */

typedef struct jp_vocab jp_vocab;

/* Load vocab.txt: one token per line, id = line number (0-based). Only the
 * line terminator ("\n", or "\r\n") is removed -- never other whitespace: id
 * 15 of the JaColBERT vocab is a single space. Fails with JP_EINVAL naming
 * the token when [PAD] [UNK] [CLS] [SEP] or [MASK] is missing, and on
 * duplicate entries or invalid UTF-8. */
int  jp_vocab_load(const char *path, jp_vocab **out);
void jp_vocab_free(jp_vocab *v);                          /* NULL is a no-op */
int  jp_vocab_size(const jp_vocab *v);
/* Id of the exact token string, or -1. */
int32_t jp_vocab_id(const jp_vocab *v, const char *tok, size_t len);
/* Token string of an id (NUL-terminated, owned by v), or NULL if out of range. */
const char *jp_vocab_token(const jp_vocab *v, int32_t id);

/* The five special ids, looked up by name at load. */
struct jp_special_ids {
  int32_t pad, unk, cls, sep, mask;
};
const struct jp_special_ids *jp_vocab_special(const jp_vocab *v);

/* ---- tokenizer ---------------------------------------------------------- */

/* Which MeCab dictionary family is loaded (decides the lite-compat default). */
enum jp_dict_kind { JP_DICT_UNIDIC = 0, JP_DICT_IPADIC = 1, JP_DICT_OTHER = 2 };

struct jp_tok_opts {
  /* MeCab dictionary directory. NULL: $JAPLAID_MECAB_DICDIR if set, else
   * Debian's UniDic (/var/lib/mecab/dic/unidic) if installed, else IPAdic
   * (/var/lib/mecab/dic/ipadic-utf8). */
  const char *mecab_dicdir;
  /* unidic-lite compatibility: keep runs of ASCII letters, and runs of ASCII
   * digits, as single MeCab words (unidic-lite deleted the one-character
   * letter/digit entries that make UniDic 3.x split "iPhone" into i|Phone).
   * -1 = on for UniDic, off otherwise; 0 = off; 1 = on. */
  int lite_compat;
  int query_maxlen;             /* total query tokens incl. [CLS] [Q] [SEP] + [MASK] pad; 32 */
  int doc_maxlen;               /* max total doc tokens incl. [CLS] [D] [SEP]; 256 */
  int32_t q_marker_id;          /* id of query_token_id ("[unused0]" -> 5) */
  int32_t d_marker_id;          /* id of doc_token_id ("[unused1]" -> 6) */
  int attend_to_mask_tokens;    /* 0: [MASK] padding gets attention 0 */
  int mask_punctuation;         /* 1: drop doc vectors of ASCII punctuation ids */
  size_t max_text_bytes;        /* per-text input limit; 0 = 4 MiB */
};

/* Defaults of JaColBERTv2 (markers 5/6, 32/256, no mask attention,
 * punctuation masked). */
void jp_tok_opts_default(struct jp_tok_opts *o);

typedef struct jp_tok jp_tok;
typedef struct jp_tok_ctx jp_tok_ctx;

/* The tokenizer takes ownership of `vocab` (freed by jp_tok_destroy, also on
 * failure). Fails with JP_EINVAL when a marker id is out of range, with
 * JP_ENOTFOUND when the dictionary directory is missing. */
int  jp_tok_create(jp_vocab *vocab, const struct jp_tok_opts *opts, jp_tok **out);
void jp_tok_destroy(jp_tok *t);
const jp_vocab *jp_tok_vocab(const jp_tok *t);
const struct jp_tok_opts *jp_tok_get_opts(const jp_tok *t);
enum jp_dict_kind jp_tok_dict_kind(const jp_tok *t);
const char *jp_tok_dicdir(const jp_tok *t);     /* the directory actually used */
int  jp_tok_lite_compat(const jp_tok *t);       /* resolved 0/1 */

int  jp_tok_ctx_create(const jp_tok *t, jp_tok_ctx **out);
void jp_tok_ctx_destroy(jp_tok_ctx *c);

/* BertJapaneseTokenizer.tokenize + convert_tokens_to_ids: WordPiece ids of
 * the text, no [CLS]/[SEP]. Writes min(n, cap) ids; *n_out = n (all of
 * them, so n_out > cap tells the caller it truncated). `offsets`, if not
 * NULL, receives for each written id the byte offset in `text` of the
 * character where its MeCab word starts (for passage splitting). */
int jp_tok_ids(jp_tok_ctx *c, const char *text, size_t len, int32_t *ids, size_t cap,
               size_t *n_out, uint32_t *offsets);

/* MeCab surfaces (after NFKC and lite-compat), for inspection and tests:
 * calls fn(ud, surface, len) per word, in order. */
int jp_tok_words(jp_tok_ctx *c, const char *text, size_t len,
                 void (*fn)(void *ud, const char *surface, size_t len), void *ud);

/* ColBERT query (plaid.md §1.3): ids[0..query_maxlen) =
 * [CLS] [Q] t1..tn [SEP] [MASK]... with n <= query_maxlen - 3 (longer
 * queries are cut); attn[i] = 1 for [CLS] [Q] t.. [SEP], and for the [MASK]
 * padding only when attend_to_mask_tokens. *n_real (may be NULL) =
 * n + 3. */
int jp_tok_query(jp_tok_ctx *c, const char *text, size_t len, int32_t *ids, uint8_t *attn,
                 int *n_real);

/* ColBERT document (plaid.md §1.4): ids[0..*n_out) = [CLS] [D] t1..tn [SEP]
 * with n <= doc_maxlen - 3; keep[i] = 0 for ids in the punctuation
 * skiplist (when mask_punctuation), else 1. Every real token is attended.
 * ids/keep need room for doc_maxlen entries. *truncated (may be NULL) is
 * set when the text had more tokens than fit. */
int jp_tok_doc(jp_tok_ctx *c, const char *text, size_t len, int32_t *ids, uint8_t *keep,
               int *n_out, int *truncated);

/* 1 if `id` is in the ASCII-punctuation skiplist (the first token id of each
 * character of Python's string.punctuation). */
int jp_tok_is_skiplisted(const jp_tok *t, int32_t id);

#endif /* JP_TOKENIZER_H */
