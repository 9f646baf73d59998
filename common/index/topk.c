/* topk.c: top-k selection of scored items (index_int.h).
 *
 * Quickselect (Hoare-style partition around a pseudo-random pivot) puts the
 * best k items in front in O(n) expected, then qsort orders those k. The
 * order is total (score, then a unique key), so the result does not depend
 * on the input order: PLAID stages and exhaustive search rank identically.
 * Thread-safety: reentrant. Allocation: none. */
#include "index/index_int.h"

#include <stdlib.h>

static int cmp_scored(const void *a, const void *b)
{
  const struct jp_scored *x = a, *y = b;
  if (jp_scored_before(x, y)) return -1;
  if (jp_scored_before(y, x)) return 1;
  return 0;
}

static inline void swap_scored(struct jp_scored *a, struct jp_scored *b)
{
  struct jp_scored t = *a;
  *a = *b;
  *b = t;
}

size_t jp_topk_select(struct jp_scored *v, size_t n, size_t k)
{
  if (k > n) k = n;
  if (k == 0) return 0;
  size_t lo = 0, hi = n;                 /* the k-th boundary lies in [lo, hi) */
  uint64_t rng = 0x2545f4914f6cdd1dULL;  /* fixed: the result does not depend on it */
  while (k < hi && hi - lo > 16) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    swap_scored(&v[lo + rng % (hi - lo)], &v[hi - 1]);
    struct jp_scored pivot = v[hi - 1];
    size_t store = lo;
    for (size_t i = lo; i < hi - 1; i++)
      if (jp_scored_before(&v[i], &pivot)) swap_scored(&v[i], &v[store++]);
    swap_scored(&v[store], &v[hi - 1]);
    /* v[lo, store) rank before the pivot, v[store] is the pivot. */
    if (store == k || store + 1 == k) {
      lo = hi = 0;
      break;
    }
    if (store > k) hi = store;
    else lo = store + 1;
  }
  qsort(v, hi > k ? hi : k, sizeof *v, cmp_scored);
  return k;
}
