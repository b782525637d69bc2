/* Tensor-driven diffusion (CED and EED, explicit Weickert-Scharr scheme), every iteration of one
 * plane while it sits in cache.
 *
 * The same scheme as diffusion_filters.tensor_diffusion (equations there), operation by operation:
 *   1. u_sigma = K_sigma * u            separable sampled Gaussian, half-sample symmetric borders
 *                                       (periodic mirror when the radius exceeds the side);
 *   2. (g_x, g_y) = G u_sigma           Weickert-Scharr 3x3 derivatives;
 *   3. D = [[a, b], [b, c]]             CED: from K_rho * ((g_x - g_y)(g_x + g_y)) and K_rho * (g_x g_y)
 *                                       EED: from (g_x, g_y) directly;
 *   4. j = D G u                        the flux, from the derivatives of the unsmoothed u;
 *   5. u += step (10/32) raw            raw = -G^T j * 32/10, the exact negative adjoint of G.
 * A plane needs four scratch planes (u_sigma, one temporary, the two smoothed tensor fields or
 * the two flux components, reused in turn) and a few rows; a 256x256 plane iterates in L2.
 *
 * Why hand-written: the torch form is some forty passes over memory per iteration (each Gaussian
 * tap is one), and a 25-tap Gaussian (rho = 4) of two fields dominates; here every tap is one
 * fused multiply-add on a row that sits in L1 (measurements: docs/filter-performance.md).
 * Built at first use by diffusion_filters/_native/__init__.py.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "column_sums.h"
#include "fastmath.h"

#define EXP_CUTOFF 80.0
#define KIND_CED 0
#define KIND_EED 1

/* Half-sample symmetric index of i in [0, n): ... b a | a b c ... | c b ..., period 2n. */
static int mirror(long i, int n) {
    long p = 2L * n, k = i % p;
    if (k < 0) k += p;
    return (int)(k < n ? k : p - 1 - k);
}

/* Index table of a padded axis: t[i + r] = mirror(i, n) for i in [-r, n + r). */
static void mirror_table(int *t, int n, int r) {
    for (long i = -r; i < n + r; ++i) t[i + r] = mirror(i, n);
}

/* Normalised half kernel w[0..r] of the sampled Gaussian (as diffusion_filters.structure_tensor does it:
 * in double, sigma clamped to 1e-2, then rounded to float). */
static void gauss_weights(float sigma, int r, float *w) {
    double s = sigma < 1e-2f ? 1e-2 : (double)sigma, s2 = 2.0 * s * s, tail = 0.0, v[r + 1];
    for (int k = 0; k <= r; ++k) v[k] = exp(-(double)(k * k) / s2);
    for (int k = 1; k <= r; ++k) tail += v[k];
    double total = v[0] + 2.0 * tail;
    for (int k = 0; k <= r; ++k) w[k] = (float)(v[k] / total);
}

/* Eight floats in a register (AVX; lowered to narrower vectors by the compiler where there is none). */
typedef float v8 __attribute__((vector_size(32)));
#define BLK 64 /* outputs per block of the Gaussian passes: eight registers of sums */

#if defined(__FMA__)
#include <immintrin.h>
static inline v8 fma8(v8 a, v8 b, v8 c) { return (v8)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c); }
#else
static inline v8 fma8(v8 a, v8 b, v8 c) { return a * b + c; }
#endif

static inline v8 load8(const float *p) {
    v8 v;
    __builtin_memcpy(&v, p, sizeof v); /* an unaligned load */
    return v;
}

/* out[j] = w0 c[j] + sum_{k=1..r} w_k (lo_k[j] + hi_k[j]) for j in [0, n): the shared core of both
 * Gaussian passes (lo_k, hi_k are the taps' rows, set by the caller). Why explicit vectors: summing
 * tap by tap into out[] stores every partial sum, and GCC vectorises the blocked scalar form with
 * gathers; a block's sums kept in eight registers across the taps need one store per pixel. */
static inline void fir_block(const float *restrict c, float *restrict out, int n, int r, const float *restrict wt,
                             const float *const *restrict lo, const float *const *restrict hi) {
    int j0 = 0;
    for (; j0 + BLK <= n; j0 += BLK) {
        v8 acc[BLK / 8];
        for (int q = 0; q < BLK / 8; ++q) acc[q] = wt[0] * load8(c + j0 + 8 * q);
        for (int k = 1; k <= r; ++k) {
            const float wk = wt[k], *a = lo[k] + j0, *b = hi[k] + j0;
            const v8 wv = {wk, wk, wk, wk, wk, wk, wk, wk};
            for (int q = 0; q < BLK / 8; ++q) acc[q] = fma8(wv, load8(a + 8 * q) + load8(b + 8 * q), acc[q]);
        }
        __builtin_memcpy(out + j0, acc, sizeof acc);
    }
    for (; j0 < n; ++j0) {
        float acc = wt[0] * c[j0];
        for (int k = 1; k <= r; ++k) acc = fmaf(wt[k], lo[k][j0] + hi[k][j0], acc);
        out[j0] = acc;
    }
}

/* One row of the horizontal Gaussian pass (row may equal out: it is copied to pad first). taps: 2 (r + 1). */
static void smooth_row_x(const float *row, float *out, int w, int r, const float *restrict wt,
                         const int *restrict xt, float *restrict pad, const float **taps) {
    for (int t = 0; t < r; ++t) { /* the mirrored borders from the table, the row itself copied (no gather) */
        pad[t] = row[xt[t]];
        pad[w + r + t] = row[xt[w + r + t]];
    }
    memcpy(pad + r, row, sizeof(float) * (size_t)w);
    const float *c = pad + r;
    for (int k = 1; k <= r; ++k) {
        taps[k] = c - k;
        taps[r + 1 + k] = c + k;
    }
    fir_block(c, out, w, r, wt, taps, taps + r + 1);
}

/* Row i of the vertical Gaussian pass of plane src (h x w) into out. taps: 2 (r + 1). */
static void smooth_row_y(const float *src, float *restrict out, int i, int w, int r, const float *restrict wt,
                         const int *restrict yt, const float **taps) {
    for (int k = 1; k <= r; ++k) {
        taps[k] = src + (size_t)yt[i - k + r] * w;
        taps[r + 1 + k] = src + (size_t)yt[i + k + r] * w;
    }
    fir_block(src + (size_t)i * w, out, w, r, wt, taps, taps + r + 1);
}

/* K_sigma * src into dst (planes h x w; tmp: one scratch plane; pad: w + 2r floats). */
static void smooth_plane(const float *src, float *dst, float *tmp, int h, int w, int r, const float *wt,
                         const int *xt, const int *yt, float *pad, const float **taps) {
    for (int i = 0; i < h; ++i) smooth_row_x(src + (size_t)i * w, tmp + (size_t)i * w, w, r, wt, xt, pad, taps);
    for (int i = 0; i < h; ++i) smooth_row_y(tmp, dst + (size_t)i * w, i, w, r, wt, yt, taps);
}

/* The horizontal pass in place (the row is copied to pad first). */
static void smooth_plane_x_inplace(float *p, int h, int w, int r, const float *wt, const int *xt, float *pad,
                                   const float **taps) {
    for (int i = 0; i < h; ++i) smooth_row_x(p + (size_t)i * w, p + (size_t)i * w, w, r, wt, xt, pad, taps);
}

/* Weickert-Scharr derivatives of row i of plane p (h x w): gx = F_x * p, gy = F_y * p (torch's order of
 * operations); the mirrored border columns are read in place, no padded copy. */
static inline void scharr_at(const float *restrict up, const float *restrict mid, const float *restrict dn, int jl,
                             int j, int jr, float *restrict gx, float *restrict gy) {
    float dx_up = up[jr] - up[jl], dx_mid = mid[jr] - mid[jl], dx_dn = dn[jr] - dn[jl];
    float sx_up = 3.0f * (up[jl] + up[jr]) + 10.0f * up[j];
    float sx_dn = 3.0f * (dn[jl] + dn[jr]) + 10.0f * dn[j];
    gx[j] = (3.0f * (dx_up + dx_dn) + 10.0f * dx_mid) * (1.0f / 32.0f);
    gy[j] = (sx_dn - sx_up) * (1.0f / 32.0f);
}

static void scharr_row(const float *p, int i, int h, int w, float *restrict gx, float *restrict gy) {
    const float *up = p + (size_t)(i > 0 ? i - 1 : 0) * w, *mid = p + (size_t)i * w;
    const float *dn = p + (size_t)(i + 1 < h ? i + 1 : h - 1) * w;
    scharr_at(up, mid, dn, 0, 0, 1, gx, gy);
    for (int j = 1; j < w - 1; ++j) scharr_at(up, mid, dn, j - 1, j, j + 1, gx, gy);
    scharr_at(up, mid, dn, w - 2, w - 1, w - 1, gx, gy);
}

/* x^m for 1 <= m <= 31 by repeated squaring, multiplying the powers in the order of
 * tensor_diffusion._int_power (the multiplications by 1 are exact); branch-free for vectorisation. */
static inline float int_power(float x, int m) { /* unrolled: a loop here would keep the caller's loop scalar */
    float r = (m & 1) ? x : 1.0f, b = x * x;
    r = r * ((m & 2) ? b : 1.0f);
    b = b * b;
    r = r * ((m & 4) ? b : 1.0f);
    b = b * b;
    r = r * ((m & 8) ? b : 1.0f);
    b = b * b;
    return r * ((m & 16) ? b : 1.0f);
}

/* exp(-num / (q / scale)^m), exactly 0 for q <= thr (tensor_diffusion._exp_neg_reciprocal). */
static inline float exp_neg_reciprocal(float q, float num, float scale, float thr, int m) {
    float ratio = scale / fmaxf(q, thr); /* scale 1: exactly the reciprocal */
    return exp_neg(int_power(ratio, m) * -num) * (float)(q > thr);
}

/* Row of raw = -G^T (j1, j2) * 32 / 10 (tensor_diffusion's scharr_divergence_unscaled), row i. */
static void divergence_row(const float *j1, const float *j2, int i, int h, int w, float *restrict raw,
                           float *restrict t1, float *restrict t2a, float *restrict t2b) {
    const float *restrict r1 = j1 + (size_t)i * w;
    const float *restrict u1 = j1 + (size_t)(i > 0 ? i - 1 : 0) * w;
    const float *restrict d1 = j1 + (size_t)(i + 1 < h ? i + 1 : h - 1) * w;
    for (int j = 0; j < w; ++j) t1[j] = (u1[j] + d1[j]) * 0.3f + r1[j]; /* [3, 10, 3] / 10 along y */
    raw[0] = t1[1] + t1[0]; /* odd reflection at both ends along x */
    for (int j = 1; j < w - 1; ++j) raw[j] = t1[j + 1] - t1[j - 1];
    raw[w - 1] = -(t1[w - 2] + t1[w - 1]);
    /* t2a, t2b: [3, 10, 3] / 10 along x of the rows the y-difference needs */
    int ra = i == 0 ? 1 : (i == h - 1 ? h - 2 : i + 1), rb = i == 0 ? 0 : (i == h - 1 ? h - 1 : i - 1);
    const float *restrict rows[2] = {j2 + (size_t)ra * w, j2 + (size_t)rb * w};
    float *restrict outs[2] = {t2a, t2b};
    for (int q = 0; q < 2; ++q) {
        const float *restrict s = rows[q];
        float *restrict o = outs[q];
        o[0] = (s[0] + s[1]) * 0.3f + s[0];
        for (int j = 1; j < w - 1; ++j) o[j] = (s[j - 1] + s[j + 1]) * 0.3f + s[j];
        o[w - 1] = (s[w - 2] + s[w - 1]) * 0.3f + s[w - 1];
    }
    if (i == 0) { /* odd reflection at both ends along y */
        for (int j = 0; j < w; ++j) raw[j] = (raw[j] + t2a[j]) + t2b[j];
    } else if (i == h - 1) {
        for (int j = 0; j < w; ++j) raw[j] = (raw[j] - t2a[j]) - t2b[j];
    } else {
        for (int j = 0; j < w; ++j) raw[j] = (raw[j] + t2a[j]) - t2b[j];
    }
}

typedef struct {
    int kind, m, rs, rr; /* CED or EED, exponent, radii of sigma and rho (0: no smoothing) */
    float C;
} Scheme;

typedef struct {
    float coef, sigma, second, alpha; /* step * 10/32; sigma; rho (CED) or lam (EED); alpha (CED) */
} PlaneParams;

typedef struct { /* scratch of one plane; the planes are h * w floats, the rows w + 2 * rmax + 2 */
    float *s, *tmp, *f1, *f2;
    float *pad, *gx, *gy, *ux, *uy, *t1, *t2a, *t2b, *raw;
    float *ws, *wr;
    int *xs, *ys, *xr, *yr;
    const float **taps; /* 2 (rmax + 1) row pointers of a Gaussian pass */
} Scratch;

static void plane(float *u, int h, int w, int iterations, const Scheme *sc, const PlaneParams *pp, Scratch *b) {
    const int rs = sc->rs, rr = sc->rr, m = sc->m, ced = sc->kind == KIND_CED;
    const float C = sc->C, alpha = pp->alpha, half = (1.0f - alpha) * 0.5f;
    if (rs) gauss_weights(pp->sigma, rs, b->ws);
    if (rr) gauss_weights(pp->second, rr, b->wr);
    float scale = 1.0f;
    if (!ced) scale = (float)((double)pp->second * (double)pp->second); /* lam^2 */
    const float thr = (float)(pow((double)C / EXP_CUTOFF, 1.0 / m) * (double)scale);
    for (int it = 0; it < iterations; ++it) {
        const float *us = u;
        if (rs) {
            smooth_plane(u, b->s, b->tmp, h, w, rs, b->ws, b->xs, b->ys, b->pad, b->taps);
            us = b->s;
        }
        float *j1, *j2;
        if (ced) {
            for (int i = 0; i < h; ++i) { /* the two fields of the structure tensor's anisotropy */
                scharr_row(us, i, h, w, b->gx, b->gy);
                float *restrict f1 = b->f1 + (size_t)i * w, *restrict f2 = b->f2 + (size_t)i * w;
                for (int j = 0; j < w; ++j) {
                    float gx = b->gx[j], gy = b->gy[j];
                    f1[j] = (gx - gy) * (gx + gy);
                    f2[j] = gx * gy;
                }
            }
            const float *dp = b->f1, *jp = b->f2; /* j11 - j22 and j12 */
            j1 = b->tmp; /* free now: tmp held the horizontal pass of u_sigma, s is u_sigma or unused */
            j2 = b->s;
            if (rr) { /* K_rho: each field's vertical pass as a whole plane (its rows stay in L1) */
                smooth_plane_x_inplace(b->f1, h, w, rr, b->wr, b->xr, b->pad, b->taps);
                smooth_plane_x_inplace(b->f2, h, w, rr, b->wr, b->xr, b->pad, b->taps);
                for (int i = 0; i < h; ++i) smooth_row_y(b->f1, b->tmp + (size_t)i * w, i, w, rr, b->wr, b->yr, b->taps);
                for (int i = 0; i < h; ++i) smooth_row_y(b->f2, b->s + (size_t)i * w, i, w, rr, b->wr, b->yr, b->taps);
                dp = b->tmp;
                jp = b->s;
                j1 = b->f1;
                j2 = b->f2;
            }
            for (int i = 0; i < h; ++i) {
                const float *restrict d = dp + (size_t)i * w, *restrict j12 = jp + (size_t)i * w;
                scharr_row(u, i, h, w, b->ux, b->uy);
                float *restrict o1 = j1 + (size_t)i * w, *restrict o2 = j2 + (size_t)i * w;
                for (int j = 0; j < w; ++j) {
                    float gap2 = fmaf(4.0f * j12[j], j12[j], d[j] * d[j]); /* (mu1 - mu2)^2 */
                    float e = exp_neg_reciprocal(gap2, C, 1.0f, thr, m);
                    float k = e * half;
                    float r = k * (1.0f / sqrtf(fmaxf(gap2, thr)));
                    float kc = r * d[j];
                    float a = (k - kc) + alpha, c = (k + kc) + alpha, bb = r * j12[j] * -2.0f;
                    float ux = b->ux[j], uy = b->uy[j];
                    o1[j] = fmaf(bb, uy, a * ux);
                    o2[j] = fmaf(c, uy, bb * ux);
                }
            }
        } else {
            j1 = b->f1;
            j2 = b->f2;
            for (int i = 0; i < h; ++i) {
                scharr_row(us, i, h, w, b->gx, b->gy);
                scharr_row(u, i, h, w, b->ux, b->uy);
                float *restrict o1 = j1 + (size_t)i * w, *restrict o2 = j2 + (size_t)i * w;
                for (int j = 0; j < w; ++j) {
                    float gx = b->gx[j], gy = b->gy[j];
                    float s2 = fmaf(gy, gy, gx * gx);
                    float e = exp_neg_reciprocal(s2, C, scale, thr, m);
                    float wgt = e / fmaxf(s2, thr);
                    float wx = wgt * gx;
                    float a = 1.0f - wx * gx, bb = -(wx * gy), c = 1.0f - wgt * gy * gy;
                    float ux = b->ux[j], uy = b->uy[j];
                    o1[j] = fmaf(bb, uy, a * ux);
                    o2[j] = fmaf(c, uy, bb * ux);
                }
            }
        }
        const float coef = pp->coef;
        for (int i = 0; i < h; ++i) {
            divergence_row(j1, j2, i, h, w, b->raw, b->t1, b->t2a, b->t2b);
            float *restrict row = u + (size_t)i * w;
            for (int j = 0; j < w; ++j) row[j] = fmaf(b->raw[j], coef, row[j]);
        }
    }
}

/* n planes of h x w (h, w >= 3), contiguous, in place. kind: 0 CED, 1 EED. Per plane: coef = step * 10/32,
 * sigma, second (rho for CED, lam for EED), alpha (CED; may be NULL for EED). rs, rr: Gaussian radii of
 * sigma and rho shared by the call (0: no smoothing; rr is 0 for EED). Returns 0, -1 for invalid
 * arguments, -2 if the scratch cannot be allocated. */
int tensor_planes(float *u, long n, int h, int w, int iterations, int kind, const float *coef, const float *sigma,
                  const float *second, const float *alpha, int rs, int rr, float C, int m) {
    if (h < 3 || w < 3 || m < 1 || m > 31 || rs < 0 || rr < 0 || (kind != KIND_CED && kind != KIND_EED) ||
        (kind == KIND_CED && !alpha))
        return -1;
    const int rmax = rs > rr ? rs : rr;
    const size_t hw = (size_t)h * w, row = (size_t)w + 2 * (size_t)rmax + 2;
    float *buf = malloc(sizeof(float) * (4 * hw + 9 * row + (size_t)rs + rr + 2));
    int *ibuf = malloc(sizeof(int) * (2 * ((size_t)w + h) + 4 * ((size_t)rs + rr)));
    const float **taps = malloc(sizeof(float *) * 2 * ((size_t)rmax + 1));
    if (!buf || !ibuf || !taps) {
        free(buf);
        free(ibuf);
        free(taps);
        return -2;
    }
    Scratch b;
    b.taps = taps;
    float *p = buf;
    b.s = p, p += hw;
    b.tmp = p, p += hw;
    b.f1 = p, p += hw;
    b.f2 = p, p += hw;
    b.pad = p, p += row;
    float **rows[] = {&b.gx, &b.gy, &b.ux, &b.uy, &b.t1, &b.t2a, &b.t2b, &b.raw};
    for (int q = 0; q < 8; ++q) *rows[q] = p, p += row;
    b.ws = p, p += rs + 1;
    b.wr = p;
    int *ip = ibuf;
    b.xs = ip, ip += w + 2 * rs;
    b.ys = ip, ip += h + 2 * rs;
    b.xr = ip, ip += w + 2 * rr;
    b.yr = ip;
    mirror_table(b.xs, w, rs);
    mirror_table(b.ys, h, rs);
    mirror_table(b.xr, w, rr);
    mirror_table(b.yr, h, rr);
    const Scheme sc = {kind, m, rs, rr, C};
    for (long k = 0; k < n; ++k) {
        PlaneParams pp = {coef[k], sigma[k], second[k], alpha ? alpha[k] : 0.0f};
        plane(u + k * hw, h, w, iterations, &sc, &pp, &b);
    }
    free(buf);
    free(ibuf);
    free(taps);
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * The tensor variant of the learnable layers (diffusion_filters.layers._tensor_variant), forward and
 * gradient: edge-enhancing diffusion with the layers' learnable conductance,
 *     u' = u - s G^T j,   j = D p = p - w(z) (ps . p) ps,   p = G u,  ps = G K u,
 *     z = |ps|^2 / kappa^2,  w = rho(z) / kappa^2,  rho(z) = (1 - g(z)) / z,
 *     g(z) = shape exp(-z) + (1 - shape) / (1 + z),
 * i.e. D = I - (1 - g) n n^T with n = ps / |ps| steered by the gradient of u smoothed at the noise
 * scale sigma (K: the library's sampled Gaussian, half-sample symmetric borders). G: the
 * Weickert-Scharr derivatives, -G^T their exact adjoint (divergence_row * 10/32).
 * Gradient, with lambda = dL/du', mu = -s G lambda, c1 = ps . p, c2 = ps . mu:
 *     dL/dp  = mu - w c2 ps,
 *     dL/dps = -(2 rho'(z) c1 c2 / kappa^4) ps - w (c2 p + c1 mu),
 *     dL/du  = lambda + G^T dL/dp + K^T G^T dL/dps,
 *     dL/ds = -sum (G lambda) . j,  dL/dkappa = sum c1 c2 (rho' z + rho) 2 / (kappa^3),
 *     dL/dshape = -sum c1 c2 (h(z) - 1 / (1 + z)) / kappa^2,  h(z) = (1 - exp(-z)) / z.
 * K^T is the exact adjoint of "pad, then filter": the transposed filter on the zero-extended signal,
 * folded back onto the samples the padding copied. The gradient recomputes the forward states plane by
 * plane (kept in scratch: iterations planes).
 * Why by hand: inductor's fused form of this step ran at about 14 ns per pixel forward and 21 backward
 * here (its padding is concatenations of flipped slices); every plane's iterations fit in L2. */

typedef struct {
    float rho, drho, dshape; /* rho(z), rho'(z), d rho / d shape */
} Ratio;

/* rho of the mixture conductance without cancellation: h(z) = (1 - exp(-z)) / z and h'(z) by their series
 * below z = 1/2 (truncation below 1e-8), by the closed forms above (branch-free selects). */
static inline Ratio mixture_ratio(float z, float shape) {
    float e = exp_neg(fmaxf(-z, -80.0f)), r = 1.0f / (1.0f + z);
    float hs = 1.0f / 40320.0f;
    hs = fmaf(hs, -z, 1.0f / 5040.0f);
    hs = fmaf(hs, -z, 1.0f / 720.0f);
    hs = fmaf(hs, -z, 1.0f / 120.0f);
    hs = fmaf(hs, -z, 1.0f / 24.0f);
    hs = fmaf(hs, -z, 1.0f / 6.0f);
    hs = fmaf(hs, -z, 0.5f);
    hs = fmaf(hs, -z, 1.0f);
    float hps = 8.0f / 362880.0f; /* h'(z) = sum_{k>=1} (-1)^k k z^(k-1) / (k+1)! */
    hps = fmaf(hps, z, -7.0f / 40320.0f);
    hps = fmaf(hps, z, 6.0f / 5040.0f);
    hps = fmaf(hps, z, -5.0f / 720.0f);
    hps = fmaf(hps, z, 4.0f / 120.0f);
    hps = fmaf(hps, z, -3.0f / 24.0f);
    hps = fmaf(hps, z, 2.0f / 6.0f);
    hps = fmaf(hps, z, -0.5f);
    float zl = fmaxf(z, 0.5f), hl = (1.0f - e) / zl, hpl = (e - hl) / zl;
    float small = (float)(z < 0.5f), large = 1.0f - small;
    float h = small * hs + large * hl, hp = small * hps + large * hpl;
    Ratio q;
    q.rho = shape * h + (1.0f - shape) * r;
    q.drho = shape * hp - (1.0f - shape) * r * r;
    q.dshape = h - r;
    return q;
}

typedef struct {
    int r;                                       /* Gaussian radius of sigma (0: no smoothing, ps = p) */
    float *ws;                                   /* its half kernel, r + 1 */
    int *xs, *ys;                                /* mirror tables, w + 2r and h + 2r */
    const float **taps;                          /* 2 (r + 1) row pointers */
    float *s, *t, *p1, *p2, *q1, *q2, *rr;       /* planes: K u, a temporary, fluxes / dL/dp, dL/dps, raw */
    float *pad, *zp, *e, *zero;                  /* rows: w + 2r, w + 4r, w + 2r, w */
    float *gx, *gy, *sx, *sy, *lx, *ly, *raw, *t1, *t2a, *t2b; /* rows of w */
    float *extra;                                /* the caller's part of the scratch */
} TpmScratch;

/* K u into b->s (or u itself without smoothing). */
static const float *tpm_smooth(const float *u, int h, int w, TpmScratch *b) {
    if (!b->r) return u;
    smooth_plane(u, b->s, b->t, h, w, b->r, b->ws, b->xs, b->ys, b->pad, b->taps);
    return b->s;
}

/* One row of the adjoint of the horizontal Gaussian pass, added to out: ybar (w) -> out (w). */
static void smooth_row_x_adjoint(const float *ybar, float *restrict out, int w, TpmScratch *b) {
    const int r = b->r;
    memset(b->zp, 0, sizeof(float) * 2 * (size_t)r);
    memcpy(b->zp + 2 * r, ybar, sizeof(float) * (size_t)w);
    memset(b->zp + 2 * r + w, 0, sizeof(float) * 2 * (size_t)r);
    const float *c = b->zp + r;
    for (int k = 1; k <= r; ++k) {
        b->taps[k] = c - k;
        b->taps[r + 1 + k] = c + k;
    }
    fir_block(c, b->e, w + 2 * r, r, b->ws, b->taps, b->taps + r + 1); /* e[t]: padded sample t's adjoint */
    for (int j = 0; j < w; ++j) out[j] += b->e[r + j];
    for (int t = 0; t < r; ++t) { /* fold the mirrored samples back */
        out[b->xs[t]] += b->e[t];
        out[b->xs[w + r + t]] += b->e[w + r + t];
    }
}

/* xbar = K^T ybar (planes h x w); b->t is used as the vertical adjoint's result. */
static void smooth_plane_adjoint_add(const float *ybar, float *xbar, int h, int w, TpmScratch *b) {
    const int r = b->r;
    float *a = b->t;
    memset(a, 0, sizeof(float) * (size_t)h * w);
    for (int t = 0; t < h + 2 * r; ++t) { /* vertical: padded row t's adjoint, folded onto row ys[t] */
        const int i = t - r;
        const float *c = (i >= 0 && i < h) ? ybar + (size_t)i * w : b->zero;
        for (int k = 1; k <= r; ++k) {
            int lo = i - k, hi = i + k;
            b->taps[k] = (lo >= 0 && lo < h) ? ybar + (size_t)lo * w : b->zero;
            b->taps[r + 1 + k] = (hi >= 0 && hi < h) ? ybar + (size_t)hi * w : b->zero;
        }
        fir_block(c, b->e, w, r, b->ws, b->taps, b->taps + r + 1);
        float *restrict dst = a + (size_t)b->ys[t] * w;
        for (int j = 0; j < w; ++j) dst[j] += b->e[j];
    }
    for (int i = 0; i < h; ++i) smooth_row_x_adjoint(a + (size_t)i * w, xbar + (size_t)i * w, w, b);
}

static void tpm_step(float *u, int h, int w, float step, float ik2, float shape, TpmScratch *b) {
    const float *us = tpm_smooth(u, h, w, b);
    for (int i = 0; i < h; ++i) {
        scharr_row(us, i, h, w, b->sx, b->sy);
        scharr_row(u, i, h, w, b->gx, b->gy);
        float *restrict j1 = b->p1 + (size_t)i * w, *restrict j2 = b->p2 + (size_t)i * w;
        for (int j = 0; j < w; ++j) {
            float sx = b->sx[j], sy = b->sy[j], px = b->gx[j], py = b->gy[j];
            float z = fmaf(sy, sy, sx * sx) * ik2;
            float wc = mixture_ratio(z, shape).rho * ik2 * fmaf(sy, py, sx * px); /* w (ps . p) */
            j1[j] = px - wc * sx;
            j2[j] = py - wc * sy;
        }
    }
    const float coef = step * (10.0f / 32.0f);
    for (int i = 0; i < h; ++i) {
        divergence_row(b->p1, b->p2, i, h, w, b->raw, b->t1, b->t2a, b->t2b);
        float *restrict row = u + (size_t)i * w;
        for (int j = 0; j < w; ++j) row[j] = fmaf(b->raw[j], coef, row[j]);
    }
}

/* One row of the backward's pointwise part: dL/dp into d1, d2, dL/dps into e1, e2, the parameter sums
 * into as, ak, ash (a function of its own: with restrict parameters GCC vectorises it without the alias
 * checks it would need for the rows reached through the scratch struct). */
static void tpm_row_backward(const float *restrict rpx, const float *restrict rpy, const float *restrict rsx,
                             const float *restrict rsy, const float *restrict rlx, const float *restrict rly, int w,
                             float step, float ik2, float shape, float dk_scale, float two_ik2sq, float *restrict d1,
                             float *restrict d2, float *restrict e1, float *restrict e2, float *restrict as,
                             float *restrict ak, float *restrict ash) {
    for (int j = 0; j < w; ++j) {
        float px = rpx[j], py = rpy[j], sx = rsx[j], sy = rsy[j], lx = rlx[j], ly = rly[j];
        float z = fmaf(sy, sy, sx * sx) * ik2;
        Ratio q = mixture_ratio(z, shape);
        float wt = q.rho * ik2;
        float mx = -step * lx, my = -step * ly;
        float c1 = fmaf(sy, py, sx * px), c2 = fmaf(sy, my, sx * mx);
        float wc1 = wt * c1, wc2 = wt * c2;
        d1[j] = mx - wc2 * sx; /* dL/dp */
        d2[j] = my - wc2 * sy;
        float a = two_ik2sq * q.drho * c1 * c2; /* dL/dps = -(a ps + w (c2 p + c1 mu)) */
        e1[j] = -fmaf(a, sx, fmaf(wc2, px, wc1 * mx));
        e2[j] = -fmaf(a, sy, fmaf(wc2, py, wc1 * my));
        float jx = px - wc1 * sx, jy = py - wc1 * sy;
        as[j] -= fmaf(ly, jy, lx * jx);
        ak[j] += c1 * c2 * fmaf(q.drho, z, q.rho) * dk_scale;
        ash[j] -= c1 * c2 * q.dshape * ik2;
    }
}

/* One step backward: v the state the step started from, lam (in: dL/du', out: dL/du); acc: 3 w sums. */
static void tpm_step_backward(const float *v, float *lam, int h, int w, float step, float ik2, float kappa,
                              float shape, float *restrict acc, TpmScratch *b) {
    float *restrict as = acc, *restrict ak = acc + w, *restrict ash = acc + 2 * w;
    const float dk_scale = 2.0f * ik2 / kappa, two_ik2sq = 2.0f * ik2 * ik2;
    const float *us = tpm_smooth(v, h, w, b);
    const int smooth = b->r > 0;
    for (int i = 0; i < h; ++i) {
        scharr_row(lam, i, h, w, b->lx, b->ly);
        scharr_row(v, i, h, w, b->gx, b->gy);
        scharr_row(us, i, h, w, b->sx, b->sy);
        tpm_row_backward(b->gx, b->gy, b->sx, b->sy, b->lx, b->ly, w, step, ik2, shape, dk_scale, two_ik2sq,
                         b->p1 + (size_t)i * w, b->p2 + (size_t)i * w, b->q1 + (size_t)i * w, b->q2 + (size_t)i * w,
                         as, ak, ash);
    }
    if (smooth) { /* the dL/dps part: K^T G^T dL/dps = -(10/32) K^T raw(q1, q2), into plane rr */
        for (int i = 0; i < h; ++i) divergence_row(b->q1, b->q2, i, h, w, b->rr + (size_t)i * w, b->t1, b->t2a, b->t2b);
        memset(b->s, 0, sizeof(float) * (size_t)h * w); /* K u is no longer needed: s holds K^T raw */
        smooth_plane_adjoint_add(b->rr, b->s, h, w, b);
    } else { /* ps = p: both parts go through G^T alone */
        for (size_t t = 0; t < (size_t)h * w; ++t) {
            b->p1[t] += b->q1[t];
            b->p2[t] += b->q2[t];
        }
    }
    for (int i = 0; i < h; ++i) { /* dL/du = lambda - (10/32) (raw(dL/dp) + K^T raw(dL/dps)) */
        divergence_row(b->p1, b->p2, i, h, w, b->raw, b->t1, b->t2a, b->t2b);
        float *restrict row = lam + (size_t)i * w;
        if (smooth) {
            const float *restrict kt = b->s + (size_t)i * w;
            for (int j = 0; j < w; ++j) row[j] = fmaf(b->raw[j] + kt[j], -(10.0f / 32.0f), row[j]);
        } else {
            for (int j = 0; j < w; ++j) row[j] = fmaf(b->raw[j], -(10.0f / 32.0f), row[j]);
        }
    }
}

/* Scratch of one call: 7 planes, the rows, the kernel of sigma, `extra` floats for the caller
 * (b->extra); the mirror tables in *ibuf and the tap pointers in b->taps (both freed by tpm_free). */
static float *tpm_scratch(TpmScratch *b, int h, int w, int r, size_t extra, int **ibuf) {
    const size_t hw = (size_t)h * w, rw = (size_t)w + 4 * (size_t)r + 2;
    float *buf = malloc(sizeof(float) * (7 * hw + 14 * rw + (size_t)r + 1 + extra));
    *ibuf = malloc(sizeof(int) * ((size_t)w + h + 4 * (size_t)r));
    b->taps = malloc(sizeof(float *) * 2 * ((size_t)r + 1));
    if (!buf || !*ibuf || !b->taps) {
        free(buf);
        free(*ibuf);
        free(b->taps);
        return NULL;
    }
    b->r = r;
    float *p = buf;
    float **planes[] = {&b->s, &b->t, &b->p1, &b->p2, &b->q1, &b->q2, &b->rr};
    for (int q = 0; q < 7; ++q) *planes[q] = p, p += hw;
    float **rows[] = {&b->pad, &b->zp, &b->e, &b->zero, &b->gx, &b->gy, &b->sx, &b->sy, &b->lx, &b->ly, &b->raw,
                      &b->t1, &b->t2a, &b->t2b};
    for (int q = 0; q < 14; ++q) *rows[q] = p, p += rw;
    memset(b->zero, 0, sizeof(float) * rw);
    b->ws = p;
    b->extra = p + r + 1;
    b->xs = *ibuf;
    b->ys = b->xs + w + 2 * r;
    mirror_table(b->xs, w, r);
    mirror_table(b->ys, h, r);
    return buf;
}

static void tpm_free(float *buf, int *ibuf, TpmScratch *b) {
    free(buf);
    free(ibuf);
    free(b->taps);
}

/* n planes of h x w (h, w >= 3) from u to out (each plane copied while it comes into cache): `iterations`
 * steps with per-plane step, kappa and shape; sigma (radius r, 0: no smoothing) shared by the call.
 * Returns 0, -1 for invalid arguments, -2 without memory. */
int tpm_planes(const float *u, float *out, long n, int h, int w, int iterations, const float *step,
               const float *kappa, const float *shape, int r, float sigma) {
    if (h < 3 || w < 3 || r < 0) return -1;
    TpmScratch b;
    int *ibuf;
    float *buf = tpm_scratch(&b, h, w, r, 0, &ibuf);
    if (!buf) return -2;
    if (r) gauss_weights(sigma, r, b.ws);
    const size_t hw = (size_t)h * w;
    for (long k = 0; k < n; ++k) {
        const float ik2 = 1.0f / (kappa[k] * kappa[k]);
        memcpy(out + k * hw, u + k * hw, sizeof(float) * hw);
        for (int it = 0; it < iterations; ++it) tpm_step(out + k * hw, h, w, step[k], ik2, shape[k], &b);
    }
    tpm_free(buf, ibuf, &b);
    return 0;
}

/* Gradient of tpm_planes: u0 the forward's input, grad dL/d(output), lam receives dL/d(input); out per
 * plane dstep, dkappa, dshape. Returns 0, -1 for invalid arguments, -2 without memory. */
int tpm_backward(const float *u0, const float *grad, float *lam, long n, int h, int w, int iterations,
                 const float *step, const float *kappa, const float *shape, float *dstep, float *dkappa,
                 float *dshape, int r, float sigma) {
    if (h < 3 || w < 3 || r < 0) return -1;
    const size_t hw = (size_t)h * w;
    TpmScratch b;
    int *ibuf;
    const size_t k_states = (size_t)(iterations > 0 ? iterations : 1);
    float *buf = tpm_scratch(&b, h, w, r, k_states * hw + 3 * (size_t)w, &ibuf);
    if (!buf) return -2;
    if (r) gauss_weights(sigma, r, b.ws);
    float *states = b.extra, *acc = states + k_states * hw;
    for (long k = 0; k < n; ++k) {
        const float ik2 = 1.0f / (kappa[k] * kappa[k]);
        memcpy(states, u0 + k * hw, sizeof(float) * hw);
        for (int it = 1; it < iterations; ++it) {
            memcpy(states + it * hw, states + (it - 1) * hw, sizeof(float) * hw);
            tpm_step(states + it * hw, h, w, step[k], ik2, shape[k], &b);
        }
        memset(acc, 0, sizeof(float) * 3 * (size_t)w);
        memcpy(lam + k * hw, grad + k * hw, sizeof(float) * hw);
        for (int it = iterations - 1; it >= 0; --it)
            tpm_step_backward(states + it * hw, lam + k * hw, h, w, step[k], ik2, kappa[k], shape[k], acc, &b);
        store_column_sums(acc, w, dstep + k, dkappa + k, dshape + k);
    }
    tpm_free(buf, ibuf, &b);
    return 0;
}
