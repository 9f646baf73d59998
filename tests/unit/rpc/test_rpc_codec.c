/* test_rpc_codec.c: the JP_E* -> gRPC status table, protobuf-c <-> byte
 * buffer glue (single and multi-slice, malformed input, arena allocation)
 * and the request field checks. No network. */
#include "test_helpers.h"

#include <math.h>
#include <stdint.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/slice.h>

#include "japlaid/v1/search.pb-c.h"
#include "japlaid/v1/shard.pb-c.h"
#include "rpc/check.h"
#include "rpc/pb.h"
#include "rpc/status.h"
#include "util/arena.h"
#include "util/err.h"

/* ---- status table ------------------------------------------------------------ */

static void status_table_covers_every_error_code(void **state)
{
  (void)state;
  int n = 0;
#define XX(name, val, msg)                                                       \
  do {                                                                           \
    grpc_status_code st = rpc_status_from_err(val);                              \
    /* Every code must map to a real, non-OK status. */                          \
    if (st == GRPC_STATUS_OK || st == GRPC_STATUS_UNKNOWN)                       \
      fail_msg("JP_E%s maps to %s", #name, rpc_status_name(st));                 \
    n++;                                                                         \
  } while (0);
  JP_ERR_MAP(XX)
#undef XX
  assert_true(n >= 18);
  assert_int_equal(rpc_status_from_err(0), GRPC_STATUS_OK);
  /* Values outside the table are UNKNOWN, never OK. */
  assert_int_equal(rpc_status_from_err(-1000), GRPC_STATUS_UNKNOWN);
  assert_int_equal(rpc_status_from_err(5), GRPC_STATUS_UNKNOWN);
}

static void status_table_maps_the_contract_codes(void **state)
{
  (void)state;
  assert_int_equal(rpc_status_from_err(JP_EINVAL), GRPC_STATUS_INVALID_ARGUMENT);
  assert_int_equal(rpc_status_from_err(JP_ETIMEOUT), GRPC_STATUS_DEADLINE_EXCEEDED);
  assert_int_equal(rpc_status_from_err(JP_ETOOBIG), GRPC_STATUS_RESOURCE_EXHAUSTED);
  assert_int_equal(rpc_status_from_err(JP_ENOMEM), GRPC_STATUS_RESOURCE_EXHAUSTED);
  assert_int_equal(rpc_status_from_err(JP_EUNAVAIL), GRPC_STATUS_UNAVAILABLE);
  assert_int_equal(rpc_status_from_err(JP_ENOTFOUND), GRPC_STATUS_NOT_FOUND);
  assert_int_equal(rpc_status_from_err(JP_EMISMATCH), GRPC_STATUS_FAILED_PRECONDITION);
  assert_int_equal(rpc_status_from_err(JP_ECORRUPT), GRPC_STATUS_DATA_LOSS);
  assert_int_equal(rpc_status_from_err(JP_EUNSUPPORTED), GRPC_STATUS_UNIMPLEMENTED);
  assert_int_equal(rpc_status_from_err(JP_ECANCELLED), GRPC_STATUS_CANCELLED);
  assert_int_equal(rpc_status_from_err(JP_EEXISTS), GRPC_STATUS_ALREADY_EXISTS);
  assert_int_equal(rpc_status_from_err(JP_ESTORE), GRPC_STATUS_INTERNAL);
}

static void status_reverse_mapping_round_trips(void **state)
{
  (void)state;
  /* Codes a client must be able to tell apart survive the wire. */
  const int codes[] = {JP_EINVAL, JP_ETIMEOUT, JP_ENOTFOUND, JP_EUNAVAIL, JP_EEXISTS,
                       JP_ECANCELLED, JP_ECORRUPT, JP_EMISMATCH, JP_EUNSUPPORTED, JP_ETOOBIG};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
    assert_int_equal(rpc_err_from_status(rpc_status_from_err(codes[i])), codes[i]);
  assert_int_equal(rpc_err_from_status(GRPC_STATUS_OK), 0);
  assert_int_equal(rpc_err_from_status(GRPC_STATUS_INTERNAL), JP_ERPC);
  assert_int_equal(rpc_err_from_status((grpc_status_code)99), JP_ERPC);
  assert_string_equal(rpc_status_name(GRPC_STATUS_INVALID_ARGUMENT), "INVALID_ARGUMENT");
  assert_string_equal(rpc_status_name(GRPC_STATUS_UNAUTHENTICATED), "UNAUTHENTICATED");
  assert_string_equal(rpc_status_name((grpc_status_code)99), "UNKNOWN_STATUS");
}

/* ---- protobuf glue ------------------------------------------------------------- */

/* A request with every kind of field: strings, bytes, nested repeated
 * messages, a oneof. */
struct sample {
  Japlaid__V1__ShardUpsertRequest req;
  Japlaid__V1__EncodedDocument doc[2], *docp[2];
  Japlaid__V1__EncodedPassage pas[3], *pasp[3];
  float vecs[3][2 * 8];
};

static void sample_init(struct sample *s)
{
  japlaid__v1__shard_upsert_request__init(&s->req);
  s->req.dim = 8;
  s->req.model_identity = "0123456789abcdef0123456789abcdef";
  for (int p = 0; p < 3; p++) {
    japlaid__v1__encoded_passage__init(&s->pas[p]);
    for (int i = 0; i < 16; i++) s->vecs[p][i] = (float)(p * 100 + i) * 0.25f - 3.0f;
    s->pas[p].text = p == 0 ? "東京の天気" : p == 1 ? "second passage" : "";
    s->pas[p].n_vecs = 2;
    s->pas[p].vectors.data = (uint8_t *)s->vecs[p];
    s->pas[p].vectors.len = sizeof s->vecs[p];
    s->pasp[p] = &s->pas[p];
  }
  for (int d = 0; d < 2; d++) {
    japlaid__v1__encoded_document__init(&s->doc[d]);
    s->doc[d].id = d == 0 ? "doc-a" : "doc-b";
    s->doc[d].metadata = d == 0 ? "{\"lang\":\"ja\"}" : "";
    s->docp[d] = &s->doc[d];
  }
  s->doc[0].n_passages = 2;
  s->doc[0].passages = &s->pasp[0];
  s->doc[1].n_passages = 1;
  s->doc[1].passages = &s->pasp[2];
  s->req.n_documents = 2;
  s->req.documents = s->docp;
}

static void sample_check(const struct sample *s, const Japlaid__V1__ShardUpsertRequest *r)
{
  assert_int_equal(r->dim, 8);
  assert_string_equal(r->model_identity, s->req.model_identity);
  assert_int_equal(r->n_documents, 2);
  assert_string_equal(r->documents[0]->id, "doc-a");
  assert_string_equal(r->documents[0]->metadata, "{\"lang\":\"ja\"}");
  assert_string_equal(r->documents[1]->metadata, "");
  assert_int_equal(r->documents[0]->n_passages, 2);
  assert_int_equal(r->documents[1]->n_passages, 1);
  assert_string_equal(r->documents[0]->passages[0]->text, "東京の天気");
  const Japlaid__V1__EncodedPassage *p = r->documents[1]->passages[0];
  assert_int_equal(p->vectors.len, sizeof s->vecs[2]);
  assert_memory_equal(p->vectors.data, s->vecs[2], sizeof s->vecs[2]);
}

static void pb_round_trip_single_slice(void **state)
{
  (void)state;
  struct sample s;
  sample_init(&s);
  grpc_byte_buffer *bb = rpc_pb_to_bb(&s.req.base);
  assert_non_null(bb);
  assert_int_equal(rpc_bb_length(bb), protobuf_c_message_get_packed_size(&s.req.base));
  ProtobufCMessage *m;
  assert_int_equal(rpc_pb_from_bb(bb, &japlaid__v1__shard_upsert_request__descriptor, NULL, &m), 0);
  sample_check(&s, (Japlaid__V1__ShardUpsertRequest *)m);
  protobuf_c_message_free_unpacked(m, NULL);
  grpc_byte_buffer_destroy(bb);
}

static void pb_round_trip_multi_slice(void **state)
{
  (void)state;
  struct sample s;
  sample_init(&s);
  size_t n = protobuf_c_message_get_packed_size(&s.req.base);
  uint8_t *buf = malloc(n);
  assert_int_equal(protobuf_c_message_pack(&s.req.base, buf), n);
  /* Cut at awkward places: inside a tag, inside a float, one byte. */
  size_t cuts[] = {0, 1, 3, 4, n / 2, n - 1, n};
  for (size_t a = 0; a + 1 < sizeof cuts / sizeof cuts[0]; a++) {
    grpc_slice sl[3];
    size_t c1 = cuts[a], c2 = (cuts[a] + n) / 2;
    sl[0] = grpc_slice_from_copied_buffer((const char *)buf, c1);
    sl[1] = grpc_slice_from_copied_buffer((const char *)buf + c1, c2 - c1);
    sl[2] = grpc_slice_from_copied_buffer((const char *)buf + c2, n - c2);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(sl, 3);
    for (int i = 0; i < 3; i++) grpc_slice_unref(sl[i]);
    ProtobufCMessage *m;
    assert_int_equal(rpc_pb_from_bb(bb, &japlaid__v1__shard_upsert_request__descriptor, NULL, &m),
                     0);
    sample_check(&s, (Japlaid__V1__ShardUpsertRequest *)m);
    protobuf_c_message_free_unpacked(m, NULL);
    grpc_byte_buffer_destroy(bb);
  }
  free(buf);
}

static void pb_malformed_bytes_are_invalid_argument(void **state)
{
  (void)state;
  ProtobufCMessage *m = (ProtobufCMessage *)1;
  /* Field 1, wire type 2, a length far beyond the data. */
  const uint8_t huge_len[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'x'};
  jp_err_clear();
  assert_int_equal(rpc_pb_unpack(huge_len, sizeof huge_len,
                                 &japlaid__v1__shard_search_request__descriptor, NULL, &m),
                   JP_EINVAL);
  assert_null(m);
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), "japlaid.v1.ShardSearchRequest"));
  /* Wire type 7 does not exist. */
  const uint8_t bad_wire[] = {0x0f, 0x00};
  assert_int_equal(rpc_pb_unpack(bad_wire, sizeof bad_wire,
                                 &japlaid__v1__shard_search_request__descriptor, NULL, &m),
                   JP_EINVAL);
  /* A truncated valid message. */
  struct sample s;
  sample_init(&s);
  grpc_byte_buffer *bb = rpc_pb_to_bb(&s.req.base);
  grpc_slice whole = bb->data.raw.slice_buffer.slices[0];
  assert_int_equal(rpc_pb_unpack(GRPC_SLICE_START_PTR(whole), GRPC_SLICE_LENGTH(whole) - 5,
                                 &japlaid__v1__shard_upsert_request__descriptor, NULL, &m),
                   JP_EINVAL);
  grpc_byte_buffer_destroy(bb);
  /* No message at all. */
  assert_int_equal(rpc_pb_from_bb(NULL, &japlaid__v1__shard_upsert_request__descriptor, NULL, &m),
                   JP_EINVAL);
  /* The empty message is a valid (all-default) message in proto3. */
  assert_int_equal(rpc_pb_unpack("", 0, &japlaid__v1__shard_stats_request__descriptor, NULL, &m), 0);
  protobuf_c_message_free_unpacked(m, NULL);
}

static void pb_arena_allocation_and_limit(void **state)
{
  (void)state;
  struct sample s;
  sample_init(&s);
  grpc_byte_buffer *bb = rpc_pb_to_bb(&s.req.base);
  struct jp_arena a;
  ProtobufCAllocator al;
  jp_arena_init(&a, 0, 0);
  rpc_pb_arena_allocator(&a, &al);
  ProtobufCMessage *m;
  assert_int_equal(rpc_pb_from_bb(bb, &japlaid__v1__shard_upsert_request__descriptor, &al, &m), 0);
  sample_check(&s, (Japlaid__V1__ShardUpsertRequest *)m);
  assert_true(a.used > rpc_bb_length(bb) / 2);
  /* Float vectors are readable in place: the allocator's blocks are aligned. */
  const Japlaid__V1__EncodedPassage *p = ((Japlaid__V1__ShardUpsertRequest *)m)->documents[0]->passages[1];
  assert_int_equal((uintptr_t)p->vectors.data % sizeof(float), 0);
  jp_arena_fini(&a);

  /* An arena too small for the message: a clean error, not a crash. */
  jp_arena_init(&a, 64, 96);
  rpc_pb_arena_allocator(&a, &al);
  assert_int_equal(rpc_pb_from_bb(bb, &japlaid__v1__shard_upsert_request__descriptor, &al, &m),
                   JP_EINVAL);
  jp_arena_fini(&a);

  /* rpc_pb_new builds a default-initialised message in an arena. */
  jp_arena_init(&a, 0, 0);
  Japlaid__V1__SearchParams *sp =
    (Japlaid__V1__SearchParams *)rpc_pb_new(&a, &japlaid__v1__search_params__descriptor);
  assert_non_null(sp);
  assert_ptr_equal(sp->base.descriptor, &japlaid__v1__search_params__descriptor);
  assert_int_equal(sp->k, 0);
  assert_int_equal(sp->centroid_score_threshold_opt_case,
                   JAPLAID__V1__SEARCH_PARAMS__CENTROID_SCORE_THRESHOLD_OPT__NOT_SET);
  jp_arena_fini(&a);
  grpc_byte_buffer_destroy(bb);
}

static void pb_threshold_presence_survives_the_wire(void **state)
{
  (void)state;
  /* centroid_score_threshold = 0 must be distinguishable from "unset". */
  Japlaid__V1__SearchParams sp = JAPLAID__V1__SEARCH_PARAMS__INIT;
  sp.k = 10;
  sp.centroid_score_threshold_opt_case =
    JAPLAID__V1__SEARCH_PARAMS__CENTROID_SCORE_THRESHOLD_OPT_CENTROID_SCORE_THRESHOLD;
  sp.centroid_score_threshold = 0.0f;
  grpc_byte_buffer *bb = rpc_pb_to_bb(&sp.base);
  ProtobufCMessage *m;
  assert_int_equal(rpc_pb_from_bb(bb, &japlaid__v1__search_params__descriptor, NULL, &m), 0);
  Japlaid__V1__SearchParams *r = (Japlaid__V1__SearchParams *)m;
  assert_int_equal(r->centroid_score_threshold_opt_case,
                   JAPLAID__V1__SEARCH_PARAMS__CENTROID_SCORE_THRESHOLD_OPT_CENTROID_SCORE_THRESHOLD);
  assert_true(r->centroid_score_threshold == 0.0f);
  protobuf_c_message_free_unpacked(m, NULL);
  grpc_byte_buffer_destroy(bb);

  Japlaid__V1__SearchParams unset = JAPLAID__V1__SEARCH_PARAMS__INIT;
  unset.k = 10;
  bb = rpc_pb_to_bb(&unset.base);
  assert_int_equal(rpc_pb_from_bb(bb, &japlaid__v1__search_params__descriptor, NULL, &m), 0);
  assert_int_equal(((Japlaid__V1__SearchParams *)m)->centroid_score_threshold_opt_case,
                   JAPLAID__V1__SEARCH_PARAMS__CENTROID_SCORE_THRESHOLD_OPT__NOT_SET);
  protobuf_c_message_free_unpacked(m, NULL);
  grpc_byte_buffer_destroy(bb);
}

/* ---- field checks ---------------------------------------------------------------- */

static void check_utf8(void **state)
{
  (void)state;
  assert_true(rpc_utf8_valid("", 0));
  assert_true(rpc_utf8_valid("abc", 3));
  assert_true(rpc_utf8_valid("東京", strlen("東京")));
  assert_true(rpc_utf8_valid("\xf0\x9f\x98\x80", 4));        /* U+1F600 */
  assert_false(rpc_utf8_valid("\xc0\xaf", 2));               /* overlong '/' */
  assert_false(rpc_utf8_valid("\xed\xa0\x80", 3));           /* surrogate */
  assert_false(rpc_utf8_valid("\xf4\x90\x80\x80", 4));       /* > U+10FFFF */
  assert_false(rpc_utf8_valid("\xe6\x9d", 2));               /* truncated */
  assert_false(rpc_utf8_valid("\x80", 1));                   /* lone continuation */
  assert_false(rpc_utf8_valid("\xff", 1));
}

static void check_fields_name_the_field(void **state)
{
  (void)state;
  assert_int_equal(rpc_check_str("doc", 1, 10, "documents[%d].id", 3), 0);
  assert_int_equal(rpc_check_str("", 1, 10, "documents[%d].id", 3), JP_EINVAL);
  assert_string_equal(jp_errmsg(JP_EINVAL), "documents[3].id: must not be empty");
  assert_int_equal(rpc_check_str(NULL, 1, 10, "x"), JP_EINVAL);
  assert_int_equal(rpc_check_str("0123456789a", 1, 10, "q"), JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), "11 bytes, the limit is 10"));
  assert_int_equal(rpc_check_str("a\xff", 0, 10, "text"), JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), "UTF-8"));

  assert_int_equal(rpc_check_json_object("", 100, "m"), 0);
  assert_int_equal(rpc_check_json_object(NULL, 100, "m"), 0);
  assert_int_equal(rpc_check_json_object("{\"a\": [1, 2], \"b\": \"x\"}", 100, "m"), 0);
  assert_int_equal(rpc_check_json_object("[1]", 100, "documents[%d].metadata", 0), JP_EINVAL);
  assert_string_equal(jp_errmsg(JP_EINVAL), "documents[0].metadata: not a JSON object");
  assert_int_equal(rpc_check_json_object("{\"a\":", 100, "m"), JP_EINVAL);
  assert_int_equal(rpc_check_json_object("{\"a\":1,\"a\":2}", 100, "m"), JP_EINVAL);
  assert_int_equal(rpc_check_json_object("{\"a\":1}", 5, "m"), JP_EINVAL);

  assert_int_equal(rpc_check_count(5, 1, 64, "n_queries"), 0);
  assert_int_equal(rpc_check_count(0, 1, 64, "n_queries"), JP_EINVAL);
  assert_string_equal(jp_errmsg(JP_EINVAL), "n_queries: 0 is outside 1..64");
  assert_int_equal(rpc_check_count(65, 1, 64, "n_queries"), JP_EINVAL);
}

static void check_float_vectors(void **state)
{
  (void)state;
  _Alignas(16) float v[4] = {1.0f, -2.0f, 0.5f, 0.0f};
  ProtobufCBinaryData b = {sizeof v, (uint8_t *)v};
  const float *out;
  assert_int_equal(rpc_check_f32(&b, 4, &out, "queries"), 0);
  assert_ptr_equal(out, v);
  assert_int_equal(rpc_check_f32(&b, 3, &out, "queries"), JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), "16 bytes, expected 12"));
  assert_null(out);
  v[2] = NAN;
  assert_int_equal(rpc_check_f32(&b, 4, &out, "documents[%d].passages[%d].vectors", 1, 2),
                   JP_EINVAL);
  assert_string_equal(jp_errmsg(JP_EINVAL), "documents[1].passages[2].vectors: value 2 is not finite");
  v[2] = INFINITY;
  assert_int_equal(rpc_check_f32(&b, 4, &out, "q"), JP_EINVAL);
  /* Misaligned data is refused, not read. */
  ProtobufCBinaryData mis = {4, (uint8_t *)v + 1};
  assert_int_equal(rpc_check_f32(&mis, 1, &out, "q"), JP_EINVAL);
  /* Empty is fine when nothing is expected; a huge count cannot overflow. */
  ProtobufCBinaryData empty = {0, NULL};
  assert_int_equal(rpc_check_f32(&empty, 0, &out, "q"), 0);
  assert_int_equal(rpc_check_f32(&empty, SIZE_MAX / 2, &out, "q"), JP_EINVAL);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(status_table_covers_every_error_code),
    cmocka_unit_test(status_table_maps_the_contract_codes),
    cmocka_unit_test(status_reverse_mapping_round_trips),
    cmocka_unit_test(pb_round_trip_single_slice),
    cmocka_unit_test(pb_round_trip_multi_slice),
    cmocka_unit_test(pb_malformed_bytes_are_invalid_argument),
    cmocka_unit_test(pb_arena_allocation_and_limit),
    cmocka_unit_test(pb_threshold_presence_survives_the_wire),
    cmocka_unit_test(check_utf8),
    cmocka_unit_test(check_fields_name_the_field),
    cmocka_unit_test(check_float_vectors),
  };
  grpc_init();
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  grpc_shutdown_blocking();
  return rc;
}
