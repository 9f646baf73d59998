/* mem.c: see mem.h. */
#include "util/mem.h"
#include "util/err.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The countdown is global on purpose: the failure point must be reachable
 * from any thread the code under test uses. */
static atomic_long g_fail_at;   /* 0: disarmed; else allocations left + 1 */
static atomic_long g_count;

static int should_fail(void)
{
  atomic_fetch_add_explicit(&g_count, 1, memory_order_relaxed);
  if (atomic_load_explicit(&g_fail_at, memory_order_relaxed) == 0)
    return 0;
  return atomic_fetch_sub(&g_fail_at, 1) == 1;
}

long jp_mem_fail_after(long n)
{
  long c = atomic_exchange(&g_count, 0);
  atomic_store(&g_fail_at, n < 0 ? 0 : n);
  return c;
}

void *jp_malloc(size_t n)
{
  if (should_fail()) return NULL;
  return malloc(n ? n : 1);
}

void *jp_calloc(size_t count, size_t size)
{
  if (size && count > SIZE_MAX / size) return NULL;
  if (should_fail()) return NULL;
  return calloc(count ? count : 1, size ? size : 1);
}

void *jp_realloc(void *p, size_t n)
{
  if (should_fail()) return NULL;
  return realloc(p, n ? n : 1);
}

void jp_free(void *p) { free(p); }

char *jp_strndup(const char *s, size_t n)
{
  char *d = jp_malloc(n + 1);
  if (!d) return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *jp_strdup(const char *s) { return jp_strndup(s, strlen(s)); }

void *jp_aligned_alloc(size_t n)
{
  void *p = NULL;
  if (should_fail()) return NULL;
  if (posix_memalign(&p, 64, n ? (n + 63) & ~(size_t)63 : 64) != 0) return NULL;
  return p;
}

void jp_aligned_free(void *p) { free(p); }

int jp_grow(void **p, size_t *cap, size_t need, size_t elem_size, size_t limit)
{
  size_t ncap;
  void *np;
  if (need <= *cap) return 0;
  if (limit && need > limit) return JP_ETOOBIG;
  ncap = *cap ? *cap : 16;
  while (ncap < need) {
    if (ncap > SIZE_MAX / 2) return JP_ENOMEM;
    ncap *= 2;
  }
  if (limit && ncap > limit) ncap = limit;
  if (elem_size && ncap > SIZE_MAX / elem_size) return JP_ENOMEM;
  np = jp_realloc(*p, ncap * elem_size);
  if (!np) return JP_ENOMEM;
  *p = np;
  *cap = ncap;
  return 0;
}
