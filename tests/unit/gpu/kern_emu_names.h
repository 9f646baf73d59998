/* kern_emu_names.h: the CUDA backend's kernel entry points renamed for
 * their host-emulated build (kern_host_emu.cpp), so a test executable can
 * hold them beside the real ones of libjaplaid. Include before
 * model/cuda/bert_cuda_kern.h. */
#ifndef JP_TEST_KERN_EMU_NAMES_H
#define JP_TEST_KERN_EMU_NAMES_H
#define bert_cuda_k_f32_to_bf16 bert_cuda_kemu_f32_to_bf16
#define bert_cuda_k_embed_ln bert_cuda_kemu_embed_ln
#define bert_cuda_k_qkv_split bert_cuda_kemu_qkv_split
#define bert_cuda_k_softmax bert_cuda_kemu_softmax
#define bert_cuda_k_merge_heads bert_cuda_kemu_merge_heads
#define bert_cuda_k_bias_res_ln bert_cuda_kemu_bias_res_ln
#define bert_cuda_k_bias_gelu bert_cuda_kemu_bias_gelu
#define bert_cuda_k_l2norm bert_cuda_kemu_l2norm
#endif
