/* Perona-Malik explicit scheme, every iteration of one plane while it sits in cache.
 *
 * The same scheme as diffusion_filters.perona_malik._pm_step (MedPy's 4-neighbour scheme, one
 * flux per edge, zero flux across the border), written so that a plane is read and written once
 * per iteration *in place*: row i needs the fluxes to rows i-1 (kept from the previous row) and
 * i+1 (rows i and i+1 are still the old values when row i is updated), so three row buffers
 * replace a second image, and a 256x256 plane (256 KiB) does all its iterations in L2.
 *
 * Why hand-written: torch (eager or inductor) runs one pass over memory per iteration; keeping
 * the iterations of a plane in cache is what no library here does (measurements:
 * docs/filter-performance.md). Built at first use by diffusion_filters/_native/__init__.py.
 *
 * Fluxes take nq = -1 / kappa^2 (as the compiled path does): g(d) d with
 *   kind 0 exponential  exp(max(d^2 nq, -80)) d
 *   kind 1 rational     d / (1 - d^2 nq)
 *   kind 2 tukey        r = -d^2 nq / 2; 0.5 (1 - r)^2 d if r <= 1 else 0
 *   kind 3 mixture      (shape exp(max(d^2 nq, -80)) + (1 - shape) / (1 - d^2 nq)) d
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastmath.h"

#define LOG2E 1.44269504088896341f

/* nq2 = nq log2(e): the exponential's argument in base 2 (exp2_neg: no range reduction). */
static inline float flux(float d, float nq, float nq2, float shape, int kind) {
    float q = d * d * nq;
    switch (kind) {
    case 0:
        return exp2_neg(fmaxf(d * d * nq2, -80.0f * LOG2E)) * d;
    case 1:
        return d / (1.0f - q);
    case 2: {
        float r = -0.5f * q;
        float t = 0.5f * (1.0f - r) * (1.0f - r);
        return (r <= 1.0f ? t : 0.0f) * d;
    }
    default:
        return (shape * exp_neg(fmaxf(q, -80.0f)) + (1.0f - shape) / (1.0f - q)) * d;
    }
}

/* One plane (h x w, row-major, updated in place); rows: 3 * (w + 1) floats of scratch. unit: the
 * spacing weights are 1 (a constant, so the two multiplications per pixel disappear). */
static inline void plane(float *restrict u, int h, int w, int iterations, float step, float nq, float shape,
                         float wy, float wx, float *restrict rows, int kind, int unit) {
    if (unit) wy = wx = 1.0f;
    float *fy_prev = rows, *fy_cur = rows + w, *fx = rows + 2 * w + 1; /* fx[-1] == 0 */
    const float nq2 = nq * LOG2E;
    fx[-1] = 0.0f;
    fx[w - 1] = 0.0f;
    for (int it = 0; it < iterations; ++it) {
        memset(fy_prev, 0, sizeof(float) * (size_t)w);
        for (int i = 0; i < h; ++i) {
            float *restrict row = u + (size_t)i * w;
            if (i + 1 < h) {
                const float *restrict below = row + w;
                for (int j = 0; j < w; ++j)
                    fy_cur[j] = flux(below[j] - row[j], nq, nq2, shape, kind) * wy;
            } else {
                memset(fy_cur, 0, sizeof(float) * (size_t)w);
            }
            for (int j = 0; j < w - 1; ++j)
                fx[j] = flux(row[j + 1] - row[j], nq, nq2, shape, kind) * wx;
            for (int j = 0; j < w; ++j)
                row[j] = row[j] + step * ((fy_cur[j] - fy_prev[j]) + (fx[j] - fx[j - 1]));
            float *t = fy_prev;
            fy_prev = fy_cur;
            fy_cur = t;
        }
    }
}

#define KIND(NAME, K)                                                                                    \
    static void NAME(float *u, int h, int w, int iterations, float step, float nq, float shape, float wy, \
                     float wx, float *rows) {                                                            \
        if (wy == 1.0f && wx == 1.0f)                                                                    \
            plane(u, h, w, iterations, step, nq, shape, wy, wx, rows, K, 1);                             \
        else                                                                                             \
            plane(u, h, w, iterations, step, nq, shape, wy, wx, rows, K, 0);                             \
    }
KIND(plane_exponential, 0)
KIND(plane_rational, 1)
KIND(plane_tukey, 2)
KIND(plane_mixture, 3)

/* n planes of h x w, contiguous, in place; per-plane step, nq and shape (NULL: 1).
 * Returns 0; -1 for an unknown kind; -2 if the row buffers cannot be allocated. */
int pm_planes(float *u, long n, int h, int w, int iterations, int kind, const float *step, const float *nq,
              const float *shape, float wy, float wx) {
    void (*fn)(float *, int, int, int, float, float, float, float, float, float *);
    switch (kind) {
    case 0: fn = plane_exponential; break;
    case 1: fn = plane_rational; break;
    case 2: fn = plane_tukey; break;
    case 3: fn = plane_mixture; break;
    default: return -1;
    }
    float *rows = malloc(sizeof(float) * 3 * ((size_t)w + 1));
    if (!rows) return -2;
    for (long k = 0; k < n; ++k)
        fn(u + k * (size_t)h * w, h, w, iterations, step[k], nq[k], shape ? shape[k] : 1.0f, wy, wx, rows);
    free(rows);
    return 0;
}
