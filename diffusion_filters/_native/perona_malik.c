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

#include "column_sums.h"
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
        return (shape * exp2_neg(fmaxf(d * d * nq2, -80.0f * LOG2E)) + (1.0f - shape) / (1.0f - q)) * d;
    }
}

/* One plane (h x w, row-major, updated in place); rows: ROWS(w) floats of scratch. unit: the
 * spacing weights are 1 (a constant, so the two multiplications per pixel disappear).
 * The horizontal fluxes are computed for all w columns from a copy of the row with its last sample
 * repeated: the flux of the extra edge is exactly 0 (d = 0), and the loop has no scalar remainder
 * (w - 1 columns left 15 of 63 on 64-wide rows to scalar code). */
#define ROWS(w) (4 * ((size_t)(w) + 1))
static inline void plane(float *restrict u, int h, int w, int iterations, float step, float nq, float shape,
                         float wy, float wx, float *restrict rows, int kind, int unit) {
    if (unit) wy = wx = 1.0f;
    float *fy_prev = rows, *fy_cur = rows + w, *fx = rows + 2 * w + 1; /* fx[-1] == 0 */
    float *restrict pad = rows + 3 * w + 2;
    const float nq2 = nq * LOG2E;
    fx[-1] = 0.0f;
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
            memcpy(pad, row, sizeof(float) * (size_t)w);
            pad[w] = row[w - 1];
            for (int j = 0; j < w; ++j)
                fx[j] = flux(pad[j + 1] - pad[j], nq, nq2, shape, kind) * wx;
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
    float *rows = malloc(sizeof(float) * ROWS(w));
    if (!rows) return -2;
    for (long k = 0; k < n; ++k)
        fn(u + k * (size_t)h * w, h, w, iterations, step[k], nq[k], shape ? shape[k] : 1.0f, wy, wx, rows);
    free(rows);
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Gradient of the mixture scheme (unit spacing): reverse mode through the iterations, plane by plane.
 *
 * Step k: u' = u + s sum_e F_e (+ at p, - at q) over the edges e = (p, q) (q the next pixel down or to
 * the right), F_e = f(d), d = u_q - u_p, f(d) = (shape E + (1 - shape) R) d with r2 = (d / kappa)^2 =
 * -q, E = exp(-min(r2, 80)), R = 1 / (1 + r2). With lambda = dL/du' and t_e = s (lambda_p - lambda_q) f'(d):
 *   dL/du_p = lambda_p - sum_{e from p} t_e + sum_{e into p} t_e    (the same stencil as the forward),
 *   dL/ds = sum_e F_e (lambda_p - lambda_q), dL/dkappa = sum_e s (lambda_p - lambda_q) df/dkappa,
 *   dL/dshape = sum_e s (lambda_p - lambda_q) (E - R) d,
 *   f'(d) = shape E (1 - 2 r2 [r2 < 80]) + (1 - shape) R (1 - 2 r2 R),
 *   df/dkappa = (2 r2 / kappa) d (shape E [r2 < 80] + (1 - shape) R^2).
 * lambda is updated in place with the forward's one-row lag. The forward states are recomputed from
 * the input with the forward's own code (so they are the states it produced) and kept in scratch
 * (iterations planes). Why by hand: autograd's graph of the same scheme sweeps the maps about thirty
 * times per iteration, and inductor's fused backward still once per iteration and tensor. */

typedef struct {
    float f, fd, fk, fs; /* f(d), f'(d), df/dkappa, df/dshape */
} FluxGrad;

static inline FluxGrad mixture_grad(float d, float nq, float inv_kappa, float shape) {
    float q = d * d * nq, q2 = d * d * (nq * LOG2E); /* -r2, and in base 2 as the forward's flux takes it */
    float below = (float)(q > -80.0f);
    float e = exp2_neg(fmaxf(q2, -80.0f * LOG2E)), r = 1.0f / (1.0f - q);
    float se = shape * e, sr = (1.0f - shape) * r;
    FluxGrad g;
    g.f = (se + sr) * d;
    g.fd = se * (1.0f + 2.0f * q * below) + sr * (1.0f + 2.0f * q * r);
    g.fk = -2.0f * q * inv_kappa * d * (se * below + sr * r);
    g.fs = (e - r) * d;
    return g;
}

/* The edge terms of one row: the horizontal edges (j, j + 1) from the padded copies vp, lp (the extra
 * edge has d = 0 and lambda difference 0: every term exactly 0) and, if below, the vertical edges to the
 * next row (vb, lb). Inlined with a constant `below`, so both versions are branch-free loops. */
static inline void row_terms(const float *restrict vp, const float *restrict lp, const float *restrict vr,
                             const float *restrict lr, const float *restrict vb, const float *restrict lb, int w,
                             int below, float step, float nq, float inv_kappa, float shape, float *restrict tx,
                             float *restrict ty, float *restrict as, float *restrict ak, float *restrict ash) {
    for (int j = 0; j < w; ++j) {
        FluxGrad g = mixture_grad(vp[j + 1] - vp[j], nq, inv_kappa, shape);
        float l = lp[j] - lp[j + 1], sl = step * l;
        float s_ = g.f * l, k_ = sl * g.fk, h_ = sl * g.fs;
        tx[j] = sl * g.fd;
        if (below) {
            FluxGrad v = mixture_grad(vb[j] - vr[j], nq, inv_kappa, shape);
            float lv = lr[j] - lb[j], slv = step * lv;
            ty[j] = slv * v.fd;
            s_ += v.f * lv;
            k_ += slv * v.fk;
            h_ += slv * v.fs;
        }
        as[j] += s_;
        ak[j] += k_;
        ash[j] += h_;
    }
}

/* One step backward on one plane: v the state the step started from, lam (in: dL/du', out: dL/du);
 * acc: 3 w per-column sums (step, kappa, shape); rows: BACK_ROWS(w) floats. */
#define BACK_ROWS(w) (5 * ((size_t)(w) + 1))
static void mixture_step_backward(const float *restrict v, float *restrict lam, int h, int w, float step, float nq,
                                  float inv_kappa, float shape, float *restrict acc, float *restrict rows) {
    float *ty_prev = rows, *ty_cur = rows + w, *tx = rows + 2 * w + 1; /* tx[-1] == 0 */
    float *restrict vp = rows + 3 * w + 2, *restrict lp = vp + w + 1;
    float *restrict as = acc, *restrict ak = acc + w, *restrict ash = acc + 2 * w;
    tx[-1] = 0.0f;
    memset(ty_prev, 0, sizeof(float) * (size_t)w);
    for (int i = 0; i < h; ++i) {
        const float *restrict vr = v + (size_t)i * w;
        float *restrict lr = lam + (size_t)i * w;
        memcpy(vp, vr, sizeof(float) * (size_t)w);
        memcpy(lp, lr, sizeof(float) * (size_t)w);
        vp[w] = vr[w - 1];
        lp[w] = lr[w - 1];
        if (i + 1 < h) {
            row_terms(vp, lp, vr, lr, vr + w, lr + w, w, 1, step, nq, inv_kappa, shape, tx, ty_cur, as, ak, ash);
        } else {
            memset(ty_cur, 0, sizeof(float) * (size_t)w);
            row_terms(vp, lp, vr, lr, vr, lr, w, 0, step, nq, inv_kappa, shape, tx, ty_cur, as, ak, ash);
        }
        for (int j = 0; j < w; ++j) lr[j] = lp[j] + ((ty_prev[j] - ty_cur[j]) + (tx[j - 1] - tx[j]));
        float *t = ty_prev;
        ty_prev = ty_cur;
        ty_cur = t;
    }
}

/* The mixture scheme with unit spacing as the gradient kernels see it: n planes of h x w from u to out
 * (each plane copied while it comes into cache), per plane step, kappa and shape (nq = -1 / kappa^2
 * computed here, as pm_mixture_backward does). Returns 0 or -2 without memory. */
int pm_mixture_planes(const float *u, float *out, long n, int h, int w, int iterations, const float *step,
                      const float *kappa, const float *shape) {
    float *rows = malloc(sizeof(float) * ROWS(w));
    if (!rows) return -2;
    const size_t hw = (size_t)h * w;
    for (long k = 0; k < n; ++k) {
        memcpy(out + k * hw, u + k * hw, sizeof(float) * hw);
        plane_mixture(out + k * hw, h, w, iterations, step[k], -1.0f / (kappa[k] * kappa[k]), shape[k], 1.0f,
                      1.0f, rows);
    }
    free(rows);
    return 0;
}

/* Backward of pm_mixture_planes over n planes of h x w. u0: the forward's input; grad: dL/d(output);
 * lam: receives dL/d(input); per plane step, kappa and shape; out per plane: dstep, dkappa, dshape.
 * Returns 0, or -2 without memory. */
int pm_mixture_backward(const float *u0, const float *grad, float *lam, long n, int h, int w, int iterations,
                        const float *step, const float *kappa, const float *shape, float *dstep, float *dkappa,
                        float *dshape) {
    const size_t hw = (size_t)h * w;
    float *states = malloc(sizeof(float) * hw * (size_t)(iterations > 0 ? iterations : 1));
    float *rows = malloc(sizeof(float) * BACK_ROWS(w));
    float *acc = malloc(sizeof(float) * 3 * (size_t)w);
    if (!states || !rows || !acc) {
        free(states);
        free(rows);
        free(acc);
        return -2;
    }
    for (long k = 0; k < n; ++k) {
        float *l = lam + k * hw;
        memcpy(l, grad + k * hw, sizeof(float) * hw);
        const float nqk = -1.0f / (kappa[k] * kappa[k]);
        memcpy(states, u0 + k * hw, sizeof(float) * hw);
        for (int it = 1; it < iterations; ++it) {
            memcpy(states + it * hw, states + (it - 1) * hw, sizeof(float) * hw);
            plane_mixture(states + it * hw, h, w, 1, step[k], nqk, shape[k], 1.0f, 1.0f, rows);
        }
        memset(acc, 0, sizeof(float) * 3 * (size_t)w);
        for (int it = iterations - 1; it >= 0; --it)
            mixture_step_backward(states + it * hw, l, h, w, step[k], nqk, 1.0f / kappa[k], shape[k], acc, rows);
        store_column_sums(acc, w, dstep + k, dkappa + k, dshape + k);
    }
    free(states);
    free(rows);
    free(acc);
    return 0;
}
