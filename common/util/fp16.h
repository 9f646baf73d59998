/* fp16.h: IEEE half and bfloat16 conversions (checkpoint loading, GPU
 * buffers). Round-to-nearest-even on the way down, exact on the way up;
 * NaN stays NaN, overflow gives infinity. Pure functions, no state. */
#ifndef JP_FP16_H
#define JP_FP16_H
#include <stddef.h>
#include <stdint.h>

float    jp_f16_to_f32(uint16_t h);
uint16_t jp_f32_to_f16(float f);
float    jp_bf16_to_f32(uint16_t h);
uint16_t jp_f32_to_bf16(float f);

void jp_f16_to_f32_n(const uint16_t *src, float *dst, size_t n);
void jp_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n);
void jp_f32_to_f16_n(const float *src, uint16_t *dst, size_t n);
void jp_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n);

#endif /* JP_FP16_H */
