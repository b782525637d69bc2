/* Shared inline math of the C kernels (included by every .c file here). */
#ifndef DIFFUSION_FILTERS_FASTMATH_H
#define DIFFUSION_FILTERS_FASTMATH_H
#include <stdint.h>

/* exp(x) for x in [-80, 0]: Cody-Waite reduction and the Cephes polynomial (about 1 ulp);
 * branch-free so that the compiler vectorises the loops that call it. k = trunc(x log2(e) - 1/2) is
 * the nearest integer for x <= 0 (a float-to-int conversion vectorises, floorf does not here). */
static inline float exp_neg(float x) {
    int32_t k = (int32_t)(x * 1.44269504088896341f - 0.5f);
    float n = (float)k;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale = {.i = (k + 127) << 23}; /* 2^k (a union: vectorises, memcpy does not) */
    return p * scale.f;
}

#endif
