/* diffGrad's fused step for contiguous float32 tensors on CPU (the math: rules/diffgrad.py), one pass
 * over memory: with g the gradient plus the coupled decay wd*p,
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  friction = sigmoid(|prev - g|);  prev = g;
 *   p += step * friction * m / (sqrt(v) + eps)
 * The sigmoid's exp is computed here (exp_neg) so that the loop vectorizes: glibc's vector expf is
 * only declared under -ffast-math, which would also drop NaN semantics. Elementwise, so the result
 * does not depend on the number of threads. */
#include <math.h>
#include <stdint.h>
#include <omp.h>

#define SERIAL_BELOW 32768  /* smaller tensors run on one thread (same result, no fork/join) */
enum { DECAY = 2 };

/* e^-d for d >= 0 (or NaN), within ~2 ulp: e^-d = 2^k e^r with k = round(-d / ln 2) and
 * |r| <= ln(2)/2 (Cody-Waite reduction), e^r by its degree-7 Taylor polynomial (error < 6e-9). Below
 * e^-87 (where float underflows to subnormals) it returns e^-87: 1 + e^-d is 1 either way. */
static inline float exp_neg(float d) {
    float x = -d < -87.0f ? -87.0f : -d;
    float k = rintf(x * 1.44269504088896341f);
    float r = fmaf(k, -0.693145751953125f, x);
    r = fmaf(k, -1.428606765330187e-06f, r);
    float q = 1.0f / 5040.0f;
    q = fmaf(q, r, 1.0f / 720.0f);
    q = fmaf(q, r, 1.0f / 120.0f);
    q = fmaf(q, r, 1.0f / 24.0f);
    q = fmaf(q, r, 1.0f / 6.0f);
    q = fmaf(q, r, 0.5f);
    q = fmaf(q, r, 1.0f);
    q = fmaf(q, r, 1.0f);
    union { int32_t i; float f; } scale = {.i = ((int32_t)k + 127) << 23};
    return d == d ? q * scale.f : d;  /* NaN in, NaN out */
}

/* neg_step_size = -lr*sqrt(1-beta2^t)/(1-beta1^t); the scalars (their names and order:
 * native.DIFFGRAD) are applied as float32, the precision in which torch's eager kernels apply a
 * Python scalar to float32 tensors. */
void optarena_diffgrad_step(float* restrict p, const float* restrict g, float* restrict m, float* restrict v,
                            float* restrict prev, int64_t n, double beta1, double beta2, double one_minus_beta1,
                            double one_minus_beta2, double eps, double weight_decay, double neg_step_size,
                            int flags, int threads) {
    const float b1 = (float)beta1, b2 = (float)beta2, c1 = (float)one_minus_beta1, c2 = (float)one_minus_beta2;
    const float e = (float)eps, wd = (flags & DECAY) ? (float)weight_decay : 0.0f, step = (float)neg_step_size;
    if (n < SERIAL_BELOW || threads < 1) threads = 1;
    #pragma omp parallel for simd schedule(static) num_threads(threads)
    for (int64_t i = 0; i < n; ++i) {
        float pi = p[i];
        float gi = (flags & DECAY) ? fmaf(wd, pi, g[i]) : g[i];
        /* rounded as the eager ops are: each mul_ on its own, then the add's fused multiply-add */
        float mi = fmaf(gi, c1, m[i] * b1);
        float vi = fmaf(gi * gi, c2, v[i] * b2);
        float friction = 1.0f / (1.0f + exp_neg(fabsf(prev[i] - gi)));
        m[i] = mi;
        v[i] = vi;
        prev[i] = gi;
        p[i] = fmaf(step, (mi * friction) / (sqrtf(vi) + e), pi);
    }
}
