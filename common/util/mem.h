/* mem.h: every allocation in libjaplaid goes through these functions.
 *
 * They behave like malloc/calloc/realloc/free and return NULL on failure;
 * callers check and return JP_ENOMEM (library code never aborts on OOM).
 * jp_mem_fail_after() is the test hook behind the *_oom tests: it makes the
 * Nth allocation from now fail, so a test can walk every failure point.
 * Thread-safety: all functions are safe from any thread. */
#ifndef JP_MEM_H
#define JP_MEM_H
#include <stddef.h>

void *jp_malloc(size_t n);
void *jp_calloc(size_t count, size_t size);      /* fails on overflow of count*size */
void *jp_realloc(void *p, size_t n);             /* on failure p is left untouched */
void  jp_free(void *p);
char *jp_strdup(const char *s);
char *jp_strndup(const char *s, size_t n);

/* 64-byte aligned memory for SIMD buffers; free with jp_aligned_free. */
void *jp_aligned_alloc(size_t n);
void  jp_aligned_free(void *p);

/* Grow *p (an array of elem_size items, capacity *cap) to hold at least
 * `need` items, doubling; 0 or JP_ENOMEM (then *p and *cap are unchanged).
 * `limit` bounds the capacity in items (0 = none): past it, JP_ETOOBIG. */
int jp_grow(void **p, size_t *cap, size_t need, size_t elem_size, size_t limit);

/* Test hook: the n-th allocation from now (1 = the next) fails, and only it.
 * n = 0 disarms. Returns how many allocations were made since the last call,
 * so a loop can stop once a run completes without reaching n. */
long jp_mem_fail_after(long n);

#endif /* JP_MEM_H */
