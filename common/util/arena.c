/* arena.c: see arena.h. */
#include "util/arena.h"
#include "util/mem.h"

#include <stdint.h>
#include <string.h>

struct jp_arena_block {
  struct jp_arena_block *next;
  size_t cap;    /* usable bytes in data[] */
  size_t off;    /* bytes used */
  _Alignas(64) unsigned char data[];
};

void jp_arena_init(struct jp_arena *a, size_t block_size, size_t limit)
{
  memset(a, 0, sizeof *a);
  a->block_size = block_size ? block_size : 64 * 1024;
  a->limit = limit;
}

static void free_list(struct jp_arena_block *b)
{
  while (b) {
    struct jp_arena_block *n = b->next;
    jp_aligned_free(b);
    b = n;
  }
}

void jp_arena_fini(struct jp_arena *a)
{
  free_list(a->head);
  free_list(a->free);
  a->head = a->free = NULL;
  a->used = 0;
}

void jp_arena_reset(struct jp_arena *a)
{
  while (a->head) {
    struct jp_arena_block *n = a->head->next;
    a->head->off = 0;
    a->head->next = a->free;
    a->free = a->head;
    a->head = n;
  }
  a->used = 0;
}

static void *alloc_align(struct jp_arena *a, size_t n, size_t align)
{
  struct jp_arena_block *b = a->head, **pp;
  size_t off, need;

  if (n == 0) n = 1;
  if (a->limit && (n > a->limit || a->used > a->limit - n)) return NULL;
  if (b) {
    off = (b->off + align - 1) & ~(align - 1);
    if (off <= b->cap && b->cap - off >= n) {
      b->off = off + n;
      a->used += n;
      return b->data + off;
    }
  }
  need = n + align;
  /* Reuse a kept block that is large enough. */
  for (pp = &a->free; *pp; pp = &(*pp)->next) {
    if ((*pp)->cap >= need) {
      b = *pp;
      *pp = b->next;
      goto have_block;
    }
  }
  {
    size_t cap = need > a->block_size ? need : a->block_size;
    if (cap > SIZE_MAX - sizeof *b) return NULL;
    b = jp_aligned_alloc(sizeof *b + cap);
    if (!b) return NULL;
    b->cap = cap;
  }
have_block:
  b->off = 0;
  b->next = a->head;
  a->head = b;
  off = 0; /* data[] is 64-byte aligned */
  b->off = off + n;
  a->used += n;
  return b->data + off;
}

void *jp_arena_alloc(struct jp_arena *a, size_t n) { return alloc_align(a, n, 16); }
void *jp_arena_alloc_aligned(struct jp_arena *a, size_t n) { return alloc_align(a, n, 64); }

void *jp_arena_calloc(struct jp_arena *a, size_t count, size_t size)
{
  void *p;
  if (size && count > SIZE_MAX / size) return NULL;
  p = jp_arena_alloc(a, count * size);
  if (p) memset(p, 0, count * size);
  return p;
}

char *jp_arena_strndup(struct jp_arena *a, const char *s, size_t n)
{
  char *d = jp_arena_alloc(a, n + 1);
  if (!d) return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}
