/* coord.h: japlaid-coordinator, the front door of a cluster
 * (japlaid.v1.Search over gRPC, the same operations as HTTP/JSON).
 *
 * Threads and data flow (DESIGN §5):
 *   - gRPC workers (common/rpc server): a handler validates the request and
 *     starts an operation (cop_start), then returns RPC_ASYNC; it never
 *     blocks.
 *   - the HTTP loop thread (libuv, http.c): reads and writes sockets only.
 *     Parsing a request body (JSON -> protobuf) and rendering a response
 *     (protobuf -> JSON) run on libuv's threadpool (uv_queue_work); a
 *     finished operation is handed back to the loop with uv_async_send.
 *   - the encoder batcher thread (batcher.c): collects the queries of
 *     concurrent searches for a short window and encodes them in one
 *     jp_encode_queries call, then starts each search's fan-out.
 *   - encoding workers (jobs.c, --threads): document encoding for Rerank,
 *     Encode and Upsert (long, so never on the batcher).
 *   - the fan-out thread (fanout.c): polls the completion queue of every
 *     outgoing shard call, fails over to another replica on UNAVAILABLE,
 *     and runs an operation's continuation when its last call is in.
 *   - the health thread (health.c): Health/Check of every replica each
 *     --health-interval-ms, Shard/Stats (model identity, codebook,
 *     partition number) of every replica that (re)appears.
 *   - main: options, start-up, sigwait, ordered shutdown.
 * An operation (struct cop) moves between these threads, owned by one at a
 * time; the hand-offs go through mutex-protected queues or the atomic
 * counter of a fan-out, so its memory (one arena) is never touched by two
 * threads at once.
 *
 * Thread-safety: struct cluster is guarded by its mutex (replica states);
 * everything else in struct coord is set up before the threads start and
 * read-only afterwards. Allocation: each operation takes its memory from
 * the arena its transport gives it (the gRPC call's, or the HTTP
 * request's); shard responses are unpacked with jp_malloc and freed when
 * the fan-out is finished. */
#ifndef JP_COORD_H
#define JP_COORD_H
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "japlaid/v1/search.pb-c.h"
#include "japlaid/v1/shard.pb-c.h"
#include "model/model.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "util/arena.h"
#include "util/json.h"

/* The health service name of the API (besides "" for the whole server). */
#define COORD_SERVICE "japlaid.v1.Search"

/* Partitions in a cluster.json: passage ids keep the partition in their
 * top 24 bits (store.h: pid >> 40), so more could not be told apart; 4096
 * is far above any deployment this serves and bounds the config. */
#define COORD_MAX_PARTITIONS 4096
/* Replicas of one partition: tried-replica sets are a 32-bit mask. */
#define COORD_MAX_REPLICAS 32
#define COORD_MAX_ADDR 256

/* ---- cluster: partitions, replicas and their states (cluster.c) ------------------ */

enum replica_check {
  CHECK_NONE = 0,                     /* not verified since it (re)appeared */
  CHECK_OK = 1,                       /* Stats matched: routable while up */
  CHECK_REFUSED = 2,                  /* another model / codebook / partition: never routed */
};

struct replica {
  char addr[COORD_MAX_ADDR];
  int partition, index;
  /* Guarded by cluster.mu: */
  int up;                             /* last health answer was SERVING */
  int check;                          /* enum replica_check */
  int cb_refused;                     /* refused only for its codebook (re-judged by vote) */
  int ever_seen;                      /* answered at least once */
  char reason[320];                   /* why down or refused ("" when live) */
  char codebook[33];                  /* from its last Stats; "" unknown */
  char identity[33];
  /* The build's split settings from its last Stats (settings_json), for
   * upserts: split_known 0 when it reported none (or none parsed). */
  int split_known;
  int split_mdl;                      /* max_document_length; 0: the model's doc_maxlen */
  int split_on;                       /* 1: split long documents; 0: truncate */
  atomic_int outstanding;             /* calls in flight (least-outstanding pick) */
};

struct partition {
  int id;
  int n_replicas;
  struct replica *replicas;
  atomic_uint rr;                     /* tie-break cursor among equally loaded replicas */
};

struct cluster {
  int n_partitions;
  struct partition *parts;
  int n_replicas;                     /* all partitions together */
  pthread_mutex_t mu;
  char identity[33];                  /* the coordinator's model identity */
  int dim;                            /* the model's vector width */
  char codebook_ref[33];              /* the majority codebook ("" none known yet) */
};

/* Parse and validate cluster.json (ids 0..P-1 each once, >= 1 replica each,
 * "host:port" addresses, no address twice). JP_EINVAL with the file and the
 * problem. */
int  cluster_load(const char *path, struct cluster *cl);
void cluster_fini(struct cluster *cl);

/* Choose a routable replica of partition p not in *tried (bit mask), the
 * one with fewest calls in flight (ties round-robin), add it to *tried and
 * count the call as outstanding. JP_EUNAVAIL when none is left. */
int  cluster_pick(struct cluster *cl, int p, uint32_t *tried, int *replica);
void cluster_release(struct cluster *cl, int p, int replica);
/* A real call got UNAVAILABLE: stop routing until health says SERVING. */
void cluster_mark_down(struct cluster *cl, int p, int replica, const char *why);
/* Record a health answer. Returns 1 when the replica must be verified
 * (Stats) before it is routed to again. */
int  cluster_health(struct cluster *cl, int p, int replica, int serving, const char *why);
/* Record the Stats of a replica (NULL stats: the call failed, with why). */
void cluster_verify(struct cluster *cl, int p, int replica, const Japlaid__V1__PartitionStats *s,
                    const char *why);
/* Routable replicas of p. */
int  cluster_live(struct cluster *cl, int p);
/* Whether replica r of p is routable now. */
int  cluster_routable(struct cluster *cl, int p, int r);
/* The split settings a verified replica of p reported (the first one
 * listed; replicas of a partition are copies of one build): 1 and *mdl,
 * *split, or 0 when none of them reported any. */
int  cluster_split_settings(struct cluster *cl, int p, int *mdl, int *split);
/* One line on why partition p has no routable replica (for coverage). */
void cluster_why_unavailable(struct cluster *cl, int p, char *out, size_t cap);
/* A copy of one replica's state, taken under the lock. */
struct replica_view {
  int up, check, outstanding;
  char reason[320];
  char codebook[33];
};
void cluster_view(struct cluster *cl, int p, int r, struct replica_view *out);

/* ---- fan-out: shard calls with failover (fanout.c) -------------------------------- */

struct coord;
struct fan;

struct fan_slot {
  struct fan *f;
  int partition;
  int replica;                        /* the replica of the current / last attempt, -1 none */
  int fixed;                          /* 1: only this replica (writes), no failover */
  uint32_t tried;                     /* replicas tried (mask) */
  const ProtobufCMessage *req;
  /* rpc_call_start sets its out-pointer after gRPC has the batch, so the
   * event can reach the CQ thread first; the starter holds mu across the
   * start and the event handler takes it before reading `call`. */
  pthread_mutex_t mu;
  rpc_call *call;
  int attempts;
  /* Outcome, valid in the fan's done callback: */
  int rc;                             /* 0, or a JP_E* code */
  grpc_status_code status;            /* of the last attempt (OK when rc == 0) */
  char reason[640];                   /* one line when rc < 0 */
  ProtobufCMessage *resp;             /* unpacked with jp_malloc; freed by fan_fini */
};

typedef void (*fan_done_fn)(struct fan *f);

struct fan {
  struct coord *co;
  const char *method;                 /* "/japlaid.v1.Shard/Search" */
  const ProtobufCMessageDescriptor *resp_desc;
  uint64_t deadline_ns;               /* of every shard call */
  const struct rpc_ctx *parent;       /* propagate the client's cancellation (may be NULL) */
  int n;
  struct fan_slot *slots;
  atomic_int pending;
  fan_done_fn done;
  void *ud;
};

/* protobuf-c allocator over jp_malloc/jp_free, for shard answers. */
extern ProtobufCAllocator coord_pb_alloc;

/* Start every slot's call (slots, method, resp_desc, deadline and done
 * set by the caller). done(f) runs exactly once, on whichever thread
 * completes the last slot (possibly this one, before fan_start returns). */
void fan_start(struct fan *f);
/* Free the unpacked responses (every done callback calls it once). */
void fan_fini(struct fan *f);

int  fanout_start(struct coord *co);  /* the completion-queue thread */
void fanout_stop(struct coord *co);   /* after every fan-out has completed */

/* ---- encoder batcher (batcher.c) and encoding workers (jobs.c) ---------------------- */

struct qenc;
typedef void (*qenc_done_fn)(struct qenc *q, int rc, const char *err);

/* n queries to encode into out[n][query_maxlen][dim]. */
struct qenc {
  const char *const *texts;
  const size_t *lens;
  int n;
  float *out;
  uint64_t deadline_ns;
  qenc_done_fn done;                  /* on the batcher thread (or the caller's on refusal) */
  void *ud;
  struct qenc *next;
};

struct batcher;
int  batcher_create(struct coord *co, int max_queries, int window_us, int max_pending,
                    struct batcher **out);
/* Queue q; q->done runs later on the batcher thread. JP_EUNAVAIL when the
 * queue is full or the batcher is stopping (done is then not called). */
int  batcher_submit(struct batcher *b, struct qenc *q);
void batcher_destroy(struct batcher *b);   /* fails what is still queued */
/* Batches and queries encoded so far (metrics). */
void batcher_counts(struct batcher *b, uint64_t *batches, uint64_t *queries);

struct job;
typedef void (*job_fn)(struct job *j, jp_encoder *enc);
struct job {
  job_fn fn;                          /* on a worker, with that worker's encoder */
  void *ud;
  struct job *next;
};
struct jobs;
int  jobs_create(jp_model *m, int n_workers, int max_pending, struct jobs **out);
int  jobs_submit(struct jobs *js, struct job *j);   /* JP_EUNAVAIL: full or stopping */
void jobs_destroy(struct jobs *js);                 /* runs what is queued, then joins */

/* ---- health prober (health.c) -------------------------------------------------------- */

struct health;
/* One synchronous round (start-up), then the thread. */
int  health_round(struct coord *co);
int  health_start(struct coord *co, struct health **out);
void health_stop(struct health *h);

/* ---- operations (ops_*.c) ------------------------------------------------------------- */

enum cop_kind { COP_SEARCH, COP_RERANK, COP_ENCODE, COP_UPSERT, COP_DELETE, COP_STATS, COP_N };

struct cop;
typedef void (*cop_done_fn)(struct cop *op);

/* One client request being served, whatever its transport. */
struct cop {
  enum cop_kind kind;
  struct coord *co;
  struct jp_arena *arena;             /* the transport's; lives until done() returns */
  const ProtobufCMessage *req;        /* Japlaid__V1__<Kind>Request */
  const struct rpc_ctx *parent;       /* gRPC call (deadline, cancellation), or NULL */
  uint32_t timeout_ms;                /* 0: the request's own or --deadline-ms */
  uint64_t start_ns, deadline_ns;
  cop_done_fn done;                   /* exactly once, on any thread */
  void *ud;
  /* Outcome, valid in done(): */
  int rc;                             /* 0 or a JP_E* code */
  char err[600];                      /* detail when rc < 0 */
  ProtobufCMessage *resp;             /* in the arena, when rc == 0 */
  Japlaid__V1__Coverage *coverage;    /* search: also set on a full-coverage error */
  /* Internal: */
  void *state;
  int admitted;                       /* counted in co->searches_in_flight */
  struct fan fan;
  struct qenc enc;
  struct job job;
};

/* Run op (kind, co, arena, req, done set; the rest zero). */
void cop_start(struct cop *op);
/* Finish op with an error (the detail of rc on this thread). */
void cop_fail(struct cop *op, int rc);
void cop_finish(struct cop *op, ProtobufCMessage *resp);
const char *cop_kind_name(enum cop_kind k);

void cop_search(struct cop *op);
void cop_rerank(struct cop *op);
void cop_encode(struct cop *op);
void cop_upsert(struct cop *op);
void cop_delete(struct cop *op);
void cop_stats(struct cop *op);

/* Validation shared with the HTTP parser (limits named in the message). */
int cop_check_search(const Japlaid__V1__SearchRequest *r);

/* A new zeroed message of type d in arena a (rpc_pb_new). */
ProtobufCMessage *cop_new(struct jp_arena *a, const ProtobufCMessageDescriptor *d);
/* Deadline for the shard calls of op: its own minus a small reserve. */
uint64_t cop_shard_deadline(const struct cop *op);
/* Send req to every partition (method, with the op's shard deadline) and
 * call done when all have answered or failed. JP_ENOMEM before anything is
 * sent; done is then not called. */
int cop_fan_all(struct cop *op, const char *method, const ProtobufCMessageDescriptor *resp_desc,
                const ProtobufCMessage *req, void (*done)(struct fan *f));
/* "partition 1: <reason>; ..." for the failed slots of f. */
void cop_failures_line(const struct fan *f, char *out, size_t cap);
/* JP_EINVAL / JP_ETOOBIG when a shard refused the request itself, else 0. */
int cop_request_error(const struct fan *f);
/* Deep copy of a message into arena a (NULL: out of memory). */
ProtobufCMessage *cop_copy_msg(struct jp_arena *a, const ProtobufCMessage *m);
/* Coverage message for a finished read fan-out (search, stats). */
Japlaid__V1__Coverage *cop_coverage(struct jp_arena *a, struct coord *co, const struct fan *f,
                                    int *answered);

/* ---- metrics (metrics.c) -------------------------------------------------------------- */

enum ep {
  EP_SEARCH, EP_RERANK, EP_ENCODE, EP_UPSERT, EP_DELETE, EP_STATS, EP_HEALTHZ, EP_METRICS,
  EP_OTHER, EP_N
};
enum transport { TR_HTTP = 0, TR_GRPC = 1, TR_N };

struct metrics;
int  metrics_create(struct metrics **out);
void metrics_destroy(struct metrics *m);
/* One answered request: code is "200" for HTTP or "OK" / "UNAVAILABLE" for gRPC. */
void metrics_request(struct metrics *m, enum ep e, enum transport t, const char *code,
                     double seconds);
void metrics_degraded(struct metrics *m);
void metrics_failover(struct metrics *m);
void metrics_shard_error(struct metrics *m);
int  metrics_render(struct coord *co, struct jp_buf *out);
enum ep ep_of_kind(enum cop_kind k);

/* ---- transports ------------------------------------------------------------------------ */

extern const struct rpc_method coord_methods[];
extern const int coord_n_methods;

struct http_server;
struct http_opts {
  const char *listen;                 /* "host:port" */
  int allow_remote;
  size_t max_body_bytes;
  int max_connections;
};
/* Bind and listen (on the calling thread), then run the loop on its own
 * thread. */
int  http_start(struct coord *co, const struct http_opts *o, struct http_server **out);
const char *http_address(const struct http_server *h);
/* Stop accepting; answer what is in flight (at most grace_ms, then close).
 * http_stop_begin returns at once; http_stop also joins the loop thread and
 * frees h. */
void http_stop_begin(struct http_server *h, int grace_ms);
void http_stop(struct http_server *h, int grace_ms);

/* HTTP/JSON <-> protobuf (http_api.c). Parsers return 0 and a message
 * built in arena a, or JP_EINVAL naming the field (JSON parse errors give
 * line and column). */
int api_parse_search(const char *body, size_t len, struct jp_arena *a,
                     Japlaid__V1__SearchRequest **out, int *single);
int api_parse_rerank(const char *body, size_t len, struct jp_arena *a,
                     Japlaid__V1__RerankRequest **out);
int api_parse_encode(const char *body, size_t len, struct jp_arena *a,
                     Japlaid__V1__EncodeRequest **out);
int api_parse_upsert(const char *body, size_t len, struct jp_arena *a,
                     Japlaid__V1__UpsertRequest **out);
int api_parse_delete(const char *body, size_t len, struct jp_arena *a,
                     Japlaid__V1__DeleteRequest **out);
/* Render a finished operation's response as JSON (single: "query" form). */
int api_render(const struct cop *op, int single, struct jp_buf *out);
/* GET /healthz body; returns 1 when every partition has a live replica. */
int api_render_healthz(struct coord *co, struct jp_buf *out);
/* Replica states (for /v1/stats). */
int api_render_replicas(struct coord *co, struct jp_buf *out);
/* HTTP status for a JP_E* code. */
int api_http_status(int rc);

/* ---- the coordinator ------------------------------------------------------------------ */

struct coord_opts {
  int deadline_ms;                    /* default per Search / Stats request */
  int write_deadline_ms;              /* default per Upsert / Delete / Rerank / Encode */
  int health_interval_ms;
  int threads;                        /* gRPC workers and encoding workers */
  int batch_queries;                  /* encoder batch: queries per jp_encode_queries call */
  int batch_window_us;                /* and how long the first query waits for company */
  int max_pending;                    /* queued encodings before refusing (overload) */
  int max_inflight_searches;          /* admitted searches at once before refusing */
  /* Upsert splitting overrides (--max-document-length, --no-split); when
   * unset, each partition's own build settings apply (its Stats'
   * settings_json), else the model's doc_maxlen with splitting. */
  int max_document_length;            /* 0: not given */
  int no_split;                       /* 1: given */
};

struct coord {
  struct coord_opts o;
  jp_model *model;
  const struct jp_model_info *mi;
  int qlen, dim;                      /* query_maxlen, vector width */
  struct cluster cl;
  rpc_client *cli;
  grpc_completion_queue *cq;          /* every outgoing read/write call */
  pthread_t cq_thread;
  int cq_thread_started;
  atomic_int calls_in_flight;
  atomic_int searches_in_flight;      /* admitted, not yet answered (admission cap) */
  struct batcher *bat;
  struct jobs *jobs;
  struct health *health;
  struct metrics *met;
  rpc_server *grpc;
  uint64_t start_ns;
};

#endif /* JP_COORD_H */
