/* pb.h: protobuf-c messages <-> gRPC byte buffers.
 *
 * gRPC C core moves opaque byte buffers (possibly several slices, possibly
 * compressed on the wire); protobuf-c packs and unpacks flat byte arrays.
 * These functions are the only place the two meet.
 *
 * Unpacked messages can live in a jp_arena (rpc_pb_arena_allocator): every
 * string, bytes field and sub-message is then freed at once with the arena,
 * which is how servers give each call one arena (style.md §2.5).
 *
 * Thread-safety: none needed (no shared state). Allocation: see each call. */
#ifndef JP_RPC_PB_H
#define JP_RPC_PB_H
#include <stddef.h>

#include <grpc/byte_buffer.h>
#include <protobuf-c/protobuf-c.h>

#include "util/arena.h"

/* Serialise `m` into a new single-slice byte buffer. The caller destroys it
 * with grpc_byte_buffer_destroy (or hands it to a SEND_MESSAGE op and
 * destroys it after the batch completes). NULL only if gRPC's allocator
 * fails (it aborts on OOM in practice). Cost: one packed-size walk and one
 * pack, O(message size). */
grpc_byte_buffer *rpc_pb_to_bb(const ProtobufCMessage *m);

/* Parse `bb` (any number of slices; compressed buffers are decompressed) as
 * a message of type `d`. Memory comes from `alloc` (NULL = protobuf-c's
 * default malloc allocator: free with protobuf_c_message_free_unpacked).
 * Returns 0 and *out, or JP_EINVAL when the bytes are not a valid message of
 * that type (detail: the type name), JP_ENOMEM. A NULL `bb` (no message) is
 * JP_EINVAL. `bb` is not consumed. */
int rpc_pb_from_bb(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *d,
                   ProtobufCAllocator *alloc, ProtobufCMessage **out);

/* The same from a flat byte array (used by tests and by rpc_pb_from_bb). */
int rpc_pb_unpack(const void *data, size_t len, const ProtobufCMessageDescriptor *d,
                  ProtobufCAllocator *alloc, ProtobufCMessage **out);

/* A protobuf-c allocator drawing from arena `a` (16-byte aligned blocks, so
 * float32 `bytes` fields can be read in place); free is a no-op. Valid as
 * long as `a` lives; the allocator struct itself is the caller's. */
void rpc_pb_arena_allocator(struct jp_arena *a, ProtobufCAllocator *out);

/* A zeroed message of type `d` in arena `a`, initialised with its
 * descriptor's defaults (what the generated *__init() does), or NULL when
 * the arena is exhausted. Handlers use it to build responses. */
ProtobufCMessage *rpc_pb_new(struct jp_arena *a, const ProtobufCMessageDescriptor *d);

/* Bytes of a buffer's payload (after decompression) without copying. */
size_t rpc_bb_length(grpc_byte_buffer *bb);

#endif /* JP_RPC_PB_H */
