/* eval.c: retrieval metrics (see eval.h).
 *
 * Qrels are kept as one sorted array of (qid, docid) pairs of relevant
 * judgements over one string pool; lookups are binary searches, which is
 * plenty for evaluation workloads (thousands of queries).
 * Thread-safety: jp_qrels is immutable after load. */
#include "index/eval.h"

#include "util/err.h"
#include "util/fs.h"
#include "util/mem.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The deepest cut-off any metric uses (NDCG@100, R@100). */
#define EVAL_MAX_DEPTH 100
/* 1 GiB qrels file cap (jp_read_file's default): far above any benchmark. */
#define EVAL_QRELS_MAX_BYTES ((size_t)1 << 30)

const char *const jp_eval_names[JP_EVAL_N] = {
  "NDCG@10", "MRR@10", "NDCG@100", "MRR@100", "R@1", "R@5", "R@10", "R@100",
};

struct qrel {
  const char *qid;
  const char *doc;
  uint32_t qid_len, doc_len;
};

struct qquery {                /* one judged query: its range in the pair array */
  const char *qid;
  uint32_t qid_len;
  uint32_t first, n;
};

struct jp_qrels {
  char *text;                  /* the file, with separators overwritten by NULs */
  struct qrel *pairs;          /* relevant pairs sorted by (qid, doc), unique */
  size_t n_pairs;
  struct qquery *queries;      /* sorted by qid */
  size_t n_queries;
};

static int cmp_bytes(const char *a, size_t al, const char *b, size_t bl)
{
  int c = memcmp(a, b, al < bl ? al : bl);
  if (c) return c;
  return al < bl ? -1 : al > bl;
}

static int cmp_pair(const void *x, const void *y)
{
  const struct qrel *a = x, *b = y;
  int c = cmp_bytes(a->qid, a->qid_len, b->qid, b->qid_len);
  return c ? c : cmp_bytes(a->doc, a->doc_len, b->doc, b->doc_len);
}

static int parse_grade(const char *s, long *out)
{
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end) return -1;
  *out = v;
  return 0;
}

int jp_qrels_load(const char *path, jp_qrels **out)
{
  jp_qrels *q;
  size_t len, cap = 0;
  uint64_t line_no = 0;
  char *p, *end;
  int rc;

  *out = NULL;
  q = jp_calloc(1, sizeof *q);
  if (!q) return JP_ENOMEM;
  if ((rc = jp_read_file(path, EVAL_QRELS_MAX_BYTES, &q->text, &len)) < 0) goto fail;
  p = q->text;
  end = q->text + len;
  while (p < end) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    char *line = p, *f[5];
    int nf = 0;
    long grade = 1;
    const char *qid, *doc;

    if (!nl) nl = end;
    *nl = '\0';
    p = nl + 1;
    line_no++;
    if (nl > line && nl[-1] == '\r') nl[-1] = '\0';
    for (char *s = line; *s;) {
      while (*s == ' ' || *s == '\t') *s++ = '\0';
      if (!*s) break;
      if (nf == 5) { nf++; break; }
      f[nf++] = s;
      while (*s && *s != ' ' && *s != '\t') s++;
    }
    if (nf == 0) continue;
    if (nf == 2) {
      qid = f[0];
      doc = f[1];
    } else if (nf == 3 || nf == 4) {
      qid = f[0];
      doc = f[nf == 3 ? 1 : 2];
      if (parse_grade(f[nf - 1], &grade) < 0) {
        if (line_no == 1) continue;       /* a header such as query-id corpus-id score */
        rc = jp_err(JP_EINVAL, "%s:%" PRIu64 ": relevance grade '%s' is not an integer", path,
                    line_no, f[nf - 1]);
        goto fail;
      }
    } else {
      rc = jp_err(JP_EINVAL,
                  "%s:%" PRIu64 ": expected 'qid docid', 'qid docid grade' or "
                  "'qid iter docid grade', got %d fields", path, line_no, nf);
      goto fail;
    }
    if (grade <= 0) continue;
    if (q->n_pairs == cap &&
        (rc = jp_grow((void **)&q->pairs, &cap, q->n_pairs + 1, sizeof *q->pairs, 0)) < 0)
      goto fail;
    if (strlen(qid) > UINT32_MAX || strlen(doc) > UINT32_MAX) {
      rc = jp_err(JP_EINVAL, "%s:%" PRIu64 ": id too long", path, line_no);
      goto fail;
    }
    q->pairs[q->n_pairs].qid = qid;
    q->pairs[q->n_pairs].qid_len = (uint32_t)strlen(qid);
    q->pairs[q->n_pairs].doc = doc;
    q->pairs[q->n_pairs].doc_len = (uint32_t)strlen(doc);
    q->n_pairs++;
  }
  if (q->n_pairs) qsort(q->pairs, q->n_pairs, sizeof *q->pairs, cmp_pair);
  /* Unique pairs (a judgement listed twice is one judgement). */
  {
    size_t w = 0;
    for (size_t i = 0; i < q->n_pairs; i++)
      if (w == 0 || cmp_pair(&q->pairs[w - 1], &q->pairs[i]) != 0) q->pairs[w++] = q->pairs[i];
    q->n_pairs = w;
  }
  for (size_t i = 0; i < q->n_pairs; i++)
    if (i == 0 || cmp_bytes(q->pairs[i - 1].qid, q->pairs[i - 1].qid_len, q->pairs[i].qid,
                            q->pairs[i].qid_len))
      q->n_queries++;
  q->queries = jp_calloc(q->n_queries ? q->n_queries : 1, sizeof *q->queries);
  if (!q->queries) { rc = JP_ENOMEM; goto fail; }
  {
    size_t k = 0;
    for (size_t i = 0; i < q->n_pairs; i++) {
      if (i == 0 || cmp_bytes(q->pairs[i - 1].qid, q->pairs[i - 1].qid_len, q->pairs[i].qid,
                              q->pairs[i].qid_len)) {
        q->queries[k].qid = q->pairs[i].qid;
        q->queries[k].qid_len = q->pairs[i].qid_len;
        q->queries[k].first = (uint32_t)i;
        k++;
      }
      q->queries[k - 1].n++;
    }
  }
  *out = q;
  return 0;
fail:
  jp_qrels_free(q);
  return rc;
}

void jp_qrels_free(jp_qrels *q)
{
  if (!q) return;
  jp_free(q->text);
  jp_free(q->pairs);
  jp_free(q->queries);
  jp_free(q);
}

size_t jp_qrels_n_queries(const jp_qrels *q) { return q ? q->n_queries : 0; }

static const struct qquery *find_query(const jp_qrels *q, const char *qid, size_t len)
{
  size_t lo = 0, hi = q->n_queries;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = cmp_bytes(q->queries[mid].qid, q->queries[mid].qid_len, qid, len);
    if (c == 0) return &q->queries[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

int jp_qrels_n_relevant(const jp_qrels *q, const char *qid, size_t qid_len)
{
  const struct qquery *e = q ? find_query(q, qid, qid_len) : NULL;
  return e ? (int)e->n : 0;
}

int jp_qrels_is_relevant(const jp_qrels *q, const char *qid, size_t qid_len,
                         const char *doc_id, size_t doc_len)
{
  const struct qquery *e = q ? find_query(q, qid, qid_len) : NULL;
  size_t lo, hi;
  if (!e) return 0;
  lo = e->first;
  hi = (size_t)e->first + e->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = cmp_bytes(q->pairs[mid].doc, q->pairs[mid].doc_len, doc_id, doc_len);
    if (c == 0) return 1;
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return 0;
}

int jp_eval_query(const jp_qrels *q, const char *qid, size_t qid_len,
                  const char *const *doc_ids, const size_t *doc_lens, int n,
                  struct jp_eval_metrics *out)
{
  /* The first EVAL_MAX_DEPTH distinct documents, best first. */
  const char *uniq[EVAL_MAX_DEPTH];
  size_t uniq_len[EVAL_MAX_DEPTH];
  int rel[EVAL_MAX_DEPTH];
  int n_uniq = 0, R;
  double dcg10 = 0, dcg100 = 0, idcg10 = 0, idcg100 = 0;
  int first_rel = 0, hits1 = 0, hits5 = 0, hits10 = 0, hits100 = 0;

  memset(out, 0, sizeof *out);
  if (!q || (n > 0 && (!doc_ids || !doc_lens)) || n < 0)
    return jp_err(JP_EINVAL, "jp_eval_query: bad arguments");
  R = jp_qrels_n_relevant(q, qid, qid_len);
  if (R == 0) return 0;
  for (int i = 0; i < n && n_uniq < EVAL_MAX_DEPTH; i++) {
    int dup = 0;
    for (int j = 0; j < n_uniq && !dup; j++)
      dup = uniq_len[j] == doc_lens[i] && !memcmp(uniq[j], doc_ids[i], doc_lens[i]);
    if (dup) continue;
    uniq[n_uniq] = doc_ids[i];
    uniq_len[n_uniq] = doc_lens[i];
    rel[n_uniq] = jp_qrels_is_relevant(q, qid, qid_len, doc_ids[i], doc_lens[i]);
    n_uniq++;
  }
  for (int i = 0; i < n_uniq; i++) {
    int rank = i + 1;
    if (!rel[i]) continue;
    double g = 1.0 / log2((double)rank + 1.0);
    if (!first_rel) first_rel = rank;
    if (rank <= 1) hits1++;
    if (rank <= 5) hits5++;
    if (rank <= 10) { hits10++; dcg10 += g; }
    if (rank <= 100) { hits100++; dcg100 += g; }
  }
  for (int i = 1; i <= R && i <= 100; i++) {
    double g = 1.0 / log2((double)i + 1.0);
    if (i <= 10) idcg10 += g;
    idcg100 += g;
  }
  out->v[JP_EVAL_NDCG10] = dcg10 / idcg10;
  out->v[JP_EVAL_NDCG100] = dcg100 / idcg100;
  out->v[JP_EVAL_MRR10] = first_rel && first_rel <= 10 ? 1.0 / first_rel : 0.0;
  out->v[JP_EVAL_MRR100] = first_rel && first_rel <= 100 ? 1.0 / first_rel : 0.0;
  out->v[JP_EVAL_R1] = (double)hits1 / R;
  out->v[JP_EVAL_R5] = (double)hits5 / R;
  out->v[JP_EVAL_R10] = (double)hits10 / R;
  out->v[JP_EVAL_R100] = (double)hits100 / R;
  return 1;
}

void jp_eval_acc_init(struct jp_eval_acc *a) { memset(a, 0, sizeof *a); }

void jp_eval_acc_add(struct jp_eval_acc *a, int judged, const struct jp_eval_metrics *m)
{
  if (!judged) { a->n_unjudged++; return; }
  for (int i = 0; i < JP_EVAL_N; i++) a->sum.v[i] += m->v[i];
  a->n_judged++;
}

void jp_eval_acc_mean(const struct jp_eval_acc *a, struct jp_eval_metrics *out)
{
  for (int i = 0; i < JP_EVAL_N; i++)
    out->v[i] = a->n_judged ? a->sum.v[i] / (double)a->n_judged : 0.0;
}
