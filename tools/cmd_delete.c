/* cmd_delete.c: `japlaid delete` -- remove documents from an index by id
 * (one synced commit). Prints {"deleted": n, "not_found": m}. */
#include "cli.h"
#include "index/store.h"
#include "util/err.h"
#include "util/mem.h"

#include <stdio.h>
#include <string.h>

static const char *const usage_text =
  "usage: japlaid delete --index DIR --doc-ids a,b,...\n"
  "\n"
  "Deletes the documents (all of their passages) in one durable commit.\n"
  "Unknown ids are not an error: they are counted as not_found.\n"
  "Prints {\"deleted\":n,\"not_found\":m} on stdout.\n";

int cmd_delete(int argc, char **argv)
{
  struct jp_store_opts so;
  const char *index_dir = NULL;
  char **ids = NULL;
  int n = 0, cap = 0, deleted = 0, rc = 0;
  jp_store *s = NULL;

  jp_store_opts_default(&so);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage_text, stdout);
      goto out;
    } else if (!strcmp(a, "--index") && val) {
      index_dir = argv[++i];
    } else if (!strcmp(a, "--doc-ids") && val) {
      const char *p = argv[++i];
      for (;;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len) {
          if (n == cap) {
            char **nv = jp_realloc(ids, (size_t)(cap ? cap * 2 : 8) * sizeof *nv);
            if (!nv) { rc = JP_ENOMEM; goto out; }
            ids = nv;
            cap = cap ? cap * 2 : 8;
          }
          if (!(ids[n] = jp_strndup(p, len))) { rc = JP_ENOMEM; goto out; }
          n++;
        }
        if (!c) break;
        p = c + 1;
      }
    } else {
      for (int j = 0; j < n; j++) jp_free(ids[j]);
      jp_free(ids);
      return cli_usage_error("delete", "unknown option %s (or it needs a value)", a);
    }
  }
  if (!index_dir || n == 0) {
    for (int j = 0; j < n; j++) jp_free(ids[j]);
    jp_free(ids);
    return cli_usage_error("delete", "--index and --doc-ids are required");
  }
  if ((rc = jp_store_open(index_dir, &so, &s)) < 0) goto out;
  if ((rc = jp_store_delete(s, (const char *const *)ids, NULL, n, &deleted)) < 0) goto out;
  /* Ids given twice count once. */
  {
    int distinct = 0;
    for (int i = 0; i < n; i++) {
      int seen = 0;
      for (int j = 0; j < i && !seen; j++) seen = !strcmp(ids[i], ids[j]);
      distinct += !seen;
    }
    printf("{\"deleted\":%d,\"not_found\":%d}\n", deleted, distinct - deleted);
  }
out:
  jp_store_close(s);
  for (int j = 0; j < n; j++) jp_free(ids[j]);
  jp_free(ids);
  return rc < 0 ? cli_fail("delete", rc) : CLI_OK;
}
