/* ix_mpi.c: how japlaid-index fails, is made to fail in tests, and reports
 * progress across ranks (ix.h).
 *
 * Thread-safety: main thread only (MPI FUNNELED). Allocation: the progress
 * state (jp_calloc), freed by ix_prog_end. */
#include "ix.h"

#include "util/clock.h"
#include "util/err.h"
#include "util/mem.h"
#include "util/progress.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Exit status of a rank killed by the test hook: what a shell reports for
 * kill -9 (128 + SIGKILL), so the test sees the same as a real kill. */
#define IX_DIE_STATUS 137
/* A non-root rank sends its progress at most this often: twice a second
 * is smooth on a terminal and negligible traffic. */
#define IX_PROG_SEND_S 0.5

void ix_fatal(struct ix_ctx *c, int rc)
{
  fprintf(stderr, "japlaid-index: rank %d (%s): %s\n", c->rank, c->host, jp_errmsg(rc));
  fflush(stderr);
  /* Ends every rank of the job: none is left waiting in a collective. */
  MPI_Abort(c->comm, 1);
  _exit(1);   /* not reached: MPI_Abort does not return */
}

int ix_agree(struct ix_ctx *c, int rc)
{
  int all = rc;
  if (rc < 0) {
    fprintf(stderr, "japlaid-index: rank %d (%s): %s\n", c->rank, c->host, jp_errmsg(rc));
    fflush(stderr);
  }
  if (MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MIN, c->comm) != MPI_SUCCESS) ix_fatal(c, JP_EMPI);
  return all;
}

int ix_mpi_rc(int mrc, const char *what)
{
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (mrc == MPI_SUCCESS) return 0;
  if (MPI_Error_string(mrc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "code %d", mrc);
  return jp_err(JP_EMPI, "%s: %s", what, msg);
}

/* "phase:rank[:n]" matches this phase and rank; *nth = n (default 1). */
static int hook_match(const char *spec, const char *phase, int rank, long *nth)
{
  size_t pl = strlen(phase);
  char *end;
  long r;
  if (!spec || strncmp(spec, phase, pl) || spec[pl] != ':') return 0;
  r = strtol(spec + pl + 1, &end, 10);
  if (end == spec + pl + 1 || r != rank) return 0;
  *nth = 1;
  if (*end == ':') *nth = strtol(end + 1, NULL, 10);
  return 1;
}

int ix_hook(struct ix_ctx *c, const char *phase)
{
  /* One counter per phase name the job uses; a name not listed is a bug. */
  static const char *const names[] = {"start", "scan", "plan", "sample", "kmeans", "codec",
                                      "encode", "chunk", "ingest", "publish"};
  static long counts[sizeof names / sizeof names[0]];
  const char *die = getenv("JAPLAID_TEST_DIE_AT"), *fail = getenv("JAPLAID_TEST_FAIL_AT");
  long nth, *cnt = NULL;
  if (!die && !fail) return 0;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (!strcmp(names[i], phase)) cnt = &counts[i];
  if (!cnt) return jp_err(JP_EINTERNAL, "unknown test hook point '%s'", phase);
  ++*cnt;
  if (hook_match(die, phase, c->rank, &nth) && *cnt == nth) {
    fprintf(stderr, "japlaid-index: rank %d: JAPLAID_TEST_DIE_AT=%s: exiting now\n", c->rank, die);
    fflush(stderr);
    _exit(IX_DIE_STATUS);
  }
  if (hook_match(fail, phase, c->rank, &nth) && *cnt == nth)
    return jp_err(JP_EIO, "injected failure at %s (JAPLAID_TEST_FAIL_AT=%s)", phase, fail);
  return 0;
}

void ix_pathf(char *buf, size_t cap, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, cap, fmt, ap);
  va_end(ap);
}

void ix_say(struct ix_ctx *c, const char *fmt, ...)
{
  va_list ap;
  if (!c->out) return;
  va_start(ap, fmt);
  vfprintf(c->out, fmt, ap);
  va_end(ap);
  fputc('\n', c->out);
  fflush(c->out);
}

/* ---- progress ---------------------------------------------------------------------- */

struct ix_prog {
  struct ix_ctx *c;
  int tag;
  struct jp_progress pr;          /* rank 0 */
  uint64_t *per_rank;             /* rank 0: latest count of each rank */
  int finals;                     /* rank 0: ranks that sent their final count */
  uint64_t rbuf[2];               /* rank 0: {count, final} being received */
  MPI_Request rreq;
  uint64_t sbuf[2];               /* others: the message in flight */
  MPI_Request sreq;
  double t_sent;
};

static uint64_t prog_sum(const struct ix_prog *p)
{
  uint64_t s = 0;
  for (int i = 0; i < p->c->size; i++) s += p->per_rank[i];
  return s;
}

/* Rank 0: take one completed message. */
static void prog_take(struct ix_prog *p, const MPI_Status *st)
{
  p->per_rank[st->MPI_SOURCE] = p->rbuf[0];
  if (p->rbuf[1]) p->finals++;
}

static int prog_post(struct ix_prog *p)
{
  return ix_mpi_rc(MPI_Irecv(p->rbuf, 2, MPI_UINT64_T, MPI_ANY_SOURCE, p->tag, p->c->comm,
                             &p->rreq), "progress receive");
}

int ix_prog_begin(struct ix_ctx *c, const char *label, const char *unit, uint64_t total,
                  int tag, struct ix_prog **out)
{
  struct ix_prog *p = jp_calloc(1, sizeof *p);
  int rc = 0;
  *out = NULL;
  if (!p) return JP_ENOMEM;
  p->c = c;
  p->tag = tag;
  p->rreq = p->sreq = MPI_REQUEST_NULL;
  if (c->rank == 0) {
    p->per_rank = jp_calloc((size_t)c->size, sizeof *p->per_rank);
    if (!p->per_rank) {
      jp_free(p);
      return JP_ENOMEM;
    }
    jp_progress_init(&p->pr, c->out, label, unit, total);
    if (c->size > 1) rc = prog_post(p);
  }
  if (rc < 0) {
    jp_free(p->per_rank);
    jp_free(p);
    return rc;
  }
  *out = p;
  return 0;
}

void ix_prog_tick(struct ix_prog *p, uint64_t mine)
{
  struct ix_ctx *c = p->c;
  if (c->rank == 0) {
    int flag = 1;
    MPI_Status st;
    p->per_rank[0] = mine;
    while (c->size > 1 && flag && p->finals < c->size - 1) {
      if (MPI_Test(&p->rreq, &flag, &st) != MPI_SUCCESS) ix_fatal(c, JP_EMPI);
      if (!flag) break;
      prog_take(p, &st);
      if (p->finals < c->size - 1 && prog_post(p) < 0) ix_fatal(c, JP_EMPI);
    }
    jp_progress_update(&p->pr, prog_sum(p));
    return;
  }
  double now = jp_now_s();
  int done = 1;
  if (now - p->t_sent < IX_PROG_SEND_S) return;
  if (p->sreq != MPI_REQUEST_NULL && MPI_Test(&p->sreq, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
    ix_fatal(c, JP_EMPI);
  if (!done) return;              /* rank 0 is busy: skip this update */
  p->sbuf[0] = mine;
  p->sbuf[1] = 0;
  if (MPI_Isend(p->sbuf, 2, MPI_UINT64_T, 0, p->tag, c->comm, &p->sreq) != MPI_SUCCESS)
    ix_fatal(c, JP_EMPI);
  p->t_sent = now;
}

int ix_prog_end(struct ix_prog *p, uint64_t mine, uint64_t *global)
{
  struct ix_ctx *c = p->c;
  uint64_t sum = 0;
  int rc = 0;
  if (c->rank == 0) {
    p->per_rank[0] = mine;
    while (c->size > 1 && p->finals < c->size - 1) {
      MPI_Status st;
      if ((rc = ix_mpi_rc(MPI_Wait(&p->rreq, &st), "progress receive")) < 0) break;
      prog_take(p, &st);
      jp_progress_update(&p->pr, prog_sum(p));
      if (p->finals < c->size - 1 && (rc = prog_post(p)) < 0) break;
    }
    if (rc == 0) {
      jp_progress_update(&p->pr, prog_sum(p));
      jp_progress_finish(&p->pr);
    }
  } else {
    uint64_t fin[2] = {mine, 1};
    if (p->sreq != MPI_REQUEST_NULL)
      rc = ix_mpi_rc(MPI_Wait(&p->sreq, MPI_STATUS_IGNORE), "progress send");
    /* Non-overtaking: this final message arrives after every earlier one. */
    if (rc == 0) rc = ix_mpi_rc(MPI_Send(fin, 2, MPI_UINT64_T, 0, p->tag, c->comm), "progress send");
  }
  if (rc == 0)
    rc = ix_mpi_rc(MPI_Allreduce(&mine, &sum, 1, MPI_UINT64_T, MPI_SUM, c->comm), "progress sum");
  if (global) *global = sum;
  jp_free(p->per_rank);
  jp_free(p);
  return rc;
}
