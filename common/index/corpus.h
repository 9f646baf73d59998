/* corpus.h: reading a corpus to index.
 *
 * Formats (chosen by content: a line starting with '{' is JSONL):
 *   JSONL  {"id": "...", "text": "...", "metadata": {...}}  (id may be a
 *          string or an integer; metadata optional, must be an object)
 *   TSV    id<TAB>text, or id<TAB>title<TAB>text (indexed as title + " " + text)
 * Empty lines are skipped. A bad line (invalid JSON, missing id/text, wrong
 * types, invalid UTF-8, too few columns) is reported with file and line:
 * either the read fails (default) or, with skip_bad, it is skipped and
 * counted -- never silently dropped.
 *
 * Byte ranges: a reader can be limited to [begin, end) of the file for MPI
 * ranks; it starts at the first line beginning at or after `begin` (a line
 * that straddles `begin` belongs to the previous range) and stops after the
 * line that contains byte end-1. Line numbers stay true file line numbers
 * (computed by counting newlines before `begin`).
 *
 * Thread-safety: one reader per thread. Allocation: each record's strings
 * live until the next jp_corpus_next call. */
#ifndef JP_CORPUS_H
#define JP_CORPUS_H
#include <stddef.h>
#include <stdint.h>

struct jp_corpus_doc {
  const char *id;
  size_t id_len;
  const char *text;
  size_t text_len;
  const char *metadata_json;      /* compact JSON object, or NULL */
  uint64_t line;                  /* 1-based line number in the file */
};

struct jp_corpus_opts {
  int skip_bad;                   /* 1: skip bad lines (counted, logged); 0: fail */
  uint64_t begin, end;            /* byte range; end 0 = to EOF */
  size_t max_line_bytes;          /* 0: 64 MiB */
  int quiet;                      /* 1: count skipped lines without logging them
                                   * (a later pass over a file already reported) */
};

typedef struct jp_corpus jp_corpus;

int  jp_corpus_open(const char *path, const struct jp_corpus_opts *o, jp_corpus **out);
/* 1 = a document was read, 0 = end of range, < 0 = error (message names
 * file:line). */
int  jp_corpus_next(jp_corpus *c, struct jp_corpus_doc *doc);
uint64_t jp_corpus_bad_lines(const jp_corpus *c);
uint64_t jp_corpus_bytes_read(const jp_corpus *c);   /* for progress */
void jp_corpus_close(jp_corpus *c);

#endif /* JP_CORPUS_H */
