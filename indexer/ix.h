/* ix.h: internals of japlaid-index, the MPI index build (DESIGN §2).
 *
 * The job, on R ranks (R >= 1; without mpirun it is one rank):
 *   scan    every rank reads its byte range of the corpus, splits documents
 *           into passages exactly as `japlaid index` (build.c) does, routes
 *           each document to partition jp_route_partition(id, P), and cuts
 *           its documents into chunks (the unit of resume); repeated
 *           document ids are found across ranks (hash exchange);
 *   plan    global counts by MPI_Allreduce; sample size, nbits, iterations;
 *   sample  the passages to sample are chosen by GLOBAL passage index with
 *           build.c's seeded selection sampling, so the sample does not
 *           depend on R; each rank encodes the sampled passages it holds;
 *   k-means the held-out/train split is a seeded shuffle of the global
 *           sample (every rank computes the same permutation); every rank
 *           assigns its own train vectors, jp_kmeans' reduce hook sums over
 *           ranks with MPI_Allreduce; the initial centroids are the same
 *           global sample rows build.c would pick, assembled by Allreduce;
 *   codec   rank 0 gathers the held-out vectors (at most 50,000) and trains
 *           the residual buckets; the codec is broadcast and saved;
 *   encode  every rank encodes its passages chunk by chunk into one SST
 *           writer per partition (disjoint pid ranges from MPI_Exscan of
 *           per-rank, per-chunk passage counts; IVF segment = global chunk
 *           number); a chunk's files are marked done when complete;
 *   ingest  partition p is ingested by rank p % R (jp_store_ingest);
 *   publish rank 0 writes index.json and build-summary.json and renames
 *           the temporary directory to DIR in one step.
 * With R = 1 the passages, sample, k-means and codec are those of
 * `japlaid index` (same seed streams), so one-rank and single-process
 * builds give the same partition contents.
 *
 * Everything is built under DIR.tmp-<jobid>/ (all ranks must see it: a
 * shared file system on several nodes):
 *   state/lock              flock'ed by rank 0 while a job works here
 *   state/fingerprint.json  what the build is (corpus, model, settings)
 *   state/layout.json       ranks and chunk size the scan state is for
 *   state/scan-<rank>.bin   a rank's scan result (counts, chunk table)
 *   state/codec.bin         plan + trained codec (after k-means)
 *   state/chunk-<seg>.done  a chunk's SST files are complete (+ counts)
 *   sst/part-<p>/           SST files of every writer of partition p
 *   part-<p>/               partition p, once ingested
 * --resume finds the newest DIR.tmp-* with the same fingerprint and skips
 * what is done; its result equals a fresh build's.
 *
 * Errors: a failure inside a phase prints "japlaid-index: rank r (host):
 * message" and aborts the whole job (MPI_Abort), so no rank waits forever
 * for a dead peer; failures that every rank sees at the same point (bad
 * options, model) are agreed with one Allreduce and exit cleanly.
 *
 * Thread-safety: MPI is called from the main thread only (FUNNELED); the
 * pool's workers split and encode. */
#ifndef JP_IX_H
#define JP_IX_H
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>

#include "index/codec.h"
#include "index/corpus.h"
#include "model/model.h"
#include "text/split.h"
#include "util/arena.h"
#include "util/pool.h"

/* Path buffers: PATH_MAX plus room for the suffixes added here. */
#define IX_PATH 4352
/* Longest output path accepted: DIR.tmp-<jobid>/state/<file> and
 * DIR.tmp-<jobid>/part-<p>/<rocksdb file> stay far below IX_PATH. */
#define IX_DIR_MAX 2048
/* Documents per read batch and passages per encoder call: build.c's
 * READ_BATCH_DOCS and ENC_BATCH (same batching, same vectors). */
#define IX_READ_BATCH 64
#define IX_ENC_BATCH 64
/* Room for [CLS] [D] [SEP] (build.c's DOC_SPECIAL_TOKENS). */
#define IX_DOC_SPECIAL_TOKENS 3
/* Passage overlap when splitting: RAGatouille's min(64, max / 4). */
#define IX_SPLIT_OVERLAP_MAX 64
/* Default chunk: ColBERT's chunk size (25,000 passages): large enough that
 * per-chunk SST files stay few, small enough that a failed job loses at
 * most a few minutes of encoding per rank. */
#define IX_DEFAULT_CHUNK_PASSAGES 25000
/* At most 65,536 partitions: per-chunk tables are [P]-sized, and no
 * cluster serves more shards than that. */
#define IX_MAX_PARTITIONS 65536

/* np values of documents that yield no passages. */
#define IX_NP_BAD (-1)     /* splitting failed: a bad line */
#define IX_NP_DUP (-2)     /* its id appeared on an earlier line */

struct ix_opts {
  const char *model_dir, *corpus, *out;
  int partitions;
  int nbits;                      /* 0: by collection size */
  int mdl;                        /* max document length; 0: the model's */
  int no_split, resume, skip_bad, overwrite;
  int cuda;                       /* --device cuda */
  int threads;                    /* 0: default (see main.c) */
  int kmeans_iters;               /* 0: by collection size */
  uint64_t seed;
  uint64_t chunk_passages;
};

/* One chunk of a rank's documents: doc ordinals [ord0, ord1). */
struct ix_chunk {
  uint64_t ord0, ord1;
  uint64_t seg;                   /* global chunk number = IVF segment, SST tag */
  uint64_t *pass;                 /* [P] passages per partition */
  uint64_t *docs;                 /* [P] documents per partition */
  uint64_t *first_seq;            /* [P] first pid sequence in each partition */
  int done;                       /* its files are complete (resume) */
};

struct ix_scan {
  uint64_t n_ord;                 /* documents the corpus reader returned */
  int32_t *np;                    /* [n_ord] passages, or IX_NP_BAD / IX_NP_DUP */
  uint64_t n_docs, n_pass, n_split_docs;
  uint64_t n_bad;                 /* corpus + repeated-id + untokenisable lines */
  uint64_t bytes;                 /* bytes of the range */
  struct ix_chunk *chunks;
  int n_chunks;
  uint64_t g0;                    /* global index of this rank's first passage */
};

/* The plan and the trained codec: identical on every rank. */
struct ix_plan {
  uint64_t n_docs, n_passages, n_bad, n_split_docs;
  uint64_t n_sample;              /* passages sampled */
  uint64_t n_sample_vecs, n_train, n_heldout;
  double avg_doclen;
  int ncentroids, nbits, iters;
  double objective;
  uint64_t kmeans_bytes_iter;     /* Allreduce payload per rank per iteration */
  double kmeans_reduce_s;         /* time inside the Allreduce, all iterations */
};

/* Seconds per phase (rank 0's clock; phases end at a collective). */
struct ix_times {
  double scan, plan, sample, kmeans, codec, encode, ingest, publish, total;
};

struct ix_ctx {
  MPI_Comm comm;
  int rank, size, local_rank, local_size;
  char host[64];
  struct ix_opts o;
  FILE *out;                      /* progress/phase lines: stderr on rank 0, else NULL */

  jp_model *model;
  const struct jp_model_info *info;
  jp_pool *pool;
  int threads;                    /* resolved per-rank threads */
  int gpu;                        /* CUDA ordinal, -1 on CPU */
  int mdl, max_tokens, split, truncate;

  char dir[IX_PATH];              /* DIR */
  char tmp[IX_PATH];              /* DIR.tmp-<jobid> */
  char state[IX_PATH];            /* tmp/state */
  char sst[IX_PATH];              /* tmp/sst */
  char corpus_abs[IX_PATH];
  char model_abs[1024];
  uint64_t corpus_size;
  int resumed;                    /* the tmp dir was found by --resume */
  int lock_fd;                    /* rank 0: flock on tmp/state/lock for the job, or -1 */
  int have_scan, have_codec;      /* loaded from state */

  struct ix_scan scan;
  struct ix_plan plan;
  struct jp_codec codec;
  struct ix_times t;
  double t_start;
  uint64_t seg0;                  /* global number of this rank's first chunk */
  uint64_t *part_pass, *part_docs, *part_emb;   /* [P] totals (rank 0, after encode) */
};

/* ---- ix_mpi.c: errors, test hooks, cross-rank progress ------------------- */

/* Print "japlaid-index: rank r (host): <message of rc>" and abort the job. */
void ix_fatal(struct ix_ctx *c, int rc) __attribute__((noreturn));
/* Inside a phase: any failure ends the job (the other ranks may be inside
 * a collective this rank would never reach). Phase functions return an
 * error only when every rank has the same one at the same point (an empty
 * corpus, say); main() reports those once. */
#define IX_TRY(c, expr)                       \
  do {                                        \
    int ix_rc_ = (expr);                      \
    if (ix_rc_ < 0) ix_fatal((c), ix_rc_);    \
  } while (0)
/* Every rank passes its rc; returns the minimum (0 if all succeeded). Ranks
 * that failed print their message first. */
int ix_agree(struct ix_ctx *c, int rc);
/* Check an MPI return code: JP_EMPI with the MPI error string. */
int ix_mpi_rc(int mrc, const char *what);
/* Test hooks, at named points of the job (JAPLAID_TEST_DIE_AT /
 * JAPLAID_TEST_FAIL_AT = phase:rank[:n], the n-th time the point is
 * reached, default 1): die = _exit(137) as kill -9 would, fail = return an
 * error. Returns 0 or the injected error. */
int ix_hook(struct ix_ctx *c, const char *phase);

/* snprintf for paths. DIR is at most IX_DIR_MAX bytes (checked when the
 * options are parsed) and directory entries at most 255, so every path
 * built from them fits IX_PATH and is never cut. */
void ix_pathf(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Phase line on rank 0's stream (no-op elsewhere). */
void ix_say(struct ix_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Progress across ranks: every rank ticks its own count; rank 0 draws the
 * sum. Non-root ranks send their count point-to-point (MPI_Isend, at most
 * one in flight, about twice a second); rank 0 polls at its own batch
 * boundaries and, at the end, keeps drawing until every rank has sent its
 * final count. So no collective is needed while ranks do unequal work. */
struct ix_prog;
int  ix_prog_begin(struct ix_ctx *c, const char *label, const char *unit, uint64_t total,
                   int tag, struct ix_prog **out);
void ix_prog_tick(struct ix_prog *p, uint64_t mine);
/* Collective: returns the global sum of the final counts (on every rank). */
int  ix_prog_end(struct ix_prog *p, uint64_t mine, uint64_t *global);

/* ---- ix_reader.c: the corpus in batches, split as build.c ------------------ */

struct ix_rdoc {
  uint64_t ord;                   /* ordinal in this rank's range */
  uint64_t user;                  /* set by the want callback */
  const char *id, *text, *meta;
  size_t id_len, text_len;
  uint64_t line;
  uint32_t part;                  /* jp_route_partition(id, P) */
  struct jp_span *spans;          /* NULL: the whole text is one passage */
  int n_spans;
  size_t enc_len;                 /* no-split: bytes encoded */
  int rc;                         /* splitting result */
  char err[256];
};

/* want(ctx, doc, &user): 1 = split and deliver this document, 0 = skip
 * it (it still gets its ordinal), < 0 = error. */
typedef int (*ix_want_fn)(void *ctx, const struct ix_rdoc *d, uint64_t *user);

struct ix_reader {
  struct ix_ctx *c;
  jp_corpus *corpus;
  struct jp_arena arena;
  struct ix_rdoc docs[IX_READ_BATCH];
  int n;
  jp_tok_ctx **tok;
  int32_t **ids_scratch;
  uint32_t **off_scratch;
  int n_tok;
  uint64_t next_ord;
  ix_want_fn want;
  void *want_ctx;
  int quiet_bad;                  /* later passes: the scan already reported bad lines */
};

/* This rank's byte range of the corpus: [begin, end) (end 0 = EOF). */
void ix_range(const struct ix_ctx *c, uint64_t *begin, uint64_t *end);
int  ix_reader_open(struct ix_reader *r, struct ix_ctx *c, ix_want_fn want, void *want_ctx);
/* Next batch: the number of documents (>= 1), 0 at the end, or an error.
 * Documents whose splitting failed come back with rc < 0. */
int  ix_reader_next(struct ix_reader *r);
void ix_reader_close(struct ix_reader *r);
int  ix_doc_passages(const struct ix_rdoc *d);
void ix_doc_passage(const struct ix_rdoc *d, int j, const char **content, size_t *content_len,
                    size_t *enc_len);

/* Encode texts ENC_BATCH at a time (build.c's encode_texts): appends the
 * kept vectors to *vecs (growing it) and each text's count to doclens. */
struct ix_vecs {
  float *v;
  size_t n, cap;                  /* vectors */
  int dim;
};
struct ix_encoder {
  jp_encoder *e;
  int dim, doc_maxlen;
  float *out;
  int32_t *doclens;
};
int  ix_encoder_init(struct ix_encoder *en, jp_model *m);
void ix_encoder_fini(struct ix_encoder *en);
int  ix_encode_texts(struct ix_encoder *en, const char *const *texts, const size_t *lens, int n,
                     struct ix_vecs *vs, int32_t *doclens);

/* ---- phases ------------------------------------------------------------------- */

int ix_scan_run(struct ix_ctx *c);               /* ix_scan.c: scan + repeated ids + chunks */
int ix_scan_save(struct ix_ctx *c);
int ix_scan_load(struct ix_ctx *c);              /* 1 = loaded, 0 = absent */
void ix_scan_fini(struct ix_scan *s);
int ix_chunks_finalize(struct ix_ctx *c);        /* seq bases, segments (collective) */

int ix_train_run(struct ix_ctx *c);              /* ix_train.c: sample, k-means, codec */
int ix_codec_save(struct ix_ctx *c);
int ix_codec_load(struct ix_ctx *c);             /* 1 = loaded, 0 = absent */

int ix_encode_run(struct ix_ctx *c);             /* ix_encode.c */
int ix_ingest_run(struct ix_ctx *c);

/* ix_state.c: the temporary directory, resume, publish */
/* Collective: create or find (--resume) the temporary directory; drops
 * scan/chunk state of another layout. 1 = it holds a finished index that
 * only needs publishing, 0 = build, < 0 = error (rank 0 reports it). */
int ix_state_setup(struct ix_ctx *c);
/* Collective: write index.json and build-summary.json, rename to DIR,
 * print the summary on stdout (rank 0). */
int ix_publish(struct ix_ctx *c, int finished);
void ix_part_name(char *buf, size_t cap, uint32_t p);   /* "part-0003" */

#endif /* JP_IX_H */
