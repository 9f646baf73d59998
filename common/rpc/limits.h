/* limits.h: the hard bounds of the japlaid.v1 wire API.
 *
 * A hostile or buggy request must not make a server allocate or compute
 * without bound (shared/reference/distributed.md §8.2: every anchor engine
 * caps hits, query tokens, request size and metadata). The .proto comments
 * quote these numbers; change both together. Search-side caps that belong to
 * the index (k, ndocs, query tokens) live in common/index/part.h (JP_MAX_K,
 * JP_MAX_NDOCS, JP_MAX_QUERY_TOKENS) and are reused, not repeated, here. */
#ifndef JP_RPC_LIMITS_H
#define JP_RPC_LIMITS_H

/* Queries in one Search batch. A shard runs a batch's queries one after
 * another, so larger batches gain nothing, while the answer grows with
 * n_queries * k hits. */
#define JP_RPC_MAX_QUERIES 64

/* Bytes of one query text. A query is cut to query_maxlen tokens (32) anyway;
 * 8 KiB is far above any real query and keeps tokenisation cheap. */
#define JP_RPC_MAX_QUERY_BYTES 8192

/* Document ids in a doc_ids restriction. The allowed passages are scored
 * exactly; 10k documents (a few passages each) stays within one search's
 * normal budget. Elasticsearch caps terms-style lists similarly (10k). */
#define JP_RPC_MAX_DOC_IDS 10000

/* Metadata equality filters per request (each is a lookup per candidate). */
#define JP_RPC_MAX_FILTERS 16
#define JP_RPC_MAX_FILTER_KEY_BYTES 256
#define JP_RPC_MAX_FILTER_VALUE_BYTES 1024

/* Bytes of one document id. Ids are RocksDB keys and appear in every hit;
 * 512 bytes fits UUIDs, paths and URLs. */
#define JP_RPC_MAX_DOC_ID_BYTES 512

/* Bytes of one document's metadata JSON (kept in memory for filters). */
#define JP_RPC_MAX_METADATA_BYTES 65536

/* Bytes of one document or passage text. */
#define JP_RPC_MAX_TEXT_BYTES (1024 * 1024)

/* Documents per Upsert or Delete request: one RocksDB WriteBatch each, so a
 * request must stay a reasonable transaction. */
#define JP_RPC_MAX_DOCS_PER_WRITE 1000

/* Passages per document after splitting (1 MiB of text in 256-token
 * passages is well under this). */
#define JP_RPC_MAX_PASSAGES_PER_DOC 4096

/* Vectors per passage: doc_maxlen is 256-512 for BERT models; 8192 leaves
 * room for long-context encoders. */
#define JP_RPC_MAX_VECS_PER_PASSAGE 8192

/* Embedding width accepted on the wire (the partition's dim must match
 * anyway; this bounds arithmetic before that check). */
#define JP_RPC_MAX_DIM 4096

/* Texts per Rerank / Encode request (RAGatouille warns above 1000). */
#define JP_RPC_MAX_RERANK_TEXTS 1000
#define JP_RPC_MAX_ENCODE_TEXTS 1000

/* Default largest message a server or client accepts (gRPC's own default is
 * 4 MiB, too small for a batch of encoded documents). */
#define JP_RPC_DEFAULT_MAX_MESSAGE_BYTES (64u * 1024u * 1024u)

/* Per-method request caps used by the servers (whole serialized message;
 * rpc_method.max_request_bytes). Upserts may use the whole message cap. */
#define JP_RPC_MAX_SEARCH_REQUEST_BYTES (4u * 1024u * 1024u)        /* texts */
#define JP_RPC_MAX_RERANK_REQUEST_BYTES (16u * 1024u * 1024u)       /* query + texts */
#define JP_RPC_MAX_ENCODE_REQUEST_BYTES (16u * 1024u * 1024u)
#define JP_RPC_MAX_SHARD_SEARCH_REQUEST_BYTES (32u * 1024u * 1024u) /* 64x512x128 f32 + ids */
#define JP_RPC_MAX_DELETE_REQUEST_BYTES (1024u * 1024u)
#define JP_RPC_MAX_SMALL_REQUEST_BYTES (64u * 1024u)                /* Stats, Health */

#endif /* JP_RPC_LIMITS_H */
