/* cmd_stats.c: `japlaid stats` -- what an index holds and what it costs on
 * disk, as one JSON line.
 *
 * With --server HOST:PORT it prints the cluster's stats as one JSON line
 * instead (japlaid.v1.Search/Stats, rendered as the coordinator's
 * GET /v1/stats: totals, coverage, every partition's shard stats through one
 * replica, and every replica's state). */
#include "cli.h"
#include "remote.h"
#include "index/store.h"
#include "util/err.h"
#include "util/json.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const usage_text =
  "usage: japlaid stats --index DIR\n"
  "       japlaid stats --server HOST:PORT [--deadline-ms MS]\n"
  "\n"
  "Prints one JSON line: passages, documents, embeddings, bytes per column\n"
  "family (live SST files + unflushed memtables), total bytes, bytes per\n"
  "embedding (all families), centroids, nbits, dim, model (name, identity,\n"
  "path), partition, and codebook_drift: mean residual norm of vectors added\n"
  "after the build over that of the build (1 = the codebook fits new data as\n"
  "well as the original; null until something was added).\n"
  "With --server (a coordinator's gRPC address): the cluster's stats, as the\n"
  "coordinator's GET /v1/stats (model, totals, coverage, partitions, replicas).\n";

static int stats_remote(const struct remote_opts *ro)
{
  remote *r;
  ProtobufCMessage *m;
  Japlaid__V1__StatsRequest req = JAPLAID__V1__STATS_REQUEST__INIT;
  struct jp_buf b;
  int rc;
  if ((rc = remote_open("stats", ro, REMOTE_READ_DEADLINE_MS, &r)) != 0) return rc;
  rc = remote_call(r, "Stats", &req.base, &japlaid__v1__stats_response__descriptor, &m);
  remote_close(r);
  if (rc) return rc;
  jp_buf_init(&b, 0);
  rc = remote_render_stats(&b, (const Japlaid__V1__StatsResponse *)m);
  if (!rc) rc = jp_buf_putc(&b, '\n');
  if (!rc) fwrite(b.data, 1, b.len, stdout);
  jp_buf_fini(&b);
  remote_free(m);
  return rc < 0 ? cli_fail("stats", rc) : CLI_OK;
}

int cmd_stats(int argc, char **argv)
{
  struct jp_store_opts so;
  struct remote_opts ro = {0};
  struct jp_store_stats st;
  const struct jp_store_meta *m;
  const char *index_dir = NULL;
  jp_store *s = NULL;
  struct jp_buf b;
  int rc;

  jp_store_opts_default(&so);
  so.read_only = 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      fputs(usage_text, stdout);
      return CLI_OK;
    } else if ((rc = remote_opt("stats", argc, argv, &i, &ro)) != 0) {
      if (rc == CLI_USAGE) return CLI_USAGE;
    } else if (!strcmp(argv[i], "--index") && i + 1 < argc) {
      index_dir = argv[++i];
    } else {
      return cli_usage_error("stats", "unknown option %s (or it needs a value)", argv[i]);
    }
  }
  if (ro.server) {
    if (index_dir) return cli_usage_error("stats", "--index and --server do not go together");
    return stats_remote(&ro);
  }
  if (ro.deadline_ms) return cli_usage_error("stats", "--deadline-ms needs --server");
  if (!index_dir) return cli_usage_error("stats", "--index is required");
  if ((rc = jp_store_open(index_dir, &so, &s)) < 0) return cli_fail("stats", rc);
  if ((rc = jp_store_get_stats(s, &st)) < 0) {
    jp_store_close(s);
    return cli_fail("stats", rc);
  }
  m = jp_store_get_meta(s);
  jp_buf_init(&b, 0);
  rc = jp_buf_printf(&b, "{\"passages\":%" PRIu64 ",\"documents\":%" PRIu64
                     ",\"embeddings\":%" PRIu64 ",\"bytes\":{", st.n_passages, st.n_docs,
                     st.n_embeddings);
  for (int i = 0; i < 5 && !rc; i++)
    rc = jp_buf_printf(&b, "%s\"%s\":%" PRIu64, i ? "," : "", jp_store_cf_names[i],
                       st.cf_bytes[i]);
  if (!rc)
    rc = jp_buf_printf(&b, "},\"total_bytes\":%" PRIu64 ",\"bytes_per_embedding\":%.2f"
                       ",\"centroids\":%d,\"nbits\":%d,\"dim\":%d,\"model\":{\"name\":",
                       st.total_bytes, st.bytes_per_embedding, st.ncentroids, st.nbits, st.dim);
  if (!rc) rc = jp_buf_json_str(&b, m->model_name, strlen(m->model_name));
  if (!rc) rc = jp_buf_puts(&b, ",\"identity\":");
  if (!rc) rc = jp_buf_json_str(&b, m->model_identity, strlen(m->model_identity));
  if (!rc) rc = jp_buf_puts(&b, ",\"path\":");
  if (!rc) rc = jp_buf_json_str(&b, m->model_path, strlen(m->model_path));
  if (!rc)
    rc = jp_buf_printf(&b, "},\"partition\":{\"id\":%u,\"count\":%u},\"codebook_drift\":",
                       m->partition_id, m->n_partitions);
  if (!rc) rc = isnan(st.codebook_drift) ? jp_buf_puts(&b, "null")
                                         : jp_buf_printf(&b, "%.4f", st.codebook_drift);
  if (!rc) rc = jp_buf_puts(&b, "}\n");
  if (!rc) fwrite(b.data, 1, b.len, stdout);
  jp_buf_fini(&b);
  jp_store_close(s);
  return rc < 0 ? cli_fail("stats", rc) : CLI_OK;
}
