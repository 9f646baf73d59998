/* arena.h: a per-request bump allocator (nginx pools, h2o mem pools).
 *
 * Everything a request needs (token ids, query vectors, candidate lists,
 * score buffers) comes from one arena and is released at once by
 * jp_arena_reset() or jp_arena_fini(). Blocks are kept across resets, so a
 * worker that serves many requests stops allocating after warm-up.
 * Thread-safety: one arena per thread/request. */
#ifndef JP_ARENA_H
#define JP_ARENA_H
#include <stddef.h>

struct jp_arena_block;
struct jp_arena {
  struct jp_arena_block *head;   /* current block (newest first) */
  struct jp_arena_block *free;   /* blocks kept by reset for reuse */
  size_t block_size;             /* default size of a new block, bytes */
  size_t used;                   /* bytes handed out since the last reset */
  size_t limit;                  /* max bytes handed out (0 = none) -> NULL */
};

/* block_size 0 picks 64 KiB. limit bounds what a hostile request can take. */
void  jp_arena_init(struct jp_arena *a, size_t block_size, size_t limit);
void  jp_arena_fini(struct jp_arena *a);
/* 16-byte aligned; NULL when out of memory or past the limit. */
void *jp_arena_alloc(struct jp_arena *a, size_t n);
/* 64-byte aligned (SIMD rows). */
void *jp_arena_alloc_aligned(struct jp_arena *a, size_t n);
void *jp_arena_calloc(struct jp_arena *a, size_t count, size_t size);
char *jp_arena_strndup(struct jp_arena *a, const char *s, size_t n);
void  jp_arena_reset(struct jp_arena *a);

#endif /* JP_ARENA_H */
