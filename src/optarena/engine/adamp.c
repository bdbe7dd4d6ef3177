/* Fused AdamP and SGDP steps for contiguous float32 tensors on CPU (the math: rules/adamp.py).
 *
 * A tensor of two or more dimensions is viewed as rows x cols (cols = numel / size(0)) and cut
 * into work items: segments of at most SEG elements of one row. Two passes over memory:
 *
 * Pass 1, parallel over items: update the state in place, form the direction d on the fly (it is
 *   not stored) and take the item's partial sums <g,p>, <g,g>, <p,p>, <p,d> (float32 SIMD lanes).
 * Between the passes one thread adds each row's partials in item order (double), picks the view
 *   (channel, else layer, else none), the per-row coefficients <p,d>/(||p|| + eps)^2 and the decay.
 * Pass 2, parallel over items: recompute d from the updated state, d -= coef * p,
 *   p = p*decay + step*d (SGDP without Nesterov: d is the buffer, written back when projected).
 *
 * Each item is computed by one thread in a fixed order and rows are reduced in item order, so the
 * result does not depend on the number of threads. Each thread runs pass 2 over the items it had
 * in pass 1, in the same order (going backwards to reuse what pass 1 left in L2 was slower here:
 * the prefetchers lose the stream). Tensors that are never projected (fewer than two dimensions)
 * take one pass.
 *
 * Traffic per element (float32): AdamP 24 + 16 bytes (+4 with Nesterov: g is read again); SGDP
 * 16 + 12 bytes (+4 with Nesterov, +4 when a projection writes the buffer back).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <omp.h>

#define SEG 4096              /* elements per work item */
#define SERIAL_BELOW 32768    /* smaller tensors run on one thread (same result, no fork/join) */

enum { ADAMP = 0, SGDP = 1 };
enum { NESTEROV = 1, DECAY = 2, PROJECT = 4 };
enum { NONE = 0, CHANNEL = 1, LAYER = 2 };

/* The scalars (see the entry points), in float32: the precision in which torch's eager kernels
 * apply a Python scalar to float32 tensors. */
typedef struct {
    float a, b;       /* AdamP: beta1, beta2; SGDP: momentum, unused */
    float ca, cb;     /* AdamP: 1-beta1, 1-beta2; SGDP: 1-dampening, unused */
    float eps, inv_bc2;  /* AdamP: eps, 1/sqrt(1 - beta2^t); SGDP: eps, unused */
    float step;       /* AdamP: -lr/(1 - beta1^t); SGDP: -lr */
    float decay, decay_projected, delta;
} consts;

#define INLINE static inline __attribute__((always_inline))

/* The direction from the updated state: AdamP (nesterov ? b1 m + (1-b1) g : m) / (sqrt(v)/bc2 + eps);
 * SGDP nesterov ? g + momentum b : b. The division by bc2 is a multiplication by its reciprocal
 * (within a rounding of the eager path's division; the step is bound by the divider and the
 * square root, and it runs twice per element). */
INLINE float direction(const int kind, const int nest, const consts c, float g, float m, float v) {
    if (kind == ADAMP) {
        float denom = sqrtf(v) * c.inv_bc2 + c.eps;
        return (nest ? m * c.a + g * c.ca : m) / denom;
    }
    return nest ? g + m * c.a : m;
}

/* The state update (m: AdamP's exp_avg or SGDP's buffer; v: AdamP's exp_avg_sq), in place. */
INLINE float update_state(const int kind, const consts c, float g, float* restrict m, float* restrict v, int64_t i,
                          float* vi) {
    float mi = m[i] * c.a + g * c.ca;
    m[i] = mi;
    if (kind == ADAMP) {
        *vi = v[i] * c.b + g * g * c.cb;
        v[i] = *vi;
    }
    return mi;
}

/* One pass, no projection. */
INLINE void plain_item(const int kind, const int nest, const consts c, float decay, float* restrict p,
                       const float* restrict g, float* restrict m, float* restrict v, int64_t n) {
    #pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        float gi = g[i], vi = 0.0f;
        float mi = update_state(kind, c, gi, m, v, i, &vi);
        p[i] = p[i] * decay + c.step * direction(kind, nest, c, gi, mi, vi);
    }
}

INLINE void sums_item(const int kind, const int nest, const consts c, const float* restrict p,
                      const float* restrict g, float* restrict m, float* restrict v, int64_t n, double* out) {
    float gp = 0.0f, gg = 0.0f, pp = 0.0f, pd = 0.0f;
    #pragma omp simd reduction(+ : gp, gg, pp, pd)
    for (int64_t i = 0; i < n; ++i) {
        float gi = g[i], pi = p[i], vi = 0.0f;
        float mi = update_state(kind, c, gi, m, v, i, &vi);
        float di = direction(kind, nest, c, gi, mi, vi);
        gp += gi * pi;
        gg += gi * gi;
        pp += pi * pi;
        pd += pi * di;
    }
    out[0] = gp, out[1] = gg, out[2] = pp, out[3] = pd;
}

INLINE void apply_item(const int kind, const int nest, const consts c, float coef, float decay, int write_buffer,
                       float* restrict p, const float* restrict g, float* restrict m, const float* restrict v,
                       int64_t n) {
    if (kind == SGDP && !nest && write_buffer) {  /* the direction is the buffer: project it in place */
        #pragma omp simd
        for (int64_t i = 0; i < n; ++i) {
            float pi = p[i];
            float di = m[i] - coef * pi;
            m[i] = di;
            p[i] = pi * decay + c.step * di;
        }
        return;
    }
    #pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        float pi = p[i];
        float di = direction(kind, nest, c, nest ? g[i] : 0.0f, m[i], kind == ADAMP ? v[i] : 0.0f) - coef * pi;
        p[i] = pi * decay + c.step * di;
    }
}

/* The parallel regions are outlined before inlining, so `kind` and `nest` are not constants
 * there: these dispatchers call per-item loops specialized on them. */
#define SPECIALIZE(call) \
    if (kind == ADAMP) { if (nest) call(ADAMP, 1); else call(ADAMP, 0); } \
    else { if (nest) call(SGDP, 1); else call(SGDP, 0); }

static void plain(int kind, int nest, const consts c, float decay, float* p, const float* g, float* m, float* v,
                  int64_t n) {
#define CALL(K, N) plain_item(K, N, c, decay, p, g, m, v, n)
    SPECIALIZE(CALL)
#undef CALL
}

static void sums(int kind, int nest, const consts c, const float* p, const float* g, float* m, float* v, int64_t n,
                 double* out) {
#define CALL(K, N) sums_item(K, N, c, p, g, m, v, n, out)
    SPECIALIZE(CALL)
#undef CALL
}

static void apply(int kind, int nest, const consts c, float coef, float decay, int write_buffer, float* p,
                  const float* g, float* m, const float* v, int64_t n) {
#define CALL(K, N) apply_item(K, N, c, coef, decay, write_buffer, p, g, m, v, n)
    SPECIALIZE(CALL)
#undef CALL
}

/* |cos(g, p)| from the sums, with F.cosine_similarity's eps clamps (rules/adamp.py: _cosine). */
static double cosine(double gp, double gg, double pp, double eps) {
    return fabs(gp) / (fmax(sqrt(gg), eps) * fmax(sqrt(pp), eps));
}

/* Between the passes: the view, the per-row coefficients and the decay. Returns NONE, CHANNEL or LAYER. */
static int decide(const consts c, int flags, const double* part, int64_t rows, int64_t cols, int64_t segs,
                  double* row_sums, float* coef, float* decay) {
    double eps = c.eps, total[4] = {0.0, 0.0, 0.0, 0.0};
    double threshold = (double)c.delta / sqrt((double)cols);
    int channel = 1;
    for (int64_t r = 0; r < rows; ++r) {
        double* s = row_sums + 4 * r;
        s[0] = s[1] = s[2] = s[3] = 0.0;
        for (int64_t k = 0; k < segs; ++k)
            for (int j = 0; j < 4; ++j) s[j] += part[4 * (r * segs + k) + j];
        for (int j = 0; j < 4; ++j) total[j] += s[j];
        if (!(cosine(s[0], s[1], s[2], eps) < threshold)) channel = 0;  /* NaN: no channel view */
    }
    int view = NONE;
    if (channel) {
        view = CHANNEL;
        for (int64_t r = 0; r < rows; ++r) {
            double norm = sqrt(row_sums[4 * r + 2]) + eps;
            coef[r] = (float)(row_sums[4 * r + 3] / (norm * norm));
        }
    } else if (cosine(total[0], total[1], total[2], eps) < (double)c.delta / sqrt((double)rows * (double)cols)) {
        view = LAYER;
        double norm = sqrt(total[2]) + eps;
        float k = (float)(total[3] / (norm * norm));
        for (int64_t r = 0; r < rows; ++r) coef[r] = k;
    } else {
        for (int64_t r = 0; r < rows; ++r) coef[r] = 0.0f;
    }
    *decay = !(flags & DECAY) ? 1.0f : view != NONE ? c.decay_projected : c.decay;
    return view;
}

static int step(int kind, int nest, const consts c, int flags, float* restrict p,
                const float* restrict g, float* restrict m, float* restrict v, int64_t rows, int64_t cols,
                int threads) {
    int64_t numel = rows * cols;
    if (numel < SERIAL_BELOW || threads < 1) threads = 1;
    if (!(flags & PROJECT)) {
        float decay = (flags & DECAY) ? c.decay : 1.0f;
        int64_t items = (numel + SEG - 1) / SEG;
        #pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t it = 0; it < items; ++it) {
            int64_t at = it * SEG, n = numel - at < SEG ? numel - at : SEG;
            plain(kind, nest, c, decay, p + at, g + at, m + at, v ? v + at : 0, n);
        }
        return NONE;
    }
    int64_t segs = (cols + SEG - 1) / SEG, items = rows * segs;
    double* part = malloc(sizeof(double) * 4 * (items + rows));
    float* coef = malloc(sizeof(float) * rows);
    if (!part || !coef) {
        free(part);
        free(coef);
        return -1;  /* nothing was touched: the caller falls back */
    }
    float decay = 1.0f;
    int view = NONE;
    #pragma omp parallel num_threads(threads)
    {
        int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t lo = items * t / nt, hi = items * (t + 1) / nt;
        for (int64_t it = lo; it < hi; ++it) {
            int64_t r = it / segs, k = it % segs, at = r * cols + k * SEG;
            int64_t n = cols - k * SEG < SEG ? cols - k * SEG : SEG;
            sums(kind, nest, c, p + at, g + at, m + at, v ? v + at : 0, n, part + 4 * it);
        }
        #pragma omp barrier
        #pragma omp single
        view = decide(c, flags, part, rows, cols, segs, part + 4 * items, coef, &decay);
        /* (the implicit barrier after `single` publishes view, coef and decay) */
        for (int64_t it = lo; it < hi; ++it) {
            int64_t r = it / segs, k = it % segs, at = r * cols + k * SEG;
            int64_t n = cols - k * SEG < SEG ? cols - k * SEG : SEG;
            apply(kind, nest, c, coef[r], decay, view != NONE, p + at, g + at, m + at, v ? v + at : 0, n);
        }
    }
    free(part);
    free(coef);
    return view;
}

/* AdamP: neg_step_size = -lr/(1-beta1^t), bias_correction2_sqrt = sqrt(1-beta2^t); the scalars'
 * names and order: native.ADAMP. flags: NESTEROV | DECAY | PROJECT. Returns the view used (0 none,
 * 1 channel, 2 layer), -1 when out of memory (nothing updated). */
int optarena_adamp_step(float* p, const float* g, float* exp_avg, float* exp_avg_sq, int64_t rows, int64_t cols,
                        double beta1, double beta2, double one_minus_beta1, double one_minus_beta2, double eps,
                        double bias_correction2_sqrt, double neg_step_size, double decay, double decay_projected,
                        double delta, int flags, int threads) {
    consts c = {(float)beta1, (float)beta2, (float)one_minus_beta1, (float)one_minus_beta2, (float)eps,
                (float)(1.0 / bias_correction2_sqrt), (float)neg_step_size, (float)decay, (float)decay_projected,
                (float)delta};
    return step(ADAMP, flags & NESTEROV, c, flags, p, g, exp_avg, exp_avg_sq, rows, cols, threads);
}

/* SGDP: take = 1 - dampening, neg_lr = -lr, the decays include the 1/(1-momentum); the scalars'
 * names and order: native.SGDP. Flags and result as for AdamP. */
int optarena_sgdp_step(float* p, const float* g, float* buffer, int64_t rows, int64_t cols, double momentum,
                       double take, double eps, double neg_lr, double decay, double decay_projected, double delta,
                       int flags, int threads) {
    consts c = {(float)momentum, 0.0f, (float)take, 0.0f, (float)eps, 1.0f, (float)neg_lr, (float)decay,
                (float)decay_projected, (float)delta};
    return step(SGDP, flags & NESTEROV, c, flags, p, g, buffer, 0, rows, cols, threads);
}
