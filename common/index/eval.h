/* eval.h: retrieval metrics (NDCG, MRR, recall) from ranked lists and qrels.
 *
 * Relevance is binary and per DOCUMENT id: a judged item is relevant when
 * its grade is > 0. Rankings are lists of document ids, best first; a
 * document that appears several times (several passages of one split
 * document) counts once, at its best rank, so a split corpus is not
 * rewarded or punished for having passages. Definitions (as trec_eval /
 * pytrec_eval with binary grades):
 *   NDCG@k = DCG@k / IDCG@k, DCG = sum over ranks i <= k of rel_i / log2(i + 1),
 *            IDCG from min(k, R) relevant documents at the top;
 *   MRR@k  = 1 / rank of the first relevant document if <= k, else 0;
 *   R@k    = relevant documents in the top k / R  (R = relevant documents).
 * Means are over queries that have at least one relevant document; a query
 * with no judgement is counted as unjudged and left out.
 *
 * Qrels files: one judgement per line, fields separated by tabs or spaces:
 *   qid docid                (TSV, grade 1; JSQuAD's valid.qrels.tsv)
 *   qid docid grade          (BEIR-style; a header line is skipped)
 *   qid iter docid grade     (TREC qrels)
 *
 * Thread-safety: a loaded jp_qrels is immutable and may be shared.
 * Allocation: jp_qrels_load allocates; the metric functions do not keep
 * anything (they allocate per call only to de-duplicate long rankings). */
#ifndef JP_EVAL_H
#define JP_EVAL_H
#include <stddef.h>
#include <stdint.h>

enum {
  JP_EVAL_NDCG10 = 0,
  JP_EVAL_MRR10,
  JP_EVAL_NDCG100,
  JP_EVAL_MRR100,
  JP_EVAL_R1,
  JP_EVAL_R5,
  JP_EVAL_R10,
  JP_EVAL_R100,
  JP_EVAL_N
};

/* "NDCG@10", "MRR@10", "NDCG@100", "MRR@100", "R@1", "R@5", "R@10", "R@100". */
extern const char *const jp_eval_names[JP_EVAL_N];

struct jp_eval_metrics {
  double v[JP_EVAL_N];
};

typedef struct jp_qrels jp_qrels;

/* Parse a qrels file; JP_EINVAL names file:line of a malformed line. */
int  jp_qrels_load(const char *path, jp_qrels **out);
void jp_qrels_free(jp_qrels *q);                      /* NULL is a no-op */
size_t jp_qrels_n_queries(const jp_qrels *q);         /* queries with >= 1 relevant doc */
/* Relevant documents of a query (0 if the query is unknown). */
int jp_qrels_n_relevant(const jp_qrels *q, const char *qid, size_t qid_len);
int jp_qrels_is_relevant(const jp_qrels *q, const char *qid, size_t qid_len,
                         const char *doc_id, size_t doc_len);

/* Metrics of one ranking (n document ids, best first). Returns 1 and fills
 * *out if the query is judged, 0 (and zeros) if it has no relevant
 * document, or a negative JP_E* code. */
int jp_eval_query(const jp_qrels *q, const char *qid, size_t qid_len,
                  const char *const *doc_ids, const size_t *doc_lens, int n,
                  struct jp_eval_metrics *out);

/* Running means over queries. */
struct jp_eval_acc {
  struct jp_eval_metrics sum;
  uint64_t n_judged;
  uint64_t n_unjudged;
};
void jp_eval_acc_init(struct jp_eval_acc *a);
/* Add one query: judged is jp_eval_query's return (1 or 0). */
void jp_eval_acc_add(struct jp_eval_acc *a, int judged, const struct jp_eval_metrics *m);
/* Mean of each metric over the judged queries (zeros if none). */
void jp_eval_acc_mean(const struct jp_eval_acc *a, struct jp_eval_metrics *out);

#endif /* JP_EVAL_H */
