/* fp16.c: see fp16.h. Bit-level conversions; the bulk forms are plain loops
 * that the compiler vectorises well enough for one-off checkpoint loads. */
#include "util/fp16.h"

#include <string.h>

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float jp_f16_to_f32(uint16_t h)
{
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;

  if (exp == 0) {
    if (man == 0) return u2f(sign);
    /* Subnormal: value = man * 2^-24. */
    float v = (float)man * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (exp == 31) return u2f(sign | 0x7f800000u | (man << 13));
  return u2f(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t jp_f32_to_f16(float f)
{
  uint32_t u = f2u(f);
  uint32_t sign = (u >> 16) & 0x8000;
  uint32_t a = u & 0x7fffffffu;

  if (a >= 0x7f800000u)                           /* Inf or NaN */
    return (uint16_t)(sign | 0x7c00 | (a > 0x7f800000u ? 0x200 : 0));
  if (a >= 0x477ff000u)                           /* rounds to >= 65520: Inf */
    return (uint16_t)(sign | 0x7c00);
  if (a < 0x38800000u) {                          /* below 2^-14: subnormal or 0 */
    if (a < 0x33000000u) return (uint16_t)sign;   /* below half the smallest subnormal */
    uint32_t man = (a & 0x7fffff) | 0x800000;
    int shift = 126 - (int)(a >> 23);             /* 14..24 */
    uint32_t v = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (v & 1))) v++;
    return (uint16_t)(sign | v);
  }
  uint32_t v = ((a - 0x38000000u) >> 13);         /* rebias exponent 127 -> 15 */
  uint32_t rem = a & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (v & 1))) v++;
  return (uint16_t)(sign | v);
}

float jp_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t jp_f32_to_bf16(float f)
{
  uint32_t u = f2u(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

void jp_f16_to_f32_n(const uint16_t *src, float *dst, size_t n)
{
  for (size_t i = 0; i < n; i++) dst[i] = jp_f16_to_f32(src[i]);
}

void jp_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n)
{
  for (size_t i = 0; i < n; i++) dst[i] = jp_bf16_to_f32(src[i]);
}

void jp_f32_to_f16_n(const float *src, uint16_t *dst, size_t n)
{
  for (size_t i = 0; i < n; i++) dst[i] = jp_f32_to_f16(src[i]);
}

void jp_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n)
{
  for (size_t i = 0; i < n; i++) dst[i] = jp_f32_to_bf16(src[i]);
}
