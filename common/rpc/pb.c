/* pb.c: protobuf-c <-> grpc_byte_buffer (see pb.h). */
#include "rpc/pb.h"

#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>

#include "util/err.h"
#include "util/mem.h"

grpc_byte_buffer *rpc_pb_to_bb(const ProtobufCMessage *m)
{
  size_t n = protobuf_c_message_get_packed_size(m);
  grpc_slice s = grpc_slice_malloc(n);
  size_t w = protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
  /* get_packed_size and pack walk the same fields; a difference would mean
   * a message modified concurrently, which is a caller bug. */
  if (w != n) {
    grpc_slice_unref(s);
    return NULL;
  }
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);  /* the buffer holds its own reference */
  return bb;
}

int rpc_pb_unpack(const void *data, size_t len, const ProtobufCMessageDescriptor *d,
                  ProtobufCAllocator *alloc, ProtobufCMessage **out)
{
  *out = NULL;
  ProtobufCMessage *m = protobuf_c_message_unpack(d, alloc, len, (const uint8_t *)data);
  /* protobuf-c returns NULL for both malformed input and allocation
   * failure; the input is far more likely, and both are the request's
   * fault when an arena limit is hit. */
  if (!m) return jp_err(JP_EINVAL, "malformed %s message (%zu bytes)", d->name, len);
  *out = m;
  return 0;
}

/* Copy a multi-slice or compressed buffer into one contiguous array. */
static int bb_flatten(grpc_byte_buffer *bb, uint8_t **out, size_t *len)
{
  grpc_byte_buffer_reader r;
  if (!grpc_byte_buffer_reader_init(&r, bb))
    return jp_err(JP_EINVAL, "cannot read the message (bad compression)");
  size_t n = grpc_byte_buffer_length(r.buffer_out);
  uint8_t *buf = jp_malloc(n ? n : 1);
  if (!buf) {
    grpc_byte_buffer_reader_destroy(&r);
    return jp_err(JP_ENOMEM, "message of %zu bytes", n);
  }
  size_t off = 0;
  grpc_slice s;
  while (grpc_byte_buffer_reader_next(&r, &s)) {
    size_t sl = GRPC_SLICE_LENGTH(s);
    if (off + sl > n) {                     /* cannot happen: length is the sum */
      grpc_slice_unref(s);
      grpc_byte_buffer_reader_destroy(&r);
      jp_free(buf);
      return jp_err(JP_EINTERNAL, "byte buffer longer than its length");
    }
    memcpy(buf + off, GRPC_SLICE_START_PTR(s), sl);
    off += sl;
    grpc_slice_unref(s);
  }
  grpc_byte_buffer_reader_destroy(&r);
  *out = buf;
  *len = off;
  return 0;
}

int rpc_pb_from_bb(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *d,
                   ProtobufCAllocator *alloc, ProtobufCMessage **out)
{
  *out = NULL;
  if (!bb) return jp_err(JP_EINVAL, "no %s message in the call", d->name);
  /* The common case (an uncompressed single slice) is parsed in place. */
  if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
      bb->data.raw.slice_buffer.count == 1) {
    grpc_slice s = bb->data.raw.slice_buffer.slices[0];
    return rpc_pb_unpack(GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), d, alloc, out);
  }
  uint8_t *buf = NULL;
  size_t len = 0;
  int rc = bb_flatten(bb, &buf, &len);
  if (rc < 0) return rc;
  rc = rpc_pb_unpack(buf, len, d, alloc, out);
  jp_free(buf);
  return rc;
}

size_t rpc_bb_length(grpc_byte_buffer *bb)
{
  return bb ? grpc_byte_buffer_length(bb) : 0;
}

static void *arena_pb_alloc(void *ud, size_t n)
{
  return jp_arena_alloc((struct jp_arena *)ud, n ? n : 1);
}

static void arena_pb_free(void *ud, void *p)
{
  (void)ud;
  (void)p;   /* released with the arena */
}

void rpc_pb_arena_allocator(struct jp_arena *a, ProtobufCAllocator *out)
{
  out->alloc = arena_pb_alloc;
  out->free = arena_pb_free;
  out->allocator_data = a;
}

ProtobufCMessage *rpc_pb_new(struct jp_arena *a, const ProtobufCMessageDescriptor *d)
{
  ProtobufCMessage *m = jp_arena_alloc(a, d->sizeof_message);
  if (!m) return NULL;
  memset(m, 0, d->sizeof_message);
  d->message_init(m);
  return m;
}
