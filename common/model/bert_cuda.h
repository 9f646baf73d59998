/* bert_cuda.h: the CUDA encoder backend's constructor (implemented in
 * common/model/cuda/ only when the build has CUDA, JP_HAVE_CUDA).
 *
 * Same contract as bert_cpu_create (bert.h): a backend for up to max_tokens
 * tokens per forward call on GPU ordinal `gpu`, weights uploaded from `w`
 * (which need not outlive the call once uploaded). JP_ENODEVICE when no
 * usable GPU is present, JP_EDEVICE on a CUDA failure. */
#ifndef JP_BERT_CUDA_H
#define JP_BERT_CUDA_H

#include "model/bert.h"

int bert_cuda_create(const struct bert_weights *w, int max_tokens, int gpu,
                     struct bert_backend **out);

/* Number of CUDA devices this process can use; 0 when there is no driver or
 * no device (never an error). The MPI indexer picks local_rank % this. */
int bert_cuda_device_count(void);

/* Load cuBLAS now (it is otherwise loaded by the first bert_cuda_create):
 * 0, or JP_ENODEVICE with the loader's message. Needs no GPU. */
int bert_cuda_blas_load(void);

#endif /* JP_BERT_CUDA_H */
