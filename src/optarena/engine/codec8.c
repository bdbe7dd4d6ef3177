/* Block-wise 8-bit codec for optarena's 8-bit state (see quantize.py for the scheme).
 * Bit-exact with the torch implementation in quantize.py: absmax = max |x| per block; y = x / absmax
 * (IEEE division); the code is the rounding table's low code for y's top 16 bits, plus one when y
 * lies above the midpoint inside that key's range. Here the comparison is done on the low 16 bits
 * (floats of one key compare like their low bits, reversed for negative floats), so one 32-bit
 * entry (low code << 16 | threshold) and one gather serve per value. */
#include <stdint.h>
#include <string.h>
#include <math.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define BLK 256

static void decode_block(const uint8_t* c, float a, const float* code, float* out, int n) {
    #pragma omp simd
    for (int i = 0; i < n; ++i) out[i] = code[c[i]] * a;
}

void optarena_decode(const uint8_t* codes, const float* absmax, const float* code, float* out, int64_t n, int threads) {
    int64_t nb = (n + BLK - 1) / BLK;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t b = 0; b < nb; ++b) {
        int64_t s = b * BLK;
        decode_block(codes + s, absmax[b], code, out + s, (int)(n - s < BLK ? n - s : BLK));
    }
}

static void encode_block(const float* x, uint8_t* c, float* absmax, const uint32_t* table, int n) {
    float a = 0.0f;
    int i = 0;
#ifdef __AVX512F__
    __m512 vmax = _mm512_setzero_ps();
    for (; i + 16 <= n; i += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
    a = _mm512_reduce_max_ps(vmax);
#endif
    for (; i < n; ++i) { float v = fabsf(x[i]); a = v > a ? v : a; }
    *absmax = a;
    float d = a > 0.0f ? a : 1.0f;
    i = 0;
#ifdef __AVX512F__
    __m512 vd = _mm512_set1_ps(d);
    __m512i low16 = _mm512_set1_epi32(0xFFFF);
    __m512i one = _mm512_set1_epi32(1);
    for (; i + 16 <= n; i += 16) {
        __m512i bits = _mm512_castps_si512(_mm512_div_ps(_mm512_loadu_ps(x + i), vd));
        __m512i e = _mm512_i32gather_epi32(_mm512_srli_epi32(bits, 16), (const int*)table, 4);
        __m512i flip = _mm512_and_si512(_mm512_srai_epi32(bits, 31), low16);
        __m512i t = _mm512_xor_si512(_mm512_and_si512(bits, low16), flip);
        __mmask16 up = _mm512_cmpgt_epu32_mask(t, _mm512_and_si512(e, low16));
        __m512i code = _mm512_srli_epi32(e, 16);
        code = _mm512_mask_add_epi32(code, up, code, one);
        _mm_storeu_si128((__m128i*)(c + i), _mm512_cvtepi32_epi8(code));
    }
#endif
    for (; i < n; ++i) {
        float y = x[i] / d;
        uint32_t bits;
        memcpy(&bits, &y, 4);
        uint32_t e = table[bits >> 16];
        uint32_t t = (bits & 0xFFFFu) ^ ((bits >> 31) ? 0xFFFFu : 0u);
        c[i] = (uint8_t)((e >> 16) + (t > (e & 0xFFFFu)));
    }
}

void optarena_encode(const float* x, uint8_t* codes, float* absmax, const uint32_t* table, int64_t n, int threads) {
    int64_t nb = (n + BLK - 1) / BLK;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t b = 0; b < nb; ++b) {
        int64_t s = b * BLK;
        encode_block(x + s, codes + s, absmax + b, table, (int)(n - s < BLK ? n - s : BLK));
    }
}
