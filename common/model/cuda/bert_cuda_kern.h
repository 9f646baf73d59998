/* bert_cuda_kern.h: C entry points of the CUDA kernels of the BERT backend
 * (bert_cuda_kern.cu). Each launches one kernel on `stream` and returns the
 * launch status (cudaGetLastError); execution errors surface at the next
 * synchronisation. Semantics are those of struct bert_cuda__ops in
 * bert_cuda_int.h, on device pointers; BF16 buffers are uint16_t here.
 *
 * This header is C and C++ (the .cu includes it), and depends on nothing
 * of libjaplaid, so the kernel library links without it.
 * Thread-safety: as the CUDA runtime. Allocation: none. */
#ifndef JP_BERT_CUDA_KERN_H
#define JP_BERT_CUDA_KERN_H
#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dst[i] = bf16(src[i]), round to nearest even, i < n. */
cudaError_t bert_cuda_k_f32_to_bf16(cudaStream_t st, const float *src, uint16_t *dst, size_t n);

cudaError_t bert_cuda_k_embed_ln(cudaStream_t st, const int32_t *ids, int T, int L,
                                 const float *word, const float *pos, const float *type0,
                                 const float *g, const float *b, float eps, int H, float *x,
                                 uint16_t *xb);

cudaError_t bert_cuda_k_qkv_split(cudaStream_t st, const float *y, const float *bias, int B,
                                  int L, int heads, int dh, uint16_t *q, uint16_t *k,
                                  uint16_t *v);

cudaError_t bert_cuda_k_softmax(cudaStream_t st, const float *s, const uint8_t *attn, int B,
                                int heads, int L, float scale, uint16_t *p);

cudaError_t bert_cuda_k_merge_heads(cudaStream_t st, const uint16_t *ctxh, int B, int L,
                                    int heads, int dh, uint16_t *ctx);

cudaError_t bert_cuda_k_bias_res_ln(cudaStream_t st, const float *y, const float *bias,
                                    const float *g, const float *b, float eps, int T, int H,
                                    float *x, uint16_t *xb);

cudaError_t bert_cuda_k_bias_gelu(cudaStream_t st, const float *y, const float *bias, int T,
                                  int n, uint16_t *out);

cudaError_t bert_cuda_k_l2norm(cudaStream_t st, float *y, int T, int d);

#ifdef __cplusplus
}
#endif

#endif /* JP_BERT_CUDA_KERN_H */
