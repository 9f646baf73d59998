/* cmd_add.c: `japlaid add` -- add (or replace) documents in an index with
 * no rebuild (index/build.h jp_index_add): split as the index was built,
 * encode, compress against the index's codebook, one synced commit per
 * batch. Prints one JSON line with the counts. */
#include "cli.h"
#include "index/build.h"
#include "util/err.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char *const usage_text =
  "usage: japlaid add --index DIR --corpus FILE [--model DIR] [--skip-bad-lines]\n"
  "                   [--threads N]\n"
  "\n"
  "Adds the documents of FILE (JSONL or TSV, as `japlaid index`) to the index;\n"
  "a document whose id is already indexed is replaced (all of its passages).\n"
  "Long documents are split as the index was built. Each batch is committed\n"
  "(fsync'ed) before the next is read. The model defaults to the one the index\n"
  "was built with; another model is refused.\n"
  "Prints {\"documents\",\"passages\",\"embeddings\",\"bad_lines\"} on stdout.\n";

int cmd_add(int argc, char **argv)
{
  struct jp_index_add_opts ao = {0};
  struct jp_index_add_report rep;
  struct jp_store_opts so;
  struct jp_model_opts mo;
  const char *index_dir = NULL, *model_dir = NULL;
  jp_store *s = NULL;
  jp_model *m = NULL;
  long v;
  int rc;

  jp_store_opts_default(&so);
  jp_model_opts_default(&mo);
  ao.progress = stderr;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage_text, stdout);
      return CLI_OK;
    } else if (!strcmp(a, "--index") && val) {
      index_dir = argv[++i];
    } else if (!strcmp(a, "--corpus") && val) {
      ao.corpus_path = argv[++i];
    } else if (!strcmp(a, "--model") && val) {
      model_dir = argv[++i];
    } else if (!strcmp(a, "--skip-bad-lines")) {
      ao.skip_bad = 1;
    } else if (!strcmp(a, "--threads")) {
      if (cli_parse_int("add", a, val, 1, 1024, &v)) return CLI_USAGE;
      mo.n_threads = ao.n_threads = (int)v;
      i++;
    } else {
      return cli_usage_error("add", "unknown option %s (or it needs a value)", a);
    }
  }
  if (!index_dir || !ao.corpus_path)
    return cli_usage_error("add", "--index and --corpus are required");
  if ((rc = jp_index_open_with_model(index_dir, model_dir, &so, &mo, &s, &m)) < 0)
    return cli_fail("add", rc);
  rc = jp_index_add(s, m, &ao, &rep);
  if (rc == 0)
    printf("{\"documents\":%" PRIu64 ",\"passages\":%" PRIu64 ",\"embeddings\":%" PRIu64
           ",\"bad_lines\":%" PRIu64 "}\n", rep.n_docs, rep.n_passages, rep.n_embeddings,
           rep.n_bad_lines);
  else
    fprintf(stderr, "japlaid add: %" PRIu64 " documents were committed before the error\n",
            rep.n_docs);
  jp_model_close(m);
  jp_store_close(s);
  return rc < 0 ? cli_fail("add", rc) : CLI_OK;
}
