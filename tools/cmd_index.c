/* cmd_index.c: `japlaid index` -- build an index from a corpus with one
 * process (index/build.h). Progress and phase lines go to stderr; one JSON
 * summary line goes to stdout. */
#include "cli.h"
#include "index/build.h"
#include "util/err.h"
#include "util/json.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

static const char *const usage_text =
  "usage: japlaid index --model DIR --corpus FILE --index DIR [--nbits N]\n"
  "                     [--max-document-length N] [--no-split] [--overwrite]\n"
  "                     [--skip-bad-lines] [--threads N] [--seed S] [--kmeans-iters N]\n"
  "\n"
  "Builds a PLAID index of a corpus: JSONL {\"id\",\"text\",\"metadata\"} or TSV\n"
  "id<TAB>text / id<TAB>title<TAB>text, one document per line.\n"
  "  --nbits N                residual bits per dimension: 1, 2, 4 or 8 (default by\n"
  "                           size: 8 below 5,000 passages, 4 below 10,000, else 2)\n"
  "  --max-document-length N  tokens per passage incl. [CLS] [D] [SEP] (default: the\n"
  "                           model's doc_maxlen, 256 for JaColBERTv2); longer\n"
  "                           documents are split with an overlap of min(64, N/4)\n"
  "  --no-split               one passage per document, truncated to that length\n"
  "  --overwrite              replace an existing index (atomically, at the end)\n"
  "  --skip-bad-lines         skip (and count) malformed lines instead of failing\n"
  "  --threads N              threads (default: all cores)\n"
  "  --seed S                 sampling and k-means seed (default 123)\n"
  "Prints one JSON line with the counts and phase times on stdout.\n";

int cmd_index(int argc, char **argv)
{
  struct jp_index_build_opts o;
  struct jp_index_build_report r;
  struct jp_buf b;
  long v;
  int rc;

  jp_index_build_opts_default(&o);
  o.progress = stderr;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage_text, stdout);
      return CLI_OK;
    } else if (!strcmp(a, "--model")) {
      if (!val) return cli_usage_error("index", "--model needs a value");
      o.model_dir = argv[++i];
    } else if (!strcmp(a, "--corpus")) {
      if (!val) return cli_usage_error("index", "--corpus needs a value");
      o.corpus_path = argv[++i];
    } else if (!strcmp(a, "--index")) {
      if (!val) return cli_usage_error("index", "--index needs a value");
      o.index_dir = argv[++i];
    } else if (!strcmp(a, "--nbits")) {
      if (cli_parse_int("index", a, val, 1, 8, &v)) return CLI_USAGE;
      if (v != 1 && v != 2 && v != 4 && v != 8)
        return cli_usage_error("index", "--nbits must be 1, 2, 4 or 8, got %ld", v);
      o.nbits = (int)v;
      i++;
    } else if (!strcmp(a, "--max-document-length")) {
      if (cli_parse_int("index", a, val, 4, 65536, &v)) return CLI_USAGE;
      o.max_document_length = (int)v;
      i++;
    } else if (!strcmp(a, "--threads")) {
      if (cli_parse_int("index", a, val, 1, 1024, &v)) return CLI_USAGE;
      o.n_threads = (int)v;
      i++;
    } else if (!strcmp(a, "--kmeans-iters")) {
      if (cli_parse_int("index", a, val, 1, 1000, &v)) return CLI_USAGE;
      o.kmeans_iters = (int)v;
      i++;
    } else if (!strcmp(a, "--seed")) {
      if (cli_parse_int("index", a, val, 0, LONG_MAX, &v)) return CLI_USAGE;
      o.seed = (uint64_t)v;
      i++;
    } else if (!strcmp(a, "--no-split")) {
      o.no_split = 1;
    } else if (!strcmp(a, "--overwrite")) {
      o.overwrite = 1;
    } else if (!strcmp(a, "--skip-bad-lines")) {
      o.skip_bad = 1;
    } else {
      return cli_usage_error("index", "unknown option %s", a);
    }
  }
  if (!o.model_dir || !o.corpus_path || !o.index_dir)
    return cli_usage_error("index", "--model, --corpus and --index are required");

  rc = jp_index_build(&o, &r);
  if (rc < 0) return cli_fail("index", rc);
  jp_buf_init(&b, 0);
  rc = jp_buf_puts(&b, "{\"index\":");
  if (!rc) rc = jp_buf_json_str(&b, o.index_dir, strlen(o.index_dir));
  if (!rc)
    rc = jp_buf_printf(&b,
                       ",\"documents\":%" PRIu64 ",\"passages\":%" PRIu64 ",\"embeddings\":%" PRIu64
                       ",\"bad_lines\":%" PRIu64 ",\"split_documents\":%" PRIu64
                       ",\"centroids\":%d,\"nbits\":%d,\"max_document_length\":%d"
                       ",\"sampled_passages\":%" PRIu64 ",\"avg_doclen\":%.2f,\"kmeans_iters\":%d"
                       ",\"seconds\":{\"scan\":%.3f,\"sample\":%.3f,\"kmeans\":%.3f,\"codec\":%.3f"
                       ",\"encode\":%.3f,\"finish\":%.3f,\"total\":%.3f}}\n",
                       r.n_docs, r.n_passages, r.n_embeddings, r.n_bad_lines, r.n_split_docs,
                       r.ncentroids, r.nbits, r.max_document_length, r.n_sample, r.avg_doclen,
                       r.kmeans_iters, r.t_scan, r.t_sample, r.t_kmeans, r.t_codec, r.t_encode,
                       r.t_finish, r.t_total);
  if (!rc) fwrite(b.data, 1, b.len, stdout);
  jp_buf_fini(&b);
  return rc ? cli_fail("index", rc) : CLI_OK;
}
