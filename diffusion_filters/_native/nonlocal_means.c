/* Non-local means, the filter of diffusion_filters.nonlocal_means._nlm_planes for one plane.
 *
 * For every offset t of the half search window (pair symmetry: the weight of (x, x + t) also
 * serves (x + t, -t)), the squared differences of the reflect-padded image and its shift are
 * box-summed over scikit-image's fast-mode patch window ((s - 1) x (s - 1)) into z, and the weight
 * exp(-max(z - shift, 0)) is accumulated at x (value u(x + t)) and at x + t (value u(x)); the
 * reference pixel has weight 1. Every inner loop runs over contiguous columns and vectorises.
 *
 * Why hand-written: the torch form makes a dozen passes over whole planes per offset; here one
 * offset is one streaming pass, row by row, with the working rows in L1. Built at first use by
 * _native/__init__.py.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "fastmath.h"

/* Windows of `size` consecutive values of x (length n): out[c] = sum_{q < size} x[c + q] for
 * c < n - size + 1, by binary doubling (floor(log2 size) + popcount(size) - 1 vector additions, as
 * nonlocal_means.box_sum); t1, t2: scratch rows of length n. */
static void box_row(const float *restrict x, int n, int size, float *restrict out, float *restrict t1,
                    float *restrict t2) {
    const int len = n - size + 1;
    const float *cur = x;
    int width = 1, offset = 0, remaining = size, first = 1;
    float *bufs[2] = {t1, t2};
    int which = 0;
    for (;;) {
        if (remaining & 1) {
            if (first)
                for (int c = 0; c < len; ++c) out[c] = cur[offset + c];
            else
                for (int c = 0; c < len; ++c) out[c] += cur[offset + c];
            first = 0;
            offset += width;
        }
        remaining >>= 1;
        if (!remaining) break;
        const int m = n - 2 * width + 1 > 0 ? n - (2 * width - 1) : 0; /* valid length of the doubled windows */
        float *next = bufs[which];
        which ^= 1;
        for (int c = 0; c < m; ++c) next[c] = cur[c] + cur[c + width];
        cur = next;
        width *= 2;
    }
}

/* One plane: p is the (h + 2 pad) x (w + 2 pad) reflect-padded image, pad = s/2 + k/2; out (h x w).
 * inv = 1 / (s h_filter); shift = the noise correction (0: none). For every offset t of the half
 * search window, the rows of z (the weights' exponents) are produced one at a time from a ring of
 * squared-difference rows (running column sums, recomputed exactly every 16 rows), and each weight
 * row is added at once at x (value u(x + t)) and at x + t (value u(x)): one pass per offset over
 * the numerator and denominator, which stay in L2 for images up to ~300 x 300. */
static void plane(const float *restrict p, float *restrict out, int h, int w, int s, int k, float inv,
                  float shift, float *restrict scratch) {
    const int o = s / 2, d = k / 2, pad = o + d, box = s - 1, wp = w + 2 * pad, rl = w + k + s;
    float *restrict num = scratch, *restrict den = scratch + (size_t)h * w;
    float *restrict ring = den + (size_t)h * w; /* box rows */
    float *restrict colsum = ring + (size_t)s * rl;
    float *restrict zrow = colsum + rl, *restrict t1 = zrow + rl, *restrict t2 = t1 + rl;
    for (int i = 0; i < h; ++i)
        for (int j = 0; j < w; ++j) {
            num[(size_t)i * w + j] = p[(size_t)(i + pad) * wp + j + pad];
            den[(size_t)i * w + j] = 1.0f; /* the reference pixel, weight 1 */
        }
    for (int dr = -d; dr <= d; ++dr) {
        for (int dc = 0; dc <= d; ++dc) {
            if (!(dc > 0 || dr > 0)) continue;
            const int r0 = dr < 0 ? 0 : -dr, c0 = -dc; /* min(0, -t) */
            const int lr = h + (dr < 0 ? -dr : dr), lc = w + dc;
            const int ra = r0 - o + 1 + pad, ca = c0 - o + 1 + pad, wide = lc + box - 1;
            for (int r = 0; r < lr; ++r) {
                if (box > 0) {
                    /* diff row r + box - 1 enters the ring; the column sums cover rows r .. r + box - 1 */
                    const int first = (r % 16 == 0);
                    for (int rr = first ? r : r + box - 1; rr < r + box; ++rr) {
                        const float *restrict a = p + (size_t)(ra + rr) * wp + ca;
                        const float *restrict b = a + (ptrdiff_t)dr * wp + dc;
                        float *restrict dst = ring + (size_t)(rr % s) * rl;
                        for (int c = 0; c < wide; ++c) {
                            float e = (a[c] - b[c]) * inv;
                            dst[c] = e * e;
                        }
                    }
                    if (first) {
                        for (int c = 0; c < wide; ++c) colsum[c] = 0.0f;
                        for (int q = 0; q < box; ++q) {
                            const float *restrict src = ring + (size_t)((r + q) % s) * rl;
                            for (int c = 0; c < wide; ++c) colsum[c] += src[c];
                        }
                    } else {
                        const float *restrict add = ring + (size_t)((r + box - 1) % s) * rl;
                        const float *restrict sub = ring + (size_t)((r - 1) % s) * rl;
                        for (int c = 0; c < wide; ++c) colsum[c] += add[c] - sub[c];
                    }
                    box_row(colsum, wide, box, zrow, t1, t2);
                } else {
                    for (int c = 0; c < lc; ++c) zrow[c] = 0.0f;
                }
                for (int c = 0; c < lc; ++c) zrow[c] = exp_neg(-fminf(fmaxf(zrow[c] - shift, 0.0f), 80.0f));
                const int xr = r0 + r; /* image row of x; x + t is row xr + dr */
                if (xr >= 0 && xr < h) {
                    const float *restrict wa = zrow - c0;
                    const float *restrict va = p + (size_t)(xr + dr + pad) * wp + pad + dc;
                    float *restrict nr = num + (size_t)xr * w, *restrict dn = den + (size_t)xr * w;
                    for (int j = 0; j < w; ++j) {
                        nr[j] += wa[j] * va[j];
                        dn[j] += wa[j];
                    }
                }
                const int yr = xr + dr;
                if (yr >= 0 && yr < h) {
                    const float *restrict wb = zrow - dc - c0;
                    const float *restrict vb = p + (size_t)(xr + pad) * wp + pad - dc;
                    float *restrict nr = num + (size_t)yr * w, *restrict dn = den + (size_t)yr * w;
                    for (int j = 0; j < w; ++j) {
                        nr[j] += wb[j] * vb[j];
                        dn[j] += wb[j];
                    }
                }
            }
        }
    }
    for (size_t m = 0; m < (size_t)h * w; ++m) out[m] = num[m] / den[m];
}

/* n planes: padded (n, h + 2 pad, w + 2 pad) in, out (n, h, w). The scratch: numerator and
 * denominator (h x w each), a ring of s rows of squared differences, the running column sums and
 * three rows for the horizontal box sums (each at most w + k + s long). Returns 0, or -2 if it
 * cannot be allocated. */
int nlm_planes(const float *padded, float *out, long n, int h, int w, int s, int k, float inv, float shift) {
    const int pad = s / 2 + k / 2;
    const size_t in_size = (size_t)(h + 2 * pad) * (w + 2 * pad);
    float *scratch = malloc(sizeof(float) * (2 * (size_t)h * w + (size_t)(s + 4) * (w + k + s)));
    if (!scratch) return -2;
    for (long m = 0; m < n; ++m)
        plane(padded + m * in_size, out + m * (size_t)h * w, h, w, s, k, inv, shift, scratch);
    free(scratch);
    return 0;
}
