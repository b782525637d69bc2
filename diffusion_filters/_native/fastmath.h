/* Shared inline math of the C kernels (included by every .c file here). */
#ifndef DIFFUSION_FILTERS_FASTMATH_H
#define DIFFUSION_FILTERS_FASTMATH_H
#include <math.h>
#include <stdint.h>

/* The polynomials use fmaf (a fused multiply-add where the CPU has one: one rounding fewer and one
 * instruction instead of two; the flags keep the compiler from fusing anything on its own). */

/* exp(x) for x in [-80, 0]: Cody-Waite reduction and the Cephes polynomial (about 1 ulp);
 * branch-free so that the compiler vectorises the loops that call it. k = trunc(x log2(e) - 1/2) is
 * the nearest integer for x <= 0 (a float-to-int conversion vectorises, floorf does not here). */
static inline float exp_neg(float x) {
    int32_t k = (int32_t)(x * 1.44269504088896341f - 0.5f);
    float n = (float)k;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p * r, r, r) + 1.0f;
    union { int32_t i; float f; } scale = {.i = (k + 127) << 23}; /* 2^k (a union: vectorises, memcpy does not) */
    return p * scale.f;
}

/* 2^y for y in [-116, 0]: k = trunc(y - 1/2) (the nearest integer), f = y - k in [-1/2, 1/2] exactly,
 * 2^f by a degree-5 polynomial (least squares in relative error at 2000 Chebyshev nodes: 7.7e-8 in
 * exact arithmetic, 2.3e-7 evaluated in float32, like exp_neg), times 2^k. No Cody-Waite reduction,
 * so it costs four operations less than exp_neg: callers that can fold log2(e) into a constant
 * (Perona-Malik's -1 / kappa^2) use it. */
static inline float exp2_neg(float y) {
    int32_t k = (int32_t)(y - 0.5f);
    float f = y - (float)k;
    float p = 1.3266970386344307e-3f;
    p = fmaf(p, f, 9.675459745517825e-3f);
    p = fmaf(p, f, 5.55074261600247e-2f);
    p = fmaf(p, f, 2.402212175356167e-1f);
    p = fmaf(p, f, 6.931469491610636e-1f);
    p = fmaf(p, f, 1.0000000710296983f);
    union { int32_t i; float f; } scale = {.i = (k + 127) << 23};
    return p * scale.f;
}

#endif
