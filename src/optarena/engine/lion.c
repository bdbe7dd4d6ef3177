/* Lion's fused step for contiguous float32 tensors on CPU (the math: rules/lion.py), one pass over
 * memory (p, g, m read; p, m written: 20 bytes per element):
 *   p *= 1 - lr*wd;  p -= lr * sign(b1 m + (1-b1) g);  m = b2 m + (1-b2) g
 * Each op rounds as the eager one does, except that b1 m + (1-b1) g may be contracted into a fused
 * multiply-add: only its sign is used, which can differ only where the sum is within a rounding of
 * zero. sign(NaN) is 0, as torch.sign. Elementwise: the result does not depend on the thread count. */
#include <math.h>
#include <stdint.h>
#include <omp.h>

#define SERIAL_BELOW 32768  /* smaller tensors run on one thread (same result, no fork/join) */

/* decay = 1 - lr*wd, neg_lr = -lr; the scalars (their names and order: native.LION) are applied as
 * float32, the precision in which torch's eager kernels apply a Python scalar to float32 tensors. */
void optarena_lion_step(float* restrict p, const float* restrict g, float* restrict m, int64_t n, double decay,
                        double neg_lr, double beta1, double one_minus_beta1, double beta2, double one_minus_beta2,
                        int threads) {
    const float d = (float)decay, step = (float)neg_lr, b1 = (float)beta1, c1 = (float)one_minus_beta1;
    const float b2 = (float)beta2, c2 = (float)one_minus_beta2;
    if (n < SERIAL_BELOW || threads < 1) threads = 1;
    #pragma omp parallel for simd schedule(static) num_threads(threads)
    for (int64_t i = 0; i < n; ++i) {
        float gi = g[i], mi = m[i];
        float c = mi * b1 + gi * c1;
        float sign = (float)((c > 0.0f) - (c < 0.0f));
        p[i] = fmaf(sign, step, p[i] * d);  /* exact product: one rounding, as eager's add */
        m[i] = fmaf(gi, c2, mi * b2);
    }
}
