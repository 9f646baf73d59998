/* split.h: cutting long documents into passages, measured in the model's
 * own tokens (RAGatouille measures with another tokenizer, so its passages
 * overflow or underfill doc_maxlen).
 *
 * A passage holds at most `max_tokens` WordPiece tokens (the caller passes
 * doc_maxlen - 3, leaving room for [CLS] [D] [SEP]). Cuts fall at sentence
 * ends (。 ！ ？ ! ? and newlines) where possible, else at a MeCab word
 * boundary; consecutive passages overlap by about `overlap_tokens` tokens of
 * whole sentences (RAGatouille: min(64, max/4)). Texts that fit come back
 * as one span covering the whole text. Spans are byte ranges of the input,
 * so a passage's content is exactly the user's text, never re-normalised.
 *
 * Thread-safety: as the ctx. Allocation: *out is allocated with jp_malloc
 * (jp_free it). */
#ifndef JP_SPLIT_H
#define JP_SPLIT_H
#include <stddef.h>

#include "text/tokenizer.h"

struct jp_span {
  size_t off;   /* byte offset in the text */
  size_t len;   /* bytes */
};

int jp_split_passages(jp_tok_ctx *c, const char *text, size_t len, int max_tokens,
                      int overlap_tokens, struct jp_span **out, int *n_out);

#endif /* JP_SPLIT_H */
