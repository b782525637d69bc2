/* SRAD (Yu & Acton 2002), every iteration of one plane while it sits in cache.
 *
 * The same scheme as diffusion_filters.srad._srad_step (see that module for the equations): per
 * iteration, q0^2 is the lower median of the squared coefficients of variation of the full
 * 8 x 8 blocks with mean > 1e-6 (or fixed), then the diffusion coefficient c of every pixel
 * (from the old image) goes to a scratch plane, then the image is updated in place row by row
 * (the old row above is kept in a row buffer). Two planes per image instead of the dozen
 * temporaries of the torch form; a 256x256 image does all its iterations in L2.
 *
 * Why hand-written: see perona_malik.c. Built at first use by diffusion_filters/_native/__init__.py.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define EPS_MEAN 1e-6f

static float lower_median(float *v, long n) { /* quickselect of element (n - 1) / 2; reorders v */
    long k = (n - 1) / 2, lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = v[(lo + hi) / 2];
        long i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) ++i;
            while (v[j] > pivot) --j;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j];
                v[j] = t;
                ++i;
                --j;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else break;
    }
    return v[k];
}

/* q0^2 of one plane: median over full kh x kw blocks of var / mean^2 (blocks with mean <= 1e-6 left out). */
static float q0_squared(const float *u, int h, int w, float *blocks) {
    int kh = h < 8 ? h : 8, kw = w < 8 ? w : 8;
    int nbh = h / kh, nbw = w / kw;
    float inv = 1.0f / (float)(kh * kw);
    long n = 0;
    for (int bi = 0; bi < nbh; ++bi) {
        for (int bj = 0; bj < nbw; ++bj) {
            float s = 0.0f, s2 = 0.0f;
            for (int i = bi * kh; i < (bi + 1) * kh; ++i) {
                const float *row = u + (size_t)i * w + (size_t)bj * kw;
                for (int j = 0; j < kw; ++j) {
                    s += row[j];
                    s2 += row[j] * row[j];
                }
            }
            float m1 = s * inv, m2 = s2 * inv;
            float var = m2 - m1 * m1;
            if (var < 0.0f) var = 0.0f;
            if (m1 > EPS_MEAN) blocks[n++] = var / (m1 * m1);
        }
    }
    return n ? lower_median(blocks, n) : 0.0f;
}

/* One plane in place. scratch: h * w + 2 * w + (h / min(h, 8)) * (w / min(w, 8)) floats. */
static void plane(float *restrict u, int h, int w, int iterations, float step, float fixed_q0sq, int estimate,
                  float *restrict scratch) {
    float *restrict c = scratch;
    float *restrict prev = scratch + (size_t)h * w;
    float *restrict cur = prev + w;
    float *restrict blocks = cur + w;
    for (int it = 0; it < iterations; ++it) {
        float q = estimate ? q0_squared(u, h, w, blocks) : fixed_q0sq;
        if (q < 1e-12f) q = 1e-12f;
        const float num = q * (1.0f + q), q4 = q * q;
        for (int i = 0; i < h; ++i) { /* c from the old image (replicated border) */
            const float *restrict row = u + (size_t)i * w;
            const float *restrict up = i > 0 ? row - w : row;
            const float *restrict down = i + 1 < h ? row + w : row;
            float *restrict crow = c + (size_t)i * w;
            for (int j = 0; j < w; ++j) {
                float center = row[j];
                float west = row[j > 0 ? j - 1 : 0], east = row[j + 1 < w ? j + 1 : w - 1];
                float dn = up[j] - center, ds = down[j] - center, dw = west - center, de = east - center;
                float nb = up[j] + down[j] + west + east;
                float s1 = nb - 4.0f * center;
                float s2 = dn * dn + ds * ds + dw * dw + de * de;
                float den = nb * nb;
                if (den < 1e-12f) den = 1e-12f;
                float qsq = (8.0f * s2 - s1 * s1) / den;
                if (qsq < 0.0f) qsq = 0.0f;
                float coef = num / (qsq + q4);
                crow[j] = coef < 0.0f ? 0.0f : (coef > 1.0f ? 1.0f : coef);
            }
        }
        memcpy(prev, u, sizeof(float) * (size_t)w); /* the row above row 0 is row 0 (replicated) */
        for (int i = 0; i < h; ++i) {
            float *restrict row = u + (size_t)i * w;
            memcpy(cur, row, sizeof(float) * (size_t)w);
            const float *restrict down = i + 1 < h ? row + w : cur;
            const float *restrict crow = c + (size_t)i * w;
            const float *restrict cdown = i + 1 < h ? crow + w : crow;
            for (int j = 0; j < w; ++j) {
                float center = cur[j];
                float west = cur[j > 0 ? j - 1 : 0], east = cur[j + 1 < w ? j + 1 : w - 1];
                float ce = crow[j + 1 < w ? j + 1 : w - 1];
                float div = cdown[j] * (down[j] - center) + crow[j] * ((prev[j] - center) + (west - center)) +
                            ce * (east - center);
                row[j] = center + step * div;
            }
            float *t = prev;
            prev = cur;
            cur = t;
        }
    }
}

/* n planes of h x w, contiguous, in place; per-plane step and q0^2 (q0sq NULL: estimated every
 * iteration). Returns 0, or -2 if the scratch cannot be allocated. */
int srad_planes(float *u, long n, int h, int w, int iterations, const float *step, const float *q0sq) {
    const size_t blocks = (size_t)(h / (h < 8 ? h : 8)) * (size_t)(w / (w < 8 ? w : 8));
    float *scratch = malloc(sizeof(float) * ((size_t)h * w + 2 * (size_t)w + blocks));
    if (!scratch) return -2;
    for (long k = 0; k < n; ++k)
        plane(u + k * (size_t)h * w, h, w, iterations, step[k], q0sq ? q0sq[k] : 0.0f, q0sq == NULL, scratch);
    free(scratch);
    return 0;
}
