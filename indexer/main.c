/* main.c: japlaid-index, the MPI index build (ix.h has the design).
 *
 *   mpirun -np R japlaid-index build --model M --corpus FILE --out DIR --partitions P ...
 *   japlaid-index build ...            (no mpirun: one rank)
 *
 * Output contract (as `japlaid index`): progress and phase lines on
 * stderr (rank 0 only), the build summary as one JSON line on stdout
 * (rank 0), DIR/index.json and DIR/build-summary.json. Exit status 0 ok,
 * 1 failure, 2 usage error; a rank that dies or fails ends the job
 * (mpirun then exits non-zero).
 *
 * Thread-safety: MPI from the main thread only (MPI_THREAD_FUNNELED). */
#include "ix.h"

#include "index/build.h"
#include "jp_config.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"

#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };
/* parse_args: the options are complete, run the build. */
#define PARSED_RUN (-1)

static const char *const usage_text =
  "usage: [mpirun -np R] japlaid-index build --model DIR --corpus FILE --out DIR\n"
  "                      --partitions P [--nbits N] [--max-document-length N]\n"
  "                      [--no-split] [--device cpu|cuda] [--resume] [--overwrite]\n"
  "                      [--skip-bad-lines] [--seed S] [--threads T]\n"
  "                      [--kmeans-iters N] [--chunk-passages N]\n"
  "\n"
  "Builds a PLAID index of a corpus (JSONL {\"id\",\"text\",\"metadata\"} or TSV\n"
  "id<TAB>text / id<TAB>title<TAB>text) on R MPI ranks (without mpirun: one),\n"
  "as P partitions DIR/part-0000 ... each servable by japlaid-shard and\n"
  "searchable with `japlaid search --index DIR/part-0000`, plus DIR/index.json\n"
  "and DIR/build-summary.json. Documents go to partition\n"
  "XXH3-64(id) mod P (the coordinator routes writes the same way). Passages,\n"
  "sample, k-means and codec follow `japlaid index`; with one rank and P = 1\n"
  "the partition holds what `japlaid index` builds.\n"
  "  --partitions P           partitions (1..65536)\n"
  "  --nbits N                residual bits: 1, 2, 4 or 8 (default by size: 8 below\n"
  "                           5,000 passages, 4 below 10,000, else 2)\n"
  "  --max-document-length N  tokens per passage incl. [CLS] [D] [SEP] (default:\n"
  "                           the model's doc_maxlen); longer documents are split\n"
  "                           with an overlap of min(64, N/4)\n"
  "  --no-split               one passage per document, truncated to that length\n"
  "  --device cpu|cuda        encoder device; cuda: each rank uses GPU\n"
  "                           (local rank mod visible GPUs)\n"
  "  --resume                 continue the newest interrupted build of the same\n"
  "                           corpus and settings (DIR.tmp-*): finished chunks and\n"
  "                           the trained codec are kept\n"
  "  --overwrite              replace an existing japlaid-index output atomically\n"
  "  --skip-bad-lines         skip (and count) malformed lines and repeated ids\n"
  "                           instead of failing\n"
  "  --seed S                 sampling and k-means seed (default 123)\n"
  "  --threads T              threads per rank (default: all cores with one rank;\n"
  "                           with several, the rank's bound cores, or the node's\n"
  "                           cores / ranks on the node, at least 1)\n"
  "  --kmeans-iters N         k-means iterations (default by size: 20 up to 50k\n"
  "                           passages, 10 up to 100k, else 4)\n"
  "  --chunk-passages N       passages per resumable chunk of a rank (default 25000)\n"
  "Environment: OPENBLAS_NUM_THREADS (honoured unless --threads is given; else\n"
  "set to the threads per rank), JAPLAID_LOG (log level), SLURM_JOB_ID (names\n"
  "DIR.tmp-<jobid>), JAPLAID_TEST_DIE_AT / JAPLAID_TEST_FAIL_AT (tests only),\n"
  "JAPLAID_DUMP_KMEANS=DIR (benchmarks: write the k-means input of a one-rank build).\n";

static int usage_error(const struct ix_ctx *c, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));
static int usage_error(const struct ix_ctx *c, const char *fmt, ...)
{
  va_list ap;
  if (c->rank != 0) return EXIT_USAGE;
  fputs("japlaid-index: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs(" (see japlaid-index build --help)\n", stderr);
  return EXIT_USAGE;
}

/* The whole string as an integer in [min, max] (0), else a usage error. */
static int parse_num(const struct ix_ctx *c, const char *opt, const char *s, long long min,
                     long long max, long long *out)
{
  char *end;
  long long v;
  if (!s) return usage_error(c, "%s needs a value", opt);
  errno = 0;
  v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max)
    return usage_error(c, "%s must be an integer in %lld..%lld, got '%s'", opt, min, max, s);
  *out = v;
  return 0;
}

/* PARSED_RUN = build, EXIT_OK = help or version printed, EXIT_USAGE = error. */
static int parse_args(struct ix_ctx *c, int argc, char **argv)
{
  struct ix_opts *o = &c->o;
  struct jp_index_build_opts bo;
  long long v;
  int rc;

  /* `japlaid index`'s defaults (the seed), so both tools agree. */
  jp_index_build_opts_default(&bo);
  memset(o, 0, sizeof *o);
  o->seed = bo.seed;
  o->chunk_passages = IX_DEFAULT_CHUNK_PASSAGES;
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    if (c->rank == 0) fputs(usage_text, argc < 2 ? stderr : stdout);
    return argc < 2 ? EXIT_USAGE : EXIT_OK;
  }
  if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
    if (c->rank == 0) printf("japlaid-index %s (CUDA %s)\n", JP_VERSION_STRING, JP_HAVE_CUDA ? "yes" : "no");
    return EXIT_OK;
  }
  if (strcmp(argv[1], "build")) return usage_error(c, "unknown command '%s'", argv[1]);
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      if (c->rank == 0) fputs(usage_text, stdout);
      return EXIT_OK;
    } else if (!strcmp(a, "--model") || !strcmp(a, "--corpus") || !strcmp(a, "--out") ||
               !strcmp(a, "--device")) {
      if (!val) return usage_error(c, "%s needs a value", a);
      if (!strcmp(a, "--model")) o->model_dir = val;
      else if (!strcmp(a, "--corpus")) o->corpus = val;
      else if (!strcmp(a, "--out")) o->out = val;
      else if (!strcmp(val, "cuda")) o->cuda = 1;
      else if (!strcmp(val, "cpu")) o->cuda = 0;
      else return usage_error(c, "--device must be cpu or cuda, got '%s'", val);
      i++;
    } else if (!strcmp(a, "--partitions")) {
      if ((rc = parse_num(c, a, val, 1, IX_MAX_PARTITIONS, &v))) return rc;
      o->partitions = (int)v;
      i++;
    } else if (!strcmp(a, "--nbits")) {
      if ((rc = parse_num(c, a, val, 1, 8, &v))) return rc;
      if (v != 1 && v != 2 && v != 4 && v != 8)
        return usage_error(c, "--nbits must be 1, 2, 4 or 8, got %lld", v);
      o->nbits = (int)v;
      i++;
    } else if (!strcmp(a, "--max-document-length")) {
      if ((rc = parse_num(c, a, val, IX_DOC_SPECIAL_TOKENS + 1, 65536, &v))) return rc;
      o->mdl = (int)v;
      i++;
    } else if (!strcmp(a, "--threads")) {
      if ((rc = parse_num(c, a, val, 1, 1024, &v))) return rc;
      o->threads = (int)v;
      i++;
    } else if (!strcmp(a, "--kmeans-iters")) {
      if ((rc = parse_num(c, a, val, 1, 1000, &v))) return rc;
      o->kmeans_iters = (int)v;
      i++;
    } else if (!strcmp(a, "--chunk-passages")) {
      if ((rc = parse_num(c, a, val, 1, (long long)1 << 40, &v))) return rc;
      o->chunk_passages = (uint64_t)v;
      i++;
    } else if (!strcmp(a, "--seed")) {
      if ((rc = parse_num(c, a, val, 0, LLONG_MAX, &v))) return rc;
      o->seed = (uint64_t)v;
      i++;
    } else if (!strcmp(a, "--no-split")) {
      o->no_split = 1;
    } else if (!strcmp(a, "--resume")) {
      o->resume = 1;
    } else if (!strcmp(a, "--overwrite")) {
      o->overwrite = 1;
    } else if (!strcmp(a, "--skip-bad-lines")) {
      o->skip_bad = 1;
    } else {
      return usage_error(c, "unknown option %s", a);
    }
  }
  if (!o->model_dir || !o->corpus || !o->out || !o->partitions)
    return usage_error(c, "--model, --corpus, --out and --partitions are required");
  if (strlen(o->out) > IX_DIR_MAX) return usage_error(c, "--out is longer than %d bytes", IX_DIR_MAX);
  return PARSED_RUN;
}

/* Threads per rank: --threads; one rank: all cores (0); several: the
 * cores the launcher bound this rank to, or, unbound, the node's cores
 * shared by its ranks (at least 1). */
static int resolve_threads(const struct ix_ctx *c)
{
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  int cpus = jp_ncpus(), t;
  if (c->o.threads > 0) return c->o.threads;
  if (c->size == 1) return 0;
  if (online > 0 && cpus < online) return cpus;
  t = cpus / (c->local_size > 0 ? c->local_size : 1);
  return t < 1 ? 1 : t;
}

static int open_model(struct ix_ctx *c)
{
  struct jp_model_opts mo;
  char *abs;
  int rc;
  jp_model_opts_default(&mo);
  mo.n_threads = c->threads;
  c->gpu = -1;
  if (c->o.cuda) {
#if JP_HAVE_CUDA
    int n = jp_model_gpu_count();
    const char *vis = getenv("CUDA_VISIBLE_DEVICES");
    if (n <= 0)
      return jp_err(JP_ENODEVICE, "--device cuda: no GPU is visible on %s (CUDA_VISIBLE_DEVICES=%s)",
                    c->host, vis ? vis : "unset");
    c->gpu = c->local_rank % n;
    mo.device = JP_DEVICE_CUDA;
    mo.gpu = c->gpu;
#else
    return jp_err(JP_EUNSUPPORTED, "--device cuda: this japlaid-index was built without the CUDA "
                  "backend (configure with -DJP_CUDA=ON on a machine with nvcc)");
#endif
  }
  if ((rc = jp_model_open(c->o.model_dir, &mo, &c->model)) < 0) return rc;
  c->info = jp_model_get_info(c->model);
  if (!(abs = realpath(c->o.model_dir, NULL)))   /* libc-allocated: free() */
    return jp_err(JP_EIO, "cannot resolve %s: %s", c->o.model_dir, strerror(errno));
  snprintf(c->model_abs, sizeof c->model_abs, "%s", abs);
  free(abs);
  return 0;
}

/* Splitting settings as build.c derives them. Same on every rank. */
static int settings(struct ix_ctx *c)
{
  int doc_maxlen = c->info->colbert.doc_maxlen;
  c->mdl = c->o.mdl ? c->o.mdl : doc_maxlen;
  if (c->mdl <= IX_DOC_SPECIAL_TOKENS || c->mdl > doc_maxlen)
    return jp_err(JP_EINVAL, "max document length %d must be in %d..%d (the model's doc_maxlen)",
                  c->mdl, IX_DOC_SPECIAL_TOKENS + 1, doc_maxlen);
  c->max_tokens = c->mdl - IX_DOC_SPECIAL_TOKENS;
  c->split = !c->o.no_split;
  c->truncate = c->o.no_split && c->mdl < doc_maxlen;
  return 0;
}

static int init_ranks(struct ix_ctx *c)
{
  MPI_Comm local;
  int len = 0;
  char name[MPI_MAX_PROCESSOR_NAME];
  c->comm = MPI_COMM_WORLD;
  MPI_Comm_rank(c->comm, &c->rank);
  MPI_Comm_size(c->comm, &c->size);
  /* Ranks sharing this node: the launcher-independent local rank. */
  if (MPI_Comm_split_type(c->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local) !=
      MPI_SUCCESS)
    return JP_EMPI;
  MPI_Comm_rank(local, &c->local_rank);
  MPI_Comm_size(local, &c->local_size);
  MPI_Comm_free(&local);
  /* OpenMPI's launcher says which local rank this is (the rank that picks
   * GPU local_rank % GPUs); trust it over the communicator's order, which
   * can differ when a node's ranks are not numbered consecutively. */
  const char *lr = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  if (lr && *lr) {
    char *end;
    long v = strtol(lr, &end, 10);
    if (!*end && v >= 0 && v < c->local_size) c->local_rank = (int)v;
  }
  if (MPI_Get_processor_name(name, &len) != MPI_SUCCESS) snprintf(name, sizeof name, "?");
  ix_pathf(c->host, sizeof c->host, "%s", name);
  return 0;
}

static int run(struct ix_ctx *c)
{
  double t0;
  int rc, finished, loaded;

  /* Setup agreed by all ranks: pool, model, settings. */
  rc = jp_pool_create(c->threads, &c->pool);
  if (rc == 0) rc = open_model(c);
  if (rc == 0) rc = settings(c);
  if (ix_agree(c, rc) < 0) return EXIT_FAIL;
  IX_TRY(c, ix_hook(c, "start"));
  if (!c->threads) c->threads = jp_pool_size(c->pool);   /* "all cores", resolved */
  ix_say(c, "japlaid-index: %d rank%s, %d thread%s per rank, %s; model %s; %d partition%s",
         c->size, c->size == 1 ? "" : "s", c->threads, c->threads == 1 ? "" : "s",
         c->gpu >= 0 ? "CUDA" : "CPU", c->info->name, c->o.partitions,
         c->o.partitions == 1 ? "" : "s");
  if ((rc = ix_state_setup(c)) < 0) {
    if (c->rank == 0) fprintf(stderr, "japlaid-index: %s\n", jp_errmsg(rc));
    return EXIT_FAIL;
  }
  finished = rc == 1;
  if (!finished) {
    /* Scan (or its saved result): every rank must have its own. */
    t0 = jp_now_s();
    loaded = 0;
    if (c->resumed) IX_TRY(c, loaded = ix_scan_load(c));
    {
      int all = 0;
      IX_TRY(c, ix_mpi_rc(MPI_Allreduce(&loaded, &all, 1, MPI_INT, MPI_MIN, c->comm), "resume"));
      loaded = all;
    }
    if (loaded) {
      ix_say(c, "scan: kept from the interrupted job");
    } else {
      IX_TRY(c, ix_scan_run(c));
      IX_TRY(c, ix_scan_save(c));
    }
    IX_TRY(c, ix_chunks_finalize(c));
    c->t.scan = jp_now_s() - t0;

    /* Plan, sample, k-means, codec (or the saved codec). */
    loaded = 0;
    if (c->resumed) IX_TRY(c, loaded = ix_codec_load(c));
    {
      int all = 0;
      IX_TRY(c, ix_mpi_rc(MPI_Allreduce(&loaded, &all, 1, MPI_INT, MPI_MIN, c->comm), "resume"));
      loaded = all;
    }
    if (loaded) {
      uint64_t n = 0;
      IX_TRY(c, ix_mpi_rc(MPI_Allreduce(&c->scan.n_pass, &n, 1, MPI_UINT64_T, MPI_SUM, c->comm),
                          "resume"));
      if (n != c->plan.n_passages) {
        if (c->rank == 0)
          fprintf(stderr, "japlaid-index: the saved codec in %s was planned for %" PRIu64
                  " passages, the scan found %" PRIu64 "; remove that directory and start again\n",
                  c->state, c->plan.n_passages, n);
        return EXIT_FAIL;
      }
      ix_say(c, "codec: kept from the interrupted job (%d centroids, nbits %d)",
             c->codec.ncentroids, c->codec.nbits);
    } else {
      if ((rc = ix_train_run(c)) < 0) {
        /* Nothing to index (every rank knows): a new temporary directory
         * holds nothing worth resuming. */
        if (c->rank == 0) {
          fprintf(stderr, "japlaid-index: %s\n", jp_errmsg(rc));
          if (!c->resumed) (void)jp_rm_rf(c->tmp);
        }
        return EXIT_FAIL;
      }
      if (c->rank == 0) IX_TRY(c, ix_codec_save(c));
    }

    t0 = jp_now_s();
    IX_TRY(c, ix_encode_run(c));
    c->t.encode = jp_now_s() - t0;
    t0 = jp_now_s();
    IX_TRY(c, ix_ingest_run(c));
    c->t.ingest = jp_now_s() - t0;
  }
  if ((rc = ix_publish(c, finished)) < 0) {
    if (c->rank == 0) fprintf(stderr, "japlaid-index: %s\n", jp_errmsg(rc));
    return EXIT_FAIL;
  }
  ix_say(c, "published %s (%d partition%s) in %.1fs", c->dir, c->o.partitions,
         c->o.partitions == 1 ? "" : "s", jp_now_s() - c->t_start);
  return EXIT_OK;
}

int main(int argc, char **argv)
{
  struct ix_ctx *c;
  int provided = 0, status;
  size_t len;

  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    fprintf(stderr, "japlaid-index: MPI_Init failed\n");
    return EXIT_FAIL;
  }
  jp_log_init_from_env();
  c = jp_calloc(1, sizeof *c);   /* large (paths): not on the stack */
  if (!c || init_ranks(c) < 0) {
    fprintf(stderr, "japlaid-index: cannot start (out of memory or MPI)\n");
    MPI_Abort(MPI_COMM_WORLD, EXIT_FAIL);
    return EXIT_FAIL;
  }
  c->t_start = jp_now_s();
  c->lock_fd = -1;
  if (c->size > 1) {
    char tag[32];
    snprintf(tag, sizeof tag, "rank %d", c->rank);
    jp_log_set_tag(tag);
  }
  status = parse_args(c, argc, argv);
  if (status == PARSED_RUN) {
    c->out = c->rank == 0 ? stderr : NULL;
    snprintf(c->dir, sizeof c->dir, "%s", c->o.out);
    len = strlen(c->dir);
    while (len > 1 && c->dir[len - 1] == '/') c->dir[--len] = '\0';
    c->threads = resolve_threads(c);
    /* OpenBLAS sized its pool from the environment at load; match it to
     * this rank's share unless the user chose (OPENBLAS_NUM_THREADS). */
    if (c->o.threads > 0 || (c->size > 1 && !getenv("OPENBLAS_NUM_THREADS")))
      openblas_set_num_threads(c->threads > 0 ? c->threads : 1);
    status = run(c);
  }
  if (c->lock_fd >= 0) close(c->lock_fd);
  jp_model_close(c->model);
  jp_pool_destroy(c->pool);
  jp_codec_fini(&c->codec);
  ix_scan_fini(&c->scan);
  jp_free(c->part_pass);
  jp_free(c);
  MPI_Finalize();
  return status;
}
