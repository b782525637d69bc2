/* Per-plane parameter gradients of the backward kernels: three rows of w per-column partial sums
 * (accumulated in float so that the column loops vectorise) reduced in double. */
#ifndef DIFFUSION_FILTERS_COLUMN_SUMS_H
#define DIFFUSION_FILTERS_COLUMN_SUMS_H

static inline void store_column_sums(const float *acc, int w, float *out0, float *out1, float *out2) {
    double sums[3] = {0.0, 0.0, 0.0};
    for (int c = 0; c < 3; ++c)
        for (int j = 0; j < w; ++j) sums[c] += acc[c * w + j];
    *out0 = (float)sums[0];
    *out1 = (float)sums[1];
    *out2 = (float)sums[2];
}

#endif
