/* pbjson.h: the wire API's messages as the JSON users read.
 *
 * The coordinator's HTTP API and the CLI's remote mode print the same
 * objects (coverage, a partition's stats); both render them here, so the
 * two outputs cannot drift apart. Each function appends one JSON value to
 * b (no newline) and returns 0 or JP_ENOMEM. */
#ifndef JP_RPC_PBJSON_H
#define JP_RPC_PBJSON_H

#include "japlaid/v1/search.pb-c.h"
#include "util/json.h"

/* A string (NULL: ""). */
int jp_pbjson_str(struct jp_buf *b, const char *s);
/* A number, with every digit a double has; null when not finite. */
int jp_pbjson_double(struct jp_buf *b, double v);
/* JSON text stored as a string (metadata, settings) as a JSON value: null
 * when empty; text that does not parse becomes a string rather than
 * breaking the whole answer. */
int jp_pbjson_json_text(struct jp_buf *b, const char *m);
/* {"partitions_total","partitions_answered","failed":[{"partition",
 * "reason","code","address"}]}; NULL renders as no partitions. */
int jp_pbjson_coverage(struct jp_buf *b, const Japlaid__V1__Coverage *c);
/* One shard's Stats: identity, counts, bytes by column family, settings. */
int jp_pbjson_partition_stats(struct jp_buf *b, const Japlaid__V1__PartitionStats *s);

#endif /* JP_RPC_PBJSON_H */
