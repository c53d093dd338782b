// tenshu's CPU kernels, registered as torch.ops.tenshu_cpu.*:
// - bf16_matmul, quant_matmul: a few rows of activations (decoding: one row per sequence) times
//   weights stored narrower than float32, bf16 or the groupwise integer codes of a QuantWeight
//   (tenshu/engine/quant/weight.py). Each weight row is read from memory once: one activation
//   row multiplies the codes as they are read; more rows decode weight rows, four at a time,
//   into float32 in a small per-thread buffer (L1) and multiply them there with every row
//   (bf16 weights on a CPU with AVX512-BF16: the rows rounded to bf16 and multiplied in bf16).
// - quant_matmul_int8: the same products with the activations rounded to int8 per 32 values
//   and the codes multiplied in integers (VNNI, or AVX2), as llama.cpp computes them; with
//   VNNI, from eight rows on (batches, prompt chunks), a GEMM with x's rows sixteen to a vector.
// - dequantize_rows: a QuantWeight's rows as float32, for the GEMMs of prompt chunks.
// - paged_decode: decode attention over the paged KV cache, read where it lies.
// - rms_norm: RMSNorm of float32 rows in one call.
// - attention_inputs: a layer's steps between its qkv product and attention (q/k norms, rotary,
//   the KV cache write) in one call.
// - silu_mul: the MLP's activation in one call.
// - decode_layers: a decode step's decoder layers in one call (the calls of the layers' Python
//   code, without its ~40 Python calls and dispatches a layer).
// Work is split between torch's own threads (at::parallel_for).
//
// Built by tenshu/engine/kernels/__init__.py with the compiler's vectorizer for this CPU
// (-O3 -march=native); the loops are written so that it vectorizes them (`omp simd`). Built
// with -ffp-contract=off: a decoded weight is rounded exactly as QuantWeight.dequantize rounds
// it (a multiply, then a subtraction), so `dequantize_rows` is bit for bit that; the sums use
// std::fma where one rounding is what is wanted.

#include <cmath>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

namespace {

// Decoders: weight row n into float32 w[0..k).
struct Bf16Rows {
  const uint16_t* data;
  int64_t k;
  void operator()(int64_t n, float* w) const {
    const uint16_t* src = data + n * k;
#pragma omp simd
    for (int64_t i = 0; i < k; ++i) {
      uint32_t bits = static_cast<uint32_t>(src[i]) << 16;
      float f;
      std::memcpy(&f, &bits, sizeof f);
      w[i] = f;
    }
  }
};

// A QuantWeight's scales (or mins) per group of columns, in any of its three forms:
// - flat: float32 [N, groups];
// - half: float16 [N, groups] (GGML's 32-value blocks: Q8_0's 8.5 bits a weight, not 9);
// - two-level (the K-quants' own): each row a float32 per super-block of kSuperBlock columns
//   (its four bytes), then an int8 factor per group; a group's value is its factor times its
//   super-block's float. The products are exact (a 6- or 8-bit integer times an f16).
// Every form gives the same floats. The K-quants' scales and mins take 0.625 (Q6_K) and 0.75
// (Q4_K) bits a weight two-level, 2 flat.
constexpr int64_t kSuperBlock = 256;

struct GroupFactors {
  const uint8_t* data = nullptr;  // null: none (no mins)
  bool half = false, two_level = false;
  int64_t groups = 0, row_bytes = 0;
  int64_t supers = 0, per = 0;  // two-level: super-blocks a row, groups a super-block

  const uint8_t* row_data(int64_t n) const { return data + n * row_bytes; }
  // Row n's values as float32: the flat tensor's own, or expanded into buf (`groups` floats).
  __attribute__((always_inline)) inline const float* row(int64_t n, float* buf) const {
    if (data == nullptr) return nullptr;
    const uint8_t* r = row_data(n);
    if (half) {
      widen_halves(reinterpret_cast<const at::Half*>(r), groups, buf);
      return buf;
    }
    if (!two_level) return reinterpret_cast<const float*>(r);
    const int8_t* factor = reinterpret_cast<const int8_t*>(r + 4 * supers);
    if (per == 16) expand<16>(r, factor, supers, buf);  // groups of 16 (Q6_K)
    else if (per == 8) expand<8>(r, factor, supers, buf);  // groups of 32 (Q4_K, Q5_K)
    else expand<0>(r, factor, supers, buf, per);
    return buf;
  }

 private:
  static void widen_halves(const at::Half* h, int64_t n, float* buf) {
    int64_t i = 0;
#ifdef __F16C__
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(buf + i,
                       _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
#endif
    for (; i < n; ++i) buf[i] = static_cast<float>(h[i]);
  }

  // buf[b * per + i] = the float of super-block b times its factor i. Groups of eight factors
  // in intrinsics: GCC's vectorizer made two-float vectors of the loop, a third of the speed.
  template <int Per>
  __attribute__((always_inline)) static inline void expand(const uint8_t* supers_at,
                                                          const int8_t* factor, int64_t supers,
                                                          float* buf, int64_t per = Per) {
    const int64_t p = Per > 0 ? Per : per;
    for (int64_t b = 0; b < supers; ++b) {
      float d;
      std::memcpy(&d, supers_at + 4 * b, 4);
      int64_t i = 0;
#ifdef __AVX2__
      const __m256 dv = _mm256_set1_ps(d);
      for (; i + 8 <= p; i += 8) {
        const __m128i f8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(factor + b * p + i));
        _mm256_storeu_ps(buf + b * p + i,
                         _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(f8))));
      }
#endif
      for (; i < p; ++i) buf[b * p + i] = d * static_cast<float>(factor[b * p + i]);
    }
  }
};

// Row n's scales and mins (null: none) as float32, two-level ones expanded into buffers of
// its own: one per task (a thread's rows).
class RowScales {
 public:
  RowScales(const GroupFactors& scales, const GroupFactors& mins)
      : scales_(scales),
        mins_(mins),
        buf_(scales.two_level || scales.half ? 2 * scales.groups : 0) {}
  __attribute__((always_inline)) std::pair<const float*, const float*> operator()(int64_t n) {
    return {scales_.row(n, buf_.data()), mins_.row(n, buf_.data() + scales_.groups)};
  }

 private:
  const GroupFactors &scales_, &mins_;
  std::vector<float> buf_;
};

// The same in this thread's buffers, for the decoders and the float GEMV: a thread-local lookup
// a row, which the integer products (RowScales) avoid.
inline std::pair<const float*, const float*> row_scales(const GroupFactors& scales,
                                                        const GroupFactors& mins, int64_t n) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < 2 * scales.groups) buf.resize(2 * scales.groups);
  return {scales.row(n, buf.data()), mins.row(n, buf.data() + scales.groups)};
}

// A QuantWeight's tensors as the decoders read them: codes, scales and mins (none: no mins)
// per group of `group` columns, rows of k columns.
template <typename Code>
struct CodeRows {
  const Code* data;
  GroupFactors scales, mins;
  int64_t k, group;
  int offset;
};

// W = scale * (q - offset) - min per group of G columns: the QuantWeight formula, in its order
// (the subtraction of the offset is exact; the product and the difference each round once).
template <int G>
struct Int8Rows : CodeRows<int8_t> {
  void operator()(int64_t n, float* w) const {
    const int64_t gs = G > 0 ? G : group, groups = k / gs;
    const int8_t* q = data + n * k;
    const auto [s, mn] = row_scales(scales, mins, n);
    for (int64_t g = 0; g < groups; ++g) {
      const float sc = s[g], m0 = mn ? mn[g] : 0.f;
      const int8_t* qg = q + g * gs;
      float* wg = w + g * gs;
#pragma omp simd
      for (int64_t i = 0; i < gs; ++i)
        wg[i] = static_cast<float>(static_cast<int>(qg[i]) - offset) * sc - m0;
    }
  }
};

// 4-bit codes two to a byte: byte j of a row holds column j (low nibble) and column
// j + k/2 (high nibble).
template <int G>
struct Int4Rows : CodeRows<uint8_t> {
  void operator()(int64_t n, float* w) const {
    const int64_t gs = G > 0 ? G : group, groups = k / gs, half = k / 2, hg = groups / 2;
    const uint8_t* q = data + n * half;
    const auto [s, mn] = row_scales(scales, mins, n);
    for (int64_t g = 0; g < hg; ++g) {
      const float slo = s[g], shi = s[g + hg];
      const float mlo = mn ? mn[g] : 0.f, mhi = mn ? mn[g + hg] : 0.f;
      const uint8_t* qg = q + g * gs;
      float* lo = w + g * gs;
      float* hi = w + half + g * gs;
#pragma omp simd
      for (int64_t i = 0; i < gs; ++i) {
        const int b = qg[i];
        lo[i] = static_cast<float>((b & 15) - offset) * slo - mlo;
        hi[i] = static_cast<float>((b >> 4) - offset) * shi - mhi;
      }
    }
  }
};

// One activation row (single-stream decoding): the weight row's codes are multiplied with x
// as they are read, no decoded copy. Per group: d = sum(q * x) over the group, then
// acc += d * scale; the offsets and mins come off at the end through the group sums of x:
//   sum_k W x = sum_g scale_g * sum(q x) - sum_g (offset * scale_g + min_g) * xsum_g.
// Written with the compiler's vector types, as wide as the CPU's registers: kLanes floats, 16
// with AVX-512 and 8 otherwise (16-float vectors on AVX2 spill to the stack and convert bytes
// one at a time: a quarter of the speed).
#ifdef __AVX512F__
constexpr int kLanes = 16;
#else
constexpr int kLanes = 8;
#endif
typedef float fvec __attribute__((vector_size(4 * kLanes)));
typedef int32_t ivec __attribute__((vector_size(4 * kLanes)));
typedef uint32_t uvec __attribute__((vector_size(4 * kLanes)));
typedef uint8_t bvec __attribute__((vector_size(kLanes)));
typedef uint16_t hvec __attribute__((vector_size(2 * kLanes)));
typedef uint16_t u16x16 __attribute__((vector_size(32)));
typedef float f32x8 __attribute__((vector_size(32)));

template <typename V>
inline V load(const void* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename V>
inline void store(void* p, V v) {
  std::memcpy(p, &v, sizeof v);
}

// The sum of v's lanes by halves: log2(lanes) vector steps, not a chain of dependent scalar
// additions (attention's scores and the integer products' rows need it; the float products'
// rows measure the same either way). In intrinsics: the halves taken through memory (memcpy)
// keep the sums being added on the stack in the loops.
inline float lanes_sum8(f32x8 v) {
#if defined(__AVX512F__) || defined(__AVX2__)
  const __m256 s8 = (__m256)v;
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));  // lanes 0 + 2, 1 + 3
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
#else
  float s = 0.f;
  for (int i = 0; i < 8; ++i) s += v[i];
  return s;
#endif
}

inline float lanes_sum(fvec v) {
#ifdef __AVX512F__
  const __m512 z = (__m512)v;
  return lanes_sum8((f32x8)_mm256_add_ps(
      _mm512_castps512_ps256(z), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(z), 1))));
#elif defined(__AVX2__)
  return lanes_sum8((f32x8)v);
#else
  float s = 0.f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
#endif
}

inline fvec floats(bvec q) {
  return __builtin_convertvector(__builtin_convertvector(q, ivec), fvec);
}
// kLanes signed bytes as floats: one widening load and a conversion.
inline fvec floats_signed(const int8_t* p) {
#ifdef __AVX512F__
  return (fvec)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#elif defined(__AVX2__)
  return (fvec)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
      _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#else
  return floats(bvec(load<bvec>(p) ^ 0x80)) - 128.f;  // q ^ 0x80 is q + 128
#endif
}

// kLanes unsigned bytes widened to 32-bit lanes, in one instruction
inline ivec widen_bytes(const uint8_t* p) {
#ifdef __AVX512F__
  return (ivec)_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#elif defined(__AVX2__)
  return (ivec)_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
#else
  return __builtin_convertvector(load<bvec>(p), ivec);
#endif
}

struct Gemv {
  const float* x;      // [k]
  const float* xsum;   // [groups] sums of x over each group
  int64_t k;
};

// 8-bit codes, groups of G (16 or 32)
template <int G>
__attribute__((optimize("fp-contract=fast"))) float gemv_int8_row(const Gemv& a, const int8_t* q,
                                                                   const float* s, const float* mn,
                                                                   int offset) {
  const int64_t groups = a.k / G;
  fvec acc0 = {}, acc1 = {};
  int64_t g = 0;
  for (; g + 2 <= groups; g += 2) {
    fvec d0 = {}, d1 = {};
    for (int i = 0; i < G; i += kLanes) {
      d0 += floats_signed(q + g * G + i) * load<fvec>(a.x + g * G + i);
      d1 += floats_signed(q + (g + 1) * G + i) * load<fvec>(a.x + (g + 1) * G + i);
    }
    acc0 += d0 * s[g];
    acc1 += d1 * s[g + 1];
  }
  for (; g < groups; ++g) {
    fvec d0 = {};
    for (int i = 0; i < G; i += kLanes)
      d0 += floats_signed(q + g * G + i) * load<fvec>(a.x + g * G + i);
    acc0 += d0 * s[g];
  }
  float out = lanes_sum(acc0 + acc1), c = 0.f;
  for (int64_t j = 0; j < groups; ++j) c += (offset * s[j] + (mn ? mn[j] : 0.f)) * a.xsum[j];
  return out - c;
}

// 4-bit codes in groups of 32: byte j of the row holds column j (low nibble) and j + k/2
__attribute__((optimize("fp-contract=fast"))) float gemv_int4_row(const Gemv& a, const uint8_t* q,
                                                                   const float* s, const float* mn,
                                                                   int offset) {
  const int64_t groups = a.k / 32, hg = groups / 2, half = a.k / 2;
  fvec acc0 = {}, acc1 = {};
  for (int64_t g = 0; g < hg; ++g) {
    fvec lo = {}, hi = {};
    for (int i = 0; i < 32; i += kLanes) {
      const ivec b = widen_bytes(q + g * 32 + i);
      lo += __builtin_convertvector(b & 15, fvec) * load<fvec>(a.x + g * 32 + i);
      hi += __builtin_convertvector(b >> 4, fvec) * load<fvec>(a.x + half + g * 32 + i);
    }
    acc0 += lo * s[g];
    acc1 += hi * s[g + hg];
  }
  float out = lanes_sum(acc0 + acc1), c = 0.f;
  for (int64_t j = 0; j < groups; ++j) c += (offset * s[j] + (mn ? mn[j] : 0.f)) * a.xsum[j];
  return out - c;
}

// One row of bf16 weights against x in pair order (bf16_pair_order). Each 32-bit word of the
// row holds two weights, the first in its low half: the word shifted left by 16 bits is the
// first as a float32, the word masked to its high half the second. Per 2 kLanes weights that
// is a load, a shift, an and and two multiply-adds, where widening each weight to 32 bits took
// a widening load and a shift per kLanes.
__attribute__((optimize("fp-contract=fast"))) float gemv_bf16_row(const Gemv& a, const uint16_t* w) {
  fvec acc[4] = {};
  int64_t i = 0;
  for (; i + 4 * kLanes <= a.k; i += 4 * kLanes) {
    for (int j = 0; j < 2; ++j) {
      const uvec words = load<uvec>(w + i + 2 * kLanes * j);
      const uvec first = words << 16, second = words & 0xffff0000u;
      fvec f0, f1;
      std::memcpy(&f0, &first, sizeof f0);
      std::memcpy(&f1, &second, sizeof f1);
      acc[2 * j] += f0 * load<fvec>(a.x + i + 2 * kLanes * j);
      acc[2 * j + 1] += f1 * load<fvec>(a.x + i + 2 * kLanes * j + kLanes);
    }
  }
  float out = lanes_sum((acc[0] + acc[1]) + (acc[2] + acc[3]));
  for (; i < a.k; ++i) {
    const uint32_t bits = static_cast<uint32_t>(w[i]) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    out += f * a.x[i];
  }
  return out;
}

// x [1, k] in the order gemv_bf16_row reads it: each 2 kLanes columns of its main loop as the
// kLanes even columns, then the kLanes odd ones; the columns past that loop as they are.
at::Tensor bf16_pair_order(const at::Tensor& x) {
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  at::Tensor out = at::empty_like(xf);
  const float* src = xf.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const int64_t k = xf.numel(), paired = k / (4 * kLanes) * (4 * kLanes);
  for (int64_t c = 0; c < paired; c += 2 * kLanes)
    for (int l = 0; l < kLanes; ++l) {
      dst[c + l] = src[c + 2 * l];
      dst[c + kLanes + l] = src[c + 2 * l + 1];
    }
  std::copy(src + paired, src + k, dst + paired);
  return out;
}

// ---- Integer dot products on int8 activations (llama.cpp's way) ----------------------------
// x is quantized per block of 32 columns (scale dx = amax / 127, rounded to nearest): x8 = dx *
// xq, and the result is x8 @ W.T (to float32 rounding). Each block of weight codes is multiplied
// with xq in integers, four u8 x s8 products added into each 32-bit lane: one instruction with
// VNNI (vpdpbusd), two with AVX2 (vpmaddubsw into pairs, vpmaddwd into fours), where the float
// path widens and multiplies the codes a vector of floats at a time. Per block: acc +=
// float(dot) * scale_g * dx_b. 4- and 6-bit codes are unsigned. 8-bit codes are signed: with
// VNNI they enter as q ^ 0x80 = q + 128; with AVX2 as |q| against xq carrying q's sign
// (vpmaddubsw's pairs of 128 * 127 stay within int16, where q + 128 would not). That 128
// (kSigned8Bias), the offsets and the mins come off at the end through the sums of x8 over
// each group:
//   out = sum_b s_g dx_b dot_b - sum_g ((offset + bias) * s_g + min_g) * sum(x8_g)
// (bias kSigned8Bias for 8-bit codes, 0 otherwise). The sums are of x8, not of x, so the
// rounding error scales with the weights W themselves, not with their uncentered codes.
typedef float f32x4 __attribute__((vector_size(16)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef uint8_t u8x32 __attribute__((vector_size(32)));
typedef int8_t i8x32 __attribute__((vector_size(32)));
typedef int16_t i16x32 __attribute__((vector_size(64)));

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define TENSHU_VNNI 1
#elif defined(__AVX2__)
#define TENSHU_MADDUBS 1
#endif
#ifdef TENSHU_MADDUBS
constexpr int kSigned8Bias = 0;
#else
constexpr int kSigned8Bias = 128;
#endif

// lane j: the sum over t < 4 of u[4j + t] * s[4j + t]; u below 128 without VNNI (vpmaddubsw
// adds two products into a saturating int16: 2 * 127 * 127 fits, 2 * 255 * 127 does not)
inline i32x8 dot4(u8x32 u, i8x32 s) {
#ifdef TENSHU_VNNI
  return (i32x8)_mm256_dpbusd_epi32(_mm256_setzero_si256(), (__m256i)u, (__m256i)s);
#elif defined(TENSHU_MADDUBS)
  return (i32x8)_mm256_madd_epi16(_mm256_maddubs_epi16((__m256i)u, (__m256i)s),
                                  _mm256_set1_epi16(1));
#else
  const i16x32 p = __builtin_convertvector(u, i16x32) * __builtin_convertvector(s, i16x32);
  i32x8 out;
  for (int j = 0; j < 8; ++j) out[j] = p[4 * j] + p[4 * j + 1] + p[4 * j + 2] + p[4 * j + 3];
  return out;
#endif
}

// The same for signed codes q, plus kSigned8Bias * (the sum of each lane's four s).
inline i32x8 dot4_signed(i8x32 q, i8x32 s) {
#ifdef TENSHU_MADDUBS
  // |q| (q = -128 reads as 128) against s with q's sign (0 where q is 0)
  return dot4((u8x32)_mm256_abs_epi8((__m256i)q),
              (i8x32)_mm256_sign_epi8((__m256i)s, (__m256i)q));
#else
  return dot4(u8x32(q) ^ kSigned8Bias, s);
#endif
}

// With VNNI, 8-bit codes without mins (Q8_0) take kSigned8Bias off inside the integer sums:
// each block's sums start from -kSigned8Bias * (each lane's sum of its four xq)
// (QuantizedX::starts), an accumulator vpdpbusd reads anyway, and no correction a weight row is
// left (a dot product over the row's groups and a chain of scalar adds: Q8_0 products 1.1x
// without it, kernel_ab.py). Exact in integers. Where the codes have mins the correction stays
// anyway, and there (and for offsets of other widths) loading the starts cost more than the
// correction's term; so did |q| against s with q's sign, as AVX2 computes it.
#ifdef TENSHU_VNNI
constexpr bool kBiasInSums = true;
inline i32x8 dot4_signed_from(const int32_t* start, i8x32 q, i8x32 s) {
  return (i32x8)_mm256_dpbusd_epi32(load<__m256i>(start), (__m256i)(u8x32(q) ^ kSigned8Bias),
                                    (__m256i)s);
}
#else
constexpr bool kBiasInSums = false;
inline i32x8 dot4_signed_from(const int32_t*, i8x32 q, i8x32 s) { return dot4_signed(q, s); }
#endif

// x's rows quantized, with each weight group's sum of x8 scaled by (offset + bias).
struct QuantizedX {
  int64_t m, k, blocks, groups;
  float codes_offset;     // offset + bias, as the correction takes it off (0 with starts)
  std::vector<int8_t> q;  // [m, k]
  std::vector<float> d;   // [m, blocks]: each block's scale
  std::vector<float> sums;  // [m, groups]: sum of x8 over each group
  // [m, k / 4], for 8-bit codes without mins where kBiasInSums: where each block's integer sums
  // start (dot4_signed_from), -kSigned8Bias times each lane's sum of its four xq
  std::vector<int32_t> starts;
  // [m, blocks], with `quarters`: d in the order int6_dot_rows reads the blocks, four at a
  // time, one from each quarter of the row (blocks j, qb + j, 2qb + j, 3qb + j; qb = blocks / 4)
  std::vector<float> d_quarters;

  QuantizedX(const float* x, int64_t m_, int64_t k_, int64_t group, int offset, bool signed8,
             bool quarters = false, bool bias_in_sums = false)
      : m(m_), k(k_), blocks(k_ / 32), groups(k_ / group),
        codes_offset(static_cast<float>(offset + (signed8 && !bias_in_sums ? kSigned8Bias : 0))),
        q(m_ * k_), d(m_ * blocks), sums(m_ * groups), starts(bias_in_sums ? m_ * k_ / 4 : 0),
        d_quarters(quarters ? m_ * blocks : 0) {
    std::vector<float> part(k / 16);  // sum of x8 per 16 columns
    for (int64_t r = 0; r < m; ++r) {
      const float* xr = x + r * k;
      int8_t* qr = q.data() + r * k;
      for (int64_t b = 0; b < blocks; ++b) {
        float top = 0.f;
        for (int i = 0; i < 32; ++i) top = std::max(top, std::fabs(xr[b * 32 + i]));
        const float dx = top / 127.f, inv = top > 0.f ? 127.f / top : 0.f;
        d[r * blocks + b] = dx;
        for (int h = 0; h < 2; ++h) {
          int total = 0;
          for (int i = 16 * h; i < 16 * h + 16; ++i) {
            const int v = static_cast<int>(std::nearbyint(xr[b * 32 + i] * inv));
            qr[b * 32 + i] = static_cast<int8_t>(v);
            total += v;
          }
          part[2 * b + h] = dx * static_cast<float>(total);
        }
      }
      if (bias_in_sums) {
        int32_t* st = starts.data() + r * k / 4;
        for (int64_t j = 0; j < k / 4; ++j)
          st[j] = -kSigned8Bias * (qr[4 * j] + qr[4 * j + 1] + qr[4 * j + 2] + qr[4 * j + 3]);
      }
      for (int64_t g = 0; g < groups; ++g) {
        float t = 0.f;
        for (int64_t i = g * group / 16; i < (g + 1) * group / 16; ++i) t += part[i];
        sums[r * groups + g] = t;
      }
      if (quarters) {
        const int64_t qb = blocks / 4;
        for (int64_t j = 0; j < qb; ++j)
          for (int t = 0; t < 4; ++t)
            d_quarters[r * blocks + 4 * j + t] = d[r * blocks + t * qb + j];
      }
    }
  }

  // What comes off row r's result for a weight row with scales s and mins mn (see above), as
  // eight lanes that the row's own lanes take off before they are summed: a sum of its own
  // across the groups cost half as much as the row's products (perf, Q4_K at k = 1024).
  f32x8 correction(int64_t r, const float* s, const float* mn) const {
    const float* xs = sums.data() + r * groups;
    f32x8 c = {};
    int64_t g = 0;
    if (mn) {
      const f32x8 off = f32x8{} + codes_offset;
      for (; g + 8 <= groups; g += 8)
        c += (off * load<f32x8>(s + g) + load<f32x8>(mn + g)) * load<f32x8>(xs + g);
      for (; g < groups; ++g) c[0] += (codes_offset * s[g] + mn[g]) * xs[g];
    } else if (codes_offset != 0.f) {
      for (; g + 8 <= groups; g += 8) c += load<f32x8>(s + g) * load<f32x8>(xs + g);
      for (; g < groups; ++g) c[0] += s[g] * xs[g];
      c *= codes_offset;
    }
    return c;
  }
};

// acc += t * the weight row's scale for block b of 32 columns, lane by lane as dot4 lays them:
// groups of 16 (G = 16: lanes 0-3 and 4-7 in two groups), 32, or 32 << shift (G = 0).
template <int G>
inline void add_block(f32x8& acc, f32x8 t, const float* s, int64_t b, int shift) {
  if (G == 16) {
#if defined(__AVX2__) && defined(__FMA__)
    // the two scales, side by side in memory, spread over lanes 0-3 and 4-7 by one permute
    // (built from two scalars instead, GCC spills the vector: a third of the speed with AVX2)
    const __m256 pair = _mm256_castps128_ps256(
        _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(s + 2 * b))));
    const __m256 spread =
        _mm256_permutevar8x32_ps(pair, _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
    acc = (f32x8)_mm256_fmadd_ps((__m256)t, spread, (__m256)acc);
#else
    const float s0 = s[2 * b], s1 = s[2 * b + 1];
    acc += t * f32x8{s0, s0, s0, s0, s1, s1, s1, s1};
#endif
    return;
  }
  const float v = s[G == 32 ? b : b >> shift];
  acc += t * f32x8{v, v, v, v, v, v, v, v};
}

// Weights in groups of 16 (Q6_K, and q/k/v widened beside a Q6_K v) are scaled four blocks at
// a time: the blocks' dot4 lanes are added into one vector of their eight groups' sums,
// converted and multiplied once, where add_block spends a conversion, two multiplies and a
// permute of the scales on every block: 1.03-1.15x the speed at 1-16 rows on two AVX2 cores
// (benchmarks/kernel_ab.py, docs/benchmarks.md). Groups of 32 gain nothing so: their blocks
// need one scale each, no permute, and the sums' shuffles cost what they save.
// Lanes [A0 A1 A2 A3 | B0 B1 B2 B3]: At and Bt the sums of dt's lanes 0-3 and 4-7 (block t's
// columns 0-15 and 16-31 as dot4 lays them out). Shuffles within 128-bit halves (unpacks).
inline i32x8 group_sums4(i32x8 d0, i32x8 d1, i32x8 d2, i32x8 d3) {
  const i32x8 s01 = __builtin_shufflevector(d0, d1, 0, 8, 1, 9, 4, 12, 5, 13) +
                    __builtin_shufflevector(d0, d1, 2, 10, 3, 11, 6, 14, 7, 15);
  const i32x8 s23 = __builtin_shufflevector(d2, d3, 0, 8, 1, 9, 4, 12, 5, 13) +
                    __builtin_shufflevector(d2, d3, 2, 10, 3, 11, 6, 14, 7, 15);
  return __builtin_shufflevector(s01, s23, 0, 1, 8, 9, 4, 5, 12, 13) +
         __builtin_shufflevector(s01, s23, 2, 3, 10, 11, 6, 7, 14, 15);
}

// Four groups-of-16 scale pairs (p_t = the two scales of block t), as group_sums4 lays out its
// lanes: [p0[0] p1[0] p2[0] p3[0] | p0[1] p1[1] p2[1] p3[1]].
inline f32x8 pair_lanes(const float* p0, const float* p1, const float* p2, const float* p3) {
#ifdef __AVX2__
  // two pairs a 128-bit half (movsd, movhpd), then one permute (a vector filled through memory
  // stalls on the store-to-load forwarding of its four parts)
  const __m128d lo = _mm_loadh_pd(_mm_load_sd(reinterpret_cast<const double*>(p0)),
                                  reinterpret_cast<const double*>(p1));
  const __m128d hi = _mm_loadh_pd(_mm_load_sd(reinterpret_cast<const double*>(p2)),
                                  reinterpret_cast<const double*>(p3));
  return (f32x8)_mm256_permutevar8x32_ps(_mm256_set_m128(_mm_castpd_ps(hi), _mm_castpd_ps(lo)),
                                         _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
#else
  f32x8 v;
  std::memcpy(&v, p0, 8);
  std::memcpy(reinterpret_cast<float*>(&v) + 2, p1, 8);
  std::memcpy(reinterpret_cast<float*>(&v) + 4, p2, 8);
  std::memcpy(reinterpret_cast<float*>(&v) + 6, p3, 8);
  return __builtin_shufflevector(v, v, 0, 2, 4, 6, 1, 3, 5, 7);
#endif
}

// [p0 p1 p2 p3 | p0 p1 p2 p3]: four blocks' dx over both halves of group_sums4's lanes
inline f32x8 twice(const float* p) {
  const f32x4 v = load<f32x4>(p);
  return __builtin_shufflevector(v, v, 0, 1, 2, 3, 0, 1, 2, 3);
}

// The 6-bit codes of four blocks of 32 columns, one in each quarter of the row (blocks j,
// qb + j, 2qb + j and 3qb + j, qb = k / 128), from the 32 bytes of top bits at j. Shifts are
// 16 bits wide (x86 has no byte shifts); the masks drop what crosses between bytes.
inline void six_bit_codes(const uint8_t* row, int64_t k, int64_t j, u8x32 (&codes)[4]) {
  const int64_t qb = k / 128;
  const u8x32 n0 = load<u8x32>(row + j * 32), n1 = load<u8x32>(row + (qb + j) * 32);
  const u8x32 h = load<u8x32>(row + k / 2 + j * 32);
  const u8x32 low = u8x32{} + 15, top = u8x32{} + 0x30;
  codes[0] = (n0 & low) | ((u8x32)((u16x16)h << 4) & top);
  codes[1] = (n1 & low) | ((u8x32)((u16x16)h << 2) & top);
  codes[2] = ((u8x32)((u16x16)n0 >> 4) & low) | (h & top);
  codes[3] = ((u8x32)((u16x16)n1 >> 4) & low) | ((u8x32)((u16x16)h >> 2) & top);
}

// 6-bit codes: a 4-bit row (the low four bits) followed by the top two bits four to a byte
// (byte j: columns j, j + k/4, j + k/2, j + 3k/4); k a multiple of 128, groups of 16 or 32.
template <int G>
struct Int6Rows : CodeRows<uint8_t> {
  void operator()(int64_t n, float* w) const {
    const int64_t qb = k / 128;
    const uint8_t* row = data + n * (3 * k / 4);
    const auto [s, mn] = row_scales(scales, mins, n);
    for (int64_t j = 0; j < qb; ++j) {
      u8x32 codes[4];
      six_bit_codes(row, k, j, codes);
      for (int t = 0; t < 4; ++t) {
        const int64_t b = t * qb + j;
        for (int h = 0; h < 32 / G; ++h) {
          const int64_t g = b * (32 / G) + h;
          const float sc = s[g], m0 = mn ? mn[g] : 0.f;
          float* wg = w + g * G;
#pragma omp simd
          for (int i = 0; i < G; ++i)
            wg[i] = static_cast<float>(static_cast<int>(codes[t][h * G + i]) - offset) * sc - m0;
        }
      }
    }
  }
};

// The products of one weight row (codes q, scales s, mins mn) with activation rows
// [r0, r0 + MB), into out[r * ldo]. 8-bit codes, groups as add_block reads them. Per block,
// the lanes' integer sums are scaled by dx_b and then by the group's scale (two multiplies that
// read their factor straight from memory, no scalar product first); U blocks a step, each
// into its own sums, so that the additions do not wait on each other. Starts: the sums start
// from QuantizedX::starts (dot4_signed_from).
template <int MB, int G, bool Starts>
__attribute__((optimize("fp-contract=fast"))) void int8_dot_rows(
    const int8_t* q, const float* s, const float* mn, int shift, const QuantizedX& a,
    int64_t r0, float* out, int64_t ldo) {
  constexpr int U = MB == 1 ? 4 : 2;
  f32x8 acc[MB][U] = {};
  const int8_t* xq[MB];
  const float* dx[MB];
  const int32_t* st[MB];
  for (int r = 0; r < MB; ++r) {
    xq[r] = a.q.data() + (r0 + r) * a.k;
    dx[r] = a.d.data() + (r0 + r) * a.blocks;
    st[r] = Starts ? a.starts.data() + (r0 + r) * a.k / 4 : nullptr;
  }
  auto dot = [&](int r, int64_t b, i8x32 w) {
    const i8x32 x = load<i8x32>(xq[r] + b * 32);
    return Starts ? dot4_signed_from(st[r] + b * 8, w, x) : dot4_signed(w, x);
  };
  auto step = [&](int64_t b, int u) {
    const i8x32 w = load<i8x32>(q + b * 32);
    for (int r = 0; r < MB; ++r)
      add_block<G>(acc[r][u], __builtin_convertvector(dot(r, b, w), f32x8) * dx[r][b], s, b,
                   shift);
  };
  int64_t b = 0;
  if constexpr (G == 16) {  // four blocks a step: group scales s[2b, 2b + 8), dx[b, b + 4)
    for (; b + 4 <= a.blocks; b += 4) {
      i8x32 w[4];
      for (int t = 0; t < 4; ++t) w[t] = load<i8x32>(q + (b + t) * 32);
      const f32x8 sc = pair_lanes(s + 2 * b, s + 2 * b + 2, s + 2 * b + 4, s + 2 * b + 6);
      for (int r = 0; r < MB; ++r) {
        i32x8 d[4];
        for (int t = 0; t < 4; ++t)
          d[t] = dot(r, b + t, w[t]);
        const f32x8 sums = __builtin_convertvector(group_sums4(d[0], d[1], d[2], d[3]), f32x8);
        acc[r][0] += sums * twice(dx[r] + b) * sc;  // one sum: an index by b spills them
      }
    }
  }
  for (; b + U <= a.blocks; b += U)
    for (int u = 0; u < U; ++u) step(b + u, u);
  for (; b < a.blocks; ++b) step(b, 0);
  for (int r = 0; r < MB; ++r) {
    f32x8 total = acc[r][0];
    for (int u = 1; u < U; ++u) total += acc[r][u];
    out[r * ldo] = lanes_sum8(total - a.correction(r0 + r, s, mn));
  }
}

// 4-bit codes (byte j: column j low, j + k/2 high), groups of 32 << shift. The low and the
// high nibbles go to their own sums.
template <int MB>
__attribute__((optimize("fp-contract=fast"))) void int4_dot_rows(
    const uint8_t* q, const float* s, const float* mn, int shift, const QuantizedX& a,
    int64_t r0, float* out, int64_t ldo) {
  f32x8 lo_acc[MB] = {}, hi_acc[MB] = {};
  const int64_t half_blocks = a.blocks / 2, half_groups = a.groups / 2;
  const u8x32 low_bits = u8x32{} + 15;
  for (int64_t b = 0; b < half_blocks; ++b) {  // the high nibbles' scales: s + half_groups
    const u8x32 raw = load<u8x32>(q + b * 32);
    const u8x32 lo = raw & low_bits, hi = (raw >> 4) & low_bits;
    for (int r = 0; r < MB; ++r) {
      const int8_t* xq = a.q.data() + (r0 + r) * a.k;
      const float* dx = a.d.data() + (r0 + r) * a.blocks;
      add_block<0>(lo_acc[r],
                   __builtin_convertvector(dot4(lo, load<i8x32>(xq + b * 32)), f32x8) * dx[b],
                   s, b, shift);
      add_block<0>(hi_acc[r],
                   __builtin_convertvector(dot4(hi, load<i8x32>(xq + (b + half_blocks) * 32)),
                                           f32x8) * dx[b + half_blocks],
                   s + half_groups, b, shift);
    }
  }
  for (int r = 0; r < MB; ++r)
    out[r * ldo] = lanes_sum8(lo_acc[r] + hi_acc[r] - a.correction(r0 + r, s, mn));
}

// How far ahead of the row being multiplied the weights are prefetched: the hardware
// prefetcher alone left DRAM about a third idle (33 against 43 GB/s, a 151936 x 1024 Q8_0 GEMV)
constexpr int64_t kAheadBytes = 4096;

// A line of weights (codes or scales) fetched ahead into L2 only (locality 1: prefetcht2 on
// x86), or into L1 as well. The one-row kernels' codes, a line a step, go into L2: fetched into
// L1 they held the misses L1 can have in flight and pushed out x's own lines; into L2 the 7B
// class's products read 1.1-1.6x faster from DRAM (benchmarks/kernel_ab.py --only 7B).
inline void prefetch_weights(const void* line, bool into_l1 = false) {
  if (into_l1) __builtin_prefetch(line, 0, 3);
  else __builtin_prefetch(line, 0, 1);
}

// One row of x against 4-bit codes whose blocks' scales come already multiplied by x's:
// bs[b] = dx_b * the scale of block b's group (written once a weight row, a vector multiply
// per eight blocks), so that a block takes a conversion and one multiply-add where
// int4_dot_rows<1> takes a multiply more. Returns the row's lanes, to be summed.
__attribute__((optimize("fp-contract=fast"))) inline f32x8 int4_dot_row(const uint8_t* q,
                                                                        const float* bs,
                                                                        const int8_t* xq,
                                                                        int64_t blocks) {
  f32x8 acc[4] = {};
  const int64_t half = blocks / 2;
  const u8x32 low_bits = u8x32{} + 15;
  auto step = [&](int64_t b, int u) {
    const u8x32 raw = load<u8x32>(q + b * 32);
    acc[u] += __builtin_convertvector(dot4(raw & low_bits, load<i8x32>(xq + b * 32)), f32x8) *
              bs[b];
    acc[u + 2] += __builtin_convertvector(
                      dot4((raw >> 4) & low_bits, load<i8x32>(xq + (b + half) * 32)), f32x8) *
                  bs[b + half];
  };
  int64_t b = 0;
  for (; b + 2 <= half; b += 2) {
    prefetch_weights(q + b * 32 + kAheadBytes);  // the codes read from here on, rows after too
    step(b, 0);
    step(b + 1, 1);
  }
  if (b < half) step(b, 0);
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// The same for 8-bit codes (groups of 32 << j): a block's integer sums (from
// QuantizedX::starts where Starts) converted and multiplied once, four sums in turn.
template <bool Starts>
__attribute__((optimize("fp-contract=fast"))) inline f32x8 int8_dot_row(const int8_t* q,
                                                                        const float* bs,
                                                                        const QuantizedX& a) {
  f32x8 acc[4] = {};
  const int8_t* xq = a.q.data();
  auto step = [&](int64_t b, int u) {
    const i8x32 w = load<i8x32>(q + b * 32), x = load<i8x32>(xq + b * 32);
    const i32x8 d = Starts ? dot4_signed_from(a.starts.data() + b * 8, w, x) : dot4_signed(w, x);
    acc[u] += __builtin_convertvector(d, f32x8) * bs[b];
  };
  int64_t b = 0;
  for (; b + 4 <= a.blocks; b += 4) {
    prefetch_weights(q + b * 32 + kAheadBytes);
    prefetch_weights(q + b * 32 + 64 + kAheadBytes);
    for (int u = 0; u < 4; ++u) step(b + u, u);
  }
  for (; b < a.blocks; ++b) step(b, 0);
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// 6-bit codes (Int6Rows' layout), groups as add_block reads them. Each 32 bytes of top bits
// complete four blocks of codes, one in each quarter of the row, each into its own sums.
template <int MB, int G>
__attribute__((optimize("fp-contract=fast"))) void int6_dot_rows(
    const uint8_t* q, const float* s, const float* mn, int shift, const QuantizedX& a,
    int64_t r0, float* out, int64_t ldo) {
  f32x8 acc[MB][4] = {};
  const int64_t qb = a.blocks / 4;
  // Rows of 2 KiB of codes or more (the 7B class's lm_head and down) read 1.13-1.14x faster with
  // each stream 8 KiB ahead; the 0.6B class's rows of 768 bytes 0.91-0.96x (from DRAM).
  const int64_t ahead = 3 * a.k / 4 >= 2048 ? 2 * kAheadBytes : kAheadBytes;
  if constexpr (G == 16) {  // x's dx in quarter order (QuantizedX::d_quarters)
    for (int64_t j = 0; j < qb; ++j) {
      if (MB == 1 && j % 2 == 0)  // one row of x: each of the three streams read, ahead
        for (const int64_t at : {j * 32, (qb + j) * 32, a.k / 2 + j * 32})
          prefetch_weights(q + at + ahead);
      u8x32 codes[4];
      six_bit_codes(q, a.k, j, codes);
      const f32x8 sc = pair_lanes(s + 2 * j, s + 2 * (qb + j), s + 2 * (2 * qb + j),
                                  s + 2 * (3 * qb + j));
      for (int r = 0; r < MB; ++r) {
        const int8_t* xq = a.q.data() + (r0 + r) * a.k;
        i32x8 d[4];
        for (int t = 0; t < 4; ++t) d[t] = dot4(codes[t], load<i8x32>(xq + (t * qb + j) * 32));
        const f32x8 sums = __builtin_convertvector(group_sums4(d[0], d[1], d[2], d[3]), f32x8);
        acc[r][0] += sums * twice(a.d_quarters.data() + (r0 + r) * a.blocks + 4 * j) * sc;
      }
    }
  } else {
    for (int64_t j = 0; j < qb; ++j) {
      u8x32 codes[4];
      six_bit_codes(q, a.k, j, codes);
      for (int t = 0; t < 4; ++t) {
        const int64_t b = t * qb + j;
        for (int r = 0; r < MB; ++r) {
          const int64_t row = r0 + r;
          const i32x8 dot = dot4(codes[t], load<i8x32>(a.q.data() + row * a.k + b * 32));
          add_block<G>(acc[r][t], __builtin_convertvector(dot, f32x8) * a.d[row * a.blocks + b],
                       s, b, shift);
        }
      }
    }
  }
  for (int r = 0; r < MB; ++r)
    out[r * ldo] = lanes_sum8((acc[r][0] + acc[r][1]) + (acc[r][2] + acc[r][3]) -
                              a.correction(r0 + r, s, mn));
}

// Bytes [kLanes * part, kLanes * (part + 1)) of c as floats (GCC turns the upper bytes'
// conversion into scalar code when written with vector types).
inline fvec byte_floats(u8x32 c, int part) {
#if defined(__AVX512F__) || defined(__AVX2__)
  __m128i half = part * kLanes >= 16 ? _mm256_extracti128_si256((__m256i)c, 1)
                                     : _mm256_castsi256_si128((__m256i)c);
#ifdef __AVX512F__
  return (fvec)_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(half));
#else
  if (part & 1) half = _mm_srli_si128(half, 8);
  return (fvec)_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(half));
#endif
#else
  bvec bytes;
  std::memcpy(&bytes, reinterpret_cast<const uint8_t*>(&c) + kLanes * part, kLanes);
  return floats(bytes);
#endif
}

// 6-bit codes (Int6Rows' layout) in groups of G (16 or 32), float activations.
template <int G>
__attribute__((optimize("fp-contract=fast"))) float gemv_int6_row(const Gemv& a, const uint8_t* q,
                                                                   const float* s, const float* mn,
                                                                   int offset) {
  const int64_t qb = a.k / 128, groups = a.k / G;
  fvec acc0 = {}, acc1 = {};
  for (int64_t j = 0; j < qb; ++j) {
    u8x32 codes[4];
    six_bit_codes(q, a.k, j, codes);
    for (int t = 0; t < 4; ++t) {
      const int64_t b = t * qb + j;
      fvec p0 = {}, p1 = {};  // columns [0, 16) and [16, 32) of the block
      for (int part = 0; part < 32 / kLanes; ++part) {
        const fvec p = byte_floats(codes[t], part) * load<fvec>(a.x + b * 32 + part * kLanes);
        if (part * kLanes < 16) p0 += p;
        else p1 += p;
      }
      if (G == 16) {
        acc0 += p0 * s[2 * b];
        acc1 += p1 * s[2 * b + 1];
      } else {
        acc0 += (p0 + p1) * s[b];
      }
    }
  }
  float out = lanes_sum(acc0 + acc1), c = 0.f;
  for (int64_t g = 0; g < groups; ++g) c += (offset * s[g] + (mn ? mn[g] : 0.f)) * a.xsum[g];
  return out - c;
}

// out[0, n] = row_fn(n) for every weight row, on torch's threads; x one float32 row.
template <typename RowFn>
at::Tensor gemv(const at::Tensor& x_in, int64_t n_out, int64_t k, int64_t group, RowFn&& row_fn) {
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  std::vector<float> xsum(group > 0 ? k / group : 0);
  const float* xp = x.data_ptr<float>();
  for (size_t g = 0; g < xsum.size(); ++g) {
    float t = 0.f;
    for (int64_t i = 0; i < group; ++i) t += xp[g * group + i];
    xsum[g] = t;
  }
  const Gemv a{xp, xsum.data(), k};
  at::Tensor out = at::empty({1, n_out}, x.options());
  float* op = out.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(16, (1 << 16) / k);
  at::parallel_for(0, n_out, grain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) op[n] = row_fn(a, n);
  });
  return out.to(x_in.scalar_type());
}

// out[r * ldo + j] = dot(w[j], x[r]) for NW decoded weight rows and MX activation rows at
// once: each step loads NW weight vectors and MX activation vectors for NW * MX multiply-adds,
// in as many vector sums (registers: 4 x 2 sums, 4 + 1 operands), whose lanes are added at the
// end. Against one weight row at a time, the activations (a batch's rows: more than L1 holds)
// are read from L2 a quarter as often.
template <int NW, int MX>
__attribute__((optimize("fp-contract=fast"))) inline void dot_block(const float* w, const float* x,
                                                                     int64_t k, float* out,
                                                                     int64_t ldo) {
  fvec acc[NW][MX] = {};
  int64_t i = 0;
  for (; i + kLanes <= k; i += kLanes) {
    fvec wv[NW];
    for (int j = 0; j < NW; ++j) wv[j] = load<fvec>(w + j * k + i);
    for (int r = 0; r < MX; ++r) {
      const fvec xv = load<fvec>(x + r * k + i);
      for (int j = 0; j < NW; ++j) acc[j][r] += wv[j] * xv;
    }
  }
  for (int j = 0; j < NW; ++j)
    for (int r = 0; r < MX; ++r) {
      float a = lanes_sum(acc[j][r]);
      for (int64_t t = i; t < k; ++t) a += w[j * k + t] * x[r * k + t];
      out[r * ldo + j] = a;
    }
}

constexpr int kBlockRows = 4;  // decoded weight rows multiplied together (dot_block's NW)

// nw (up to kBlockRows) decoded weight rows [nw, k] times every activation row:
// out[r * n_out + j].
inline void multiply_rows(const float* w, int64_t nw, const float* x, int64_t m, int64_t k,
                          float* out, int64_t n_out) {
  auto each_x = [&](auto nw_tag, const float* wj, float* o) {
    constexpr int NW = decltype(nw_tag)::value;
    int64_t r = 0;
    for (; r + 2 <= m; r += 2) dot_block<NW, 2>(wj, x + r * k, k, o + r * n_out, n_out);
    for (; r < m; ++r) dot_block<NW, 1>(wj, x + r * k, k, o + r * n_out, n_out);
  };
  if (nw == kBlockRows) return each_x(std::integral_constant<int, kBlockRows>{}, w, out);
  for (int64_t j = 0; j < nw; ++j) each_x(std::integral_constant<int, 1>{}, w + j * k, out + j);
}

template <typename Rows>
at::Tensor run(const at::Tensor& x_in, int64_t n_out, int64_t k, const Rows& rows) {
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const int64_t m = x.size(0);
  at::Tensor out = at::empty({m, n_out}, x.options());
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  // about 64 KiB of weights per task: enough to amortize the hand-off, small enough to balance
  const int64_t grain = std::max<int64_t>(1, (1 << 16) / k);
  at::parallel_for(0, n_out, grain, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> buffer;
    if (static_cast<int64_t>(buffer.size()) < kBlockRows * k) buffer.resize(kBlockRows * k);
    float* w = buffer.data();
    for (int64_t n = begin; n < end; n += kBlockRows) {
      const int64_t nw = std::min<int64_t>(kBlockRows, end - n);
      for (int64_t j = 0; j < nw; ++j) rows(n + j, w + j * k);
      multiply_rows(w, nw, xp, m, k, op + n, n_out);
    }
  });
  return out.to(x_in.scalar_type());
}

void check_x(const at::Tensor& x, int64_t k) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.size(1) == k,
              "x must be a [rows, ", k, "] CPU tensor, got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "x must be float32 or bfloat16");
}

#ifdef __AVX512BF16__
// ---- Several rows against bf16 weights, multiplied in bf16 (AVX512-BF16) ------------------
// The rows of x are rounded to bf16 once (to nearest even, as torch's bf16 GEMM takes them).
// Each step multiplies 32 columns of a weight row with a row of x in pairs, one instruction
// (vdpbf16ps: lane l adds w[2l] x[2l] + w[2l+1] x[2l+1] to its float32 sum), the weights read
// as they lie: no decoded copy, twice the columns of a float32 multiply-add. Four weight rows
// go through every row of x, up to four rows of x at a time: 16 sums and 5 operands in the 32
// registers (below kBf16BlockFrom rows of x, one weight row at a time). The loops over rows of
// x are unrolled (the pragma): GCC otherwise kept the sums in memory, a store after every
// multiply-add (seen in objdump). While a block of four weight rows is multiplied, the next
// block is prefetched, a line of each row per step: without it DRAM sat idle between blocks
// (the lm_head at 4 to 16 rows: 1.3-1.4x faster with it).

// Columns past the last full 32 are loaded under a mask, as zeros.
inline __mmask32 columns_from(int64_t i, int64_t k) {
  return k - i >= 32 ? ~__mmask32(0) : (__mmask32(1) << (k - i)) - 1;
}

// sum + the products of w's and x's pairs of bf16.
inline fvec dot_pairs(fvec sum, __m512bh w, __m512bh x) {
  return (fvec)_mm512_dpbf16_ps((__m512)sum, w, x);
}

// Four weight rows (w, each k long) times MX rows of x: out[r * ldo + j]. `next`: the weight
// rows to prefetch, or null.
template <int MX>
inline void dot_bf16_block4(const uint16_t* w, int64_t k, const uint16_t* x, float* out,
                            int64_t ldo, const uint16_t* next) {
  fvec c0[MX] = {}, c1[MX] = {}, c2[MX] = {}, c3[MX] = {};
  for (int64_t i = 0; i < k; i += 32) {
    const __mmask32 mask = columns_from(i, k);
    if (next != nullptr)
      for (int j = 0; j < 4; ++j) __builtin_prefetch(next + j * k + i);
    const __m512bh w0 = (__m512bh)_mm512_maskz_loadu_epi16(mask, w + i);
    const __m512bh w1 = (__m512bh)_mm512_maskz_loadu_epi16(mask, w + k + i);
    const __m512bh w2 = (__m512bh)_mm512_maskz_loadu_epi16(mask, w + 2 * k + i);
    const __m512bh w3 = (__m512bh)_mm512_maskz_loadu_epi16(mask, w + 3 * k + i);
#pragma GCC unroll 8
    for (int r = 0; r < MX; ++r) {
      const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(mask, x + r * k + i);
      c0[r] = dot_pairs(c0[r], w0, xv);
      c1[r] = dot_pairs(c1[r], w1, xv);
      c2[r] = dot_pairs(c2[r], w2, xv);
      c3[r] = dot_pairs(c3[r], w3, xv);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MX; ++r) {
    float* o = out + r * ldo;
    o[0] = _mm512_reduce_add_ps((__m512)c0[r]);
    o[1] = _mm512_reduce_add_ps((__m512)c1[r]);
    o[2] = _mm512_reduce_add_ps((__m512)c2[r]);
    o[3] = _mm512_reduce_add_ps((__m512)c3[r]);
  }
}

// One weight row (for fewer rows of x than kBf16BlockFrom, or a task's last rows, not four).
template <int MX>
inline void dot_bf16_block1(const uint16_t* w, int64_t k, const uint16_t* x, float* out,
                            int64_t ldo) {
  fvec c[MX] = {};
  for (int64_t i = 0; i < k; i += 32) {
    const __mmask32 mask = columns_from(i, k);
    const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(mask, w + i);
#pragma GCC unroll 8
    for (int r = 0; r < MX; ++r)
      c[r] = dot_pairs(c[r], wv, (__m512bh)_mm512_maskz_loadu_epi16(mask, x + r * k + i));
  }
#pragma GCC unroll 8
  for (int r = 0; r < MX; ++r) out[r * ldo] = _mm512_reduce_add_ps((__m512)c[r]);
}

// From this many rows of x, weight rows go four at a time. Fewer rows are not enough work to
// hide four interleaved streams from DRAM: one weight row at a time, 2 and 3 rows read the
// lm_head 1.46x and 1.54x as fast, and a decode step of 2 sequences of the 28-layer model takes
// 38-41 ms against 55-65 (one sequence: 39-43 ms).
constexpr int64_t kBf16BlockFrom = 4;

// out[m, n] = x @ w.T for m rows of x (already bf16, [m, k]), as float32: the weight rows split
// between torch's threads; a task takes four at a time (L1) through every row of x (L2), the
// next four prefetched on the first pass (from kBf16BlockFrom rows of x; one at a time below).
at::Tensor bf16_dot_rows(const at::Tensor& xb, const uint16_t* w, int64_t n_out, int64_t k) {
  const int64_t m = xb.size(0);
  at::Tensor out = at::empty({m, n_out}, xb.options().dtype(at::kFloat));
  const uint16_t* xp = reinterpret_cast<const uint16_t*>(xb.data_ptr<at::BFloat16>());
  float* op = out.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(kBlockRows, (1 << 15) / k);
  at::parallel_for(0, n_out, grain, [&](int64_t begin, int64_t end) {
    int64_t n = begin;
    for (; m >= kBf16BlockFrom && n + 4 <= end; n += 4) {
      const uint16_t* next = n + 8 <= end ? w + (n + 4) * k : nullptr;  // this task's next four
      int64_t r = 0;
      for (; r + 4 <= m; r += 4, next = nullptr)
        dot_bf16_block4<4>(w + n * k, k, xp + r * k, op + r * n_out + n, n_out, next);
      for (; r + 2 <= m; r += 2, next = nullptr)
        dot_bf16_block4<2>(w + n * k, k, xp + r * k, op + r * n_out + n, n_out, next);
      for (; r < m; ++r, next = nullptr)
        dot_bf16_block4<1>(w + n * k, k, xp + r * k, op + r * n_out + n, n_out, next);
    }
    for (; n < end; ++n) {
      int64_t r = 0;
      for (; r + 4 <= m; r += 4)
        dot_bf16_block1<4>(w + n * k, k, xp + r * k, op + r * n_out + n, n_out);
      for (; r + 2 <= m; r += 2)
        dot_bf16_block1<2>(w + n * k, k, xp + r * k, op + r * n_out + n, n_out);
      for (; r < m; ++r) dot_bf16_block1<1>(w + n * k, k, xp + r * k, op + r * n_out + n, n_out);
    }
  });
  return out;
}
#endif

at::Tensor bf16_matmul(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(weight.scalar_type() == at::kBFloat16 && weight.dim() == 2 &&
                  weight.is_contiguous() && weight.device().is_cpu(),
              "weight must be a contiguous bfloat16 CPU matrix");
  const int64_t n = weight.size(0), k = weight.size(1);
  check_x(x, k);
  const uint16_t* w = reinterpret_cast<const uint16_t*>(weight.data_ptr<at::BFloat16>());
  if (x.size(0) == 1)
    return gemv(bf16_pair_order(x), n, k, 0,
                [&](const Gemv& a, int64_t r) { return gemv_bf16_row(a, w + r * k); })
        .to(x.scalar_type());
#ifdef __AVX512BF16__
  return bf16_dot_rows(x.to(at::kBFloat16).contiguous(), w, n, k).to(x.scalar_type());
#else
  return run(x, n, k, Bf16Rows{w, k});
#endif
}

// A scales or mins tensor of a weight of n rows of `groups` groups of k columns, in any of
// GroupFactors' forms (float32, float16; int8 for two-level).
GroupFactors group_factors(const at::Tensor& t, int64_t n, int64_t k, int64_t groups,
                           const char* what) {
  TORCH_CHECK(t.is_contiguous() && t.device().is_cpu() && t.dim() == 2 && t.size(0) == n, what,
              " must be a contiguous CPU tensor with a row per weight row");
  GroupFactors f;
  f.groups = groups;
  f.data = static_cast<const uint8_t*>(t.data_ptr());
  if (t.scalar_type() == at::kFloat || t.scalar_type() == at::kHalf) {
    TORCH_CHECK(t.size(1) == groups, what, " do not fit the codes: ", t.sizes(), " for ", groups,
                " groups a row");
    f.half = t.scalar_type() == at::kHalf;
    f.row_bytes = t.element_size() * groups;
    return f;
  }
  TORCH_CHECK(t.scalar_type() == at::kChar, what,
              " must be float32, float16, or int8 (two-level)");
  TORCH_CHECK(k % kSuperBlock == 0 && groups % (k / kSuperBlock) == 0 &&
                  t.size(1) == groups + 4 * (k / kSuperBlock),
              "two-level ", what, " must be [rows, groups + 4 * (k / ", kSuperBlock, ")], got ",
              t.sizes(), " for ", groups, " groups of ", k, " columns");
  f.two_level = true;
  f.row_bytes = t.size(1);
  f.supers = k / kSuperBlock;
  f.per = groups / f.supers;
  return f;
}

// Calls fn(rows, n, k) with the decoder of the weight's format, after checking the tensors fit.
template <typename Fn>
at::Tensor with_rows(const at::Tensor& qweight, const at::Tensor& scales,
                     const std::optional<at::Tensor>& mins, int64_t bits, int64_t group_size,
                     int64_t offset, Fn&& fn) {
  TORCH_CHECK(bits == 4 || bits == 6 || bits == 8, "bits must be 4, 6 or 8");
  TORCH_CHECK(qweight.is_contiguous() && qweight.device().is_cpu(),
              "the codes must be a contiguous CPU tensor");
  const int64_t n = qweight.size(0), k = qweight.size(1) * 8 / bits;
  TORCH_CHECK(group_size > 0 && k % group_size == 0, "groups of ", group_size,
              " do not divide rows of ", k);
  const int64_t groups = k / group_size;
  TORCH_CHECK(bits != 4 || groups % 2 == 0,
              "a 4-bit weight needs an even number of groups per row");
  TORCH_CHECK(bits != 6 || k % 128 == 0, "a 6-bit weight's rows must be a multiple of 128");
  const GroupFactors sf = group_factors(scales, n, k, groups, "scales");
  GroupFactors mf;
  if (mins.has_value()) {
    mf = group_factors(*mins, n, k, groups, "mins");
    TORCH_CHECK(mins->scalar_type() == scales.scalar_type(), "mins must be in the scales' form");
  }
  const int off = static_cast<int>(offset);
  if (bits == 8) {
    TORCH_CHECK(qweight.scalar_type() == at::kChar, "8-bit codes must be int8");
    const int8_t* q = qweight.data_ptr<int8_t>();
    if (group_size == 32) return fn(Int8Rows<32>{{q, sf, mf, k, 32, off}}, n, k);
    if (group_size == 16) return fn(Int8Rows<16>{{q, sf, mf, k, 16, off}}, n, k);
    return fn(Int8Rows<0>{{q, sf, mf, k, group_size, off}}, n, k);
  }
  TORCH_CHECK(qweight.scalar_type() == at::kByte, "4- and 6-bit codes must be uint8");
  const uint8_t* q = qweight.data_ptr<uint8_t>();
  if (bits == 6) {
    TORCH_CHECK(group_size == 16 || group_size == 32, "6-bit codes come in groups of 16 or 32");
    if (group_size == 16) return fn(Int6Rows<16>{{q, sf, mf, k, 16, off}}, n, k);
    return fn(Int6Rows<32>{{q, sf, mf, k, 32, off}}, n, k);
  }
  if (group_size == 32) return fn(Int4Rows<32>{{q, sf, mf, k, 32, off}}, n, k);
  return fn(Int4Rows<0>{{q, sf, mf, k, group_size, off}}, n, k);
}

at::Tensor quant_matmul(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                        const std::optional<at::Tensor>& mins, int64_t bits, int64_t group_size,
                        int64_t offset) {
  return with_rows(
      qweight, scales, mins, bits, group_size, offset, [&](const auto& rows, int64_t n, int64_t k) {
        check_x(x, k);
        if (x.size(0) != 1 || !(group_size == 32 || (bits != 4 && group_size == 16)))
          return run(x, n, k, rows);
        const int off = static_cast<int>(offset);
        // row r's codes, scales and mins, the codes `row_bytes` a row
        auto row_of = [&](int64_t r, int64_t row_bytes, auto fn) {
          const auto [s, mn] = row_scales(rows.scales, rows.mins, r);
          return fn(static_cast<const uint8_t*>(qweight.data_ptr()) + r * row_bytes, s, mn);
        };
        if (bits == 4)
          return gemv(x, n, k, group_size, [&](const Gemv& a, int64_t r) {
            return row_of(r, k / 2, [&](const uint8_t* q, const float* s, const float* mn) {
              return gemv_int4_row(a, q, s, mn, off);
            });
          });
        if (bits == 6) {
          if (group_size == 16)
            return gemv(x, n, k, 16, [&](const Gemv& a, int64_t r) {
              return row_of(r, 3 * k / 4, [&](const uint8_t* q, const float* s, const float* mn) {
                return gemv_int6_row<16>(a, q, s, mn, off);
              });
            });
          return gemv(x, n, k, 32, [&](const Gemv& a, int64_t r) {
            return row_of(r, 3 * k / 4, [&](const uint8_t* q, const float* s, const float* mn) {
              return gemv_int6_row<32>(a, q, s, mn, off);
            });
          });
        }
        auto int8_row = [&](auto g_tag) {
          constexpr int G = decltype(g_tag)::value;
          return gemv(x, n, k, G, [&](const Gemv& a, int64_t r) {
            return row_of(r, k, [&](const uint8_t* q, const float* s, const float* mn) {
              return gemv_int8_row<G>(a, reinterpret_cast<const int8_t*>(q), s, mn, off);
            });
          });
        };
        if (group_size == 16) return int8_row(std::integral_constant<int, 16>{});
        return int8_row(std::integral_constant<int, 32>{});
      });
}

// log2(group / 32) for groups of 32 << shift; -1 for any other size
int group_shift(int64_t group_size) {
  for (int shift = 0; shift < 16; ++shift)
    if (group_size == (int64_t{32} << shift)) return shift;
  return -1;
}

// body(begin, end) over [0, n) in chunks of grain or more, kChunksPerThread a thread at most,
// that the threads take as they come free: a thread that starts late (woken after the step's
// one-thread work) or is slowed holds up the others less than with at::parallel_for's fixed
// shares. The one-row and few-row products take it: the 0.6B class's Q4_K_M and Q8_0 decode
// 1.07x (the median of five pairs) and 1.11-1.17x, the 7B class's Q4_K_M 0.99-1.03x, a product
// alone in a loop (both threads starting together) 0.95-1.04x.
constexpr int64_t kChunksPerThread = 4;
template <typename Body>
void balanced_for(int64_t n, int64_t grain, const Body& body) {
  const int64_t threads = at::get_num_threads();
  const int64_t chunks = std::min((n + grain - 1) / grain, threads * kChunksPerThread);
  if (chunks <= threads) {
    at::parallel_for(0, n, grain, body);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t c = next++; c < chunks; c = next++) body(n * c / chunks, n * (c + 1) / chunks);
  });
}

// How many rows of row_bytes kAheadBytes is, worked out once a product, not a division a row.
// A row's scales go their own kAheadBytes ahead, not as many rows as its codes: Q6_K's are a
// quarter of its bytes, and came late from DRAM that way.
inline int64_t rows_ahead(int64_t row_bytes) {
  return std::max<int64_t>(1, kAheadBytes / row_bytes);
}

// Every cache line of the row `ahead` rows on, including a last one that a row not aligned to
// lines (two-level scales: 48 or 80 bytes) reaches into.
inline void prefetch_row(const void* row, int64_t row_bytes, int64_t ahead, bool into_l1) {
  const uintptr_t p = reinterpret_cast<uintptr_t>(row) + ahead * row_bytes;
  for (uintptr_t line = p & ~uintptr_t{63}; line < p + row_bytes; line += 64)
    prefetch_weights(reinterpret_cast<const void*>(line), into_l1);
}

// The lines a row of row_bytes reaches into at most (it may not start on a line).
inline int64_t row_lines(int64_t row_bytes) {
  return row_bytes > 0 ? (row_bytes + 63) / 64 + 1 : 0;
}

// Several rows of x: a weight row's lines prefetched at its start go into L1 while they are few
// (the Qwen3-0.6B class's rows: a short burst, in L1 by the time it is read; 0.81-0.88x into L2
// for its Q6_K lm_head at 4-8 rows), and into L2 past that (the 7B class's: 1.0-1.5x at 4 rows,
// where a burst of 40-200 lines into L1 stalled the thread). The kernels that prefetch their own
// codes (one row of x): the scales' lines go into L2 too, short or long (1.04-1.10x for the 0.6B
// class's products from DRAM).
constexpr int64_t kBurstL1Lines = 24;

// Whether quant_matmul_int8 takes a weight: k a multiple of 32 (64 for 4-bit codes, 128 for
// 6-bit ones) and groups of 16 or of 32 << j.
bool int8_dot_fits(int64_t k, int64_t bits, int64_t group_size) {
  if (bits == 4) return k % 64 == 0 && group_shift(group_size) >= 0 && (k / group_size) % 2 == 0;
  if (bits == 6) return k % 128 == 0 && (group_size == 16 || group_size == 32);
  return k % 32 == 0 && (group_size == 16 || group_shift(group_size) >= 0);
}

#ifdef TENSHU_VNNI
// ---- Sixteen rows of x a vector: the integer-dot GEMM of batches (VNNI) --------------------
// From kLaneRows rows of x on, the rows go sixteen to a 512-bit vector, each lane a row of x:
// a 32-bit lane of x's vector holds four columns of its row, and a weight row's four codes at
// those columns, broadcast to every lane, multiply all sixteen rows in one vpdpbusd. So a
// block's integer sums come out one lane per row of x, and are converted and scaled once for
// sixteen rows, where int8_dot_rows converts and scales every pair of a weight row and a row
// of x (sixteen rows of Q4_K: 14 multiply-adds a cycle a core). 512-bit vectors, not 256: the
// same multiply-adds in half the instructions, where the instructions, not the multiplier, set
// the pace (on Zen 4: 2x in a loop of the tile's instructions alone, 1.0-1.15x in the whole
// products, kernel_ab.py at 16 and 64 rows). The weights are the unsigned
// operand: 4- and 6-bit codes as they are, 8-bit ones as q + 128; x the signed one. The 128
// and the codes' offset come off in the sums' starts, in integers (Q6_K's offset of 32, Q4_0's
// 8): only mins are left to a correction in floats.
constexpr int64_t kLaneRows = 8;
constexpr int kXLanes = 16;  // rows of x a vector
typedef float f32x16 __attribute__((vector_size(64)));
typedef int32_t i32x16 __attribute__((vector_size(64)));

// x's rows (a QuantizedX), kXLanes to a vector, padded with rows of zeros.
struct LaneX {
  int64_t vectors, k, blocks, groups;
  std::vector<int8_t> q;        // [vectors, k / 4, kXLanes rows, 4 columns]
  std::vector<float> d;         // [vectors, blocks, kXLanes]: each block's scale
  std::vector<float> sums;      // [vectors, groups, kXLanes]: sum of x8 over each group
  // [vectors, k / unit, kXLanes], a bias (8-bit codes' 128 plus the codes' offset) not 0:
  // -bias x the sum of x8 over each unit of columns that lanes_tile sums in integers (16 or 32)
  std::vector<int32_t> starts;

  LaneX(const QuantizedX& a, int bias, int unit)
      : vectors((a.m + kXLanes - 1) / kXLanes), k(a.k), blocks(a.blocks), groups(a.groups),
        q(vectors * kXLanes * k, 0), d(vectors * blocks * kXLanes, 0.f),
        sums(vectors * groups * kXLanes, 0.f),
        starts(bias != 0 ? vectors * k / unit * kXLanes : 0, 0) {
    constexpr int L = kXLanes;
    for (int64_t r = 0; r < a.m; ++r) {
      const int64_t v = r / L, l = r % L;
      const int8_t* xr = a.q.data() + r * k;
      int8_t* lane = q.data() + v * L * k + 4 * l;
      for (int64_t c = 0; c < k / 4; ++c) std::memcpy(lane + c * 4 * L, xr + 4 * c, 4);
      for (int64_t b = 0; b < blocks; ++b) d[(v * blocks + b) * L + l] = a.d[r * blocks + b];
      for (int64_t g = 0; g < groups; ++g)
        sums[(v * groups + g) * L + l] = a.sums[r * groups + g];
      if (bias != 0)
        for (int64_t h = 0; h < k / unit; ++h) {
          int32_t total = 0;
          for (int i = 0; i < unit; ++i) total += xr[unit * h + i];
          starts[(v * (k / unit) + h) * L + l] = -bias * total;
        }
    }
  }
};

// Weight row n's codes as unsigned bytes in column order (8-bit codes + 128), into c[0, k).
template <typename Rows>
inline void lane_codes(const Rows& rows, int bits, int64_t n, uint8_t* c) {
  const int64_t k = rows.k;
  const uint8_t* row = reinterpret_cast<const uint8_t*>(rows.data) + n * k * bits / 8;
  if (bits == 8) {
    for (int64_t i = 0; i < k; i += 32) store(c + i, load<u8x32>(row + i) ^ 0x80);
  } else if (bits == 4) {  // byte j: column j low, j + k/2 high
    const u8x32 low = u8x32{} + 15;
    for (int64_t i = 0; i < k / 2; i += 32) {
      const u8x32 raw = load<u8x32>(row + i);
      store(c + i, raw & low);
      store(c + k / 2 + i, (raw >> 4) & low);
    }
  } else {
    const int64_t qb = k / 128;
    for (int64_t j = 0; j < qb; ++j) {
      u8x32 codes[4];
      six_bit_codes(row, k, j, codes);
      for (int t = 0; t < 4; ++t) store(c + (t * qb + j) * 32, codes[t]);
    }
  }
}

// NW decoded weight rows (c, k bytes each; scales s[w], mins mn[w]) against NV of x's
// vectors from v0: acc[w][v], lane l the product with x's row kXLanes (v0 + v) + l. A unit of
// columns (a block of 32, or a group of 16) sums in integers, then is scaled by x's scale and
// the group's. Starts: the sums start from LaneX::starts.
template <int NW, int NV, int G, bool Starts>
__attribute__((optimize("fp-contract=fast"))) inline void lanes_tile(
    const uint8_t* c, const float* const* s, const LaneX& x, int64_t v0, int shift,
    f32x16 (&acc)[NW][NV]) {
  constexpr int kUnit = G == 16 ? 16 : 32, kChunks = kUnit / 4, L = kXLanes;
  const int64_t k = x.k;
  f32x16 sums[NW][NV] = {};  // here, not in acc: GCC kept acc's in memory, a store a block
  for (int64_t at = 0; at < k; at += kUnit) {
    const int64_t b = at / 32;
    __m512i sum[NW][NV];
    for (int v = 0; v < NV; ++v) {
      const __m512i start =
          Starts ? load<__m512i>(x.starts.data() + ((v0 + v) * (k / kUnit) + at / kUnit) * L)
                 : _mm512_setzero_si512();
      for (int w = 0; w < NW; ++w) sum[w][v] = start;
    }
    for (int ch = 0; ch < kChunks; ++ch) {
      const int64_t col = at + 4 * ch;
      __m512i wb[NW];
      for (int w = 0; w < NW; ++w) {
        uint32_t four;
        std::memcpy(&four, c + w * k + col, 4);
        wb[w] = _mm512_set1_epi32(static_cast<int>(four));
      }
      for (int v = 0; v < NV; ++v) {
        __m512i xv = load<__m512i>(x.q.data() + (v0 + v) * L * k + col * L);
        // in a register: GCC otherwise reads it again from memory for every weight row, and
        // the loads, not the multiplies, would set the pace
        asm("" : "+v"(xv));
        for (int w = 0; w < NW; ++w) sum[w][v] = _mm512_dpbusd_epi32(sum[w][v], wb[w], xv);
      }
    }
    const int64_t g = G == 16 ? at / 16 : G == 32 ? b : b >> shift;
    for (int v = 0; v < NV; ++v) {
      const f32x16 dx = load<f32x16>(x.d.data() + ((v0 + v) * x.blocks + b) * L);
      for (int w = 0; w < NW; ++w)
        sums[w][v] += __builtin_convertvector((i32x16)sum[w][v], f32x16) * (dx * s[w][g]);
    }
  }
  for (int w = 0; w < NW; ++w)
    for (int v = 0; v < NV; ++v) acc[w][v] = sums[w][v];
}

// out[l * ldo + w] = a_w[l]: four weight rows' results for eight rows of x (lanes), as four
// columns of eight rows of out, a row's four in one store
inline void store_4x8(f32x8 a0, f32x8 a1, f32x8 a2, f32x8 a3, float* out, int64_t ldo) {
  const __m256 t0 = _mm256_unpacklo_ps((__m256)a0, (__m256)a1),
               t1 = _mm256_unpackhi_ps((__m256)a0, (__m256)a1),
               t2 = _mm256_unpacklo_ps((__m256)a2, (__m256)a3),
               t3 = _mm256_unpackhi_ps((__m256)a2, (__m256)a3);
  const __m256 rows[4] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),
                          _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE)};
  for (int l = 0; l < 4; ++l) {  // rows l and l + 4 of the eight
    _mm_storeu_ps(out + l * ldo, _mm256_castps256_ps128(rows[l]));
    _mm_storeu_ps(out + (l + 4) * ldo, _mm256_extractf128_ps(rows[l], 1));
  }
}

// Weight rows [begin, end) against all of x's rows, NW rows at a time: out[r * n + row].
template <int G, typename Rows>
void lanes_rows(const Rows& rows, int bits, int shift, const LaneX& x, int64_t m, int64_t n,
                int64_t begin, int64_t end, float* out) {
  constexpr int NW = 4, NV = 2;  // NW = 4: the scales below, and store_4x8
  const int64_t k = x.k, row_bytes = k * bits / 8;
  const uint8_t* base = reinterpret_cast<const uint8_t*>(rows.data);
  const GroupFactors &sf = rows.scales, &mf = rows.mins;
  const int64_t ahead = rows_ahead(row_bytes), scales_ahead = rows_ahead(sf.row_bytes);
  thread_local std::vector<uint8_t> codes;
  if (static_cast<int64_t>(codes.size()) < NW * k) codes.resize(NW * k);
  RowScales scales[NW] = {{rows.scales, rows.mins}, {rows.scales, rows.mins},
                          {rows.scales, rows.mins}, {rows.scales, rows.mins}};
  for (int64_t n0 = begin; n0 < end; n0 += NW) {
    const int nw = static_cast<int>(std::min<int64_t>(NW, end - n0));
    const float* s[NW];
    const float* mn[NW];
    for (int w = 0; w < NW; ++w) {
      const int64_t row = n0 + std::min(w, nw - 1);  // a short last tile repeats its last row
      prefetch_row(base + row * row_bytes, row_bytes, ahead, false);
      prefetch_row(sf.row_data(row), sf.row_bytes, scales_ahead, false);
      if (mf.data) prefetch_row(mf.row_data(row), mf.row_bytes, scales_ahead, false);
      lane_codes(rows, bits, row, codes.data() + w * k);
      std::tie(s[w], mn[w]) = scales[w](row);  // each row's own buffers: valid for the tile
    }
    auto store_tile = [&](auto nv_tag, int64_t v0) {
      constexpr int V = decltype(nv_tag)::value;
      f32x16 acc[NW][V];
      if (!x.starts.empty())
        lanes_tile<NW, V, G, true>(codes.data(), s, x, v0, shift, acc);
      else
        lanes_tile<NW, V, G, false>(codes.data(), s, x, v0, shift, acc);
      // the mins (QuantizedX says how), each sum of the tile's in a register of its own: one
      // sum after another, each waiting on its own additions, took a fifth of the time
      f32x16 off[NW][V] = {};
      for (int64_t g = 0; g < (mf.data ? x.groups : 0); ++g)
        for (int v = 0; v < V; ++v) {
          const f32x16 xs = load<f32x16>(x.sums.data() + ((v0 + v) * x.groups + g) * kXLanes);
          for (int w = 0; w < NW; ++w) off[w][v] += mn[w][g] * xs;
        }
      for (int v = 0; v < V; ++v) {
        const int64_t r0 = kXLanes * (v0 + v), lanes = std::min<int64_t>(kXLanes, m - r0);
        for (int w = 0; w < nw; ++w) acc[w][v] -= off[w][v];
        if (nw == NW && lanes == kXLanes) {  // in two halves of eight rows
          for (int h = 0; h < 2; ++h) {
            f32x8 a[4];
            for (int w = 0; w < 4; ++w)
              std::memcpy(&a[w], reinterpret_cast<const float*>(&acc[w][v]) + 8 * h, 32);
            store_4x8(a[0], a[1], a[2], a[3], out + (r0 + 8 * h) * n + n0, n);
          }
          continue;
        }
        for (int w = 0; w < nw; ++w)
          for (int l = 0; l < lanes; ++l) out[(r0 + l) * n + n0 + w] = acc[w][v][l];
      }
    };
    int64_t v0 = 0;
    for (; v0 + NV <= x.vectors; v0 += NV) store_tile(std::integral_constant<int, NV>{}, v0);
    if (v0 < x.vectors) store_tile(std::integral_constant<int, 1>{}, v0);
  }
}
#endif

// x @ W.T with x rounded to int8 per block of 32 (the sections above say how); each weight row
// is read once, prefetched ahead, and multiplied with every row of x (with VNNI, from
// kLaneRows rows on, sixteen rows of x at a time: lanes_rows).
at::Tensor quant_matmul_int8(const at::Tensor& x_in, const at::Tensor& qweight,
                             const at::Tensor& scales, const std::optional<at::Tensor>& mins,
                             int64_t bits, int64_t group_size, int64_t offset) {
  return with_rows(
      qweight, scales, mins, bits, group_size, offset,
      [&](const auto& rows, int64_t n, int64_t k) {
        check_x(x_in, k);
        TORCH_CHECK(int8_dot_fits(k, bits, group_size), "a ", bits, "-bit weight with ", k,
                    " columns in groups of ", group_size, " has no integer-dot product");
        const at::Tensor x = x_in.to(at::kFloat).contiguous();
        const int64_t m = x.size(0);
        const int shift = std::max(0, group_shift(group_size));
#ifdef TENSHU_VNNI
        if (m >= kLaneRows) {
          const QuantizedX a(x.data_ptr<float>(), m, k, group_size, 0, false);
          const LaneX lanes(a, static_cast<int>(offset) + (bits == 8 ? 128 : 0),
                            group_size == 16 ? 16 : 32);
          at::Tensor out = at::empty({m, n}, x.options());
          const int64_t row_bytes = k * bits / 8;
          const int64_t grain = std::max<int64_t>(4, (1 << 16) / row_bytes);
          at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
            auto go = [&](auto g_tag) {
              lanes_rows<decltype(g_tag)::value>(rows, static_cast<int>(bits), shift, lanes, m,
                                                 n, begin, end, out.data_ptr<float>());
            };
            if (group_size == 16) go(std::integral_constant<int, 16>{});
            else if (group_size == 32) go(std::integral_constant<int, 32>{});
            else go(std::integral_constant<int, 0>{});
          });
          return out.to(x_in.scalar_type());
        }
#endif
        const QuantizedX a(x.data_ptr<float>(), m, k, group_size, static_cast<int>(offset),
                           bits == 8, bits == 6 && group_size == 16,
                           kBiasInSums && bits == 8 && !mins.has_value());
        at::Tensor out = at::empty({m, n}, x.options());
        float* op = out.data_ptr<float>();
        const int64_t row_bytes = k * bits / 8;
        const uint8_t* base = static_cast<const uint8_t*>(qweight.data_ptr());
        const int64_t grain = std::max<int64_t>(1, (1 << 16) / row_bytes);
        const GroupFactors &sf = rows.scales, &mf = rows.mins;
        const int64_t ahead = rows_ahead(row_bytes), scales_ahead = rows_ahead(sf.row_bytes);
        // one row of x: int4_dot_row, int8_dot_row (codes in groups of 32 << j)
        const bool one_row = m == 1 && (bits == 4 || (bits == 8 && group_size != 16));
        // the kernels that prefetch the codes themselves, as they read them
        const bool streams = one_row || (m == 1 && bits == 6 && group_size == 16);
        const int64_t burst_lines = row_lines(row_bytes) + row_lines(sf.row_bytes) +
                                    row_lines(mf.data ? mf.row_bytes : 0);
        const bool burst_l1 = !streams && burst_lines <= kBurstL1Lines;
        balanced_for(n, grain, [&](int64_t begin, int64_t end) {
          RowScales row_scales(sf, mf);
          std::vector<float> block_scales(one_row ? a.blocks : 0);
          for (int64_t row = begin; row < end; ++row) {
            const uint8_t* q = base + row * row_bytes;
            // past the last row: a prefetch does not fault. One row of x: the kernel prefetches
            // the codes as it reads them, kAheadBytes on (a row's lines at its start came as a
            // burst that stalled the thread on long rows)
            if (!streams) prefetch_row(q, row_bytes, ahead, burst_l1);
            prefetch_row(sf.row_data(row), sf.row_bytes, scales_ahead, burst_l1);
            if (mf.data) prefetch_row(mf.row_data(row), mf.row_bytes, scales_ahead, burst_l1);
            const auto [s, mn] = row_scales(row);
            // every row of x against this weight row: four at a time, then one by one
            auto each_x_row = [&](auto&& kernel) {
              int64_t r = 0;
              for (; r + 4 <= m; r += 4) kernel(std::integral_constant<int, 4>{}, r);
              for (; r < m; ++r) kernel(std::integral_constant<int, 1>{}, r);
            };
            if (one_row) {
              float* bs = block_scales.data();
              const float* dx = a.d.data();
              if (shift == 0) {
#pragma omp simd
                for (int64_t b = 0; b < a.blocks; ++b) bs[b] = dx[b] * s[b];
              } else {
                for (int64_t b = 0; b < a.blocks; ++b) bs[b] = dx[b] * s[b >> shift];
              }
              const int8_t* q8 = reinterpret_cast<const int8_t*>(q);
              const f32x8 lanes = bits == 4        ? int4_dot_row(q, bs, a.q.data(), a.blocks)
                                  : a.starts.empty() ? int8_dot_row<false>(q8, bs, a)
                                                     : int8_dot_row<true>(q8, bs, a);
              op[row] = lanes_sum8(lanes - a.correction(0, s, mn));
              continue;
            }
            if (bits == 4) {
              each_x_row([&](auto mb, int64_t r) {
                int4_dot_rows<decltype(mb)::value>(q, s, mn, shift, a, r, op + r * n + row, n);
              });
              continue;
            }
            auto of_group = [&](auto g_tag) {
              constexpr int G = decltype(g_tag)::value;
              each_x_row([&](auto mb, int64_t r) {
                constexpr int MB = decltype(mb)::value;
                float* o = op + r * n + row;
                if (bits == 6)
                  int6_dot_rows<MB, G>(q, s, mn, shift, a, r, o, n);
                else if (a.starts.empty())
                  int8_dot_rows<MB, G, false>(reinterpret_cast<const int8_t*>(q), s, mn, shift, a,
                                              r, o, n);
                else
                  int8_dot_rows<MB, G, true>(reinterpret_cast<const int8_t*>(q), s, mn, shift, a,
                                             r, o, n);
              });
            };
            if (group_size == 16) of_group(std::integral_constant<int, 16>{});
            else if (group_size == 32) of_group(std::integral_constant<int, 32>{});
            else of_group(std::integral_constant<int, 0>{});
          }
        });
        return out.to(x_in.scalar_type());
      });
}

// Whether dot4 is one or two instructions here (VNNI, AVX2); elsewhere it is emulated, correct
// but slower than the float kernel, and the engine keeps float activations.
bool has_int8_dot_instructions() {
#if defined(TENSHU_VNNI) || defined(TENSHU_MADDUBS)
  return true;
#else
  return false;
#endif
}

// Whether quant_matmul_int8 takes x's rows sixteen to a vector from kLaneRows rows (VNNI)
bool multiplies_int8_lanes() {
#ifdef TENSHU_VNNI
  return true;
#else
  return false;
#endif
}

// Whether bf16_matmul multiplies several rows in bf16 (AVX512-BF16), their values rounded.
bool multiplies_bf16() {
#ifdef __AVX512BF16__
  return true;
#else
  return false;
#endif
}

// Rows [start, start + out.size(0)) of the weight, decoded into `out` (float32 [rows, k]):
// what QuantWeight.dequantize computes, bit for bit, on all of torch's threads.
at::Tensor dequantize_rows(const at::Tensor& qweight, const at::Tensor& scales,
                           const std::optional<at::Tensor>& mins, int64_t bits,
                           int64_t group_size, int64_t offset, int64_t start, at::Tensor out) {
  return with_rows(
      qweight, scales, mins, bits, group_size, offset,
      [&](const auto& rows, int64_t n, int64_t k) {
        TORCH_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous() && out.dim() == 2 &&
                        out.size(1) == k && start >= 0 && start + out.size(0) <= n,
                    "out must be a contiguous float32 [rows, ", k, "] within the weight's ",
                    n, " rows");
        float* op = out.data_ptr<float>();
        const int64_t grain = std::max<int64_t>(1, (1 << 16) / k);
        at::parallel_for(0, out.size(0), grain, [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) rows(start + r, op + r * k);
        });
        return out;
      });
}

// Decode attention over the paged KV cache, read where it lies: one query row per sequence
// against the keys and values of its context, found through `slots` ([B, L] cache slots of
// positions 0..L-1, padded past each sequence's length), never gathered into a copy. Heads
// that share a KV head (GQA) are computed together, so each key and value is read from memory
// once (attend_vectors reads them again for each four heads of a larger group, from the cache).
template <typename T>
void attend_one(const float* q, const T* kc, const T* vc, const int64_t* slots, int64_t begin,
                int64_t end, int64_t kvh, int64_t kv_heads, int64_t group, int64_t d, float scale,
                float* scores, float* out) {
  const int64_t n = end - begin, row = kv_heads * d;
  std::vector<float> kv(d);
  for (int64_t h = 0; h < group; ++h) {
    float* acc = out + h * d;
    for (int64_t i = 0; i < d; ++i) acc[i] = 0.f;
  }
  for (int64_t p = 0; p < n; ++p) {
    const T* k = kc + slots[begin + p] * row + kvh * d;
    for (int64_t i = 0; i < d; ++i) kv[i] = static_cast<float>(k[i]);
    for (int64_t h = 0; h < group; ++h) {
      const float* qh = q + h * d;
      float a = 0.f;
#pragma omp simd reduction(+ : a)
      for (int64_t i = 0; i < d; ++i) a = std::fma(qh[i], kv[i], a);
      scores[h * n + p] = a * scale;
    }
  }
  for (int64_t h = 0; h < group; ++h) {  // softmax per head
    float* sc = scores + h * n;
    float top = sc[0];
    for (int64_t p = 1; p < n; ++p) top = std::max(top, sc[p]);
    float total = 0.f;
    for (int64_t p = 0; p < n; ++p) total += (sc[p] = std::exp(sc[p] - top));
    const float inv = 1.f / total;
    for (int64_t p = 0; p < n; ++p) sc[p] *= inv;
  }
  for (int64_t p = 0; p < n; ++p) {
    const T* v = vc + slots[begin + p] * row + kvh * d;
    for (int64_t i = 0; i < d; ++i) kv[i] = static_cast<float>(v[i]);
    for (int64_t h = 0; h < group; ++h) {
      const float w = scores[h * n + p];
      float* acc = out + h * d;
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) acc[i] = std::fma(w, kv[i], acc[i]);
    }
  }
}

// kLanes values of a cache row as float32: loaded, or bf16 widened (its bits the top half)
inline fvec cache_floats(const float* p) { return load<fvec>(p); }
inline fvec cache_floats(const at::BFloat16* p) {
#ifdef __AVX512F__  // one widening load (the vector extension's conversion takes two and a merge)
  return (fvec)_mm512_slli_epi32(
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16);
#elif defined(__AVX2__)
  return (fvec)_mm256_slli_epi32(
      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16);
#else
  const uvec bits = __builtin_convertvector(load<hvec>(static_cast<const void*>(p)), uvec) << 16;
  fvec f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

// e^x lane by lane for x <= 0 (a softmax's scores less their maximum), within 1.3 units in the
// last place (1e-7 of it; checked over [-87.3, 0]); x is taken as -87.3 below that (e^x about
// 1e-38 there, nothing beside the maximum's 1), where 2^n leaves float32's normal range. x = n ln2 + r with |r| <=
// ln2 / 2 (ln2 in two parts, so that r is exact), e^r by its Taylor series to r^7 (the rest
// under 1e-8 of it), 2^n put in the exponent bits.
inline fvec exp_nonpositive(fvec x) {
  x = x < -87.3f ? fvec{} - 87.3f : x;
  const fvec magic = fvec{} + 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  const fvec n = (x * 1.44269504f + magic) - magic;
  const fvec r = (x - n * 0.693145752f) - n * 1.42860682e-6f;
  fvec e = fvec{} + 1.f / 5040.f;
  e = e * r + 1.f / 720.f;
  e = e * r + 1.f / 120.f;
  e = e * r + 1.f / 24.f;
  e = e * r + 1.f / 6.f;
  e = e * r + 0.5f;
  e = e * r + 1.f;
  e = e * r + 1.f;
  const ivec bits = (__builtin_convertvector(n, ivec) + 127) << 23;
  fvec two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return e * two_n;
}

// attend_vectors' tiles of positions, and how many tiles ahead it fetches the cache's rows.
// From DRAM (28 layers' caches, 16 and 64 sequences of 400 positions), tiles of 16 were 0.92x
// the speed of 8, tiles of 4 0.94-0.96x, and 4 tiles ahead 0.96x.
constexpr int64_t kTile = 8;
constexpr int64_t kTilesAhead = 2;
// the fewest positions a part of one sequence's attention takes (paged_decode_typed)
constexpr int64_t kPartPositions = 64;

// For GS heads g at once: out[g d, g d + C kLanes) += the sum over positions t in [t0, t1) of
// w[g n + t] * values(t)[0, C kLanes), the sums in registers; each value converted once for the
// GS heads; ahead() once a value.
template <int GS, int C, typename T, typename Values, typename Ahead>
inline void weighted_values(const float* w, int64_t n, int64_t t0, int64_t t1, Values values,
                            Ahead ahead, float* out, int64_t d) {
  fvec acc[GS][C] = {};
  for (int64_t t = t0; t < t1; ++t) {
    ahead();
    const T* v = values(t);
    for (int c = 0; c < C; ++c) {
      const fvec x = cache_floats(v + c * kLanes);
      for (int g = 0; g < GS; ++g) acc[g][c] += w[g * n + t] * x;
    }
  }
  for (int g = 0; g < GS; ++g)
    for (int c = 0; c < C; ++c) {
      float* o = out + g * d + c * kLanes;
      store(o, load<fvec>(o) + acc[g][c]);
    }
}

// The scores of GS query heads of one KV head (q: the first's row) against the keys of
// positions [t0, t1), scaled, into scores[g n + t]: P positions at a time (P * GS independent
// sums), each key converted from the cache once for the GS heads; ahead() once a key.
template <int GS, typename T, typename Keys, typename Ahead>
inline void head_scores(const float* q, Keys keys, Ahead ahead, int64_t t0, int64_t t1, int64_t n,
                        int64_t d, float scale, float* scores) {
  constexpr int P = GS >= 4 ? 2 : 4;
  int64_t t = t0;
  for (; t + P <= t1; t += P) {
    const T* k[P];
    for (int i = 0; i < P; ++i) {
      ahead();
      k[i] = keys(t + i);
    }
    fvec a[GS][P] = {};
    for (int64_t j = 0; j < d; j += kLanes) {
      fvec kv[P];
      for (int i = 0; i < P; ++i) kv[i] = cache_floats(k[i] + j);
      for (int g = 0; g < GS; ++g) {
        const fvec qv = load<fvec>(q + g * d + j);
        for (int i = 0; i < P; ++i) a[g][i] += qv * kv[i];
      }
    }
    for (int g = 0; g < GS; ++g)
      for (int i = 0; i < P; ++i) scores[g * n + t + i] = lanes_sum(a[g][i]) * scale;
  }
  for (; t < t1; ++t) {
    ahead();
    const T* k = keys(t);
    fvec a[GS] = {};
    for (int64_t j = 0; j < d; j += kLanes) {
      const fvec kv = cache_floats(k + j);
      for (int g = 0; g < GS; ++g) a[g] += load<fvec>(q + g * d + j) * kv;
    }
    for (int g = 0; g < GS; ++g) scores[g * n + t] = lanes_sum(a[g]) * scale;
  }
}

// fn(GS, h) for a KV head's `group` query heads, four, two or one at a time
template <typename Fn>
inline void in_fours(int64_t group, Fn fn) {
  for (int64_t h = 0; h < group;) {
    if (group - h >= 4) {
      fn(std::integral_constant<int, 4>{}, h);
      h += 4;
    } else if (group - h >= 2) {
      fn(std::integral_constant<int, 2>{}, h);
      h += 2;
    } else {
      fn(std::integral_constant<int, 1>{}, h);
      h += 1;
    }
  }
}

// sc[0, n) = e^(sc - top), a vector at a time, top their maximum; returns their sum
inline float softmax_weights(float* sc, int64_t n, float& top) {
  top = sc[0];
  for (int64_t i = 1; i < n; ++i) top = std::max(top, sc[i]);
  fvec sums = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const fvec e = exp_nonpositive(load<fvec>(sc + i) - top);
    store(sc + i, e);
    sums += e;
  }
  float total = lanes_sum(sums);
  for (; i < n; ++i) total += (sc[i] = std::exp(sc[i] - top));
  return total;
}

// Fetches a KV cache's rows into L2 in the order they lie in it, one head of one position (its
// d values) a call: position t's heads [h0, h0 + hp), side by side, then t + 1's. Started some
// positions ahead of the kernel's reads and called once for each head it reads at a position,
// it stays as far ahead.
template <typename T>
struct CacheFetch {
  const T* cache;
  const int64_t* slots;  // the sequence's, from its first position attended
  int64_t n, row, h0, hp, d, t, h;  // t, h: the position and head fetched next

  __attribute__((always_inline)) void operator()() {
    if (t < n) {
      const char* bytes = reinterpret_cast<const char*>(cache + slots[t] * row + (h0 + h) * d);
      for (int64_t i = 0; i < d * static_cast<int64_t>(sizeof(T)); i += 64)
        __builtin_prefetch(bytes + i, 0, 1);
    }
    if (++h == hp) {
      h = 0;
      ++t;
    }
  }
};

// attend_one's result for the query heads of KV heads [h0, h0 + hp) of one sequence (its n
// positions' slots from `slots`), for head sizes d a multiple of kLanes. With `tops`, the n
// positions are a part of the sequence's: out is left unnormalized, each head's highest score
// goes to tops and the sum of its e^(score - top) to totals (combine_parts). The positions go
// a tile at a time, each tile through the hp KV heads in turn, while the rows kTilesAhead
// tiles on (a position's hp heads lie side by side in the cache) are fetched into L2 in the
// order they lie (CacheFetch): a CPU's own prefetchers follow one stream through memory well
// and the kernel's reads (a tile's positions, a head at a time) badly. Reading the caches of 64
// sequences of 400 positions from DRAM on one core of a Zen 4 (a scratch loop reading as the
// kernel reads, no arithmetic): a KV head at a time through all the positions, as this kernel
// went before, 10.6 GB/s; tiles of 8, 13.3; each position's row whole, in turn, 17.5; tiles of 8
// with the rows fetched so, 24.5. The scores of GS query heads at a time, each key converted
// once for them; the exponentials a vector at a time; the weighted sums of values in registers,
// a tile and a few vectors at a time. attend_one keeps its sums in memory and spends a scalar
// std::exp on every score.
template <typename T>
__attribute__((optimize("fp-contract=fast"))) void attend_vectors(
    const float* q, const T* kc, const T* vc, const int64_t* slots, int64_t n, int64_t h0,
    int64_t hp, int64_t kv_heads, int64_t group, int64_t d, float scale, float* scores,
    float* out, float* tops = nullptr, float* totals = nullptr) {
  const int64_t row = kv_heads * d, tile = hp == 1 ? n : kTile;  // one head: no tiles needed
  auto at = [&](const T* cache, int64_t t, int64_t h) __attribute__((always_inline)) {
    return cache + slots[t] * row + (h0 + h) * d;
  };
  auto nothing = []() __attribute__((always_inline)) {};
  CacheFetch<T> ahead{kc, slots, n, row, h0, hp, d, kTilesAhead * kTile, 0};
  auto fetch = [&]() __attribute__((always_inline)) { ahead(); };
  for (int64_t t0 = 0; t0 < n; t0 += tile) {
    const int64_t t1 = std::min(n, t0 + tile);
    for (int64_t h = 0; h < hp; ++h)
      in_fours(group, [&](auto gs, int64_t g) __attribute__((always_inline)) {
        constexpr int GS = decltype(gs)::value;
        auto keys = [&](int64_t t) __attribute__((always_inline)) { return at(kc, t, h); };
        const float* qg = q + (h * group + g) * d;
        float* sc = scores + (h * group + g) * n;
        if (g == 0)  // a key's fetch once, for the first of a KV head's query heads
          head_scores<GS, T>(qg, keys, fetch, t0, t1, n, d, scale, sc);
        else
          head_scores<GS, T>(qg, keys, nothing, t0, t1, n, d, scale, sc);
      });
  }
  std::vector<float> top(hp * group), total(hp * group);
  for (int64_t g = 0; g < hp * group; ++g) total[g] = softmax_weights(scores + g * n, n, top[g]);
  for (int64_t i = 0; i < hp * group * d; ++i) out[i] = 0.f;
  ahead = {vc, slots, n, row, h0, hp, d, kTilesAhead * kTile, 0};
  constexpr int64_t C = 4;  // columns of values a step, in kLanes
  const int64_t nv = d / kLanes;
  for (int64_t t0 = 0; t0 < n; t0 += tile) {
    const int64_t t1 = std::min(n, t0 + tile);
    for (int64_t h = 0; h < hp; ++h)
      in_fours(group, [&](auto gs, int64_t g) __attribute__((always_inline)) {
        constexpr int GS = decltype(gs)::value;
        const float* w = scores + (h * group + g) * n;
        for (int64_t c0 = 0; c0 < nv; c0 += C) {
          auto values = [&](int64_t t) __attribute__((always_inline)) {
            return at(vc, t, h) + c0 * kLanes;
          };
          float* o = out + (h * group + g) * d + c0 * kLanes;
          auto sums = [&](auto each) __attribute__((always_inline)) {  // a value's fetch once
            switch (std::min<int64_t>(C, nv - c0)) {
              case 4: weighted_values<GS, 4, T>(w, n, t0, t1, values, each, o, d); break;
              case 3: weighted_values<GS, 3, T>(w, n, t0, t1, values, each, o, d); break;
              case 2: weighted_values<GS, 2, T>(w, n, t0, t1, values, each, o, d); break;
              default: weighted_values<GS, 1, T>(w, n, t0, t1, values, each, o, d);
            }
          };
          if (g == 0 && c0 == 0)
            sums(fetch);
          else
            sums(nothing);
        }
      });
  }
  if (tops) {
    std::copy(top.begin(), top.end(), tops);
    std::copy(total.begin(), total.end(), totals);
    return;
  }
  for (int64_t g = 0; g < hp * group; ++g)
    for (int64_t i = 0; i < d; ++i) out[g * d + i] *= 1.f / total[g];
}

// A head's attention from the parts of its positions (attend_vectors with tops): part i's
// unnormalized sums of values at sums + i * step, its highest score and its sum of
// e^(score - top) at tops + i * top_step and totals + i * top_step, rescaled to the parts'
// highest score. An empty part has total 0.
inline void combine_parts(const float* sums, const float* tops, const float* totals,
                          int64_t parts, int64_t step, int64_t top_step, int64_t d, float* out) {
  float top = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < parts; ++i)
    if (totals[i * top_step] > 0.f) top = std::max(top, tops[i * top_step]);
  float total = 0.f;
  for (int64_t j = 0; j < d; ++j) out[j] = 0.f;
  for (int64_t i = 0; i < parts; ++i) {
    if (totals[i * top_step] == 0.f) continue;
    const float w = std::exp(tops[i * top_step] - top);
    total += w * totals[i * top_step];
    for (int64_t j = 0; j < d; ++j) out[j] += w * sums[i * step + j];
  }
  for (int64_t j = 0; j < d; ++j) out[j] *= 1.f / total;
}

template <typename T>
void paged_decode_typed(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                        const at::Tensor& slots, const at::Tensor& lens, double scale,
                        int64_t window, at::Tensor& out) {
  const int64_t b = q.size(0), heads = q.size(1), d = q.size(2);
  const int64_t kv_heads = k_cache.size(1), group = heads / kv_heads, width = slots.size(1);
  const float* qp = q.data_ptr<float>();
  const T* kp = k_cache.data_ptr<T>();
  const T* vp = v_cache.data_ptr<T>();
  const int64_t* sp = slots.data_ptr<int64_t>();
  const int64_t* lp = lens.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  const bool vectors = d % kLanes == 0;
  std::vector<int64_t> firsts(b);
  int64_t longest = 0;
  for (int64_t seq = 0; seq < b; ++seq) {
    TORCH_CHECK(lp[seq] >= 1 && lp[seq] <= width, "a context length is outside its slots");
    firsts[seq] = window > 0 ? std::max<int64_t>(0, lp[seq] - window) : 0;
    longest = std::max(longest, lp[seq] - firsts[seq]);
  }
  const int64_t threads = at::get_num_threads();
  // Fewer sequences than threads: each sequence's positions in as many parts as there are
  // threads for it (at least kPartPositions each), its KV heads together, and the parts'
  // results combined after. Otherwise a task is a sequence's KV heads (its rows read whole),
  // halved until the tasks share out evenly among the threads or are four a thread or more.
  int64_t splits = 1, hp = vectors ? kv_heads : 1;
  if (vectors && b < threads)
    splits = std::max<int64_t>(1, std::min((threads + b - 1) / b, longest / kPartPositions));
  if (splits == 1)
    while (hp % 2 == 0 && (b * (kv_heads / hp)) % threads != 0 &&
           b * (kv_heads / hp) < 4 * threads)
      hp /= 2;
  const int64_t parts = kv_heads / hp;
  std::vector<float> sums, tops, totals;  // the parts' results: [b, splits, heads, d], [.., heads]
  if (splits > 1) {
    sums.resize(b * splits * heads * d);
    tops.resize(b * splits * heads);
    totals.assign(b * splits * heads, 0.f);
  }
  at::parallel_for(0, b * parts * splits, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t seq = task / (parts * splits), h0 = task / splits % parts * hp;
      const int64_t part = task % splits, first = firsts[seq], n = lp[seq] - first;
      const int64_t at = (seq * heads + h0 * group) * d;
      if (!vectors) {
        scores.resize(group * n);
        attend_one(qp + at, kp, vp, sp + seq * width, first, lp[seq], h0, kv_heads, group, d,
                   static_cast<float>(scale), scores.data(), op + at);
        continue;
      }
      const int64_t p0 = n * part / splits, p1 = n * (part + 1) / splits;
      if (p1 == p0) continue;  // an empty part: its total stays 0
      scores.resize(hp * group * (p1 - p0));
      const int64_t* positions = sp + seq * width + first + p0;
      if (splits == 1) {
        attend_vectors(qp + at, kp, vp, positions, p1 - p0, h0, hp, kv_heads, group, d,
                       static_cast<float>(scale), scores.data(), op + at);
      } else {
        const int64_t mine = (seq * splits + part) * heads;
        attend_vectors(qp + at, kp, vp, positions, p1 - p0, h0, hp, kv_heads, group, d,
                       static_cast<float>(scale), scores.data(), sums.data() + mine * d,
                       tops.data() + mine, totals.data() + mine);
      }
    }
  });
  if (splits > 1)
    for (int64_t seq = 0; seq < b; ++seq)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t mine = seq * splits * heads + h;
        combine_parts(sums.data() + mine * d, tops.data() + mine, totals.data() + mine, splits,
                      heads * d, heads, d, op + (seq * heads + h) * d);
      }
}

at::Tensor paged_decode(const at::Tensor& q_in, const at::Tensor& k_cache,
                        const at::Tensor& v_cache, const at::Tensor& slots,
                        const at::Tensor& lens, double scale, int64_t window) {
  TORCH_CHECK(q_in.dim() == 3 && k_cache.dim() == 3 && k_cache.sizes() == v_cache.sizes() &&
                  k_cache.size(2) == q_in.size(2) && q_in.size(1) % k_cache.size(1) == 0,
              "q [B, H, D] and caches [slots, KVH, D] do not fit");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous() &&
                  k_cache.scalar_type() == v_cache.scalar_type(),
              "the caches must be contiguous and of one dtype");
  TORCH_CHECK(slots.scalar_type() == at::kLong && slots.dim() == 2 &&
                  slots.size(0) == q_in.size(0) && lens.scalar_type() == at::kLong &&
                  lens.numel() == q_in.size(0),
              "slots must be int64 [B, L] and lens int64 [B]");
  const at::Tensor q = q_in.to(at::kFloat).contiguous();
  const at::Tensor sl = slots.contiguous(), ln = lens.reshape({-1}).contiguous();
  at::Tensor out = at::empty(q.sizes(), q.options());
  switch (k_cache.scalar_type()) {
    case at::kFloat: paged_decode_typed<float>(q, k_cache, v_cache, sl, ln, scale, window, out); break;
    case at::kBFloat16:
      paged_decode_typed<at::BFloat16>(q, k_cache, v_cache, sl, ln, scale, window, out);
      break;
    default: TORCH_CHECK(false, "the KV cache must be float32 or bfloat16");
  }
  return out.to(q_in.scalar_type());
}

// RMSNorm of one float32 row, as transformers computes it in float32: out = weight * (x * (1 /
// sqrt(mean(x^2) + eps))). The sum of squares is added in another order than torch's, so
// results may differ from it in the last bit. `out` may be `x`.
inline void norm_row(const float* x, const float* w, int64_t d, float eps, float* out) {
  float squares = 0.f;
#pragma omp simd reduction(+ : squares)
  for (int64_t i = 0; i < d; ++i) squares += x[i] * x[i];
  const float inv = 1.f / std::sqrt(squares / static_cast<float>(d) + eps);
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) out[i] = w[i] * (x[i] * inv);
}

// RMSNorm of float32 rows (norm_row) in one call, where torch's composite takes six (~30 us a
// call on a decode step's short rows, four norms a layer).
at::Tensor rms_norm(const at::Tensor& x_in, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x_in.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat &&
                  x_in.device().is_cpu() && weight.dim() == 1 && weight.is_contiguous() &&
                  x_in.dim() >= 1 && x_in.size(-1) == weight.size(0),
              "rms_norm takes float32 CPU rows and a float32 weight of their width");
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty_like(x);
  const int64_t d = weight.size(0), rows = d ? x.numel() / d : 0;
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float e = static_cast<float>(eps);
  auto norm_rows = [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) norm_row(xp + r * d, wp, d, e, op + r * d);
  };
  // a decode step's few rows on this thread: waking the others costs more than the work
  if (x.numel() <= (1 << 15))
    norm_rows(0, rows);
  else
    at::parallel_for(0, rows, std::max<int64_t>(1, (1 << 14) / d), norm_rows);
  return out;
}

// One head of q or k made ready for attention: normed (where `w` is not null: Qwen3's q_norm and
// k_norm), then rotated by the rotary tables as transformers does it, x * cos +
// rotate_half(x) * sin, here with rotate_half's sign folded into `ssin` (rotary.py) and each
// product and the sum rounded as torch's three operations round them: bit for bit those.
inline void rotate_head(const float* x, const float* w, float eps, const float* cos,
                        const float* ssin, int64_t d, float* normed, float* out) {
  if (w != nullptr) {
    norm_row(x, w, d, eps, normed);
    x = normed;
  }
  const int64_t half = d / 2;
#pragma omp simd
  for (int64_t i = 0; i < half; ++i) out[i] = x[i] * cos[i] + x[i + half] * ssin[i];
#pragma omp simd
  for (int64_t i = half; i < d; ++i) out[i] = x[i] * cos[i] + x[i - half] * ssin[i];
}

template <typename T>
inline void store_row(const float* src, int64_t d, T* dst) {
  for (int64_t i = 0; i < d; ++i) dst[i] = static_cast<T>(src[i]);  // bf16: round to nearest even
}

// What a layer does between its qkv product and attention, in one call where torch takes about
// twenty small operations: split each row of `qkv` ([T, (H + 2 KVH) * D], float32) into its
// heads; norm (q_norm, k_norm: optional) and rotate q and k with the step's rotary tables
// (`cos`, `ssin`: [T, D]); write k and v into the paged caches at `slots` (rounded to the
// cache's dtype). Returns q [T, H, D] and k [T, KVH, D] (k as cached, before any rounding).
template <typename T>
void attention_inputs_typed(const float* qkv, const float* qn, const float* kn, float eps,
                            const float* cos, const float* ssin, const int64_t* slots, int64_t t,
                            int64_t heads, int64_t kv_heads, int64_t d, int64_t cache_slots,
                            T* k_cache, T* v_cache, float* q_out, float* k_out) {
  const int64_t width = (heads + 2 * kv_heads) * d, kv_row = kv_heads * d;
  auto rows = [&](int64_t begin, int64_t end) {
    std::vector<float> normed(d);
    for (int64_t r = begin; r < end; ++r) {
      const float* row = qkv + r * width;
      const float *c = cos + r * d, *s = ssin + r * d;
      const int64_t slot = slots[r];
      TORCH_CHECK(slot >= 0 && slot < cache_slots, "a cache slot is outside the KV cache");
      for (int64_t h = 0; h < heads; ++h)
        rotate_head(row + h * d, qn, eps, c, s, d, normed.data(), q_out + (r * heads + h) * d);
      for (int64_t h = 0; h < kv_heads; ++h) {
        float* k = k_out + (r * kv_heads + h) * d;
        rotate_head(row + (heads + h) * d, kn, eps, c, s, d, normed.data(), k);
        store_row(k, d, k_cache + slot * kv_row + h * d);
      }
      store_row(row + (heads + kv_heads) * d, kv_row, v_cache + slot * kv_row);
    }
  };
  if (t * width <= (1 << 15))  // decode steps: on this thread
    rows(0, t);
  else
    at::parallel_for(0, t, std::max<int64_t>(1, (1 << 14) / width), rows);
}

std::tuple<at::Tensor, at::Tensor> attention_inputs(
    const at::Tensor& qkv_in, const std::optional<at::Tensor>& q_norm,
    const std::optional<at::Tensor>& k_norm, double eps, const at::Tensor& cos_in,
    const at::Tensor& ssin_in, int64_t heads, int64_t kv_heads, at::Tensor k_cache,
    at::Tensor v_cache, const at::Tensor& slots_in) {
  TORCH_CHECK(k_cache.dim() == 3 && k_cache.sizes() == v_cache.sizes() &&
                  k_cache.size(1) == kv_heads && k_cache.is_contiguous() &&
                  v_cache.is_contiguous() && k_cache.scalar_type() == v_cache.scalar_type(),
              "the caches must be contiguous [slots, KVH, D] and of one dtype");
  const int64_t d = k_cache.size(2), t = qkv_in.size(0);
  TORCH_CHECK(qkv_in.scalar_type() == at::kFloat && qkv_in.device().is_cpu() &&
                  qkv_in.dim() == 2 && qkv_in.size(1) == (heads + 2 * kv_heads) * d && d % 2 == 0,
              "qkv must be float32 [T, (H + 2 KVH) * D] on the CPU");
  TORCH_CHECK(cos_in.scalar_type() == at::kFloat && ssin_in.scalar_type() == at::kFloat &&
                  cos_in.numel() == t * d && ssin_in.numel() == t * d,
              "the rotary tables must be float32 [T, D]");
  TORCH_CHECK(slots_in.scalar_type() == at::kLong && slots_in.numel() == t,
              "slots must be int64 [T]");
  for (const auto* w : {&q_norm, &k_norm})
    TORCH_CHECK(!w->has_value() || ((*w)->scalar_type() == at::kFloat && (*w)->numel() == d),
                "the q and k norms' weights must be float32 [D]");
  const at::Tensor qkv = qkv_in.contiguous(), cos = cos_in.contiguous(),
                   ssin = ssin_in.contiguous(), slots = slots_in.contiguous();
  const at::Tensor qn = q_norm ? q_norm->contiguous() : at::Tensor(),
                   kn = k_norm ? k_norm->contiguous() : at::Tensor();
  at::Tensor q = at::empty({t, heads, d}, qkv.options());
  at::Tensor k = at::empty({t, kv_heads, d}, qkv.options());
  const float* qnp = qn.defined() ? qn.data_ptr<float>() : nullptr;
  const float* knp = kn.defined() ? kn.data_ptr<float>() : nullptr;
  const float e = static_cast<float>(eps);
  switch (k_cache.scalar_type()) {
    case at::kFloat:
      attention_inputs_typed<float>(qkv.data_ptr<float>(), qnp, knp, e, cos.data_ptr<float>(),
                                    ssin.data_ptr<float>(), slots.data_ptr<int64_t>(), t, heads,
                                    kv_heads, d, k_cache.size(0), k_cache.data_ptr<float>(),
                                    v_cache.data_ptr<float>(), q.data_ptr<float>(),
                                    k.data_ptr<float>());
      break;
    case at::kBFloat16:
      attention_inputs_typed<at::BFloat16>(
          qkv.data_ptr<float>(), qnp, knp, e, cos.data_ptr<float>(), ssin.data_ptr<float>(),
          slots.data_ptr<int64_t>(), t, heads, kv_heads, d, k_cache.size(0),
          k_cache.data_ptr<at::BFloat16>(), v_cache.data_ptr<at::BFloat16>(),
          q.data_ptr<float>(), k.data_ptr<float>());
      break;
    default: TORCH_CHECK(false, "the KV cache must be float32 or bfloat16");
  }
  return {q, k};
}

// silu(g) * u lane by lane, with t = e^-|g| (exp_nonpositive): silu(g) = g / (1 + t) for g >= 0,
// g t / (1 + t) below (e^-g itself overflows there).
inline fvec silu_times(fvec g, fvec u) {
  const fvec t = exp_nonpositive(g < 0.f ? g : -g);
  return (g < 0.f ? g * t : g) / (1.f + t) * u;
}

// The MLP's activation: out[t, i] = silu(gate[t, i]) * up[t, i] from the gate/up product's rows
// [T, 2I] (gate the first I columns), silu(g) = g / (1 + exp(-g)) in float32. One call where
// torch takes three (split, silu, mul); its exp is exp_nonpositive, not torch's, so the results
// may differ from torch's in the last bits. A decode step's rows are one thread's work, while
// the other threads wait: the exp a vector at a time, not std::exp's one float (18,944 a layer
// in the 7B class).
at::Tensor silu_mul(const at::Tensor& gate_up_in) {
  TORCH_CHECK(gate_up_in.scalar_type() == at::kFloat && gate_up_in.device().is_cpu() &&
                  gate_up_in.dim() == 2 && gate_up_in.size(1) % 2 == 0,
              "silu_mul takes float32 CPU rows [T, 2I]");
  const at::Tensor gu = gate_up_in.contiguous();
  const int64_t t = gu.size(0), width = gu.size(1) / 2;
  at::Tensor out = at::empty({t, width}, gu.options());
  const float* g = gu.data_ptr<float>();
  float* o = out.data_ptr<float>();
  auto rows = [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float *gr = g + r * 2 * width, *ur = gr + width;
      float* orow = o + r * width;
      int64_t i = 0;
      for (; i + kLanes <= width; i += kLanes) {
        const fvec v = silu_times(load<fvec>(gr + i), load<fvec>(ur + i));
        std::memcpy(orow + i, &v, sizeof v);
      }
      for (; i < width; ++i) orow[i] = gr[i] / (1.f + std::exp(-gr[i])) * ur[i];
    }
  };
  if (t * width <= (1 << 15))
    rows(0, t);
  else
    at::parallel_for(0, t, std::max<int64_t>(1, (1 << 13) / width), rows);
  return out;
}

// A decode step's decoder layers in one call, for a model whose matmul weights are QuantWeights
// taking int8 activations, bf16 (steps of up to kernels.BF16_MAX_ROWS rows) or float32 matrices
// (Python's own per-layer code, LlamaForCausalLM.forward, does every other step and model).
// The calls are the ones that code makes, in its order, with the same arguments, so the hidden
// states are the same floats; what goes is the ~40 Python calls and torch dispatches a layer,
// 3-9 us each on an AVX2 CPU. Per layer, `weights` holds kLayerTensors entries and `config`
// kLayerInts (DecodePlan in models/llama.py lays them out).
constexpr int64_t kLayerTensors = 20, kLayerInts = 13;

// One product of the plan, as layers/linear.py's linear() computes it for these rows: tensors
// at_w.. (codes, scales, mins, bias) and settings cfg (bits, group size, offset). Bits 16: a
// bf16 weight (bf16_matmul), 32: a float32 weight (F.linear, its bias inside).
at::Tensor plan_linear(const at::Tensor& x, const c10::List<std::optional<at::Tensor>>& w,
                       int64_t at_w, const int64_t* cfg) {
  const std::optional<at::Tensor> bias = w.get(at_w + 3);
  if (cfg[0] == 32) return at::linear(x, *w.get(at_w), bias);
  at::Tensor out = cfg[0] == 16 ? bf16_matmul(x, *w.get(at_w))
                                : quant_matmul_int8(x, *w.get(at_w), *w.get(at_w + 1),
                                                    w.get(at_w + 2), cfg[0], cfg[1], cfg[2]);
  return bias.has_value() ? out + bias->to(out.scalar_type()) : out;
}

at::Tensor decode_layers(const at::Tensor& x_in,
                         const c10::List<std::optional<at::Tensor>>& weights,
                         at::IntArrayRef config, double eps, double scale, int64_t heads,
                         int64_t kv_heads, const at::Tensor& cos, const at::Tensor& ssin,
                         at::TensorList caches, const at::Tensor& slots,
                         const at::Tensor& decode_slots, const at::Tensor& decode_lens) {
  const int64_t layers = static_cast<int64_t>(caches.size()) / 2;
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == layers * kLayerTensors &&
                  static_cast<int64_t>(config.size()) == layers * kLayerInts,
              "decode_layers: ", layers, " layers' caches for ", weights.size(), " weights and ",
              config.size(), " settings");
  at::Tensor x = x_in;
  const int64_t t = x.size(0);
  for (int64_t l = 0; l < layers; ++l) {
    const int64_t w0 = l * kLayerTensors;
    const int64_t* cfg = config.data() + l * kLayerInts;
    at::Tensor k_cache = caches[2 * l], v_cache = caches[2 * l + 1];
    const at::Tensor h = rms_norm(x, *weights.get(w0), eps);
    const at::Tensor qkv = plan_linear(h, weights, w0 + 4, cfg);
    auto [q, k] = attention_inputs(qkv, weights.get(w0 + 2), weights.get(w0 + 3), eps, cos, ssin,
                                   heads, kv_heads, k_cache, v_cache, slots);
    const at::Tensor attended = paged_decode(q, k_cache, v_cache, decode_slots, decode_lens,
                                             scale, cfg[12]);
    x = x + plan_linear(attended.reshape({t, -1}), weights, w0 + 8, cfg + 3);
    const at::Tensor h2 = rms_norm(x, *weights.get(w0 + 1), eps);
    const at::Tensor act = silu_mul(plan_linear(h2, weights, w0 + 12, cfg + 6));
    x = x + plan_linear(act, weights, w0 + 16, cfg + 9);
  }
  return x;
}

}  // namespace

TORCH_LIBRARY(tenshu_cpu, m) {
  m.def("bf16_matmul(Tensor x, Tensor weight) -> Tensor", &bf16_matmul);
  m.def("quant_matmul(Tensor x, Tensor qweight, Tensor scales, Tensor? mins, int bits, "
        "int group_size, int offset) -> Tensor",
        &quant_matmul);
  m.def("quant_matmul_int8(Tensor x, Tensor qweight, Tensor scales, Tensor? mins, int bits, "
        "int group_size, int offset) -> Tensor",
        &quant_matmul_int8);
  m.def("int8_dot_fits(int k, int bits, int group_size) -> bool", &int8_dot_fits);
  m.def("has_int8_dot_instructions() -> bool", &has_int8_dot_instructions);
  m.def("multiplies_int8_lanes() -> bool", &multiplies_int8_lanes);
  m.def("multiplies_bf16() -> bool", &multiplies_bf16);
  m.def("paged_decode(Tensor q, Tensor k_cache, Tensor v_cache, Tensor slots, Tensor lens, "
        "float scale, int window) -> Tensor",
        &paged_decode);
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor", &rms_norm);
  m.def("attention_inputs(Tensor qkv, Tensor? q_norm, Tensor? k_norm, float eps, Tensor cos, "
        "Tensor ssin, int heads, int kv_heads, Tensor(a!) k_cache, Tensor(b!) v_cache, "
        "Tensor slots) -> (Tensor, Tensor)",
        &attention_inputs);
  m.def("silu_mul(Tensor gate_up) -> Tensor", &silu_mul);
  m.def("decode_layers(Tensor x, Tensor?[] weights, int[] config, float eps, float scale, "
        "int heads, int kv_heads, Tensor cos, Tensor ssin, Tensor(a!)[] caches, Tensor slots, "
        "Tensor decode_slots, Tensor decode_lens) -> Tensor",
        &decode_layers);
  m.def("dequantize_rows(Tensor qweight, Tensor scales, Tensor? mins, int bits, int group_size, "
        "int offset, int start, Tensor(a!) out) -> Tensor(a!)",
        &dequantize_rows);
}
