// Attention of one new token per row over a left-padded key/value slab, on a CPU with AVX-512
// (irtk.generation.attention builds this file once per machine and calls it through ctypes).
//
// Why by hand: torch's CPU flash-attention kernel packs every block of keys and values before
// its small matrix products, and reads the padding it then masks; for a decode step (a few
// query heads per key/value head, one position each) that costs 2-3x the time of reading the
// cache once. Here each (row, key/value head) task reads its valid positions once, keys in one
// pass and values in the next, with fp32 arithmetic throughout; the softmax between the two
// passes is torch's. Positions whose mask byte is 0 are never read.
//
// Layouts (strides in elements): q [B, Hq, D] (row and head strides given, dims contiguous);
// k, v [B, Hkv, L, D] (row and head strides given, positions D apart); mask [B, L] bytes (row
// stride given; NULL: every position valid); scores [B, Hq, L] fp32, contiguous; out [B, Hq, D]
// (row and head strides given). D must be 64 and Hq / Hkv at most 8 (checked by the caller).

#ifndef __AVX512F__
#error "decode_attention needs AVX-512 (the caller falls back to torch's attention)"
#endif

#include <immintrin.h>

#include <cmath>
#include <cstdint>

namespace {

constexpr int64_t kDim = 64;

inline __m512 load16(const uint16_t* p) {  // 16 bf16 -> fp32: the bf16 bits are an fp32's top half
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }

inline void store(float* p, float x) { *p = x; }
inline void store(uint16_t* p, float x) {  // fp32 -> bf16, round to nearest even (as torch does)
    uint32_t u;
    __builtin_memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        *p = uint16_t((u >> 16) | 64);  // NaN stays NaN
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    *p = uint16_t(u >> 16);
}

inline bool valid(const uint8_t* m, int64_t l) { return m == nullptr || m[l]; }

template <int G, typename T>
void scores(const T* q, const T* k, const uint8_t* mask, float* s, int64_t B, int64_t Hkv, int64_t L,
            int64_t qsB, int64_t qsH, int64_t ksB, int64_t ksH, int64_t msB, float scale, int threads) {
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
    for (int64_t b = 0; b < B; ++b) {
        for (int64_t h = 0; h < Hkv; ++h) {
            __m512 qv[G][4];
            const __m512 sc = _mm512_set1_ps(scale);
            for (int g = 0; g < G; ++g)
                for (int c = 0; c < 4; ++c)
                    qv[g][c] = _mm512_mul_ps(load16(q + b * qsB + (h * G + g) * qsH + 16 * c), sc);
            const T* kb = k + b * ksB + h * ksH;
            const uint8_t* m = mask ? mask + b * msB : nullptr;
            float* sb = s + (b * Hkv * G + h * G) * L;
            for (int64_t l = 0; l < L; ++l) {
                if (!valid(m, l)) {
                    for (int g = 0; g < G; ++g) sb[g * L + l] = -INFINITY;
                    continue;
                }
                const T* kr = kb + l * kDim;
                const __m512 k0 = load16(kr), k1 = load16(kr + 16), k2 = load16(kr + 32), k3 = load16(kr + 48);
                for (int g = 0; g < G; ++g) {
                    __m512 a = _mm512_mul_ps(qv[g][0], k0);
                    a = _mm512_fmadd_ps(qv[g][1], k1, a);
                    a = _mm512_fmadd_ps(qv[g][2], k2, a);
                    a = _mm512_fmadd_ps(qv[g][3], k3, a);
                    sb[g * L + l] = _mm512_reduce_add_ps(a);
                }
            }
        }
    }
}

template <int G, typename T>
void mix(const float* p, const T* v, const uint8_t* mask, T* out, int64_t B, int64_t Hkv, int64_t L,
         int64_t vsB, int64_t vsH, int64_t msB, int64_t osB, int64_t osH, int threads) {
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
    for (int64_t b = 0; b < B; ++b) {
        for (int64_t h = 0; h < Hkv; ++h) {
            __m512 acc[G][4];
            for (int g = 0; g < G; ++g)
                for (int c = 0; c < 4; ++c) acc[g][c] = _mm512_setzero_ps();
            const T* vb = v + b * vsB + h * vsH;
            const uint8_t* m = mask ? mask + b * msB : nullptr;
            const float* pb = p + (b * Hkv * G + h * G) * L;
            for (int64_t l = 0; l < L; ++l) {
                if (!valid(m, l)) continue;
                const T* vr = vb + l * kDim;
                const __m512 v0 = load16(vr), v1 = load16(vr + 16), v2 = load16(vr + 32), v3 = load16(vr + 48);
                for (int g = 0; g < G; ++g) {
                    const __m512 w = _mm512_set1_ps(pb[g * L + l]);
                    acc[g][0] = _mm512_fmadd_ps(w, v0, acc[g][0]);
                    acc[g][1] = _mm512_fmadd_ps(w, v1, acc[g][1]);
                    acc[g][2] = _mm512_fmadd_ps(w, v2, acc[g][2]);
                    acc[g][3] = _mm512_fmadd_ps(w, v3, acc[g][3]);
                }
            }
            for (int g = 0; g < G; ++g) {
                alignas(64) float row[kDim];
                for (int c = 0; c < 4; ++c) _mm512_store_ps(row + 16 * c, acc[g][c]);
                T* o = out + b * osB + (h * G + g) * osH;
                for (int64_t d = 0; d < kDim; ++d) store(o + d, row[d]);
            }
        }
    }
}

// The query heads per key/value head as a template argument: the accumulators stay in registers.
#define IRTK_BY_GROUP(CALL)                                \
    switch (G) {                                           \
        case 1: CALL(1); break;                            \
        case 2: CALL(2); break;                            \
        case 3: CALL(3); break;                            \
        case 4: CALL(4); break;                            \
        case 5: CALL(5); break;                            \
        case 6: CALL(6); break;                            \
        case 7: CALL(7); break;                            \
        case 8: CALL(8); break;                            \
        default: return 1;                                 \
    }                                                      \
    return 0;

template <typename T>
int scores_any(const T* q, const T* k, const uint8_t* m, float* s, int64_t B, int64_t Hq, int64_t Hkv, int64_t L,
               int64_t qsB, int64_t qsH, int64_t ksB, int64_t ksH, int64_t msB, float scale, int threads) {
    const int64_t G = Hq / Hkv;
#define IRTK_SCORES(N) scores<N>(q, k, m, s, B, Hkv, L, qsB, qsH, ksB, ksH, msB, scale, threads)
    IRTK_BY_GROUP(IRTK_SCORES)
#undef IRTK_SCORES
}

template <typename T>
int mix_any(const float* p, const T* v, const uint8_t* m, T* o, int64_t B, int64_t Hq, int64_t Hkv, int64_t L,
            int64_t vsB, int64_t vsH, int64_t msB, int64_t osB, int64_t osH, int threads) {
    const int64_t G = Hq / Hkv;
#define IRTK_MIX(N) mix<N>(p, v, m, o, B, Hkv, L, vsB, vsH, msB, osB, osH, threads)
    IRTK_BY_GROUP(IRTK_MIX)
#undef IRTK_MIX
}

}  // namespace

// Each returns 0, or 1 where Hq / Hkv is not 1-8 (nothing written).
extern "C" {
int irtk_scores_bf16(const uint16_t* q, const uint16_t* k, const uint8_t* m, float* s, int64_t B, int64_t Hq,
                     int64_t Hkv, int64_t L, int64_t qsB, int64_t qsH, int64_t ksB, int64_t ksH, int64_t msB,
                     float scale, int threads) {
    return scores_any(q, k, m, s, B, Hq, Hkv, L, qsB, qsH, ksB, ksH, msB, scale, threads);
}
int irtk_scores_f32(const float* q, const float* k, const uint8_t* m, float* s, int64_t B, int64_t Hq, int64_t Hkv,
                    int64_t L, int64_t qsB, int64_t qsH, int64_t ksB, int64_t ksH, int64_t msB, float scale,
                    int threads) {
    return scores_any(q, k, m, s, B, Hq, Hkv, L, qsB, qsH, ksB, ksH, msB, scale, threads);
}
int irtk_mix_bf16(const float* p, const uint16_t* v, const uint8_t* m, uint16_t* o, int64_t B, int64_t Hq,
                  int64_t Hkv, int64_t L, int64_t vsB, int64_t vsH, int64_t msB, int64_t osB, int64_t osH,
                  int threads) {
    return mix_any(p, v, m, o, B, Hq, Hkv, L, vsB, vsH, msB, osB, osH, threads);
}
int irtk_mix_f32(const float* p, const float* v, const uint8_t* m, float* o, int64_t B, int64_t Hq, int64_t Hkv,
                 int64_t L, int64_t vsB, int64_t vsH, int64_t msB, int64_t osB, int64_t osH, int threads) {
    return mix_any(p, v, m, o, B, Hq, Hkv, L, vsB, vsH, msB, osB, osH, threads);
}
}
