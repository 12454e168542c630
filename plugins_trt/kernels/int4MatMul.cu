// Int4MatMul: y[t, j] = scale[t] · Σ_g weightScale[j, g] · dot_g(t, j) + bias[j], with dot_g the exact
// integer dot product of group g of the unpacked codes (freeact_export/ops/reference.py `int4_matmul`).
//
// Data layout read: codes [tokens, k/2] packed INT4 (act_bits 4) or [tokens, k] INT8; weight [n, k/2]
// packed INT4 (byte i: element 2i low nibble, 2i+1 high nibble); weightScale [n, G] (G = 1 or
// k / groupSize); scale [tokens]; bias [n] or null; y [tokens, n] fp32/fp16/bf16. Both operands are
// K-contiguous, so y = A Wᵀ is a "row.col" GEMM; no pre-shuffled weight layout is needed.
//
// Integer arithmetic: nibbles are used in "x16 form" (freeActMath.cuh): (word << 4) & 0xF0F0F0F0 and
// word & 0xF0F0F0F0 are the even/odd elements as int8 lanes of 16·v, two logic ops per 8 values and no
// sign handling. INT4·INT4 dot products come out ×256 and INT8·INT4 ×16, exact in int32 for k ≤ 65536
// (checked), and are divided back exactly before the float epilogue. Epilogue order (both paths):
// acc = Σ_g fmaf(weightScale[j, g], float(dot_g), acc), then y = fmaf(acc, scale[t], bias[j]).
//
// Two paths, chosen by the launcher:
// 1. SIMT / decode (matmulSimtKernel<T, C, ACT>): tokens ≤ kDecodeMaxTokens, or shapes the MMA path does
//    not take (k or groupSize not multiples of 32, operands not 16-byte aligned). 256 threads = 8 warps;
//    a warp owns kRowsPerWarp = 2 output channels and T ∈ {1, 2, 4, 8} tokens (grid.y walks token
//    blocks). Lanes stream each weight row in C-element chunks (C = 32: one 128-bit load per row per
//    lane step; C = 2: one byte, for odd shapes), unpack in registers and __dp4a against the token's
//    activation chunk (read through L1: every warp of every CTA reads the same few activation rows).
//    Lanes are split into segments of W = segmentWidth(chunks per group) lanes, one group per segment,
//    so each group's dot product is an exact int32 segment reduction (shuffles) before it meets its
//    weight scale. No shared memory.
// 2. MMA / prefill (matmulMmaKernel<ACT>): CTA tile 128 tokens × 128 channels × 128 k, 8 warps as 2 × 4,
//    warp tile 64 × 32 = 4 × 4 mma.sync.m16n8k32.s8 (int32 accumulators, 64 per thread, plus 64 float
//    accumulators for groups). 3-stage cp.async pipeline of packed tiles; INT4 is unpacked in
//    registers right after ldmatrix (weights, INT4 activations) or LDS.64 (INT8 activations), with
//    both operands' k slots permuted the same way (math::mmaSlotElement) so that no data moves between
//    threads. Shared memory: 3 × (A 8 KB (INT4) / 16 KB (INT8) + B 8 KB) = 48 KB / 72 KB, XOR-swizzled
//    16-byte chunks so ldmatrix / LDS.64 are conflict-free. Groups (groupSize % 32 == 0) are flushed
//    into the float accumulators after the k32 step that ends them; per-channel scales at the end.
//    Native INT4 MMA (sm_80/86/87/89: mma.sync.m16n8k64.s4) would replace the unpack + two k32 MMAs by
//    one k64 MMA on the packed words in computeStep(); Hopper emulates s4 MMA (~53 TOPS), so it is
//    not used here, and sm_90 would need wgmma for full INT8 throughput.
//
// Performance limits (to measure on a GPU):
// - Decode: DRAM throughput vs the copy roofline (dram__throughput.avg.pct_of_peak_sustained_elapsed,
//   target ≥ 80 % for n·k/2 ≥ 8 MB), sm__inst_executed_pipe_alu / _fma (unpack + dp4a cost per weight
//   byte grows with T: T = 8 is likely ALU-bound, so kDecodeMaxTokens may want to be 4), achieved
//   occupancy, long-scoreboard stalls (loads in flight per lane: kRowsPerWarp × 16 B).
// - Prefill: sm__inst_executed_pipe_tensor_op_imma (tensor pipe utilisation), smsp__inst_executed
//   breakdown (unpack ALU vs MMA), l1tex__data_bank_conflicts_pipe_lsu_mem_shared (expect 0),
//   barrier stalls. mma.sync s8 on H100 reaches well below wgmma peak; a wgmma + TMA version with
//   weights pre-unpacked or pre-shuffled offline (Machete/LiquidGEMM style) is the next step.
// - Tile quantisation: tokens 17..127 use a 128-token tile (up to 8× wasted MMAs); n % 128 ≠ 0 wastes a
//   partial tile.
#include "freeActKernels.h"
#include "freeActMath.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace freeact
{
namespace
{

constexpr int32_t kThreads = 256;
constexpr int32_t kWarps = kThreads / 32;
constexpr int32_t kRowsPerWarp = 2;
constexpr int64_t kDecodeMaxTokens = 8;

struct MatMulParams
{
    int8_t const* codes;
    float const* scale;
    int8_t const* weight;
    float const* weightScale;
    float const* bias;
    void* y;
    int64_t tokens;
    int32_t k;
    int32_t n;
    int32_t groupSize; //!< 0: per channel
    int32_t groups;    //!< G
    int32_t yType;
};

__device__ __forceinline__ void storeY(MatMulParams const& p, int64_t row, int32_t col, float v)
{
    int64_t const idx = row * p.n + col;
    if (p.yType == static_cast<int32_t>(FloatType::kFLOAT16))
    {
        static_cast<__half*>(p.y)[idx] = __float2half_rn(v);
    }
    else if (p.yType == static_cast<int32_t>(FloatType::kBFLOAT16))
    {
        static_cast<__nv_bfloat16*>(p.y)[idx] = __float2bfloat16_rn(v);
    }
    else
    {
        static_cast<float*>(p.y)[idx] = v;
    }
}

__device__ __forceinline__ float biasOf(MatMulParams const& p, int32_t col)
{
    return p.bias ? __ldg(p.bias + col) : 0.0f;
}

// ---------------------------------------------------------------------------------------------
// SIMT / decode path
// ---------------------------------------------------------------------------------------------

//! Packed INT4 chunk of C elements (C / 8 words; C = 2: one byte in word 0).
template <int C>
struct Int4Chunk
{
    uint32_t w[C >= 8 ? C / 8 : 1];

    __device__ __forceinline__ void load(int8_t const* row, int32_t chunk)
    {
        if constexpr (C == 32)
        {
            uint4 const v = __ldg(reinterpret_cast<uint4 const*>(row) + chunk);
            w[0] = v.x;
            w[1] = v.y;
            w[2] = v.z;
            w[3] = v.w;
        }
        else
        {
            static_assert(C == 2, "chunks of 32 or 2 elements");
            w[0] = static_cast<uint8_t>(__ldg(row + chunk));
        }
    }
};

//! Scaled dot product (×256 for INT4 activations, ×16 for INT8) of one weight chunk and the matching
//! activation chunk of one token.
template <int C, int ACT>
__device__ __forceinline__ int32_t chunkDot(Int4Chunk<C> const& wc, int8_t const* actRow, int32_t chunk, int32_t acc)
{
    if constexpr (ACT == 4)
    {
        Int4Chunk<C> ac;
        ac.load(actRow, chunk);
#pragma unroll
        for (int32_t i = 0; i < (C >= 8 ? C / 8 : 1); ++i)
        {
            acc = math::dot8Act4(ac.w[i], wc.w[i], acc);
        }
    }
    else if constexpr (C == 32)
    {
        uint4 const lo = __ldg(reinterpret_cast<uint4 const*>(actRow) + 2 * chunk);
        uint4 const hi = __ldg(reinterpret_cast<uint4 const*>(actRow) + 2 * chunk + 1);
        acc = math::dot8Act8(lo.x, lo.y, wc.w[0], acc);
        acc = math::dot8Act8(lo.z, lo.w, wc.w[1], acc);
        acc = math::dot8Act8(hi.x, hi.y, wc.w[2], acc);
        acc = math::dot8Act8(hi.z, hi.w, wc.w[3], acc);
    }
    else
    {
        uint32_t const e0 = static_cast<uint8_t>(__ldg(actRow + 2 * chunk));
        uint32_t const e1 = static_cast<uint8_t>(__ldg(actRow + 2 * chunk + 1));
        acc = math::dot8Act8(e0 | (e1 << 8), 0u, wc.w[0], acc);
    }
    return acc;
}

template <int T, int C, int ACT>
__global__ void __launch_bounds__(kThreads) matmulSimtKernel(MatMulParams p)
{
    constexpr int32_t kR = kRowsPerWarp;
    int32_t const warp = threadIdx.x >> 5;
    int32_t const lane = threadIdx.x & 31;
    int32_t const rowBase = (blockIdx.x * kWarps + warp) * kR;
    if (rowBase >= p.n)
    {
        return; // whole warp: no shuffles below are left half-done
    }
    int32_t const chunksPerRow = p.k / C;
    int32_t const chunksPerGroup = p.groupSize ? p.groupSize / C : chunksPerRow;
    int32_t const width = math::segmentWidth(chunksPerGroup);
    int32_t const perStep = 32 / width;
    int32_t const seg = lane / width;
    int32_t const li = lane % width;
    int64_t const actPitch = ACT == 4 ? p.k / 2 : p.k;
    int64_t const tokenBlocks = (p.tokens + T - 1) / T;

    int8_t const* wRow[kR];
#pragma unroll
    for (int32_t r = 0; r < kR; ++r)
    {
        int32_t const row = min(rowBase + r, p.n - 1); // rows past n repeat the last one (not stored)
        wRow[r] = p.weight + static_cast<int64_t>(row) * (p.k / 2);
    }

    for (int64_t tb = blockIdx.y; tb < tokenBlocks; tb += gridDim.y)
    {
        int64_t const tok0 = tb * T;
        // Token rows past the end repeat the last token (not stored); computed per use to save registers.
        int8_t const* aBase = p.codes + tok0 * actPitch;
        int32_t const tLast = static_cast<int32_t>(min(static_cast<int64_t>(T - 1), p.tokens - 1 - tok0));
        float accF[kR][T];
#pragma unroll
        for (int32_t r = 0; r < kR; ++r)
        {
#pragma unroll
            for (int32_t t = 0; t < T; ++t)
            {
                accF[r][t] = 0.0f;
            }
        }
        for (int32_t g0 = 0; g0 < p.groups; g0 += perStep)
        {
            int32_t const g = g0 + seg;
            int32_t accI[kR][T];
#pragma unroll
            for (int32_t r = 0; r < kR; ++r)
            {
#pragma unroll
                for (int32_t t = 0; t < T; ++t)
                {
                    accI[r][t] = 0;
                }
            }
            if (g < p.groups)
            {
                for (int32_t c = li; c < chunksPerGroup; c += width)
                {
                    int32_t const chunk = g * chunksPerGroup + c;
                    Int4Chunk<C> wc[kR];
#pragma unroll
                    for (int32_t r = 0; r < kR; ++r)
                    {
                        wc[r].load(wRow[r], chunk);
                    }
#pragma unroll
                    for (int32_t t = 0; t < T; ++t)
                    {
#pragma unroll
                        for (int32_t r = 0; r < kR; ++r)
                        {
                            accI[r][t] = chunkDot<C, ACT>(wc[r], aBase + min(t, tLast) * actPitch, chunk, accI[r][t]);
                        }
                    }
                }
            }
            // Exact group sums within each segment (xor stays inside aligned segments of `width` lanes).
            for (int32_t off = width >> 1; off > 0; off >>= 1)
            {
#pragma unroll
                for (int32_t r = 0; r < kR; ++r)
                {
#pragma unroll
                    for (int32_t t = 0; t < T; ++t)
                    {
                        accI[r][t] += __shfl_xor_sync(0xFFFFFFFFu, accI[r][t], off);
                    }
                }
            }
            if (g < p.groups)
            {
#pragma unroll
                for (int32_t r = 0; r < kR; ++r)
                {
                    int32_t const row = min(rowBase + r, p.n - 1);
                    float const ws = __ldg(p.weightScale + static_cast<int64_t>(row) * p.groups + g);
#pragma unroll
                    for (int32_t t = 0; t < T; ++t)
                    {
                        accF[r][t] = math::groupFma(accF[r][t], ws, accI[r][t] / math::dotScale(ACT));
                    }
                }
            }
        }
        // Segments hold different groups: add their float sums (tree), every lane gets the total.
        for (int32_t off = 16; off >= width; off >>= 1)
        {
#pragma unroll
            for (int32_t r = 0; r < kR; ++r)
            {
#pragma unroll
                for (int32_t t = 0; t < T; ++t)
                {
                    accF[r][t] += __shfl_xor_sync(0xFFFFFFFFu, accF[r][t], off);
                }
            }
        }
        // Lane r·T + t stores output (row r, token t).
#pragma unroll
        for (int32_t r = 0; r < kR; ++r)
        {
#pragma unroll
            for (int32_t t = 0; t < T; ++t)
            {
                int64_t const tok = tok0 + t;
                int32_t const row = rowBase + r;
                if (lane == r * T + t && tok < p.tokens && row < p.n)
                {
                    storeY(p, tok, row, math::outputValue(accF[r][t], __ldg(p.scale + tok), biasOf(p, row)));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MMA / prefill path
// ---------------------------------------------------------------------------------------------

constexpr int32_t kBM = 128;
constexpr int32_t kBN = 128;
constexpr int32_t kBK = 128; // elements
constexpr int32_t kStages = 3;

template <int ACT>
struct MmaTile
{
    static constexpr int32_t kARowBytes = kBK * ACT / 8; // 64 (INT4) or 128 (INT8)
    static constexpr int32_t kBRowBytes = kBK / 2;        // 64
    static constexpr int32_t kABytes = kBM * kARowBytes;
    static constexpr int32_t kBBytes = kBN * kBRowBytes;
    static constexpr int32_t kStageBytes = kABytes + kBBytes;
    static constexpr int32_t kSmemBytes = kStages * kStageBytes;
};

//! Byte offset of 16-byte chunk c of row `row` in a 64-byte-row tile (INT4): chunks XOR-swizzled by
//! (row / 2) % 4 so that ldmatrix's 8 rows of one logical chunk hit 8 distinct bank quads.
__device__ __forceinline__ int32_t swizzle64(int32_t row, int32_t c)
{
    return row * 64 + ((c ^ ((row >> 1) & 3)) << 4);
}

//! Same for 128-byte rows (INT8 activations): chunk pairs XOR-swizzled by row % 4, so that LDS.64 of rows
//! g..g+3 (one half-warp) read 4 distinct 32-byte windows.
__device__ __forceinline__ int32_t swizzle128(int32_t row, int32_t c)
{
    return row * 128 + ((c ^ ((row & 3) << 1)) << 4);
}

__device__ __forceinline__ void cpAsync16(void* smem, void const* gmem, bool valid)
{
    unsigned const dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    int32_t const bytes = valid ? 16 : 0; // 0: zero-fill, nothing read
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(bytes));
}

__device__ __forceinline__ void cpAsyncCommit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}

template <int N>
__device__ __forceinline__ void cpAsyncWait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], void const* smem)
{
    unsigned const addr = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ void mmaS8(int32_t (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
    uint32_t b0, uint32_t b1)
{
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

//! Issues the cp.async copies of k-tile kt into stage buffer `stage`.
template <int ACT>
__device__ __forceinline__ void loadStage(MatMulParams const& p, uint8_t* stage, int64_t m0, int32_t n0, int32_t kt)
{
    using Tile = MmaTile<ACT>;
    int32_t const tid = threadIdx.x;
    int32_t const kElem0 = kt * kBK;
    // A: activations.
    constexpr int32_t kAChunksPerRow = Tile::kARowBytes / 16;
    constexpr int32_t kAChunks = kBM * kAChunksPerRow;
    int64_t const aPitch = ACT == 4 ? p.k / 2 : p.k;
#pragma unroll
    for (int32_t i = 0; i < kAChunks / kThreads; ++i)
    {
        int32_t const ch = tid + i * kThreads;
        int32_t const row = ch / kAChunksPerRow;
        int32_t const c = ch % kAChunksPerRow;
        int64_t const tok = m0 + row;
        int32_t const elem = kElem0 + c * (ACT == 4 ? 32 : 16);
        bool const valid = tok < p.tokens && elem < p.k;
        int8_t const* src = valid ? p.codes + tok * aPitch + (ACT == 4 ? elem / 2 : elem) : p.codes;
        int32_t const off = ACT == 4 ? swizzle64(row, c) : swizzle128(row, c);
        cpAsync16(stage + off, src, valid);
    }
    // B: weights.
    constexpr int32_t kBChunks = kBN * 4;
    uint8_t* sB = stage + Tile::kABytes;
#pragma unroll
    for (int32_t i = 0; i < kBChunks / kThreads; ++i)
    {
        int32_t const ch = tid + i * kThreads;
        int32_t const row = ch >> 2;
        int32_t const c = ch & 3;
        int32_t const col = n0 + row;
        int32_t const elem = kElem0 + c * 32;
        bool const valid = col < p.n && elem < p.k;
        int8_t const* src = valid ? p.weight + static_cast<int64_t>(col) * (p.k / 2) + elem / 2 : p.weight;
        cpAsync16(sB + swizzle64(row, c), src, valid);
    }
}

//! One k32 step s (0..3) of the warp tile: fragments from the stage buffer, 16 MMAs.
template <int ACT>
__device__ __forceinline__ void computeStep(uint8_t const* stage, int32_t s, int32_t warpM, int32_t warpN,
    int32_t (&acc)[4][4][4])
{
    using Tile = MmaTile<ACT>;
    int32_t const lane = threadIdx.x & 31;
    uint8_t const* sA = stage;
    uint8_t const* sB = stage + Tile::kABytes;

    // B: ldmatrix.x4, matrix j = n-tile j (8 channels) × the 16-byte k32 slice s; register j = packed word
    // (lane % 4) of channel lane / 4.
    uint32_t bw[4];
    {
        int32_t const row = warpN * 32 + (lane >> 3) * 8 + (lane & 7);
        ldmatrixX4(bw, sB + swizzle64(row, s));
    }
    // A: words of rows g and g + 8 of each m-tile.
    uint32_t a[4][4];
    if constexpr (ACT == 4)
    {
#pragma unroll
        for (int32_t h = 0; h < 2; ++h)
        {
            // Matrices: (m-tile 2h, rows 0-7), (2h, rows 8-15), (2h+1, rows 0-7), (2h+1, rows 8-15).
            int32_t const mat = lane >> 3;
            int32_t const row = warpM * 64 + (2 * h + (mat >> 1)) * 16 + (mat & 1) * 8 + (lane & 7);
            uint32_t w[4];
            ldmatrixX4(w, sA + swizzle64(row, s));
#pragma unroll
            for (int32_t u = 0; u < 2; ++u)
            {
                uint32_t const lo = w[2 * u];     // row g
                uint32_t const hi = w[2 * u + 1]; // row g + 8
                a[2 * h + u][0] = math::evens16(lo);
                a[2 * h + u][1] = math::evens16(hi);
                a[2 * h + u][2] = math::odds16(lo);
                a[2 * h + u][3] = math::odds16(hi);
            }
        }
    }
    else
    {
        int32_t const g = lane >> 2;
        int32_t const q = lane & 3;
        int32_t const chunk = 2 * s + (q >> 1);
#pragma unroll
        for (int32_t i = 0; i < 4; ++i)
        {
            int32_t const r0 = warpM * 64 + i * 16 + g;
            uint2 const w0 = *reinterpret_cast<uint2 const*>(sA + swizzle128(r0, chunk) + (q & 1) * 8);
            uint2 const w1 = *reinterpret_cast<uint2 const*>(sA + swizzle128(r0 + 8, chunk) + (q & 1) * 8);
            a[i][0] = math::evenBytes(w0.x, w0.y);
            a[i][1] = math::evenBytes(w1.x, w1.y);
            a[i][2] = math::oddBytes(w0.x, w0.y);
            a[i][3] = math::oddBytes(w1.x, w1.y);
        }
    }
    // Native s4 MMA (sm_80/86/87/89) would go here: mma.sync.m16n8k64.row.col.s32.s4.s4.s32 on the packed
    // words of two k32 slices, no unpack. Hopper emulates it, so the unpacked s8 MMA is used everywhere.
#pragma unroll
    for (int32_t j = 0; j < 4; ++j)
    {
        uint32_t const b0 = math::evens16(bw[j]);
        uint32_t const b1 = math::odds16(bw[j]);
#pragma unroll
        for (int32_t i = 0; i < 4; ++i)
        {
            mmaS8(acc[i][j], a[i][0], a[i][1], a[i][2], a[i][3], b0, b1);
        }
    }
}

//! accF += weightScale[col, g] · (acc / dotScale); acc = 0.
template <int ACT>
__device__ __forceinline__ void flushGroup(MatMulParams const& p, int32_t g, int32_t colBase, int32_t (&acc)[4][4][4],
    float (&accF)[4][4][4])
{
    int32_t const lane = threadIdx.x & 31;
#pragma unroll
    for (int32_t j = 0; j < 4; ++j)
    {
        float ws[2];
#pragma unroll
        for (int32_t e = 0; e < 2; ++e)
        {
            int32_t const col = colBase + j * 8 + (lane & 3) * 2 + e;
            ws[e] = col < p.n ? __ldg(p.weightScale + static_cast<int64_t>(col) * p.groups + g) : 0.0f;
        }
#pragma unroll
        for (int32_t i = 0; i < 4; ++i)
        {
#pragma unroll
            for (int32_t e = 0; e < 4; ++e)
            {
                accF[i][j][e] = math::groupFma(accF[i][j][e], ws[e & 1], acc[i][j][e] / math::dotScale(ACT));
                acc[i][j][e] = 0;
            }
        }
    }
}

template <int ACT>
__global__ void __launch_bounds__(kThreads) matmulMmaKernel(MatMulParams p)
{
    using Tile = MmaTile<ACT>;
    extern __shared__ uint4 smemRaw[];
    uint8_t* smem = reinterpret_cast<uint8_t*>(smemRaw);
    int32_t const warp = threadIdx.x >> 5;
    int32_t const lane = threadIdx.x & 31;
    int32_t const warpM = warp >> 2; // 0..1
    int32_t const warpN = warp & 3;  // 0..3
    int32_t const n0 = blockIdx.x * kBN;
    int32_t const kTiles = (p.k + kBK - 1) / kBK;
    int64_t const mBlocks = (p.tokens + kBM - 1) / kBM;
    int32_t const colBase = n0 + warpN * 32;

    for (int64_t mb = blockIdx.y; mb < mBlocks; mb += gridDim.y)
    {
        int64_t const m0 = mb * kBM;
        int32_t acc[4][4][4];
        float accF[4][4][4];
#pragma unroll
        for (int32_t i = 0; i < 4; ++i)
        {
#pragma unroll
            for (int32_t j = 0; j < 4; ++j)
            {
#pragma unroll
                for (int32_t e = 0; e < 4; ++e)
                {
                    acc[i][j][e] = 0;
                    accF[i][j][e] = 0.0f;
                }
            }
        }
#pragma unroll
        for (int32_t s = 0; s < kStages - 1; ++s)
        {
            if (s < kTiles)
            {
                loadStage<ACT>(p, smem + s * Tile::kStageBytes, m0, n0, s);
            }
            cpAsyncCommit();
        }
        for (int32_t kt = 0; kt < kTiles; ++kt)
        {
            cpAsyncWait<kStages - 2>();
            __syncthreads(); // tile kt landed for everyone; stage (kt - 1) % kStages is free again
            int32_t const next = kt + kStages - 1;
            if (next < kTiles)
            {
                loadStage<ACT>(p, smem + (next % kStages) * Tile::kStageBytes, m0, n0, next);
            }
            cpAsyncCommit();
            uint8_t const* stage = smem + (kt % kStages) * Tile::kStageBytes;
#pragma unroll
            for (int32_t s = 0; s < kBK / 32; ++s)
            {
                int32_t const kEnd = kt * kBK + 32 * (s + 1);
                if (kEnd - 32 >= p.k)
                {
                    break; // zero-filled tail of the last tile
                }
                computeStep<ACT>(stage, s, warpM, warpN, acc);
                if (p.groupSize != 0 && kEnd % p.groupSize == 0)
                {
                    flushGroup<ACT>(p, kEnd / p.groupSize - 1, colBase, acc, accF);
                }
            }
        }
        if (p.groupSize == 0)
        {
            flushGroup<ACT>(p, 0, colBase, acc, accF);
        }
        // Epilogue: c0, c1 at (row g, cols 2q, 2q+1), c2, c3 at row g + 8.
#pragma unroll
        for (int32_t i = 0; i < 4; ++i)
        {
#pragma unroll
            for (int32_t h = 0; h < 2; ++h)
            {
                int64_t const row = m0 + warpM * 64 + i * 16 + (lane >> 2) + 8 * h;
                if (row < p.tokens)
                {
                    float const s = __ldg(p.scale + row);
#pragma unroll
                    for (int32_t j = 0; j < 4; ++j)
                    {
#pragma unroll
                        for (int32_t e = 0; e < 2; ++e)
                        {
                            int32_t const col = colBase + j * 8 + (lane & 3) * 2 + e;
                            if (col < p.n)
                            {
                                storeY(p, row, col, math::outputValue(accF[i][j][2 * h + e], s, biasOf(p, col)));
                            }
                        }
                    }
                }
            }
        }
        __syncthreads(); // the next m-block's prologue overwrites the stages
    }
}

bool aligned(void const* ptr, uintptr_t bytes)
{
    return (reinterpret_cast<uintptr_t>(ptr) % bytes) == 0;
}

template <int T, int C, int ACT>
cudaError_t launchSimt(MatMulParams const& p, cudaStream_t stream)
{
    int64_t const rowBlocks = (p.n + kWarps * kRowsPerWarp - 1) / (kWarps * kRowsPerWarp);
    int64_t const tokenBlocks = (p.tokens + T - 1) / T;
    dim3 const grid(static_cast<unsigned>(rowBlocks), static_cast<unsigned>(tokenBlocks < 65535 ? tokenBlocks : 65535));
    matmulSimtKernel<T, C, ACT><<<grid, kThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

template <int C, int ACT>
cudaError_t launchSimtTokens(MatMulParams const& p, cudaStream_t stream)
{
    if (p.tokens <= 1)
    {
        return launchSimt<1, C, ACT>(p, stream);
    }
    if (p.tokens <= 2)
    {
        return launchSimt<2, C, ACT>(p, stream);
    }
    if (p.tokens <= 4)
    {
        return launchSimt<4, C, ACT>(p, stream);
    }
    return launchSimt<8, C, ACT>(p, stream);
}

template <int ACT>
cudaError_t launchMma(MatMulParams const& p, cudaStream_t stream)
{
    constexpr int32_t kSmem = MmaTile<ACT>::kSmemBytes;
    if (kSmem > 48 * 1024)
    {
        cudaError_t const err
            = cudaFuncSetAttribute(matmulMmaKernel<ACT>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
        if (err != cudaSuccess)
        {
            return err;
        }
    }
    int64_t const mBlocks = (p.tokens + kBM - 1) / kBM;
    dim3 const grid(static_cast<unsigned>((p.n + kBN - 1) / kBN), static_cast<unsigned>(mBlocks < 65535 ? mBlocks : 65535));
    matmulMmaKernel<ACT><<<grid, kThreads, kSmem, stream>>>(p);
    return cudaGetLastError();
}

} // namespace

cudaError_t launchInt4MatMul(int8_t const* codes, float const* scale, int8_t const* weight, float const* weightScale,
    float const* bias, MatMulShape const& shape, void* y, FloatType yType, cudaStream_t stream) noexcept
{
    if (shape.tokens < 0 || shape.k <= 0 || shape.k % 2 != 0 || shape.n <= 0
        || (shape.actBits != 4 && shape.actBits != 8) || shape.groupSize < 0 || shape.groupSize % 2 != 0
        || (shape.groupSize != 0 && shape.k % shape.groupSize != 0) || shape.k > math::kMaxInnerDim
        || (yType != FloatType::kFLOAT32 && yType != FloatType::kFLOAT16 && yType != FloatType::kBFLOAT16))
    {
        return cudaErrorInvalidValue;
    }
    if (shape.tokens == 0)
    {
        return cudaSuccess;
    }
    if (!codes || !scale || !weight || !weightScale || !y)
    {
        return cudaErrorInvalidValue;
    }
    MatMulParams p{};
    p.codes = codes;
    p.scale = scale;
    p.weight = weight;
    p.weightScale = weightScale;
    p.bias = bias;
    p.y = y;
    p.tokens = shape.tokens;
    p.k = shape.k;
    p.n = shape.n;
    p.groupSize = shape.groupSize;
    p.groups = shape.groupSize ? shape.k / shape.groupSize : 1;
    p.yType = static_cast<int32_t>(yType);

    bool const wide = shape.k % 32 == 0 && shape.groupSize % 32 == 0 && aligned(codes, 16) && aligned(weight, 16);
    if (wide && shape.tokens > kDecodeMaxTokens)
    {
        return shape.actBits == 4 ? launchMma<4>(p, stream) : launchMma<8>(p, stream);
    }
    if (wide)
    {
        return shape.actBits == 4 ? launchSimtTokens<32, 4>(p, stream) : launchSimtTokens<32, 8>(p, stream);
    }
    return shape.actBits == 4 ? launchSimtTokens<2, 4>(p, stream) : launchSimtTokens<2, 8>(p, stream);
}

} // namespace freeact
