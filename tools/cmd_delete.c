/* cmd_delete.c: `japlaid delete` -- remove documents from an index by id
 * (one synced commit). Prints {"deleted": n, "not_found": m}.
 *
 * With --server HOST:PORT a coordinator deletes them from every replica of
 * the partitions that own them (japlaid.v1.Search/Delete, up to 1000 ids
 * per call); the output is the same. */
#include "cli.h"
#include "remote.h"
#include "index/store.h"
#include "rpc/limits.h"
#include "util/err.h"
#include "util/mem.h"

#include <stdio.h>
#include <string.h>

static const char *const usage_text =
  "usage: japlaid delete --index DIR --doc-ids a,b,...\n"
  "       japlaid delete --server HOST:PORT [--deadline-ms MS] --doc-ids a,b,...\n"
  "\n"
  "Deletes the documents (all of their passages) in one durable commit.\n"
  "Unknown ids are not an error: they are counted as not_found.\n"
  "Prints {\"deleted\":n,\"not_found\":m} on stdout.\n"
  "With --server (a coordinator's gRPC address) the cluster deletes them (every\n"
  "replica of the owning partitions); --deadline-ms MS: time allowed per call.\n";

/* Delete ids[0..n) through the coordinator; *deleted = documents that
 * existed. 0 or CLI_ERR (reported). */
static int delete_remote(const struct remote_opts *ro, char **ids, int n, int *deleted)
{
  remote *r;
  int ret;
  *deleted = 0;
  if ((ret = remote_open("delete", ro, REMOTE_READ_DEADLINE_MS, &r)) != 0) return ret;
  for (int g = 0; g < n && !ret; g += JP_RPC_MAX_DOCS_PER_WRITE) {
    Japlaid__V1__DeleteRequest req = JAPLAID__V1__DELETE_REQUEST__INIT;
    ProtobufCMessage *m;
    req.document_ids = ids + g;
    req.n_document_ids = (size_t)(n - g < JP_RPC_MAX_DOCS_PER_WRITE ? n - g
                                                                    : JP_RPC_MAX_DOCS_PER_WRITE);
    if ((ret = remote_call(r, "Delete", &req.base, &japlaid__v1__delete_response__descriptor,
                           &m)) != 0) {
      if (g) fprintf(stderr, "japlaid delete: the first %d ids were deleted before the error\n", g);
      break;
    }
    *deleted += (int)((const Japlaid__V1__DeleteResponse *)m)->n_deleted;
    remote_free(m);
  }
  remote_close(r);
  return ret;
}

int cmd_delete(int argc, char **argv)
{
  struct jp_store_opts so;
  struct remote_opts ro = {0};
  const char *index_dir = NULL;
  char **ids = NULL;
  int n = 0, cap = 0, deleted = 0, rc = 0;
  jp_store *s = NULL;

  jp_store_opts_default(&so);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    int ro_rc;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage_text, stdout);
      goto out;
    } else if ((ro_rc = remote_opt("delete", argc, argv, &i, &ro)) != 0) {
      if (ro_rc == CLI_USAGE) {
        for (int j = 0; j < n; j++) jp_free(ids[j]);
        jp_free(ids);
        return CLI_USAGE;
      }
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
  if (ro.server ? index_dir || n == 0 : !index_dir || n == 0 || ro.deadline_ms) {
    for (int j = 0; j < n; j++) jp_free(ids[j]);
    jp_free(ids);
    const char *why = ro.server ? "--server and --doc-ids are required (--index does not go "
                                  "with --server)"
                      : ro.deadline_ms && index_dir && n ? "--deadline-ms needs --server"
                                                         : "--index and --doc-ids are required";
    return cli_usage_error("delete", "%s", why);
  }
  if (ro.server) {
    if (delete_remote(&ro, ids, n, &deleted) != 0) {
      for (int j = 0; j < n; j++) jp_free(ids[j]);
      jp_free(ids);
      return CLI_ERR;
    }
  } else {
    if ((rc = jp_store_open(index_dir, &so, &s)) < 0) goto out;
    if ((rc = jp_store_delete(s, (const char *const *)ids, NULL, n, &deleted)) < 0) goto out;
  }
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
