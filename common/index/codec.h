/* codec.h: PLAID's residual compression (shared/reference/plaid.md §2.3).
 *
 * A vector v is stored as code = argmax_c <centroid_c, v> and the residual
 * r = v - centroid[code] quantised per dimension to nbits with GLOBAL bucket
 * cutoffs and weights (quantiles of all residual entries of a held-out
 * sample). Bits are emitted per dimension LSB first and packed MSB first
 * into bytes (numpy packbits order): at nbits=2, buckets [3,3,1,1] pack to
 * the byte 0b11111010. Decoding adds the bucket weights to the centroid and
 * L2-normalises. The byte layout is ColBERTv2's, checked byte for byte
 * against goldens from tools/reference/.
 *
 * A jp_codec is immutable once trained and shared by all threads.
 * Allocation: jp_codec_init allocates the centroid table; compress and
 * decompress write into caller buffers. */
#ifndef JP_CODEC_H
#define JP_CODEC_H
#include <stddef.h>
#include <stdint.h>

#include "util/pool.h"

#define JP_CODEC_MAX_NBITS 8

struct jp_codec {
  int dim;                       /* vector width (128) */
  int nbits;                     /* 1, 2, 4 or 8 bits per dimension */
  int ncentroids;                /* rows of centroids */
  float *centroids;              /* [ncentroids, dim], unit rows; owned */
  float cutoffs[(1 << JP_CODEC_MAX_NBITS) - 1];  /* 2^nbits - 1 used, ascending */
  float weights[1 << JP_CODEC_MAX_NBITS];        /* 2^nbits used, ascending */
  float avg_residual;            /* mean |residual| on the held-out set (reported only) */
};

/* Allocate centroids (zeroed) for the given shape. nbits must be 1, 2, 4 or
 * 8 and dim a multiple of 8 / gcd (dim * nbits % 8 == 0). */
int  jp_codec_init(struct jp_codec *c, int dim, int nbits, int ncentroids);
void jp_codec_fini(struct jp_codec *c);
int  jp_codec_copy(struct jp_codec *dst, const struct jp_codec *src);

/* Packed residual bytes per vector: dim * nbits / 8. */
static inline size_t jp_codec_packed_bytes(const struct jp_codec *c)
{
  return (size_t)c->dim * (size_t)c->nbits / 8;
}

/* Nearest centroid (max inner product) of n vectors: codes[n]; ties go to
 * the smaller centroid. A fused AVX2 dot-product + argmax kernel per block
 * of vectors (no score matrix in memory, no BLAS threads competing with the
 * pool); rows split over the pool. */
int jp_codec_assign(const struct jp_codec *c, const float *vecs, size_t n, jp_pool *pool,
                    uint32_t *codes);

/* Set cutoffs, weights and avg_residual from n held-out residual vectors
 * (quantiles i/B and (i+0.5)/B of all n*dim entries, linear interpolation as
 * torch.quantile). */
int jp_codec_train_buckets(struct jp_codec *c, const float *residuals, size_t n);

/* Compress n vectors: codes[n] (nearest centroid) and packed[n * packed_bytes]. */
int jp_codec_compress(const struct jp_codec *c, const float *vecs, size_t n, jp_pool *pool,
                      uint32_t *codes, uint8_t *packed);

/* Quantise given residuals (already v - centroid) into packed bytes. */
void jp_codec_pack(const struct jp_codec *c, const float *residuals, size_t n, uint8_t *packed);

/* Rebuild n unit vectors from codes and packed residuals into out[n * dim]. */
void jp_codec_decompress(const struct jp_codec *c, const uint32_t *codes, const uint8_t *packed,
                         size_t n, float *out);
/* The scalar reference of the same (the oracle for the fast path). */
void jp_codec_decompress_ref(const struct jp_codec *c, const uint32_t *codes,
                             const uint8_t *packed, size_t n, float *out);

#endif /* JP_CODEC_H */
