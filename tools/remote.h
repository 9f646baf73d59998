/* remote.h: the CLI's client side of japlaid.v1.Search (`--server` mode).
 *
 * `japlaid search|rerank|encode|add|delete|stats --server HOST:PORT ...`
 * send their work to a coordinator (coordinator/README.md) instead of
 * opening an index or a model, and print what the embedded command prints,
 * so a script can switch between the two by swapping `--index DIR` (or
 * `--model DIR`) for `--server HOST:PORT`. This module holds what those
 * commands share:
 *   - the --server and --deadline-ms options;
 *   - one blocking unary call, whose failure is reported the same way by
 *     every command: "japlaid <cmd>: <STATUS> (<code>) from <addr>:
 *     <details>" on stderr, exit status 1;
 *   - the JSON of coverage (partial answers) and of the cluster's stats
 *     (the same fields, in the same order, as the coordinator's
 *     GET /v1/stats).
 *
 * A call never waits forever: without --deadline-ms it gets the command's
 * default deadline (a safety net against a hung server, far above what a
 * healthy cluster needs). It fails fast with UNAVAILABLE when nothing
 * listens (no wait-for-ready).
 *
 * Thread-safety: a remote belongs to one thread (the CLI has one).
 * Allocation: remote_open allocates the client; responses are unpacked
 * with protobuf-c's default allocator (free with remote_free). */
#ifndef JP_TOOLS_REMOTE_H
#define JP_TOOLS_REMOTE_H
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "japlaid/v1/search.pb-c.h"
#include "util/json.h"

/* Default deadlines per kind of command, in milliseconds. Reads answer in
 * milliseconds on a healthy cluster and the coordinator applies its own
 * --deadline-ms (1 s) to searches; a minute only bounds a hung server.
 * Upserts encode up to a batch of documents with a BERT model on the
 * coordinator's CPU and wait for every replica's fsync: its own write
 * deadline is 60 s, so the client waits a little longer than that. */
#define REMOTE_READ_DEADLINE_MS 60000L
#define REMOTE_WRITE_DEADLINE_MS 90000L

struct remote_opts {
  const char *server;       /* "host:port"; NULL: embedded mode */
  long deadline_ms;         /* 0: the command's default */
};

/* Parse --server ADDR or --deadline-ms MS at argv[*i]. Returns 1 when the
 * option was one of these (*i advanced past its value), 0 when it is not,
 * CLI_USAGE after printing a usage message. */
int remote_opt(const char *cmd, int argc, char **argv, int *i, struct remote_opts *o);

typedef struct remote remote;

/* A client for o->server. `default_deadline_ms` applies when
 * o->deadline_ms is 0. Returns 0 and *out, or CLI_ERR after printing. */
int remote_open(const char *cmd, const struct remote_opts *o, long default_deadline_ms,
                remote **out);
void remote_close(remote *r);                       /* NULL is a no-op */

/* The --deadline-ms the user gave (0: none), for request fields such as
 * SearchRequest.timeout_ms that tell the server the same budget. */
uint32_t remote_timeout_ms(const remote *r);

/* Call japlaid.v1.Search/<method> ("Search", "Upsert", ...) with `req` and
 * wait (at most the deadline). Returns 0 and *resp (free with
 * remote_free), or CLI_ERR after printing the status and details. */
int remote_call(remote *r, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp);
void remote_free(ProtobufCMessage *m);              /* NULL is a no-op */

/* The cluster's stats as GET /v1/stats writes them (model, totals,
 * coverage, partitions with their shard stats, replicas), one JSON object
 * without a newline. */
int remote_render_stats(struct jp_buf *b, const Japlaid__V1__StatsResponse *r);

/* "japlaid <cmd>: warning: partial answer: <answered> of <total>
 * partitions (partition 1: <reason>; ...)" on stderr. */
void remote_warn_partial(const char *cmd, const Japlaid__V1__Coverage *c);

/* "live", "unverified", "down", "refused" ("unknown" otherwise): the
 * words of /v1/stats. */
const char *remote_replica_state_name(Japlaid__V1__ReplicaState s);

#endif /* JP_TOOLS_REMOTE_H */
