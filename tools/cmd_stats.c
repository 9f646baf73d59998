/* cmd_stats.c: `japlaid stats` -- what an index holds and what it costs on
 * disk, as one JSON line. */
#include "cli.h"
#include "index/store.h"
#include "util/err.h"
#include "util/json.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const usage_text =
  "usage: japlaid stats --index DIR\n"
  "\n"
  "Prints one JSON line: passages, documents, embeddings, bytes per column\n"
  "family (live SST files + unflushed memtables), total bytes, bytes per\n"
  "embedding (all families), centroids, nbits, dim, model (name, identity,\n"
  "path), partition, and codebook_drift: mean residual norm of vectors added\n"
  "after the build over that of the build (1 = the codebook fits new data as\n"
  "well as the original; null until something was added).\n";

int cmd_stats(int argc, char **argv)
{
  struct jp_store_opts so;
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
    } else if (!strcmp(argv[i], "--index") && i + 1 < argc) {
      index_dir = argv[++i];
    } else {
      return cli_usage_error("stats", "unknown option %s (or it needs a value)", argv[i]);
    }
  }
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
