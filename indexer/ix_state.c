/* ix_state.c: the temporary directory of a build, resuming one, and the
 * atomic publish of the finished index (ix.h).
 *
 * A build lives in DIR.tmp-<jobid> (jobid: SLURM_JOB_ID, else the start
 * time and rank 0's pid) beside DIR. Its state/fingerprint.json says what
 * is being built (corpus path, size and mtime, model identity, partitions
 * and every setting that changes the result); --resume picks the newest
 * DIR.tmp-* with an equal fingerprint that no running job holds (rank 0
 * keeps an flock on state/lock while it works; the kernel drops it when
 * the process dies, so a killed job's directory is free at once).
 * state/layout.json says for which
 * ranks and chunk size the scan and chunk state were made; a resumed job
 * with another layout keeps the trained codec and redoes the rest.
 *
 * Publish (rank 0, after every partition is ingested): index.json and
 * build-summary.json are written into the temporary directory, the state
 * and SST directories removed, and the directory renamed to DIR in one
 * rename(2) (RENAME_NOREPLACE; with --overwrite, RENAME_EXCHANGE with the
 * previous index, which is then removed). So DIR is either absent, the
 * previous index, or the complete new one. A temporary directory that
 * already holds index.json (rank 0 died between writing it and renaming)
 * is published by --resume as it is.
 *
 * Thread-safety: main thread. Allocation: freed before return. */
#include "ix.h"

#include "util/clock.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/log.h"
#include "util/mem.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define INDEX_FORMAT "japlaid-partitioned-index"
#define INDEX_FORMAT_VERSION 1

/* ---- paths -------------------------------------------------------------------------- */

static int split_path(const char *path, char *parent, size_t pcap, char *base, size_t bcap)
{
  const char *slash = strrchr(path, '/');
  if (!slash) {
    snprintf(parent, pcap, ".");
    if (snprintf(base, bcap, "%s", path) >= (int)bcap) return JP_ETOOBIG;
    return 0;
  }
  if (slash == path) snprintf(parent, pcap, "/");
  else if ((size_t)(slash - path) >= pcap) return JP_ETOOBIG;
  else {
    memcpy(parent, path, (size_t)(slash - path));
    parent[slash - path] = '\0';
  }
  return snprintf(base, bcap, "%s", slash + 1) >= (int)bcap ? JP_ETOOBIG : 0;
}

/* The output of a japlaid-index build (index.json of our format). */
static int is_our_index(const char *dir)
{
  char path[IX_PATH];
  json_t *o = NULL;
  const char *fmt = NULL;
  int ok;
  snprintf(path, sizeof path, "%s/index.json", dir);
  if (jp_json_load_file(path, &o) < 0) return 0;
  ok = jp_json_get_str(o, "format", NULL, &fmt) == 0 && fmt && !strcmp(fmt, INDEX_FORMAT);
  json_decref(o);
  return ok;
}

/* ---- fingerprint ----------------------------------------------------------------------- */

static json_t *fingerprint(const struct ix_ctx *c, const struct stat *cst)
{
  return json_pack("{s:s, s:I, s:I, s:s, s:s, s:i, s:i, s:i, s:b, s:I, s:b, s:i}",
                   "corpus", c->corpus_abs, "corpus_bytes", (json_int_t)cst->st_size,
                   "corpus_mtime_ns",
                   (json_int_t)((int64_t)cst->st_mtim.tv_sec * 1000000000 + cst->st_mtim.tv_nsec),
                   "model_identity", c->info->identity, "model_name", c->info->name,
                   "partitions", c->o.partitions, "nbits", c->o.nbits,
                   "max_document_length", c->mdl, "split", c->split, "seed", (json_int_t)c->o.seed,
                   "skip_bad_lines", c->o.skip_bad, "kmeans_iters", c->o.kmeans_iters);
}

/* flock tmp/state/lock: 0 = locked (*fd holds it when keep, else it is
 * released), 1 = another job holds it, < 0 = error. */
static int lock_tmp(const char *tmp, int keep, int *fd)
{
  char path[IX_PATH];
  int f;
  *fd = -1;
  ix_pathf(path, sizeof path, "%s/state/lock", tmp);
  if ((f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0)
    return jp_err(JP_EIO, "cannot open %s: %s", path, strerror(errno));
  if (flock(f, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    close(f);
    if (e == EWOULDBLOCK) return 1;
    return jp_err(JP_EIO, "cannot lock %s: %s", path, strerror(e));
  }
  if (keep) *fd = f;
  else close(f);                  /* closing releases the lock */
  return 0;
}

/* 1 if tmp belongs to this build: its state says so, or it is a finished
 * but unpublished index of it (*finished = 1). */
static int tmp_matches(const char *tmp, const json_t *fp, int *finished)
{
  char path[IX_PATH];
  json_t *o = NULL, *f;
  int eq = 0;
  *finished = 0;
  ix_pathf(path, sizeof path, "%s/state/fingerprint.json", tmp);
  if (jp_json_load_file(path, &o) == 0) {
    eq = json_equal(o, (json_t *)fp);
    json_decref(o);
    return eq;
  }
  ix_pathf(path, sizeof path, "%s/index.json", tmp);
  if (jp_json_load_file(path, &o) < 0) return 0;
  f = json_object_get(json_object_get(o, "build"), "fingerprint");
  eq = f && json_equal(f, (json_t *)fp);
  json_decref(o);
  *finished = eq;
  return eq;
}

/* Newest DIR.tmp-* of this build (by mtime), or "" if none. Sets *others
 * when temporary directories of other builds are there. */
static int find_tmp(const struct ix_ctx *c, const char *parent, const char *base,
                    const json_t *fp, char *out, size_t cap, int *finished, int *others)
{
  char prefix[IX_PATH];
  DIR *d;
  struct dirent *e;
  struct timespec best = {0, 0};
  *out = '\0';
  *others = 0;
  *finished = 0;
  ix_pathf(prefix, sizeof prefix, "%s.tmp-", base);
  if (!(d = opendir(parent))) return jp_err(JP_EIO, "cannot read %s: %s", parent, strerror(errno));
  while ((e = readdir(d))) {
    char path[IX_PATH];
    struct stat st;
    int fin;
    if (strncmp(e->d_name, prefix, strlen(prefix))) continue;
    ix_pathf(path, sizeof path, "%s/%s", parent, e->d_name);
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    if (!tmp_matches(path, fp, &fin)) {
      *others = 1;
      continue;
    }
    if (!fin) {
      int fd, busy = lock_tmp(path, 0, &fd);
      if (busy != 0) {            /* a running job's (or unreadable): not ours to take */
        JP_LOG_INFO("%s is in use by a running build; not resuming it", path);
        continue;
      }
    }
    if (!*out || st.st_mtim.tv_sec > best.tv_sec ||
        (st.st_mtim.tv_sec == best.tv_sec && st.st_mtim.tv_nsec > best.tv_nsec)) {
      best = st.st_mtim;
      snprintf(out, cap, "%s", path);
      *finished = fin;
    }
  }
  closedir(d);
  (void)c;
  return 0;
}

static int write_json(const char *path, json_t *o)
{
  char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  int rc;
  if (!s) return JP_ENOMEM;
  rc = jp_write_file_atomic(path, s, strlen(s));
  free(s);
  return rc;
}

/* Drop scan and chunk state made for another layout (ranks, chunk size). */
static int check_layout(struct ix_ctx *c)
{
  char path[IX_PATH];
  json_t *want, *have = NULL;
  int rc = 0, same;
  DIR *d;
  struct dirent *e;

  want = json_pack("{s:i, s:I}", "ranks", c->size, "chunk_passages", (json_int_t)c->o.chunk_passages);
  if (!want) return JP_ENOMEM;
  ix_pathf(path, sizeof path, "%s/layout.json", c->state);
  same = jp_json_load_file(path, &have) == 0 && json_equal(have, want);
  if (!same && have) {
    json_int_t r = json_integer_value(json_object_get(have, "ranks"));
    ix_say(c, "resume: the interrupted job ran with %d rank%s and another chunk layout; "
           "keeping its codec, redoing the scan and encoding", (int)r, r == 1 ? "" : "s");
    if (!(d = opendir(c->state))) {
      rc = jp_err(JP_EIO, "cannot read %s: %s", c->state, strerror(errno));
      goto out;
    }
    while ((e = readdir(d))) {
      char p[IX_PATH];
      if (strncmp(e->d_name, "scan-", 5) && strncmp(e->d_name, "chunk-", 6)) continue;
      ix_pathf(p, sizeof p, "%s/%s", c->state, e->d_name);
      if (unlink(p) != 0 && errno != ENOENT) {
        rc = jp_err(JP_EIO, "cannot remove %s: %s", p, strerror(errno));
        break;
      }
    }
    closedir(d);
    if (rc < 0) goto out;
    if ((rc = jp_rm_rf(c->sst)) < 0) goto out;
    for (int p = 0; p < c->o.partitions; p++) {
      char name[32], pd[IX_PATH];
      ix_part_name(name, sizeof name, (uint32_t)p);
      snprintf(pd, sizeof pd, "%s/%s", c->tmp, name);
      if ((rc = jp_rm_rf(pd)) < 0) goto out;
    }
  }
  if (!same) rc = write_json(path, want);
out:
  json_decref(want);
  json_decref(have);
  return rc;
}

static int setup_rank0(struct ix_ctx *c, int *finished)
{
  char parent[IX_PATH], base[IX_PATH], found[IX_PATH], path[IX_PATH];
  struct stat cst, dst;
  json_t *fp = NULL;
  int rc, others = 0;
  char *abs;

  *finished = 0;
  if (stat(c->o.corpus, &cst) != 0)
    return jp_err(JP_ENOTFOUND, "cannot read the corpus %s: %s", c->o.corpus, strerror(errno));
  if (!S_ISREG(cst.st_mode)) return jp_err(JP_EINVAL, "the corpus %s is not a file", c->o.corpus);
  c->corpus_size = (uint64_t)cst.st_size;
  if (!(abs = realpath(c->o.corpus, NULL)))   /* libc-allocated: free() */
    return jp_err(JP_EIO, "cannot resolve %s: %s", c->o.corpus, strerror(errno));
  snprintf(c->corpus_abs, sizeof c->corpus_abs, "%s", abs);
  free(abs);

  if ((rc = split_path(c->dir, parent, sizeof parent, base, sizeof base)) < 0)
    return jp_err(rc, "output path too long");
  if (stat(c->dir, &dst) == 0) {
    if (!c->o.overwrite)
      return jp_err(JP_EEXISTS, "%s already exists (use --overwrite to replace it)", c->dir);
    if (!S_ISDIR(dst.st_mode) || !is_our_index(c->dir))
      return jp_err(JP_EEXISTS, "%s exists and is not a japlaid-index output (no index.json); "
                    "refusing to replace it", c->dir);
  }
  if ((rc = jp_mkdir_p(parent)) < 0) return rc;
  if (!(fp = fingerprint(c, &cst))) return JP_ENOMEM;
  if ((rc = find_tmp(c, parent, base, fp, found, sizeof found, finished, &others)) < 0) goto out;
  if (c->o.resume && found[0]) {
    snprintf(c->tmp, sizeof c->tmp, "%s", found);
    c->resumed = 1;
    ix_say(c, "resume: continuing %s%s", found, *finished ? " (complete, publishing it)" : "");
  } else {
    const char *job = getenv("SLURM_JOB_ID");
    char id[96];
    if (c->o.resume) ix_say(c, "resume: no interrupted build of this corpus and settings next to "
                            "%s; starting a new one", c->dir);
    else if (found[0])
      ix_say(c, "note: %s holds an interrupted build of the same corpus and settings; --resume "
             "would continue it (remove it to reclaim the space)", found);
    if (others) JP_LOG_INFO("temporary directories of other builds are next to %s", c->dir);
    if (job && *job) snprintf(id, sizeof id, "%s", job);
    else snprintf(id, sizeof id, "%" PRIu64 "-%ld", jp_wall_ms() / 1000, (long)getpid());
    if (snprintf(c->tmp, sizeof c->tmp, "%s/%s.tmp-%s", parent, base, id) >= (int)sizeof c->tmp) {
      rc = jp_err(JP_ETOOBIG, "output path too long");
      goto out;
    }
    if (jp_path_exists(c->tmp))   /* the same job id again (a Slurm requeue) */
      snprintf(c->tmp + strlen(c->tmp), sizeof c->tmp - strlen(c->tmp), "-%ld", (long)getpid());
    if (jp_path_exists(c->tmp)) {
      rc = jp_err(JP_EEXISTS, "%s already exists", c->tmp);
      goto out;
    }
    ix_say(c, "building in %s", c->tmp);
  }
  snprintf(c->state, sizeof c->state, "%s/state", c->tmp);
  snprintf(c->sst, sizeof c->sst, "%s/sst", c->tmp);
  if (*finished) goto out;
  if ((rc = jp_mkdir_p(c->state)) < 0 || (rc = jp_mkdir_p(c->sst)) < 0) goto out;
  if ((rc = lock_tmp(c->tmp, 1, &c->lock_fd)) != 0) {
    if (rc == 1) rc = jp_err(JP_EEXISTS, "%s is in use by another japlaid-index job", c->tmp);
    goto out;
  }
  ix_pathf(path, sizeof path, "%s/fingerprint.json", c->state);
  if (!c->resumed && (rc = write_json(path, fp)) < 0) goto out;
  if ((rc = check_layout(c)) < 0) goto out;
  for (int p = 0; p < c->o.partitions; p++) {
    char name[32], pd[IX_PATH];
    ix_part_name(name, sizeof name, (uint32_t)p);
    snprintf(pd, sizeof pd, "%s/%s/CURRENT", c->tmp, name);
    if (jp_path_exists(pd)) continue;   /* ingested already */
    ix_pathf(pd, sizeof pd, "%s/%s", c->sst, name);
    if ((rc = jp_mkdir_p(pd)) < 0) goto out;
  }
out:
  json_decref(fp);
  return rc;
}

int ix_state_setup(struct ix_ctx *c)
{
  int rc = 0, finished = 0;
  uint64_t num[4];
  if (c->rank == 0) rc = setup_rank0(c, &finished);
  num[0] = (uint64_t)(int64_t)rc;
  num[1] = (uint64_t)c->resumed;
  num[2] = c->corpus_size;
  num[3] = (uint64_t)finished;
  IX_TRY(c, ix_mpi_rc(MPI_Bcast(num, 4, MPI_UINT64_T, 0, c->comm), "setup"));
  if ((int)(int64_t)num[0] < 0) return (int)(int64_t)num[0];
  IX_TRY(c, ix_mpi_rc(MPI_Bcast(c->tmp, sizeof c->tmp, MPI_CHAR, 0, c->comm), "setup"));
  IX_TRY(c, ix_mpi_rc(MPI_Bcast(c->corpus_abs, sizeof c->corpus_abs, MPI_CHAR, 0, c->comm), "setup"));
  c->resumed = (int)num[1];
  c->corpus_size = num[2];
  ix_pathf(c->state, sizeof c->state, "%s/state", c->tmp);
  ix_pathf(c->sst, sizeof c->sst, "%s/sst", c->tmp);
  return num[3] ? 1 : 0;
}

/* ---- publish ----------------------------------------------------------------------------- */

/* Bytes of the regular files under dir (one level: a RocksDB directory). */
static uint64_t dir_bytes(const char *dir)
{
  DIR *d = opendir(dir);
  struct dirent *e;
  uint64_t n = 0;
  if (!d) return 0;
  while ((e = readdir(d))) {
    char p[IX_PATH];
    struct stat st;
    ix_pathf(p, sizeof p, "%s/%s", dir, e->d_name);
    if (lstat(p, &st) == 0 && S_ISREG(st.st_mode)) n += (uint64_t)st.st_size;
  }
  closedir(d);
  return n;
}

static void codebook_hash(const struct jp_codec *cd, char out[33])
{
  struct jp_hasher *h = jp_hasher_create();
  int32_t shape[3] = {cd->dim, cd->nbits, cd->ncentroids};
  int nb = 1 << cd->nbits;
  if (!h) {
    snprintf(out, 33, "%s", "unknown");
    return;
  }
  jp_hasher_update(h, shape, sizeof shape);
  jp_hasher_update(h, cd->centroids, (size_t)cd->ncentroids * (size_t)cd->dim * sizeof(float));
  jp_hasher_update(h, cd->cutoffs, (size_t)(nb - 1) * sizeof(float));
  jp_hasher_update(h, cd->weights, (size_t)nb * sizeof(float));
  jp_hasher_hex(h, out);
  jp_hasher_destroy(h);
}

/* index.json: what a reader of DIR needs (partitions, model, codebook,
 * settings, routing). */
static int write_index_json(struct ix_ctx *c, const json_t *fp, const uint64_t *bytes)
{
  const struct ix_plan *pl = &c->plan;
  json_t *o, *parts = json_array();
  char path[IX_PATH], hash[33];
  uint64_t emb = 0;
  int rc;
  if (!parts) return JP_ENOMEM;
  for (int p = 0; p < c->o.partitions; p++) {
    char name[32];
    ix_part_name(name, sizeof name, (uint32_t)p);
    emb += c->part_emb[p];
    if (json_array_append_new(parts, json_pack("{s:i, s:s, s:I, s:I, s:I, s:I}", "partition", p,
                                               "dir", name, "documents", (json_int_t)c->part_docs[p],
                                               "passages", (json_int_t)c->part_pass[p],
                                               "embeddings", (json_int_t)c->part_emb[p],
                                               "bytes", (json_int_t)bytes[p])) < 0) {
      json_decref(parts);
      return JP_ENOMEM;
    }
  }
  codebook_hash(&c->codec, hash);
  o = json_pack("{s:s, s:i, s:i, s:o, s:{s:s, s:s}, s:{s:s, s:s, s:s}, "
                "s:{s:s, s:i, s:i, s:i, s:f}, "
                "s:{s:i, s:b, s:i, s:i, s:I, s:b}, "
                "s:{s:I, s:I, s:I, s:I}, s:{s:O, s:i, s:I}}",
                "format", INDEX_FORMAT, "version", INDEX_FORMAT_VERSION,
                "partitions", c->o.partitions, "partition_dirs", parts,
                "routing", "function", "jp_route_partition",
                "rule", "XXH3-64 (seed 0) of the document id bytes, modulo partitions",
                "model", "name", c->info->name, "identity", c->info->identity, "path", c->model_abs,
                "codebook", "hash", hash, "ncentroids", c->codec.ncentroids, "dim", c->codec.dim,
                "nbits", c->codec.nbits, "avg_residual", (double)c->codec.avg_residual,
                "settings", "max_document_length", c->mdl, "split", c->split, "nbits", pl->nbits,
                "kmeans_iters", pl->iters, "seed", (json_int_t)c->o.seed, "skip_bad_lines",
                c->o.skip_bad,
                "counts", "documents", (json_int_t)pl->n_docs, "passages", (json_int_t)pl->n_passages,
                "embeddings", (json_int_t)emb, "bad_lines", (json_int_t)pl->n_bad,
                "build", "fingerprint", (json_t *)fp, "ranks", c->size,
                "created_unix_ms", (json_int_t)jp_wall_ms());
  if (!o) return JP_ENOMEM;
  ix_pathf(path, sizeof path, "%s/index.json", c->tmp);
  rc = write_json(path, o);
  json_decref(o);
  return rc;
}

/* The build summary, one compact JSON object (also printed on stdout). */
static int summary_json(struct ix_ctx *c, const uint64_t *bytes, struct jp_buf *b)
{
  const struct ix_plan *pl = &c->plan;
  uint64_t emb = 0;
  int rc;
  for (int p = 0; p < c->o.partitions; p++) emb += c->part_emb[p];
  rc = jp_buf_puts(b, "{\"index\":");
  if (!rc) rc = jp_buf_json_str(b, c->dir, strlen(c->dir));
  if (!rc)
    rc = jp_buf_printf(b,
      ",\"partitions\":%d,\"ranks\":%d,\"threads_per_rank\":%d,\"device\":\"%s\",\"resumed\":%s"
      ",\"documents\":%" PRIu64 ",\"passages\":%" PRIu64 ",\"embeddings\":%" PRIu64
      ",\"bad_lines\":%" PRIu64 ",\"split_documents\":%" PRIu64 ",\"sampled_passages\":%" PRIu64
      ",\"sample_vectors\":%" PRIu64 ",\"train_vectors\":%" PRIu64 ",\"heldout_vectors\":%" PRIu64
      ",\"avg_doclen\":%.2f,\"centroids\":%d,\"nbits\":%d,\"max_document_length\":%d"
      ",\"kmeans_iters\":%d,\"kmeans_objective\":%.6g"
      ",\"kmeans_allreduce_bytes_per_iteration\":%" PRIu64 ",\"kmeans_allreduce_seconds\":%.4f"
      ",\"seconds\":{\"scan\":%.3f,\"plan\":%.3f,\"sample\":%.3f,\"kmeans\":%.3f,\"codec\":%.3f"
      ",\"encode\":%.3f,\"ingest\":%.3f,\"publish\":%.3f,\"total\":%.3f},\"partition_stats\":[",
      c->o.partitions, c->size, c->threads, c->gpu >= 0 ? "cuda" : "cpu",
      c->resumed ? "true" : "false", pl->n_docs, pl->n_passages, emb, pl->n_bad, pl->n_split_docs,
      pl->n_sample, pl->n_sample_vecs, pl->n_train, pl->n_heldout, pl->avg_doclen,
      pl->ncentroids, pl->nbits, c->mdl, pl->iters, pl->objective, pl->kmeans_bytes_iter,
      pl->kmeans_reduce_s, c->t.scan, c->t.plan, c->t.sample, c->t.kmeans, c->t.codec,
      c->t.encode, c->t.ingest, c->t.publish, c->t.total);
  for (int p = 0; p < c->o.partitions && !rc; p++)
    rc = jp_buf_printf(b, "%s{\"partition\":%d,\"documents\":%" PRIu64 ",\"passages\":%" PRIu64
                       ",\"embeddings\":%" PRIu64 ",\"bytes\":%" PRIu64 "}", p ? "," : "", p,
                       c->part_docs[p], c->part_pass[p], c->part_emb[p], bytes[p]);
  if (!rc) rc = jp_buf_puts(b, "]}\n");
  return rc;
}

/* rename(2) the finished directory to DIR. */
static int move_into_place(struct ix_ctx *c)
{
  char parent[IX_PATH], base[IX_PATH];
  struct stat st;
  int rc;
  if ((rc = split_path(c->dir, parent, sizeof parent, base, sizeof base)) < 0) return rc;
  if (lstat(c->dir, &st) == 0) {
    if (!c->o.overwrite)
      return jp_err(JP_EEXISTS, "%s appeared while the index was being built; the new index is "
                    "left in %s", c->dir, c->tmp);
    if (!is_our_index(c->dir))
      return jp_err(JP_EEXISTS, "%s is not a japlaid-index output; refusing to replace it (the "
                    "new index is left in %s)", c->dir, c->tmp);
    if (renameat2(AT_FDCWD, c->tmp, AT_FDCWD, c->dir, RENAME_EXCHANGE) == 0) {
      /* c->tmp now holds the previous index. */
      if (jp_rm_rf(c->tmp) < 0) JP_LOG_WARN("could not remove the previous index, now at %s", c->tmp);
    } else if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
      char old[IX_PATH + 16];
      snprintf(old, sizeof old, "%s.old-%ld", c->dir, (long)getpid());
      if (rename(c->dir, old) != 0)
        return jp_err(JP_EIO, "cannot move %s aside: %s", c->dir, strerror(errno));
      if (rename(c->tmp, c->dir) != 0) {
        int e = errno;
        if (rename(old, c->dir) != 0) JP_LOG_ERROR("the previous index is left at %s", old);
        return jp_err(JP_EIO, "cannot publish %s: %s", c->dir, strerror(e));
      }
      if (jp_rm_rf(old) < 0) JP_LOG_WARN("could not remove the previous index at %s", old);
    } else {
      return jp_err(JP_EIO, "cannot replace %s: %s", c->dir, strerror(errno));
    }
  } else if (renameat2(AT_FDCWD, c->tmp, AT_FDCWD, c->dir, RENAME_NOREPLACE) != 0) {
    if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
      if (rename(c->tmp, c->dir) != 0)   /* no NOREPLACE on this file system */
        return jp_err(JP_EIO, "cannot publish %s: %s", c->dir, strerror(errno));
    } else {
      return jp_err(JP_EIO, "cannot publish %s as %s: %s", c->tmp, c->dir, strerror(errno));
    }
  }
  return jp_fsync_dir(parent);
}

static int publish_rank0(struct ix_ctx *c, int finished, struct jp_buf *summary, double t0)
{
  const int P = c->o.partitions;
  uint64_t *bytes = NULL;
  json_t *fp = NULL;
  char path[IX_PATH];
  int rc = 0;

  if (finished) goto rename;
  bytes = jp_calloc((size_t)P, sizeof *bytes);
  if (!bytes) return JP_ENOMEM;
  for (int p = 0; p < P; p++) {
    char name[32], cur[IX_PATH];
    ix_part_name(name, sizeof name, (uint32_t)p);
    ix_pathf(cur, sizeof cur, "%s/%s/CURRENT", c->tmp, name);
    if (!jp_path_exists(cur)) {
      rc = jp_err(JP_EINTERNAL, "partition %d was not ingested (%s missing)", p, cur);
      goto out;
    }
    ix_pathf(cur, sizeof cur, "%s/%s", c->tmp, name);
    bytes[p] = dir_bytes(cur);
  }
  ix_pathf(path, sizeof path, "%s/fingerprint.json", c->state);
  if ((rc = jp_json_load_file(path, &fp)) < 0) goto out;
  if ((rc = write_index_json(c, fp, bytes)) < 0) goto out;
  c->t.publish = jp_now_s() - t0;
  c->t.total = jp_now_s() - c->t_start;
  if ((rc = summary_json(c, bytes, summary)) < 0) goto out;
  ix_pathf(path, sizeof path, "%s/build-summary.json", c->tmp);
  if ((rc = jp_write_file_atomic(path, summary->data, summary->len)) < 0) goto out;
  if ((rc = jp_rm_rf(c->sst)) < 0 || (rc = jp_rm_rf(c->state)) < 0) goto out;
  /* Test point: a finished, unpublished directory (--resume publishes it). */
  if ((rc = ix_hook(c, "publish")) < 0) goto out;
rename:
  if (finished) {
    char *data = NULL;
    size_t len = 0;
    ix_pathf(path, sizeof path, "%s/build-summary.json", c->tmp);
    if (jp_read_file(path, 0, &data, &len) == 0) rc = jp_buf_append(summary, data, len);
    jp_free(data);
    if (rc < 0) goto out;
  }
  rc = move_into_place(c);
out:
  jp_free(bytes);
  json_decref(fp);
  return rc;
}

int ix_publish(struct ix_ctx *c, int finished)
{
  struct jp_buf summary;
  double t0 = jp_now_s();
  int rc = 0;
  jp_buf_init(&summary, 0);
  if (c->rank == 0) rc = publish_rank0(c, finished, &summary, t0);
  IX_TRY(c, ix_mpi_rc(MPI_Bcast(&rc, 1, MPI_INT, 0, c->comm), "publish"));
  if (rc == 0 && c->rank == 0) {
    fwrite(summary.data, 1, summary.len, stdout);
    fflush(stdout);
  }
  jp_buf_fini(&summary);
  return rc;
}
