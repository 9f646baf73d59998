/* pbjson.c: see pbjson.h. */
#include "rpc/pbjson.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

#define P(x)                        \
  do {                              \
    if ((rc = (x)) < 0) return rc;  \
  } while (0)

int jp_pbjson_str(struct jp_buf *b, const char *s)
{
  return jp_buf_json_str(b, s ? s : "", s ? strlen(s) : 0);
}

int jp_pbjson_double(struct jp_buf *b, double v)
{
  if (!isfinite(v)) return jp_buf_puts(b, "null");
  return jp_buf_printf(b, "%.17g", v);
}

int jp_pbjson_json_text(struct jp_buf *b, const char *m)
{
  if (!m || !*m) return jp_buf_puts(b, "null");
  json_error_t e;
  json_t *j = json_loads(m, JSON_DECODE_ANY, &e);
  int ok = j != NULL;
  json_decref(j);
  return ok ? jp_buf_puts(b, m) : jp_pbjson_str(b, m);
}

int jp_pbjson_coverage(struct jp_buf *b, const Japlaid__V1__Coverage *c)
{
  int rc;
  P(jp_buf_printf(b, "{\"partitions_total\":%u,\"partitions_answered\":%u,\"failed\":[",
                  c ? c->partitions_total : 0, c ? c->partitions_answered : 0));
  for (size_t i = 0; c && i < c->n_failed; i++) {
    const Japlaid__V1__PartitionFailure *f = c->failed[i];
    P(jp_buf_printf(b, "%s{\"partition\":%u,\"reason\":", i ? "," : "", f->partition));
    P(jp_pbjson_str(b, f->reason));
    P(jp_buf_printf(b, ",\"code\":%d,\"address\":", f->code));
    P(jp_pbjson_str(b, f->address));
    P(jp_buf_putc(b, '}'));
  }
  return jp_buf_puts(b, "]}");
}

int jp_pbjson_partition_stats(struct jp_buf *b, const Japlaid__V1__PartitionStats *s)
{
  int rc;
  P(jp_buf_printf(b, "{\"partition_id\":%u,\"n_partitions\":%u,\"model_name\":", s->partition_id,
                  s->n_partitions));
  P(jp_pbjson_str(b, s->model_name));
  P(jp_buf_puts(b, ",\"model_identity\":"));
  P(jp_pbjson_str(b, s->model_identity));
  P(jp_buf_puts(b, ",\"codebook_hash\":"));
  P(jp_pbjson_str(b, s->codebook_hash));
  P(jp_buf_printf(b, ",\"dim\":%u,\"nbits\":%u,\"ncentroids\":%u,\"n_passages\":%llu,"
                  "\"n_documents\":%llu,\"n_embeddings\":%llu,\"total_bytes\":%llu,"
                  "\"bytes_per_embedding\":",
                  s->dim, s->nbits, s->ncentroids, (unsigned long long)s->n_passages,
                  (unsigned long long)s->n_documents, (unsigned long long)s->n_embeddings,
                  (unsigned long long)s->total_bytes));
  P(jp_pbjson_double(b, s->bytes_per_embedding));
  P(jp_buf_puts(b, ",\"codebook_drift\":"));
  P(jp_pbjson_double(b, s->codebook_drift));
  P(jp_buf_puts(b, ",\"column_families\":{"));
  for (size_t i = 0; i < s->n_column_families; i++) {
    if (i) P(jp_buf_putc(b, ','));
    P(jp_pbjson_str(b, s->column_families[i]->name));
    P(jp_buf_printf(b, ":%llu", (unsigned long long)s->column_families[i]->bytes));
  }
  P(jp_buf_puts(b, "},\"settings\":"));
  P(jp_pbjson_json_text(b, s->settings_json));
  P(jp_buf_puts(b, ",\"uptime_s\":"));
  P(jp_pbjson_double(b, s->uptime_s));
  return jp_buf_printf(b, ",\"requests_total\":%llu}", (unsigned long long)s->requests_total);
}
