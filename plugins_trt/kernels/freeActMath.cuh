// Pure index, unpack and rounding helpers of the two kernels, usable on the host and the device so
// that plugins_trt/tests/kernelMathTest.cpp checks on a CPU exactly the code the kernels run.
// Nothing here touches memory beyond its arguments. Without nvcc (plain g++) the CUDA intrinsics
// are replaced by portable code with the same results.
//
// Conventions (shared with freeActKernels.h and freeact_export/ops/reference.py):
// - Packed INT4: byte i holds element 2i in its low nibble and 2i+1 in its high nibble, 4-bit two's
//   complement. A 32-bit word (little endian) holds 8 elements: byte b = elements 2b, 2b+1.
// - "x16 form": a nibble v placed in the high half of a byte reads as the int8 16·v, exactly. A packed
//   word unpacks to two x16 words with 2 logic ops (evens16 / odds16) and no sign handling;
//   __dp4a on x16 operands gives 16× (one operand x16) or 256× (both) the exact dot product, which is
//   divided back exactly (the sums are multiples of 16/256). |16·a·w| <= 16·128·8 = 16384 per term
//   (INT8 activations) and 256·8·8 = 16384 (INT4), so an int32 accumulator holds the scaled sum of
//   fewer than 131072 terms exactly: the launcher rejects k > kMaxInnerDim = 65536 (largest real k:
//   53248).
// - Even/odd element order: evens16(word) holds elements 0,2,4,6 of the word, odds16(word) 1,3,5,7.
//   An INT8 activation chunk of 8 elements (two words) is permuted to the same order (evenBytes /
//   oddBytes) so that dp4a pairs the right elements.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define FA_HD __host__ __device__ __forceinline__
#else
#define FA_HD inline
#endif

namespace freeact
{
namespace math
{

//! Largest inner dimension whose x16-scaled int32 dot products cannot overflow (see the header note).
constexpr int32_t kMaxInnerDim = 65536;

//! Largest code magnitude for a code width (symmetric range [-qmax-1, qmax]).
FA_HD int32_t qmaxForBits(int32_t bits)
{
    return bits == 4 ? 7 : 127;
}

// ---------------------------------------------------------------------------------------------
// INT4 nibbles
// ---------------------------------------------------------------------------------------------

//! Signed value of the low nibble of a byte (element 2i of packed byte i).
FA_HD int32_t nibbleLo(uint32_t byte)
{
    int32_t const v = static_cast<int32_t>(byte & 0xFu);
    return v - ((v & 8) << 1);
}

//! Signed value of the high nibble of a byte (element 2i+1 of packed byte i).
FA_HD int32_t nibbleHi(uint32_t byte)
{
    int32_t const v = static_cast<int32_t>((byte >> 4) & 0xFu);
    return v - ((v & 8) << 1);
}

//! One packed byte from two codes in [-8, 7]: low nibble = even element.
FA_HD uint8_t packPair(int32_t even, int32_t odd)
{
    return static_cast<uint8_t>((static_cast<uint32_t>(even) & 0xFu) | ((static_cast<uint32_t>(odd) & 0xFu) << 4));
}

//! Elements 0,2,4,6 of a packed word as four int8 lanes of 16·v (x16 form).
FA_HD uint32_t evens16(uint32_t word)
{
    return (word << 4) & 0xF0F0F0F0u;
}

//! Elements 1,3,5,7 of a packed word as four int8 lanes of 16·v (x16 form).
FA_HD uint32_t odds16(uint32_t word)
{
    return word & 0xF0F0F0F0u;
}

//! Byte b (0..3) of a word read as a signed int8.
FA_HD int32_t laneOf(uint32_t word, int32_t b)
{
    return static_cast<int32_t>(static_cast<int8_t>(static_cast<uint8_t>(word >> (8 * b))));
}

//! __byte_perm(lo, hi, selector): byte i of the result is byte (selector >> 4i) & 7 of the 8-byte
//! value hi:lo (bit 3 of each selector nibble replicates the sign bit of that byte).
FA_HD uint32_t bytePerm(uint32_t lo, uint32_t hi, uint32_t selector)
{
#if defined(__CUDA_ARCH__)
    return __byte_perm(lo, hi, selector);
#else
    uint64_t const both = (static_cast<uint64_t>(hi) << 32) | lo;
    uint32_t out = 0;
    for (int32_t i = 0; i < 4; ++i)
    {
        uint32_t const sel = (selector >> (4 * i)) & 0xFu;
        uint32_t byte = static_cast<uint32_t>((both >> (8 * (sel & 7u))) & 0xFFu);
        if (sel & 8u)
        {
            byte = (byte & 0x80u) ? 0xFFu : 0u;
        }
        out |= byte << (8 * i);
    }
    return out;
#endif
}

//! Elements 0,2,4,6 of 8 consecutive int8 values held in two words (lo = elements 0..3).
FA_HD uint32_t evenBytes(uint32_t lo, uint32_t hi)
{
    return bytePerm(lo, hi, 0x6420u);
}

//! Elements 1,3,5,7 of 8 consecutive int8 values held in two words.
FA_HD uint32_t oddBytes(uint32_t lo, uint32_t hi)
{
    return bytePerm(lo, hi, 0x7531u);
}

//! acc + Σ_b a.b · w.b over the four signed int8 lanes (__dp4a).
FA_HD int32_t dot4(uint32_t a, uint32_t w, int32_t acc)
{
#if defined(__CUDA_ARCH__)
    return __dp4a(static_cast<int32_t>(a), static_cast<int32_t>(w), acc);
#else
    for (int32_t b = 0; b < 4; ++b)
    {
        acc += laneOf(a, b) * laneOf(w, b);
    }
    return acc;
#endif
}

//! Scaled dot product of 8 elements: one packed INT4 weight word against the activations of the
//! same 8 elements, either one packed INT4 word (act4: result 256·dot) or two INT8 words (act8, lo =
//! elements 0..3: result 16·dot). This is the decode kernel's inner step and, split into its
//! fragments, what the MMA kernel feeds to the tensor cores.
FA_HD int32_t dot8Act4(uint32_t a, uint32_t w, int32_t acc)
{
    acc = dot4(evens16(a), evens16(w), acc);
    return dot4(odds16(a), odds16(w), acc);
}

FA_HD int32_t dot8Act8(uint32_t aLo, uint32_t aHi, uint32_t w, int32_t acc)
{
    acc = dot4(evenBytes(aLo, aHi), evens16(w), acc);
    return dot4(oddBytes(aLo, aHi), odds16(w), acc);
}

//! Factor by which dot8Act4 / dot8Act8 sums exceed the exact dot product.
FA_HD int32_t dotScale(int32_t actBits)
{
    return actBits == 4 ? 256 : 16;
}

// ---------------------------------------------------------------------------------------------
// MMA fragment mapping (mma.sync m16n8k32 s8, both operands in the same permuted k order)
// ---------------------------------------------------------------------------------------------
// For one k32 step, thread quad lane q = lane % 4 of the MMA holds in register 0 (a0/a1 of A, b0 of B)
// the k slots 4q..4q+3 and in register 1 (a2/a3, b1) the slots 16+4q..16+4q+3. A dot product does
// not depend on the order of k as long as A and B use the same order, so the kernels fill the slots
// with physical elements 8q + {0,2,4,6} (register 0) and 8q + {1,3,5,7} (register 1): thread q reads
// the q-th 32-bit word of each row's 16-byte (INT4) or 32-byte (INT8, two words) k32 slice, which is
// exactly what ldmatrix hands out for INT4 and needs no cross-thread exchange.

//! Physical element (0..31, within the k32 step) of MMA k slot `slot` (0..31).
FA_HD int32_t mmaSlotElement(int32_t slot)
{
    int32_t const reg = slot >> 4;      // 0: slots 0..15, 1: 16..31
    int32_t const quad = (slot >> 2) & 3;
    int32_t const byte = slot & 3;
    return 8 * quad + 2 * byte + reg;
}

// ---------------------------------------------------------------------------------------------
// Integer dot products → float output (Int4MatMul epilogue)
// ---------------------------------------------------------------------------------------------
// Order, the same on every path: for each group g (ascending within one thread; partial sums of
// different threads are added in a tree), acc = fmaf(weightScale[j, g], float(dot_g), acc) with dot_g
// the exact int32 dot product of group g; then y = fmaf(acc, scale[t], bias[j]) (bias 0 when null),
// converted to the output type with round-to-nearest-even. The reference does the same sums in
// float64 and rounds once; the difference is float32 rounding of these few operations.

//! acc + ws · dot (one fused rounding).
FA_HD float groupFma(float acc, float ws, int32_t dot)
{
    return fmaf(ws, static_cast<float>(dot), acc);
}

//! y = acc · scale + bias (one fused rounding).
FA_HD float outputValue(float acc, float tokenScale, float bias)
{
    return fmaf(acc, tokenScale, bias);
}

// ---------------------------------------------------------------------------------------------
// FreeActQuantize: scale and codes
// ---------------------------------------------------------------------------------------------

FA_HD float mulRn(float a, float b)
{
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

//! IEEE float32 division (never the approximate one, whatever the compiler flags).
FA_HD float divRn(float a, float b)
{
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

//! Round to nearest, ties to even (the current rounding mode on the host, which is that by default).
FA_HD float roundHalfEven(float v)
{
#if defined(__CUDA_ARCH__)
    return rintf(v);
#else
    return std::nearbyint(v);
#endif
}

//! scale = (amax · clip) / qmax, in that order, float32; 1 where amax · clip is not positive.
FA_HD float tokenScale(float amax, float clip, int32_t qmax)
{
    float const s = mulRn(amax, clip);
    return s > 0.0f ? divRn(s, static_cast<float>(qmax)) : 1.0f;
}

//! clamp(round_half_even(y / scale), -qmax - 1, qmax).
FA_HD int32_t quantizeCode(float y, float scale, int32_t qmax)
{
    float const q = roundHalfEven(divRn(y, scale));
    float const lo = static_cast<float>(-qmax - 1);
    float const hi = static_cast<float>(qmax);
    return static_cast<int32_t>(q < lo ? lo : (q > hi ? hi : q));
}

// ---------------------------------------------------------------------------------------------
// Kronecker index math
// ---------------------------------------------------------------------------------------------
// Element e of a row is V[e / d2][e % d2] (row-major [d1, d2] view). The kernel keeps each token's V
// (and U = V B) in shared memory with a padded row stride so that rows are 16-byte aligned and the
// column-wise stores of the second product do not all hit one bank.

//! Row stride (floats) of a token's [d1, d2] grid in shared memory: a multiple of 4, > d2.
FA_HD int32_t paddedStride(int32_t d2)
{
    return ((d2 + 3) & ~3) + 4;
}

//! Walks the elements e0, e0 + step, e0 + 2·step, … of a row as (i, j) = (e / d2, e % d2) with one
//! division at the start only.
struct GridCursor
{
    int32_t i;
    int32_t j;
    int32_t stepI;
    int32_t stepJ;
    int32_t d2;

    FA_HD GridCursor(int32_t start, int32_t step, int32_t cols)
        : i(start / cols)
        , j(start % cols)
        , stepI(step / cols)
        , stepJ(step % cols)
        , d2(cols)
    {
    }

    FA_HD void advance()
    {
        i += stepI;
        j += stepJ;
        if (j >= d2)
        {
            j -= d2;
            ++i;
        }
    }
};

// ---------------------------------------------------------------------------------------------
// Int4MatMul decode path: how the lanes of a warp split a weight row
// ---------------------------------------------------------------------------------------------
// A row of k elements is cut into chunks of C elements (one vector load); a group holds cpg = group /
// C chunks. The 32 lanes form segments of W lanes (W a power of two); segment s of a warp step takes
// group g0 + s and its lanes stride over the group's chunks. W is the smallest power of two >= cpg
// (32 when cpg >= 32), so a group's exact dot product is a reduction within one segment.

//! Segment width (lanes per group) for a group of cpg chunks.
FA_HD int32_t segmentWidth(int32_t chunksPerGroup)
{
    int32_t w = 1;
    while (w < chunksPerGroup && w < 32)
    {
        w <<= 1;
    }
    return w;
}

} // namespace math
} // namespace freeact
