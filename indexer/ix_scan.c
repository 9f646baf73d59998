/* ix_scan.c: the scan phase of japlaid-index (ix.h): every rank reads and
 * splits its range, repeated document ids are found across ranks, and the
 * rank's documents are cut into chunks; plus the scan's state file.
 *
 * Repeated ids: as in build.c, the first line that uses an id wins and
 * every later line with the same id is a bad line. Each rank sends
 * (128-bit hash of the id, line, its rank and ordinal) of every document
 * to the rank hash % R (MPI_Alltoallv); that rank sorts by (hash, line)
 * and answers, for each later line, which earlier line holds the id. A
 * false "repeated id" needs a 128-bit hash collision (build.c's rule too).
 *
 * The state file (state/scan-<rank>.bin, binary, little-endian host order,
 * checksummed): header counts, np[n_ord], then per chunk its ordinal range
 * and per-partition passage and document counts. The sequence bases are
 * not stored: ix_chunks_finalize derives them from every rank's chunks.
 *
 * Thread-safety: main thread (MPI). Allocation: jp_malloc, freed by
 * ix_scan_fini. */
#include "ix.h"

#include "util/clock.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/log.h"
#include "util/mem.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* Progress message tag of this phase (tags only need to differ per phase). */
#define TAG_SCAN 101
/* Repeated-id lines logged one by one before the rest are only counted
 * (the corpus reader's own limit is 20 too). */
#define DUP_LOG_LINES 20
#define SCAN_MAGIC "JPIXSCN1"

/* One document in the repeated-id exchange, as four uint64 for MPI. */
struct idrec {
  uint64_t h_lo, h_hi, line, src;   /* src = rank << 40 | ordinal */
};
#define IDREC_WORDS 4
#define SRC_ORD_BITS 40

struct scan_state {
  struct ix_ctx *c;
  uint32_t *part;                   /* [n_ord] */
  struct idrec *recs;
  size_t cap_np, cap_part, cap_recs;
};

void ix_scan_fini(struct ix_scan *s)
{
  jp_free(s->np);
  for (int i = 0; i < s->n_chunks; i++) {
    jp_free(s->chunks[i].pass);
    jp_free(s->chunks[i].docs);
    jp_free(s->chunks[i].first_seq);
  }
  jp_free(s->chunks);
  memset(s, 0, sizeof *s);
}

static int scan_want(void *ctx, const struct ix_rdoc *d, uint64_t *user)
{
  struct scan_state *ss = ctx;
  struct ix_scan *s = &ss->c->scan;
  XXH128_hash_t h;
  int rc;
  (void)user;
  if (d->ord >= ((uint64_t)1 << SRC_ORD_BITS))
    return jp_err(JP_ETOOBIG, "more than 2^40 documents in one rank's share");
  if ((rc = jp_grow((void **)&s->np, &ss->cap_np, d->ord + 1, sizeof *s->np, 0)) < 0 ||
      (rc = jp_grow((void **)&ss->part, &ss->cap_part, d->ord + 1, sizeof *ss->part, 0)) < 0 ||
      (rc = jp_grow((void **)&ss->recs, &ss->cap_recs, d->ord + 1, sizeof *ss->recs, 0)) < 0)
    return rc;
  h = XXH3_128bits(d->id, d->id_len);
  ss->recs[d->ord] = (struct idrec){h.low64, h.high64, d->line,
                                    ((uint64_t)ss->c->rank << SRC_ORD_BITS) | d->ord};
  ss->part[d->ord] = d->part;
  s->np[d->ord] = 0;
  s->n_ord = d->ord + 1;
  return 1;
}

static int cmp_idrec(const void *a, const void *b)
{
  const struct idrec *x = a, *y = b;
  if (x->h_lo != y->h_lo) return x->h_lo < y->h_lo ? -1 : 1;
  if (x->h_hi != y->h_hi) return x->h_hi < y->h_hi ? -1 : 1;
  return x->line < y->line ? -1 : x->line > y->line;
}

/* Counts in uint64 words per rank -> int counts and displacements for MPI
 * (which counts in int). */
static int to_mpi_counts(const uint64_t *n, int size, int *cnt, int *disp)
{
  uint64_t off = 0;
  for (int r = 0; r < size; r++) {
    if (n[r] > INT_MAX || off > INT_MAX)
      return jp_err(JP_ETOOBIG, "repeated-id exchange: more than %d words for one rank", INT_MAX);
    cnt[r] = (int)n[r];
    disp[r] = (int)off;
    off += n[r];
  }
  if (off > INT_MAX)
    return jp_err(JP_ETOOBIG, "repeated-id exchange: more than %d words per rank", INT_MAX);
  return 0;
}

/* Find the repeated ids of this rank's documents across all ranks; mark
 * them IX_NP_DUP (and fail on the first when bad lines are not skipped). */
static int exchange_ids(struct scan_state *ss)
{
  struct ix_ctx *c = ss->c;
  struct ix_scan *s = &c->scan;
  const int R = c->size;
  uint64_t *nsend = jp_calloc((size_t)R, sizeof *nsend), *nrecv = jp_calloc((size_t)R, sizeof *nrecv);
  int *scnt = jp_calloc((size_t)R, sizeof *scnt), *sdisp = jp_calloc((size_t)R, sizeof *sdisp);
  int *rcnt = jp_calloc((size_t)R, sizeof *rcnt), *rdisp = jp_calloc((size_t)R, sizeof *rdisp);
  struct idrec *sbuf = NULL, *rbuf = NULL;
  uint64_t *reply = NULL, *rreply = NULL, *pos = NULL, total_in = 0, n_reply_all = 0;
  uint64_t logged = 0;
  int rc = 0;

  if (!nsend || !nrecv || !scnt || !sdisp || !rcnt || !rdisp) { rc = JP_ENOMEM; goto out; }
  /* Bucket the records by owner rank. */
  for (uint64_t i = 0; i < s->n_ord; i++) nsend[ss->recs[i].h_lo % (uint64_t)R]++;
  sbuf = jp_malloc((s->n_ord ? s->n_ord : 1) * sizeof *sbuf);
  pos = jp_calloc((size_t)R, sizeof *pos);
  if (!sbuf || !pos) { rc = JP_ENOMEM; goto out; }
  for (int r = 1; r < R; r++) pos[r] = pos[r - 1] + nsend[r - 1];
  for (uint64_t i = 0; i < s->n_ord; i++) sbuf[pos[ss->recs[i].h_lo % (uint64_t)R]++] = ss->recs[i];
  if ((rc = ix_mpi_rc(MPI_Alltoall(nsend, 1, MPI_UINT64_T, nrecv, 1, MPI_UINT64_T, c->comm),
                      "repeated-id counts")) < 0)
    goto out;
  for (int r = 0; r < R; r++) {
    total_in += nrecv[r];
    nsend[r] *= IDREC_WORDS;
    nrecv[r] *= IDREC_WORDS;
  }
  if ((rc = to_mpi_counts(nsend, R, scnt, sdisp)) < 0 || (rc = to_mpi_counts(nrecv, R, rcnt, rdisp)) < 0)
    goto out;
  rbuf = jp_malloc((total_in ? total_in : 1) * sizeof *rbuf);
  if (!rbuf) { rc = JP_ENOMEM; goto out; }
  if ((rc = ix_mpi_rc(MPI_Alltoallv(sbuf, scnt, sdisp, MPI_UINT64_T, rbuf, rcnt, rdisp,
                                    MPI_UINT64_T, c->comm), "repeated-id exchange")) < 0)
    goto out;
  jp_free(sbuf);
  sbuf = NULL;

  /* Owner: every record after the first of its hash is a repeat; answer
   * (ordinal, first line) to the rank that holds it. */
  qsort(rbuf, total_in, sizeof *rbuf, cmp_idrec);
  memset(nsend, 0, (size_t)R * sizeof *nsend);
  for (uint64_t i = 1; i < total_in; i++)
    if (rbuf[i].h_lo == rbuf[i - 1].h_lo && rbuf[i].h_hi == rbuf[i - 1].h_hi)
      nsend[rbuf[i].src >> SRC_ORD_BITS]++;
  reply = jp_malloc(2 * (total_in ? total_in : 1) * sizeof *reply);
  if (!reply) { rc = JP_ENOMEM; goto out; }
  pos[0] = 0;
  for (int r = 1; r < R; r++) pos[r] = pos[r - 1] + 2 * nsend[r - 1];
  for (uint64_t i = 1, first = 0; i < total_in; i++) {
    if (rbuf[i].h_lo == rbuf[first].h_lo && rbuf[i].h_hi == rbuf[first].h_hi) {
      uint64_t dst = rbuf[i].src >> SRC_ORD_BITS;
      reply[pos[dst]++] = rbuf[i].src & (((uint64_t)1 << SRC_ORD_BITS) - 1);
      reply[pos[dst]++] = rbuf[first].line;
    } else {
      first = i;
    }
  }
  if ((rc = ix_mpi_rc(MPI_Alltoall(nsend, 1, MPI_UINT64_T, nrecv, 1, MPI_UINT64_T, c->comm),
                      "repeated-id answer counts")) < 0)
    goto out;
  for (int r = 0; r < R; r++) {
    n_reply_all += nrecv[r];
    nsend[r] *= 2;
    nrecv[r] *= 2;
  }
  if ((rc = to_mpi_counts(nsend, R, scnt, sdisp)) < 0 || (rc = to_mpi_counts(nrecv, R, rcnt, rdisp)) < 0)
    goto out;
  rreply = jp_malloc(2 * (n_reply_all ? n_reply_all : 1) * sizeof *rreply);
  if (!rreply) { rc = JP_ENOMEM; goto out; }
  if ((rc = ix_mpi_rc(MPI_Alltoallv(reply, scnt, sdisp, MPI_UINT64_T, rreply, rcnt, rdisp,
                                    MPI_UINT64_T, c->comm), "repeated-id answers")) < 0)
    goto out;

  /* Mark; report in line order (the answers arrive grouped by owner). */
  {
    uint64_t first_bad = UINT64_MAX, first_bad_prev = 0;
    for (uint64_t i = 0; i < n_reply_all; i++) {
      uint64_t ord = rreply[2 * i], prev = rreply[2 * i + 1];
      if (ord >= s->n_ord) { rc = jp_err(JP_EINTERNAL, "repeated-id answer out of range"); goto out; }
      if (ss->recs[ord].line < first_bad) {
        first_bad = ss->recs[ord].line;
        first_bad_prev = prev;
      }
      s->np[ord] = IX_NP_DUP;
      if (c->o.skip_bad && logged++ < DUP_LOG_LINES)
        JP_LOG_WARN("%s:%" PRIu64 ": this document id was already used on line %" PRIu64
                    " (line skipped)", c->o.corpus, ss->recs[ord].line, prev);
    }
    if (n_reply_all && !c->o.skip_bad)
      rc = jp_err(JP_EEXISTS, "%s:%" PRIu64 ": document id already used on line %" PRIu64
                  " (use --skip-bad-lines to skip repeated ids)", c->o.corpus, first_bad,
                  first_bad_prev);
  }
out:
  jp_free(nsend);
  jp_free(nrecv);
  jp_free(scnt);
  jp_free(sdisp);
  jp_free(rcnt);
  jp_free(rdisp);
  jp_free(sbuf);
  jp_free(rbuf);
  jp_free(reply);
  jp_free(rreply);
  jp_free(pos);
  return rc;
}

static int chunk_alloc(struct ix_chunk *ch, int P)
{
  memset(ch, 0, sizeof *ch);
  ch->pass = jp_calloc((size_t)P, sizeof *ch->pass);
  ch->docs = jp_calloc((size_t)P, sizeof *ch->docs);
  ch->first_seq = jp_calloc((size_t)P, sizeof *ch->first_seq);
  return ch->pass && ch->docs && ch->first_seq ? 0 : JP_ENOMEM;
}

/* Cut the documents into chunks of about chunk_passages passages. */
static int make_chunks(struct ix_ctx *c, const uint32_t *part)
{
  struct ix_scan *s = &c->scan;
  const int P = c->o.partitions;
  size_t cap = 0;
  uint64_t acc = 0;
  int rc, need_new = 1;

  for (uint64_t ord = 0; ord < s->n_ord; ord++) {
    struct ix_chunk *ch;
    if (need_new) {
      if (s->n_chunks == INT_MAX) return jp_err(JP_ETOOBIG, "too many chunks");
      if ((rc = jp_grow((void **)&s->chunks, &cap, (size_t)s->n_chunks + 1, sizeof *s->chunks, 0)) < 0)
        return rc;
      rc = chunk_alloc(&s->chunks[s->n_chunks], P);
      s->n_chunks++;                /* counted even on failure: ix_scan_fini frees it */
      if (rc < 0) return rc;
      s->chunks[s->n_chunks - 1].ord0 = ord;
      need_new = 0;
      acc = 0;
    }
    ch = &s->chunks[s->n_chunks - 1];
    ch->ord1 = ord + 1;
    if (s->np[ord] > 0) {
      ch->pass[part[ord]] += (uint64_t)s->np[ord];
      ch->docs[part[ord]]++;
      acc += (uint64_t)s->np[ord];
    }
    if (acc >= c->o.chunk_passages) need_new = 1;
  }
  return 0;
}

int ix_scan_run(struct ix_ctx *c)
{
  struct ix_scan *s = &c->scan;
  struct scan_state ss;
  struct ix_reader r;
  struct ix_prog *pr = NULL;
  uint64_t begin, end, bytes_all = 0;
  int rc, n;

  memset(&ss, 0, sizeof ss);
  ss.c = c;
  ix_scan_fini(s);
  ix_range(c, &begin, &end);
  s->bytes = end - begin;
  IX_TRY(c, ix_reader_open(&r, c, scan_want, &ss));
  IX_TRY(c, ix_prog_begin(c, "scan", "bytes", c->corpus_size, TAG_SCAN, &pr));
  while ((n = ix_reader_next(&r)) > 0) {
    if ((rc = ix_hook(c, "scan")) < 0) break;
    for (int i = 0; i < n; i++) {
      const struct ix_rdoc *d = &r.docs[i];
      if (d->rc < 0) {
        if (!c->o.skip_bad || (d->rc != JP_EINVAL && d->rc != JP_ETOOBIG)) {
          rc = jp_err(d->rc, "%s:%" PRIu64 ": %s", c->o.corpus, d->line, d->err);
          break;
        }
        JP_LOG_WARN("%s:%" PRIu64 ": %s (line skipped)", c->o.corpus, d->line, d->err);
        s->np[d->ord] = IX_NP_BAD;
      } else {
        s->np[d->ord] = ix_doc_passages(d);
      }
    }
    if (rc < 0) break;
    ix_prog_tick(pr, r.corpus ? jp_corpus_bytes_read(r.corpus) : 0);
  }
  if (n < 0) rc = n;
  if (rc < 0) ix_fatal(c, rc);   /* mid-phase: the others may be reading still */
  s->n_bad = r.corpus ? jp_corpus_bad_lines(r.corpus) : 0;
  ix_reader_close(&r);
  IX_TRY(c, ix_prog_end(pr, s->bytes, &bytes_all));
  IX_TRY(c, exchange_ids(&ss));
  for (uint64_t i = 0; i < s->n_ord; i++) {
    if (s->np[i] < 0) {
      s->n_bad++;
      continue;
    }
    s->n_docs++;
    s->n_pass += (uint64_t)s->np[i];
    s->n_split_docs += s->np[i] > 1;
  }
  IX_TRY(c, make_chunks(c, ss.part));
  jp_free(ss.part);
  jp_free(ss.recs);
  return 0;
}

int ix_chunks_finalize(struct ix_ctx *c)
{
  struct ix_scan *s = &c->scan;
  const int P = c->o.partitions;
  uint64_t nch = (uint64_t)s->n_chunks, *tot = jp_calloc((size_t)P, sizeof *tot);
  uint64_t *base = jp_calloc((size_t)P, sizeof *base);
  int rc;

  if (!tot || !base) {
    rc = JP_ENOMEM;
    goto out;
  }
  for (int i = 0; i < s->n_chunks; i++)
    for (int p = 0; p < P; p++) tot[p] += s->chunks[i].pass[p];
  c->seg0 = 0;
  s->g0 = 0;
  /* MPI_Exscan leaves rank 0's output undefined: it keeps the zeros. */
  if ((rc = ix_mpi_rc(MPI_Exscan(&nch, &c->seg0, 1, MPI_UINT64_T, MPI_SUM, c->comm), "chunk numbers")) < 0 ||
      (rc = ix_mpi_rc(MPI_Exscan(&s->n_pass, &s->g0, 1, MPI_UINT64_T, MPI_SUM, c->comm),
                      "passage offsets")) < 0 ||
      (rc = ix_mpi_rc(MPI_Exscan(tot, base, P, MPI_UINT64_T, MPI_SUM, c->comm), "pid ranges")) < 0)
    goto out;
  if (c->rank == 0) {
    c->seg0 = 0;
    s->g0 = 0;
    memset(base, 0, (size_t)P * sizeof *base);
  }
  for (int i = 0; i < s->n_chunks; i++) {
    struct ix_chunk *ch = &s->chunks[i];
    ch->seg = c->seg0 + (uint64_t)i;
    for (int p = 0; p < P; p++) {
      ch->first_seq[p] = base[p];
      base[p] += ch->pass[p];
    }
  }
out:
  jp_free(tot);
  jp_free(base);
  return rc;
}

/* ---- state file ---------------------------------------------------------------------- */

static int put_u64(struct jp_buf *b, uint64_t v) { return jp_buf_append(b, &v, sizeof v); }

static void scan_path(const struct ix_ctx *c, char *buf, size_t cap)
{
  ix_pathf(buf, cap, "%s/scan-%05d.bin", c->state, c->rank);
}

int ix_scan_save(struct ix_ctx *c)
{
  const struct ix_scan *s = &c->scan;
  const int P = c->o.partitions;
  char path[IX_PATH];
  struct jp_buf b;
  uint64_t h;
  int rc;

  /* Up to 64 GiB: np is 4 bytes per document of the rank's share. */
  jp_buf_init(&b, (size_t)64 << 30);
  rc = jp_buf_append(&b, SCAN_MAGIC, 8);
  uint64_t hdr[] = {s->n_ord, s->n_docs, s->n_pass, s->n_split_docs, s->n_bad, s->bytes,
                    (uint64_t)P, (uint64_t)s->n_chunks};
  for (size_t i = 0; i < sizeof hdr / sizeof hdr[0] && !rc; i++) rc = put_u64(&b, hdr[i]);
  if (!rc && s->n_ord) rc = jp_buf_append(&b, s->np, s->n_ord * sizeof *s->np);
  for (int i = 0; i < s->n_chunks && !rc; i++) {
    const struct ix_chunk *ch = &s->chunks[i];
    rc = put_u64(&b, ch->ord0);
    if (!rc) rc = put_u64(&b, ch->ord1);
    if (!rc) rc = jp_buf_append(&b, ch->pass, (size_t)P * sizeof *ch->pass);
    if (!rc) rc = jp_buf_append(&b, ch->docs, (size_t)P * sizeof *ch->docs);
  }
  h = XXH3_64bits(b.data, b.len);
  if (!rc) rc = put_u64(&b, h);
  scan_path(c, path, sizeof path);
  if (!rc) rc = jp_write_file_atomic(path, b.data, b.len);
  jp_buf_fini(&b);
  return rc;
}

struct rd {
  const char *p, *end;
};

static int get_bytes(struct rd *r, void *out, size_t n)
{
  if ((size_t)(r->end - r->p) < n) return JP_ECORRUPT;
  memcpy(out, r->p, n);
  r->p += n;
  return 0;
}

int ix_scan_load(struct ix_ctx *c)
{
  struct ix_scan *s = &c->scan;
  const int P = c->o.partitions;
  char path[IX_PATH], *data = NULL;
  size_t len = 0;
  uint64_t hdr[8], h;
  struct rd r;
  int rc;

  ix_scan_fini(s);
  scan_path(c, path, sizeof path);
  if (!jp_path_exists(path)) return 0;
  if ((rc = jp_read_file(path, (size_t)64 << 30, &data, &len)) < 0) return rc;
  if (len < 8 + sizeof hdr + 8 || memcmp(data, SCAN_MAGIC, 8)) goto bad;
  memcpy(&h, data + len - 8, 8);
  if (h != XXH3_64bits(data, len - 8)) goto bad;
  r.p = data + 8;
  r.end = data + len - 8;
  if (get_bytes(&r, hdr, sizeof hdr) < 0 || hdr[6] != (uint64_t)P || hdr[7] > INT_MAX ||
      hdr[0] > (uint64_t)(r.end - r.p) / sizeof *s->np)
    goto bad;
  s->n_ord = hdr[0];
  s->n_docs = hdr[1];
  s->n_pass = hdr[2];
  s->n_split_docs = hdr[3];
  s->n_bad = hdr[4];
  s->bytes = hdr[5];
  s->np = jp_malloc((s->n_ord ? s->n_ord : 1) * sizeof *s->np);
  s->chunks = jp_calloc(hdr[7] ? (size_t)hdr[7] : 1, sizeof *s->chunks);
  if (!s->np || !s->chunks) { rc = JP_ENOMEM; goto fail; }
  if (get_bytes(&r, s->np, s->n_ord * sizeof *s->np) < 0) goto bad;
  for (uint64_t i = 0; i < hdr[7]; i++) {
    struct ix_chunk *ch = &s->chunks[i];
    if ((rc = chunk_alloc(ch, P)) < 0) {
      s->n_chunks = (int)i + 1;
      goto fail;
    }
    s->n_chunks = (int)i + 1;
    if (get_bytes(&r, &ch->ord0, 8) < 0 || get_bytes(&r, &ch->ord1, 8) < 0 ||
        get_bytes(&r, ch->pass, (size_t)P * sizeof *ch->pass) < 0 ||
        get_bytes(&r, ch->docs, (size_t)P * sizeof *ch->docs) < 0 || ch->ord1 > s->n_ord ||
        ch->ord0 >= ch->ord1)
      goto bad;
  }
  if (r.p != r.end) goto bad;
  jp_free(data);
  return 1;
bad:
  rc = jp_err(JP_ECORRUPT, "%s is damaged; remove it (or the whole temporary directory) to "
              "scan again", path);
fail:
  jp_free(data);
  ix_scan_fini(s);
  return rc;
}
