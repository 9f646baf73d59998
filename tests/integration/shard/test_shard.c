/* test_shard.c: a real japlaid-shard process on a small partition.
 *
 * The partition is built here with jp_store_create + jp_store_upsert of
 * synthetic clustered vectors (no model needed): partition 0 of 2, so
 * routing can be checked. Expected search results are computed in process
 * with jp_store_search on the same directory before the shard starts; the
 * shard's answers must have the same ranking and scores within 1e-5. Then:
 * upsert through the shard and find the document, delete it and see it
 * gone, malformed and invalid requests answered INVALID_ARGUMENT (or
 * FAILED_PRECONDITION) while the shard keeps serving, Stats, and SIGTERM
 * with calls in flight: exit status 0 and a store that reopens with the
 * acknowledged writes.
 *
 * argv[1] is the japlaid-shard binary (ctest passes it). */
#include "test_helpers.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <sys/wait.h>

#include <grpc/grpc.h>

#include "index/codec.h"
#include "index/store.h"
#include "japlaid/v1/shard.pb-c.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/log.h"

extern char **environ;

#define DIM 32
#define NBITS 2
#define NCENT 16
#define NQ 8                      /* vectors per query */
#define NQUERIES 6
#define NDOCS 60
#define IDENTITY "0123456789abcdef0123456789abcdef"

static const char *g_bin;

/* ---- synthetic data ------------------------------------------------------------ */

static void normalize(float *v)
{
  float s = 0.0f;
  for (int d = 0; d < DIM; d++) s += v[d] * v[d];
  s = sqrtf(s);
  for (int d = 0; d < DIM; d++) v[d] /= s;
}

static float topics[NCENT][DIM];

static void near_topic(int t, float noise, uint64_t *rng, float *out)
{
  for (int d = 0; d < DIM; d++) out[d] = topics[t][d] + noise / sqrtf(DIM) * jp_randn(rng);
  normalize(out);
}

/* The i-th document id that routes to partition 0 of 2. */
static void doc_id(int i, char *out, size_t cap)
{
  for (int salt = 0;; salt++) {
    snprintf(out, cap, "doc-%03d-%d", i, salt);
    if (jp_route_partition(out, strlen(out), 2) == 0) return;
  }
}

/* An id that routes to partition 1 (not ours). */
static void foreign_id(char *out, size_t cap)
{
  for (int salt = 0;; salt++) {
    snprintf(out, cap, "elsewhere-%d", salt);
    if (jp_route_partition(out, strlen(out), 2) == 1) return;
  }
}

static float queries[NQUERIES][NQ][DIM];

static void build_partition(const char *dir)
{
  uint64_t rng = 42;
  for (int t = 0; t < NCENT; t++) {
    for (int d = 0; d < DIM; d++) topics[t][d] = jp_randn(&rng);
    normalize(topics[t]);
  }
  struct jp_codec c;
  assert_int_equal(jp_codec_init(&c, DIM, NBITS, NCENT), 0);
  memcpy(c.centroids, topics, sizeof topics);
  /* Buckets from held-out residuals (vector - its topic). */
  enum { NH = 512 };
  static float held[NH][DIM];
  for (int i = 0; i < NH; i++) {
    int t = i % NCENT;
    near_topic(t, 0.5f, &rng, held[i]);
    for (int d = 0; d < DIM; d++) held[i][d] -= topics[t][d];
  }
  assert_int_equal(jp_codec_train_buckets(&c, &held[0][0], NH), 0);

  struct jp_store_meta meta;
  memset(&meta, 0, sizeof meta);
  snprintf(meta.model_name, sizeof meta.model_name, "synthetic");
  snprintf(meta.model_identity, sizeof meta.model_identity, "%s", IDENTITY);
  meta.partition_id = 0;
  meta.n_partitions = 2;
  struct jp_store_opts so;
  jp_store_opts_default(&so);
  so.sync = 0;   /* test data: no fsync per write */
  jp_store *st;
  int rc = jp_store_create(dir, &meta, &c, &so, &st);
  if (rc < 0) fail_msg("jp_store_create: %s", jp_errmsg(rc));

  static float vecs[NDOCS][3][10][DIM];
  static char ids[NDOCS][32], meta_json[NDOCS][64], texts[NDOCS][3][64];
  struct jp_doc_in docs[NDOCS];
  struct jp_passage_in pas[NDOCS][3];
  for (int i = 0; i < NDOCS; i++) {
    doc_id(i, ids[i], sizeof ids[i]);
    int np = 1 + i % 3;
    for (int p = 0; p < np; p++) {
      int nv = 3 + (i * 7 + p) % 8;
      int t = (i * 5 + p * 3) % NCENT;
      for (int v = 0; v < nv; v++) near_topic(v % 2 ? t : (t + 1) % NCENT, 0.6f, &rng, vecs[i][p][v]);
      snprintf(texts[i][p], sizeof texts[i][p], "文書 %d の段落 %d", i, p);
      pas[i][p] = (struct jp_passage_in){texts[i][p], strlen(texts[i][p]), &vecs[i][p][0][0], nv};
    }
    if (i % 4 == 3) meta_json[i][0] = '\0';
    else snprintf(meta_json[i], sizeof meta_json[i], "{\"group\":\"g%d\",\"i\":%d}", i % 3, i);
    docs[i] = (struct jp_doc_in){ids[i], strlen(ids[i]), meta_json[i][0] ? meta_json[i] : NULL,
                                 pas[i], np};
  }
  rc = jp_store_upsert(st, docs, NDOCS, NULL);
  if (rc < 0) fail_msg("jp_store_upsert: %s", jp_errmsg(rc));
  jp_store_close(st);
  jp_codec_fini(&c);

  for (int q = 0; q < NQUERIES; q++)
    for (int v = 0; v < NQ; v++) near_topic((q * 3 + v % 2) % NCENT, 0.4f, &rng, queries[q][v]);
}

/* ---- the cases compared against jp_store_search -------------------------------- */

struct scase {
  int k, ncells, ndocs, exhaustive;
  int has_thr;
  float thr;
  int n_ids;                      /* restrict to the first n_ids documents */
  const char *fkey, *fval;        /* one filter, or NULL */
};

static const struct scase cases[] = {
  {10, 0, 0, 0, 0, 0, 0, NULL, NULL},          /* PLAID defaults */
  {5, 0, 0, 1, 0, 0, 0, NULL, NULL},           /* exhaustive */
  {3, 4, 64, 0, 1, 0.2f, 0, NULL, NULL},       /* explicit knobs */
  {5, 0, 0, 0, 0, 0, 7, NULL, NULL},           /* doc_ids */
  {10, 0, 0, 0, 0, 0, 0, "group", "g1"},       /* metadata filter */
  {1000, 0, 0, 0, 0, 0, 0, NULL, NULL},        /* k above the passage count */
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

struct expect_hit {
  uint64_t pid;
  float score;
  char doc[32];
  char content[64];
  char meta[64];
};
struct expect {
  int n;
  struct expect_hit *hits;
};
static struct expect expected[NCASES][NQUERIES];
static char g_ids[NDOCS][32];

static void case_params(const struct scase *c, struct jp_search_params *sp)
{
  jp_search_params_init(sp, c->k);
  sp->ncells = c->ncells;
  sp->ndocs = c->ndocs;
  sp->exhaustive = c->exhaustive;
  sp->centroid_score_threshold = c->has_thr ? c->thr : NAN;
}

static void compute_expected(const char *dir)
{
  for (int i = 0; i < NDOCS; i++) doc_id(i, g_ids[i], sizeof g_ids[i]);
  struct jp_store_opts so;
  jp_store_opts_default(&so);
  so.read_only = 1;
  jp_store *st;
  assert_int_equal(jp_store_open(dir, &so, &st), 0);
  struct jp_arena a;
  jp_arena_init(&a, 0, 0);
  for (int ci = 0; ci < NCASES; ci++) {
    const struct scase *c = &cases[ci];
    struct jp_search_params sp;
    case_params(c, &sp);
    const char *idp[NDOCS];
    for (int i = 0; i < NDOCS; i++) idp[i] = g_ids[i];
    struct jp_filter f = {c->fkey, c->fval};
    struct jp_restrict r = {c->n_ids ? idp : NULL, c->n_ids, c->fkey ? &f : NULL, c->fkey ? 1 : 0};
    for (int q = 0; q < NQUERIES; q++) {
      struct jp_result *res;
      int n;
      int rc = jp_store_search(st, &queries[q][0][0], NQ, &sp, &r, NULL, &a, &res, &n);
      if (rc < 0) fail_msg("jp_store_search: %s", jp_errmsg(rc));
      expected[ci][q].n = n;
      expected[ci][q].hits = calloc((size_t)n + 1, sizeof(struct expect_hit));
      for (int h = 0; h < n; h++) {
        struct expect_hit *e = &expected[ci][q].hits[h];
        e->pid = res[h].passage_id;
        e->score = res[h].score;
        snprintf(e->doc, sizeof e->doc, "%s", res[h].document_id);
        snprintf(e->content, sizeof e->content, "%s", res[h].content);
        snprintf(e->meta, sizeof e->meta, "%s", res[h].metadata_json ? res[h].metadata_json : "");
      }
      jp_arena_reset(&a);
    }
  }
  jp_arena_fini(&a);
  jp_store_close(st);
  /* The cases must not be vacuous. */
  assert_true(expected[0][0].n == 10);
  assert_true(expected[3][0].n > 0);
  assert_true(expected[4][0].n > 0);
}

/* ---- the shard process ----------------------------------------------------------- */

struct fixture {
  char tmp[256];
  char dir[300];
  pid_t pid;
  char addr[128];
  rpc_client *cli;
};
static struct fixture F;

/* Start japlaid-shard on dir (plus one optional "--opt value" pair) and
 * read its address. */
static pid_t spawn_shard(const char *dir, const char *opt, const char *val, char *addr, size_t cap)
{
  int fd[2];
  assert_int_equal(pipe(fd), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
  posix_spawn_file_actions_addclose(&fa, fd[0]);
  posix_spawn_file_actions_addclose(&fa, fd[1]);
  char *argv[] = {(char *)g_bin, "--index", (char *)dir, "--listen", "127.0.0.1:0",
                  "--threads", "2", "--grace-ms", "10000", (char *)opt, (char *)val, NULL};
  pid_t pid;
  int rc = posix_spawn(&pid, g_bin, &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fd[1]);
  if (rc != 0) fail_msg("posix_spawn %s: %s", g_bin, strerror(rc));
  /* Read "listening on HOST:PORT\n" (60 s: the machine may be busy). */
  char line[120];
  size_t n = 0;
  struct pollfd p = {fd[0], POLLIN, 0};
  while (n < sizeof line - 1 && (n == 0 || line[n - 1] != '\n')) {
    if (poll(&p, 1, 60000) <= 0) break;
    ssize_t r = read(fd[0], line + n, 1);
    if (r <= 0) break;
    n += (size_t)r;
  }
  line[n] = '\0';
  close(fd[0]);
  if (strncmp(line, "listening on ", 13) != 0) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    fail_msg("shard did not print its address (got '%s')", line);
  }
  line[strcspn(line, "\n")] = '\0';
  snprintf(addr, cap, "%s", line + 13);
  return pid;
}

/* Exit status of pid, waiting at most timeout_ms; -1 if it did not exit. */
static int wait_exit(pid_t pid, int timeout_ms)
{
  for (int waited = 0; waited <= timeout_ms; waited += 20) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    jp_sleep_ms(20);
  }
  return -1;
}

/* Poll health of addr until it reports `want` (at most ~60 s). */
static int await_health(const char *addr, int want)
{
  int st = -1;
  for (int i = 0; i < 600; i++) {
    if (rpc_client_health(F.cli, addr, "japlaid.v1.Shard", 2000, &st) < 0) st = -1;
    if (st == want) return st;
    jp_sleep_ms(100);
  }
  return st;
}

static int setup(void **state)
{
  (void)state;
  assert_non_null(jp_test_tmpdir(F.tmp, sizeof F.tmp));
  snprintf(F.dir, sizeof F.dir, "%s/part0", F.tmp);
  build_partition(F.dir);
  compute_expected(F.dir);
  F.pid = spawn_shard(F.dir, NULL, NULL, F.addr, sizeof F.addr);
  assert_int_equal(rpc_client_create(NULL, &F.cli), 0);
  /* SERVING only once the partition is loaded. */
  assert_int_equal(await_health(F.addr, RPC_HEALTH_SERVING), RPC_HEALTH_SERVING);
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  if (F.pid > 0) {
    kill(F.pid, SIGKILL);
    waitpid(F.pid, NULL, 0);
  }
  rpc_client_destroy(F.cli);
  jp_rm_rf(F.tmp);
  return 0;
}

/* ---- calls ------------------------------------------------------------------------- */

static int call(const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp, grpc_status_code *st)
{
  return rpc_client_call(F.cli, F.addr, method, req, rd, NULL, 30000, resp, st);
}

/* A search request over `nqueries` of the test queries with case c. */
struct sreq {
  Japlaid__V1__ShardSearchRequest r;
  Japlaid__V1__SearchParams p;
  Japlaid__V1__MetadataFilter f, *fp;
  char *idp[NDOCS];
};

static void make_search(struct sreq *s, const struct scase *c, int nqueries)
{
  japlaid__v1__shard_search_request__init(&s->r);
  japlaid__v1__search_params__init(&s->p);
  s->r.n_queries = (uint32_t)nqueries;
  s->r.nq = NQ;
  s->r.dim = DIM;
  s->r.queries.data = (uint8_t *)queries;
  s->r.queries.len = (size_t)nqueries * NQ * DIM * sizeof(float);
  s->p.k = (uint32_t)c->k;
  s->p.ncells = (uint32_t)c->ncells;
  s->p.ndocs = (uint32_t)c->ndocs;
  s->p.exhaustive = c->exhaustive;
  if (c->has_thr) {
    s->p.centroid_score_threshold_opt_case =
      JAPLAID__V1__SEARCH_PARAMS__CENTROID_SCORE_THRESHOLD_OPT_CENTROID_SCORE_THRESHOLD;
    s->p.centroid_score_threshold = c->thr;
  }
  s->r.params = &s->p;
  for (int i = 0; i < NDOCS; i++) s->idp[i] = g_ids[i];
  s->r.n_doc_ids = (size_t)c->n_ids;
  s->r.doc_ids = c->n_ids ? s->idp : NULL;
  if (c->fkey) {
    japlaid__v1__metadata_filter__init(&s->f);
    s->f.key = (char *)c->fkey;
    s->f.value = (char *)c->fval;
    s->fp = &s->f;
    s->r.n_filters = 1;
    s->r.filters = &s->fp;
  }
  s->r.model_identity = IDENTITY;
}

static void shard_search_matches_in_process_search(void **state)
{
  (void)state;
  for (int ci = 0; ci < NCASES; ci++) {
    struct sreq s;
    make_search(&s, &cases[ci], NQUERIES);
    ProtobufCMessage *m;
    grpc_status_code st;
    int rc = call("/japlaid.v1.Shard/Search", &s.r.base,
                  &japlaid__v1__shard_search_response__descriptor, &m, &st);
    if (rc < 0) fail_msg("case %d: %s", ci, jp_errmsg(rc));
    const Japlaid__V1__ShardSearchResponse *r = (const Japlaid__V1__ShardSearchResponse *)m;
    assert_int_equal(r->n_results, NQUERIES);
    assert_int_equal(r->partition_id, 0);
    for (int q = 0; q < NQUERIES; q++) {
      const struct expect *e = &expected[ci][q];
      const Japlaid__V1__QueryHits *qh = r->results[q];
      assert_int_equal(qh->n_hits, e->n);
      for (int h = 0; h < e->n; h++) {
        const Japlaid__V1__Hit *hit = qh->hits[h];
        assert_int_equal(hit->passage_id, e->hits[h].pid);
        assert_true(fabsf(hit->score - e->hits[h].score) <= 1e-5f);
        assert_int_equal(hit->rank, h + 1);
        assert_string_equal(hit->document_id, e->hits[h].doc);
        assert_string_equal(hit->content, e->hits[h].content);
        assert_string_equal(hit->document_metadata, e->hits[h].meta);
        if (cases[ci].fkey) assert_non_null(strstr(hit->document_metadata, "\"group\":\"g1\""));
      }
    }
    protobuf_c_message_free_unpacked(m, NULL);
  }
}

/* An upsert request with one document of one passage whose vectors are
 * query 0's, so it must rank first for query 0. */
struct ureq {
  Japlaid__V1__ShardUpsertRequest r;
  Japlaid__V1__EncodedDocument d, *dp;
  Japlaid__V1__EncodedPassage p, *pp;
};

static void make_upsert(struct ureq *u, const char *id, const char *meta)
{
  japlaid__v1__shard_upsert_request__init(&u->r);
  japlaid__v1__encoded_document__init(&u->d);
  japlaid__v1__encoded_passage__init(&u->p);
  u->p.text = "新しい文書";
  u->p.n_vecs = NQ;
  u->p.vectors.data = (uint8_t *)queries[0];
  u->p.vectors.len = sizeof queries[0];
  u->pp = &u->p;
  u->d.id = (char *)id;
  u->d.metadata = (char *)meta;
  u->d.n_passages = 1;
  u->d.passages = &u->pp;
  u->dp = &u->d;
  u->r.dim = DIM;
  u->r.n_documents = 1;
  u->r.documents = &u->dp;
  u->r.model_identity = IDENTITY;
}

/* Top hit's document id for query 0 (exhaustive, k = 3). */
static void top_doc(char *out, size_t cap)
{
  struct sreq s;
  struct scase c = {3, 0, 0, 1, 0, 0, 0, NULL, NULL};
  make_search(&s, &c, 1);
  ProtobufCMessage *m;
  grpc_status_code st;
  assert_int_equal(call("/japlaid.v1.Shard/Search", &s.r.base,
                        &japlaid__v1__shard_search_response__descriptor, &m, &st),
                   0);
  const Japlaid__V1__ShardSearchResponse *r = (const Japlaid__V1__ShardSearchResponse *)m;
  snprintf(out, cap, "%s", r->results[0]->n_hits ? r->results[0]->hits[0]->document_id : "");
  protobuf_c_message_free_unpacked(m, NULL);
}

static void shard_upsert_then_search_finds_it_delete_removes_it(void **state)
{
  (void)state;
  char id[32], top[64];
  doc_id(1000, id, sizeof id);
  struct ureq u;
  make_upsert(&u, id, "{\"group\":\"new\"}");
  ProtobufCMessage *m;
  grpc_status_code st;
  assert_int_equal(call("/japlaid.v1.Shard/Upsert", &u.r.base,
                        &japlaid__v1__shard_upsert_response__descriptor, &m, &st),
                   0);
  assert_int_equal(((Japlaid__V1__ShardUpsertResponse *)m)->n_documents, 1);
  assert_int_equal(((Japlaid__V1__ShardUpsertResponse *)m)->n_passages, 1);
  protobuf_c_message_free_unpacked(m, NULL);
  top_doc(top, sizeof top);
  assert_string_equal(top, id);

  Japlaid__V1__ShardDeleteRequest d = JAPLAID__V1__SHARD_DELETE_REQUEST__INIT;
  char *ids[] = {id, "never-existed"};
  d.n_document_ids = 2;
  d.document_ids = ids;
  assert_int_equal(call("/japlaid.v1.Shard/Delete", &d.base,
                        &japlaid__v1__shard_delete_response__descriptor, &m, &st),
                   0);
  assert_int_equal(((Japlaid__V1__ShardDeleteResponse *)m)->n_deleted, 1);
  protobuf_c_message_free_unpacked(m, NULL);
  top_doc(top, sizeof top);
  assert_string_not_equal(top, id);
  /* Deleting again finds nothing. */
  assert_int_equal(call("/japlaid.v1.Shard/Delete", &d.base,
                        &japlaid__v1__shard_delete_response__descriptor, &m, &st),
                   0);
  assert_int_equal(((Japlaid__V1__ShardDeleteResponse *)m)->n_deleted, 0);
  protobuf_c_message_free_unpacked(m, NULL);
}

/* Expect a failed call with status want and a detail containing `what`. */
static void expect_fail(const char *method, const ProtobufCMessage *req, grpc_status_code want,
                        const char *what)
{
  ProtobufCMessage *m = NULL;
  grpc_status_code st;
  int rc = call(method, req, &japlaid__v1__shard_search_response__descriptor, &m, &st);
  if (st != want || !strstr(jp_errmsg(rc), what))
    fail_msg("%s: got %d (%s), wanted %d with '%s'", method, (int)st, jp_errmsg(rc), (int)want, what);
  assert_null(m);
}

static void shard_refuses_bad_requests_and_keeps_serving(void **state)
{
  (void)state;
  static const struct scase c = {10, 0, 0, 0, 0, 0, 0, NULL, NULL};
  const char *S = "/japlaid.v1.Shard/Search", *U = "/japlaid.v1.Shard/Upsert";
  struct sreq s;

  make_search(&s, &c, 2);
  s.r.dim = 64;
  expect_fail(S, &s.r.base, GRPC_STATUS_INVALID_ARGUMENT, "dim: 64");
  make_search(&s, &c, 2);
  s.r.nq = 0;
  expect_fail(S, &s.r.base, GRPC_STATUS_INVALID_ARGUMENT, "nq: 0 is outside");
  make_search(&s, &c, 2);
  s.r.n_queries = 0;
  expect_fail(S, &s.r.base, GRPC_STATUS_INVALID_ARGUMENT, "n_queries");
  make_search(&s, &c, 2);
  s.r.queries.len -= 4;
  expect_fail(S, &s.r.base, GRPC_STATUS_INVALID_ARGUMENT, "queries");
  make_search(&s, &c, 2);
  s.p.k = 0;
  expect_fail(S, &s.r.base, GRPC_STATUS_INVALID_ARGUMENT, "params.k");
  make_search(&s, &c, 2);
  s.p.k = 1001;
  expect_fail(S, &s.r.base, GRPC_STATUS_INVALID_ARGUMENT, "params.k");
  make_search(&s, &c, 2);
  s.r.params = NULL;
  expect_fail(S, &s.r.base, GRPC_STATUS_INVALID_ARGUMENT, "params");
  make_search(&s, &c, 2);
  s.p.centroid_score_threshold_opt_case =
    JAPLAID__V1__SEARCH_PARAMS__CENTROID_SCORE_THRESHOLD_OPT_CENTROID_SCORE_THRESHOLD;
  s.p.centroid_score_threshold = NAN;
  expect_fail(S, &s.r.base, GRPC_STATUS_INVALID_ARGUMENT, "centroid_score_threshold");
  {
    float bad[2][NQ][DIM];
    memcpy(bad, queries, sizeof bad);
    bad[1][3][5] = INFINITY;
    make_search(&s, &c, 2);
    s.r.queries.data = (uint8_t *)bad;
    expect_fail(S, &s.r.base, GRPC_STATUS_INVALID_ARGUMENT, "not finite");
  }
  make_search(&s, &c, 2);
  s.r.model_identity = "ffffffffffffffffffffffffffffffff";
  expect_fail(S, &s.r.base, GRPC_STATUS_FAILED_PRECONDITION, "model_identity");
  {
    struct scase cf = {5, 0, 0, 0, 0, 0, 0, "", "x"};
    make_search(&s, &cf, 1);
    expect_fail(S, &s.r.base, GRPC_STATUS_INVALID_ARGUMENT, "filters[0].key");
  }

  struct ureq u;
  char id[32], fid[32];
  doc_id(2000, id, sizeof id);
  foreign_id(fid, sizeof fid);
  make_upsert(&u, fid, "");
  expect_fail(U, &u.r.base, GRPC_STATUS_INVALID_ARGUMENT, "belongs to partition 1");
  make_upsert(&u, "", "");
  expect_fail(U, &u.r.base, GRPC_STATUS_INVALID_ARGUMENT, "documents[0].id: must not be empty");
  make_upsert(&u, id, "[1,2]");
  expect_fail(U, &u.r.base, GRPC_STATUS_INVALID_ARGUMENT, "documents[0].metadata");
  make_upsert(&u, id, "{\"a\":");
  expect_fail(U, &u.r.base, GRPC_STATUS_INVALID_ARGUMENT, "documents[0].metadata");
  make_upsert(&u, id, "");
  u.p.n_vecs = NQ + 1;
  expect_fail(U, &u.r.base, GRPC_STATUS_INVALID_ARGUMENT, "documents[0].passages[0].vectors");
  make_upsert(&u, id, "");
  u.r.dim = 16;
  expect_fail(U, &u.r.base, GRPC_STATUS_INVALID_ARGUMENT, "dim: 16");
  make_upsert(&u, id, "");
  u.d.n_passages = 0;
  expect_fail(U, &u.r.base, GRPC_STATUS_INVALID_ARGUMENT, "documents[0].passages");
  make_upsert(&u, id, "");
  u.p.text = "bad \xff utf-8";
  expect_fail(U, &u.r.base, GRPC_STATUS_INVALID_ARGUMENT, "UTF-8");

  Japlaid__V1__ShardDeleteRequest d = JAPLAID__V1__SHARD_DELETE_REQUEST__INIT;
  expect_fail("/japlaid.v1.Shard/Delete", &d.base, GRPC_STATUS_INVALID_ARGUMENT, "document_ids");

  /* Bytes that are not a message at all. */
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3};
  struct rpc_call_opts co = {rpc_deadline_in_ms(30000), -1, NULL, NULL};
  rpc_call *k;
  int tag;
  assert_int_equal(rpc_call_start_raw(F.cli, F.addr, S, junk, sizeof junk, &co, cq, &tag, &k), 0);
  grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  assert_int_equal(rpc_call_status(k, NULL), GRPC_STATUS_INVALID_ARGUMENT);
  rpc_call_destroy(k);
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);

  /* Nothing was written by the refused upserts, and search still works. */
  ProtobufCMessage *m;
  grpc_status_code st;
  make_search(&s, &cases[0], NQUERIES);
  assert_int_equal(call(S, &s.r.base, &japlaid__v1__shard_search_response__descriptor, &m, &st), 0);
  const Japlaid__V1__ShardSearchResponse *r = (const Japlaid__V1__ShardSearchResponse *)m;
  assert_int_equal(r->n_results, NQUERIES);
  assert_int_equal(r->results[0]->n_hits, expected[0][0].n);
  assert_int_equal(r->results[0]->hits[0]->passage_id, expected[0][0].hits[0].pid);
  protobuf_c_message_free_unpacked(m, NULL);
}

/* Random bytes, and valid requests with random bytes changed, to every
 * method: each call gets an answer with an expected status, and the shard
 * is still healthy afterwards. (A short, seeded run; tests/fuzz/ is the
 * place for long ones.) */
static void shard_survives_random_and_mutated_requests(void **state)
{
  (void)state;
  static const char *const methods[] = {"/japlaid.v1.Shard/Search", "/japlaid.v1.Shard/Upsert",
                                        "/japlaid.v1.Shard/Delete", "/japlaid.v1.Shard/Stats"};
  struct sreq s;
  make_search(&s, &cases[4], 2);
  size_t slen = protobuf_c_message_get_packed_size(&s.r.base);
  uint8_t *valid = malloc(slen);
  protobuf_c_message_pack(&s.r.base, valid);
  uint8_t *buf = malloc(slen);
  uint64_t rng = 2024;
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  int counts[17] = {0};
  for (int it = 0; it < 400; it++) {
    const char *method;
    size_t len;
    if (it % 2 == 0) {
      /* A mutated Search request: 1-4 bytes overwritten. */
      memcpy(buf, valid, slen);
      int nflip = 1 + (int)(jp_rand64(&rng) % 4);
      for (int f = 0; f < nflip; f++) buf[jp_rand64(&rng) % slen] = (uint8_t)jp_rand64(&rng);
      len = slen;
      method = methods[0];
    } else {
      len = (size_t)(jp_rand64(&rng) % 64);
      for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)jp_rand64(&rng);
      method = methods[jp_rand64(&rng) % 4];
    }
    struct rpc_call_opts co = {rpc_deadline_in_ms(30000), -1, NULL, NULL};
    rpc_call *k;
    int tag;
    assert_int_equal(rpc_call_start_raw(F.cli, F.addr, method, buf, len, &co, cq, &tag, &k), 0);
    grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    grpc_status_code st = rpc_call_status(k, NULL);
    rpc_call_destroy(k);
    if (st != GRPC_STATUS_OK && st != GRPC_STATUS_INVALID_ARGUMENT &&
        st != GRPC_STATUS_FAILED_PRECONDITION && st != GRPC_STATUS_RESOURCE_EXHAUSTED)
      fail_msg("iteration %d (%s, %zu bytes): status %d", it, method, len, (int)st);
    counts[st]++;
  }
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
  free(buf);
  free(valid);
  /* Most garbage must have been refused, not silently accepted. */
  assert_true(counts[GRPC_STATUS_INVALID_ARGUMENT] > 200);
  int hs;
  assert_int_equal(rpc_client_health(F.cli, F.addr, "japlaid.v1.Shard", 10000, &hs), 0);
  assert_int_equal(hs, RPC_HEALTH_SERVING);
}

static void shard_stats(void **state)
{
  (void)state;
  Japlaid__V1__ShardStatsRequest q = JAPLAID__V1__SHARD_STATS_REQUEST__INIT;
  ProtobufCMessage *m;
  grpc_status_code st;
  assert_int_equal(call("/japlaid.v1.Shard/Stats", &q.base,
                        &japlaid__v1__shard_stats_response__descriptor, &m, &st),
                   0);
  const Japlaid__V1__PartitionStats *s = ((Japlaid__V1__ShardStatsResponse *)m)->stats;
  assert_non_null(s);
  assert_int_equal(s->partition_id, 0);
  assert_int_equal(s->n_partitions, 2);
  assert_string_equal(s->model_identity, IDENTITY);
  assert_string_equal(s->model_name, "synthetic");
  assert_int_equal(strlen(s->codebook_hash), 32);
  assert_int_equal(s->dim, DIM);
  assert_int_equal(s->nbits, NBITS);
  assert_int_equal(s->ncentroids, NCENT);
  /* The upserted document was deleted again: the original count. */
  assert_int_equal(s->n_documents, NDOCS);
  uint64_t np = 0;
  for (int i = 0; i < NDOCS; i++) np += (uint64_t)(1 + i % 3);
  assert_int_equal(s->n_passages, np);
  assert_int_equal(s->n_column_families, 5);
  assert_true(s->total_bytes > 0);
  assert_true(s->requests_total > 0);
  protobuf_c_message_free_unpacked(m, NULL);
}

/* Debian's python3-grpcio (only with /usr/bin/python3) as a second client
 * implementation; skipped where it or grpc_tools is missing. */
static void shard_python_client_interop(void **state)
{
  (void)state;
  const char *src = getenv("JP_SOURCE_DIR");
  if (!src || system("/usr/bin/python3 -c 'import grpc, grpc_tools' >/dev/null 2>&1") != 0) {
    print_message("skipped: /usr/bin/python3 with grpc and grpc_tools not available\n");
    skip();
  }
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "/usr/bin/python3 %s/tests/integration/shard/interop.py %s %s/proto /usr/share/grpc-proto",
           src, F.addr, src);
  int rc = system(cmd);
  assert_true(WIFEXITED(rc));
  assert_int_equal(WEXITSTATUS(rc), 0);
}

static void shard_sigterm_drains_and_exits_zero(void **state)
{
  (void)state;
  /* A write that must survive the restart. */
  char id[32];
  doc_id(3000, id, sizeof id);
  struct ureq u;
  make_upsert(&u, id, "");
  ProtobufCMessage *m;
  grpc_status_code st;
  assert_int_equal(call("/japlaid.v1.Shard/Upsert", &u.r.base,
                        &japlaid__v1__shard_upsert_response__descriptor, &m, &st),
                   0);
  protobuf_c_message_free_unpacked(m, NULL);

  /* Calls in flight when SIGTERM arrives. The shard's Stats counter says
   * when they have been taken by its workers (it counts calls when served,
   * the Stats call itself included), so the signal surely finds them
   * accepted: they must all complete. (Calls still travelling when the
   * server shuts down are refused by gRPC, UNAVAILABLE or CANCELLED: the
   * race this avoids. The unit test server_shutdown_drains_calls_in_flight
   * covers handlers that are mid-way through their work.) */
  enum { N = 2 };
  static const struct scase c = {1000, 0, 0, 1, 0, 0, 0, NULL, NULL};
  struct sreq s;
  make_search(&s, &c, NQUERIES);
  Japlaid__V1__ShardStatsRequest sq = JAPLAID__V1__SHARD_STATS_REQUEST__INIT;
  assert_int_equal(call("/japlaid.v1.Shard/Stats", &sq.base,
                        &japlaid__v1__shard_stats_response__descriptor, &m, &st),
                   0);
  uint64_t base = ((Japlaid__V1__ShardStatsResponse *)m)->stats->requests_total;
  protobuf_c_message_free_unpacked(m, NULL);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  struct rpc_call_opts co = {rpc_deadline_in_ms(60000), -1, NULL, NULL};
  rpc_call *calls[N];
  for (int i = 0; i < N; i++)
    assert_int_equal(rpc_call_start(F.cli, F.addr, "/japlaid.v1.Shard/Search", &s.r.base, &co, cq,
                                    (void *)(uintptr_t)(i + 1), &calls[i]),
                     0);
  for (uint64_t polls = 1;; polls++) {
    assert_int_equal(call("/japlaid.v1.Shard/Stats", &sq.base,
                          &japlaid__v1__shard_stats_response__descriptor, &m, &st),
                     0);
    uint64_t now = ((Japlaid__V1__ShardStatsResponse *)m)->stats->requests_total;
    protobuf_c_message_free_unpacked(m, NULL);
    if (now >= base + polls + N) break;
    assert_true(polls < 10000);
  }
  assert_int_equal(kill(F.pid, SIGTERM), 0);
  for (int k = 0; k < N; k++) {
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    assert_int_equal(ev.type, GRPC_OP_COMPLETE);
    int i = (int)(uintptr_t)ev.tag - 1;
    ProtobufCMessage *r;
    int rc = rpc_call_result(calls[i], &japlaid__v1__shard_search_response__descriptor, NULL, &r, &st);
    if (rc < 0) fail_msg("accepted call %d failed during the drain: %s", i, jp_errmsg(rc));
    assert_int_equal(((Japlaid__V1__ShardSearchResponse *)r)->n_results, NQUERIES);
    protobuf_c_message_free_unpacked(r, NULL);
    rpc_call_destroy(calls[i]);
  }
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
  int status = wait_exit(F.pid, 60000);
  assert_int_equal(status, 0);
  F.pid = 0;

  /* RocksDB was closed cleanly (reopening read-write takes its lock) and
   * the acknowledged write is there. */
  jp_store *stp;
  struct jp_store_opts so;
  jp_store_opts_default(&so);
  assert_int_equal(jp_store_open(F.dir, &so, &stp), 0);
  struct jp_arena a;
  jp_arena_init(&a, 0, 0);
  struct jp_search_params sp;
  jp_search_params_init(&sp, 1);
  sp.exhaustive = 1;
  struct jp_result *res;
  int n;
  assert_int_equal(jp_store_search(stp, &queries[0][0][0], NQ, &sp, NULL, NULL, &a, &res, &n), 0);
  assert_int_equal(n, 1);
  assert_string_equal(res[0].document_id, id);
  jp_arena_fini(&a);
  jp_store_close(stp);
}

static void shard_lame_duck_reports_not_serving_but_serves(void **state)
{
  (void)state;
  /* A long lame-duck period, so the checks below cannot outrun it; the
   * process is killed afterwards. */
  char addr[128];
  pid_t pid = spawn_shard(F.dir, "--lame-duck-ms", "600000", addr, sizeof addr);
  F.pid = pid;
  assert_int_equal(await_health(addr, RPC_HEALTH_SERVING), RPC_HEALTH_SERVING);
  assert_int_equal(kill(pid, SIGTERM), 0);
  assert_int_equal(await_health(addr, RPC_HEALTH_NOT_SERVING), RPC_HEALTH_NOT_SERVING);
  struct sreq s;
  make_search(&s, &cases[0], 1);
  ProtobufCMessage *m;
  grpc_status_code st;
  assert_int_equal(rpc_client_call(F.cli, addr, "/japlaid.v1.Shard/Search", &s.r.base,
                                   &japlaid__v1__shard_search_response__descriptor, NULL, 30000,
                                   &m, &st),
                   0);
  /* The document written before the restart (query 0's own vectors) leads. */
  char kept[32];
  doc_id(3000, kept, sizeof kept);
  assert_string_equal(((Japlaid__V1__ShardSearchResponse *)m)->results[0]->hits[0]->document_id,
                      kept);
  protobuf_c_message_free_unpacked(m, NULL);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  F.pid = 0;
}

static void shard_refuses_a_missing_partition(void **state)
{
  (void)state;
  char missing[400];
  snprintf(missing, sizeof missing, "%s/nothing-here", F.tmp);
  char addr[128];
  pid_t pid = spawn_shard(missing, NULL, NULL, addr, sizeof addr);
  assert_int_equal(wait_exit(pid, 60000), 1);
}

int main(int argc, char **argv)
{
  if (argc < 2 || access(argv[1], X_OK) != 0) {
    fprintf(stderr, "usage: test_shard_integration PATH/japlaid-shard\n");
    return JP_TEST_SKIP;
  }
  g_bin = argv[1];
  if (!getenv("JAPLAID_LOG")) jp_log_set_level(JP_LOG_LEVEL_ERROR);
  /* The shard inherits the environment: keep its expected warnings quiet. */
  setenv("JAPLAID_LOG", getenv("JAPLAID_LOG") ? getenv("JAPLAID_LOG") : "error", 1);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(shard_search_matches_in_process_search),
    cmocka_unit_test(shard_upsert_then_search_finds_it_delete_removes_it),
    cmocka_unit_test(shard_refuses_bad_requests_and_keeps_serving),
    cmocka_unit_test(shard_survives_random_and_mutated_requests),
    cmocka_unit_test(shard_stats),
    cmocka_unit_test(shard_python_client_interop),
    cmocka_unit_test(shard_sigterm_drains_and_exits_zero),
    cmocka_unit_test(shard_lame_duck_reports_not_serving_but_serves),
    cmocka_unit_test(shard_refuses_a_missing_partition),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
