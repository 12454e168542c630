// FreeActQuantize: per-token transform, smoothing, masking and symmetric INT4/INT8 quantization.
//
// Semantics (freeact_export/ops/reference.py `freeact_quantize`, float32 throughout):
//   v = x[t] / smooth                         (IEEE division, x cast to float32)
//   y = vec(Aᵀ V B) ⊙ masks[type]             (V = v viewed row-major [d1, d2]; A = kron1[type] or the
//                                              shared kron1, B likewise; no transform when kronecker=0)
//   scale = (amax|y| · clip[type]) / qmax     (1 where amax · clip is not positive)
//   codes = clamp(rint(y / scale), -qmax-1, qmax), INT4 packed (low nibble = even element) or INT8.
// Float sums use fmaf in a fixed order (U = V B over l ascending, then Y = Aᵀ U over m ascending, as
// the reference's two matmuls); codes equal the reference's except where its BLAS summation order
// rounds y to the other side of a rounding tie. NaN/Inf inputs are not supported (amax skips NaN).
//
// Algorithm (main kernel, quantizeTileKernel<Q>): a persistent CTA of 256 threads (8 warps) walks tiles
// of up to 8 tokens. Per tile:
//   0. all threads load the tile's rows, divide by smooth, and store V in shared memory as [d1, stride]
//      grids (stride = paddedStride(d2): rows 16-byte aligned, fewer bank conflicts in step 2);
//   1. U = V B: a warp task is RB = 32/Q grid rows (rows of all tile tokens flattened) × 32·Q columns;
//      lane owns columns j = lane + 32q and keeps RB×Q = 32 accumulators; per l it reads B[l][j] (one
//      load per q, coalesced) and V[r][l..l+3] as a broadcast float4 → 6 loads per 32 FMAs;
//   2. Y = Aᵀ U: a task is CB = 32/Q columns × 32·Q rows of one token; lane owns rows i = lane + 32q,
//      reads A[m][i] (coalesced) and U[m][j0..j0+CB) as broadcast float4s;
//   3. warp w finishes tokens w, w+8, …: y = Y ⊙ mask, warp max, scale, codes (32-bit / 64-bit stores).
// When d1 ≤ 32Q and d2 ≤ 32Q (every realistic Kronecker pair, d1, d2 ≤ 128) each task owns whole rows
// (step 1) or whole columns (step 2) and both steps run in place in one buffer; otherwise U has its
// own buffer. Dense transforms (d2 = 1) are run as [[b]] ⊗ A (the same matrix), so that step 1 streams
// the dense matrix once per tile of tokens. Per-type factors (kronPerType): the tile is processed once
// per token type present in it (tokens of other types are skipped, not recomputed).
//
// Shared memory (dynamic, opt-in above 48 KB): [A d1² if it fits][B d2² if it fits][V tile·d1·stride +
// tail][U, same, unless in place]. The launcher picks the largest tile (≤ 8, and only as many tokens as
// needed to give the 8 warps work) and keeps the factors in shared memory when they fit, else reads them
// through L1 from global memory (generic pointers; shared factors are loaded once per CTA, per-type ones
// when the type changes); quantizeLaunchPlan.h makes these choices (checked on the CPU by
// kernelMathTest). Example H100 figures: d = 4096 (64×64, Q = 2): tile 2, A+B 32 KB + V 34 KB → 66 KB,
// 2 CTAs/SM (ptxas: 128 registers per thread); d = 14336 (112×128, Q = 4, in place): tile 1, V 58 KB +
// A+B 113 KB → 171 KB, 1 CTA/SM.
// Fallback (quantizeRowKernel): when even one token does not fit that way, one CTA per token keeps only
// V plus one row/column scratch in shared memory and does both products in place one row (column) at a
// time with block-wide syncs: slow, but any d up to ~(max shared memory / 8) floats works. Beyond that
// the plugin refuses the shape when TensorRT configures it (e.g. d = 28672 without a transform on sm_89).
//
// Performance limits (to measure on a GPU; target 2048×4096 at ≥ 70 % of copy bandwidth):
// - FLOPs: 2·d·(d1 + d2) per token (d = 4096, 64×64: 1 MFLOP/token, 2.1 GFLOP for 2048 tokens ≈ 35 µs at
//   60 TFLOP/s fp32) vs 36 MB moved ≈ 15 µs at copy bandwidth: this kernel is FMA-bound at fp32 by design.
//   ncu: sm__pipe_fma_cycles_active (FMA pipe utilisation), smsp__inst_executed_op_shared_ld vs FMA count
//   (expect ~0.19 shared loads per FMA), l1tex__data_bank_conflicts_pipe_lsu_mem_shared (step-2 stores
//   of stride-`stride` columns are up to 4-way conflicted), achieved occupancy, and stall reasons
//   (barrier stalls from the 4–5 __syncthreads per tile).
// - Generic (not LDS) loads of the factors: specialising on "factors in shared memory" would give LDS.
// - Tail waste: tasks cover 32·Q columns/rows; d = 1536 (32×48) wastes 25 % of step 1 at Q = 1.
// - A 3xTF32 tensor-core variant would be faster but changes the summation (not code-exact): not done.
#include "freeActKernels.h"
#include "freeActMath.cuh"
#include "quantizeLaunchPlan.h"

#include <climits>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace freeact
{
namespace
{

// Launch constants shared with the launch plan (quantizeLaunchPlan.h).
constexpr int32_t kThreads = launch::kQuantizeThreads;
constexpr int32_t kWarps = launch::kQuantizeWarps;
constexpr int32_t kMaxTile = launch::kMaxTile;

struct QuantizeParams
{
    void const* x;
    int32_t const* types;
    float const* smooth;
    float const* kron1; //!< left factor(s) A as the kernel applies them (possibly swapped, see launcher)
    float const* kron2; //!< right factor(s) B
    float const* masks;
    float const* clip;
    int8_t* codes;
    float* scale;
    int64_t tokens;
    int32_t xType;
    int32_t d;
    int32_t d1;
    int32_t d2;
    int32_t numTypes;
    int32_t kronPerType;
    int32_t kronecker;
    int32_t bits;
    int32_t tile;        //!< tokens per tile
    int32_t stride;      //!< row stride of a token grid in shared memory (floats)
    int32_t slotFloats;  //!< d1 · stride
    int32_t bufFloats;   //!< tile · slotFloats + tail
    int32_t smemA;       //!< 1: A copied to shared memory
    int32_t smemB;       //!< 1: B copied to shared memory
    int32_t inPlace;     //!< 1: U overwrites V (one buffer)
    int32_t vecCodes;    //!< 1: codes stored 8 at a time (aligned, d % 8 == 0)
};

__device__ __forceinline__ float loadX(void const* x, int32_t xType, int64_t index)
{
    if (xType == static_cast<int32_t>(FloatType::kFLOAT16))
    {
        return __half2float(static_cast<__half const*>(x)[index]);
    }
    if (xType == static_cast<int32_t>(FloatType::kBFLOAT16))
    {
        return __bfloat162float(static_cast<__nv_bfloat16 const*>(x)[index]);
    }
    return __ldg(static_cast<float const*>(x) + index);
}

__device__ __forceinline__ int32_t clampType(int32_t type, int32_t numTypes)
{
    return type < 0 ? 0 : (type >= numTypes ? numTypes - 1 : type);
}

//! Index of the n-th (0-based) set bit of mask (mask has more than n bits set).
__device__ __forceinline__ int32_t nthSlot(uint32_t mask, int32_t n)
{
    for (int32_t k = 0; k < n; ++k)
    {
        mask &= mask - 1u;
    }
    return __ffs(static_cast<int32_t>(mask)) - 1;
}

//! Step 0: V = x / smooth for tile slots [0, count) into grids of `stride`.
__device__ void loadTile(QuantizeParams const& p, float* sV, int64_t tok0, int32_t count)
{
    for (int32_t slot = 0; slot < count; ++slot)
    {
        int64_t const rowBase = (tok0 + slot) * static_cast<int64_t>(p.d);
        float* grid = sV + slot * p.slotFloats;
        math::GridCursor cur(threadIdx.x, kThreads, p.d2);
        for (int32_t e = threadIdx.x; e < p.d; e += kThreads, cur.advance())
        {
            grid[cur.i * p.stride + cur.j] = math::divRn(loadX(p.x, p.xType, rowBase + e), __ldg(p.smooth + e));
        }
    }
}

//! Copies n floats from global to shared memory with all threads.
__device__ void copyFactor(float* dst, float const* src, int32_t n)
{
    for (int32_t e = threadIdx.x; e < n; e += kThreads)
    {
        dst[e] = __ldg(src + e);
    }
}

//! Step 1: U = V B over the rows of the active slots (flattened), written to sU (may alias sV).
template <int Q>
__device__ void productRight(QuantizeParams const& p, float const* sV, float* sU, float const* B, uint32_t active,
    int32_t count)
{
    constexpr int32_t kRows = 32 / Q;
    int32_t const warp = threadIdx.x >> 5;
    int32_t const lane = threadIdx.x & 31;
    int32_t const d1 = p.d1;
    int32_t const d2 = p.d2;
    int32_t const rows = count * d1;
    int32_t const rowBlocks = (rows + kRows - 1) / kRows;
    int32_t const colBlocks = (d2 + 32 * Q - 1) / (32 * Q);
    int32_t const tasks = rowBlocks * colBlocks;
    int32_t const l4 = d2 & ~3;
    for (int32_t task = warp; task < tasks; task += kWarps)
    {
        int32_t const cb = task % colBlocks;
        int32_t const rb = task / colBlocks;
        // Offsets of the task's rows; rows past the end repeat the last row (results discarded).
        int32_t rowOff[kRows];
        {
            int32_t const r0 = rb * kRows;
            int32_t a = r0 / d1;
            int32_t i = r0 - a * d1;
            int32_t slot = nthSlot(active, a);
#pragma unroll
            for (int32_t r = 0; r < kRows; ++r)
            {
                rowOff[r] = (r0 + r < rows) ? slot * p.slotFloats + i * p.stride : (r > 0 ? rowOff[r - 1] : 0);
                if (++i == d1 && r0 + r + 1 < rows)
                {
                    i = 0;
                    slot = nthSlot(active, ++a);
                }
            }
        }
        int32_t jc[Q];
#pragma unroll
        for (int32_t q = 0; q < Q; ++q)
        {
            int32_t const j = cb * 32 * Q + lane + 32 * q;
            jc[q] = j < d2 ? j : d2 - 1;
        }
        float acc[kRows][Q];
#pragma unroll
        for (int32_t r = 0; r < kRows; ++r)
        {
#pragma unroll
            for (int32_t q = 0; q < Q; ++q)
            {
                acc[r][q] = 0.0f;
            }
        }
        for (int32_t l = 0; l < l4; l += 4)
        {
            float b[4][Q];
#pragma unroll
            for (int32_t u = 0; u < 4; ++u)
            {
#pragma unroll
                for (int32_t q = 0; q < Q; ++q)
                {
                    b[u][q] = B[(l + u) * d2 + jc[q]];
                }
            }
#pragma unroll
            for (int32_t r = 0; r < kRows; ++r)
            {
                float4 const v = *reinterpret_cast<float4 const*>(sV + rowOff[r] + l);
#pragma unroll
                for (int32_t q = 0; q < Q; ++q)
                {
                    acc[r][q] = fmaf(v.x, b[0][q], acc[r][q]);
                    acc[r][q] = fmaf(v.y, b[1][q], acc[r][q]);
                    acc[r][q] = fmaf(v.z, b[2][q], acc[r][q]);
                    acc[r][q] = fmaf(v.w, b[3][q], acc[r][q]);
                }
            }
        }
        for (int32_t l = l4; l < d2; ++l)
        {
            float b[Q];
#pragma unroll
            for (int32_t q = 0; q < Q; ++q)
            {
                b[q] = B[l * d2 + jc[q]];
            }
#pragma unroll
            for (int32_t r = 0; r < kRows; ++r)
            {
                float const v = sV[rowOff[r] + l];
#pragma unroll
                for (int32_t q = 0; q < Q; ++q)
                {
                    acc[r][q] = fmaf(v, b[q], acc[r][q]);
                }
            }
        }
        // In place, a lane must not overwrite a row another lane of this warp is still reading.
        __syncwarp();
        int32_t const r0 = rb * kRows;
#pragma unroll
        for (int32_t r = 0; r < kRows; ++r)
        {
            if (r0 + r < rows)
            {
#pragma unroll
                for (int32_t q = 0; q < Q; ++q)
                {
                    int32_t const j = cb * 32 * Q + lane + 32 * q;
                    if (j < d2)
                    {
                        sU[rowOff[r] + j] = acc[r][q];
                    }
                }
            }
        }
    }
}

//! Step 2: Y = Aᵀ U per active slot, written to sY (may alias sU).
template <int Q>
__device__ void productLeft(QuantizeParams const& p, float const* sU, float* sY, float const* A, uint32_t active,
    int32_t count)
{
    constexpr int32_t kCols = 32 / Q;
    int32_t const warp = threadIdx.x >> 5;
    int32_t const lane = threadIdx.x & 31;
    int32_t const d1 = p.d1;
    int32_t const d2 = p.d2;
    int32_t const colBlocks = (d2 + kCols - 1) / kCols;
    int32_t const rowBlocks = (d1 + 32 * Q - 1) / (32 * Q);
    int32_t const perSlot = colBlocks * rowBlocks;
    int32_t const tasks = count * perSlot;
    for (int32_t task = warp; task < tasks; task += kWarps)
    {
        int32_t const a = task / perSlot;
        int32_t const rest = task - a * perSlot;
        int32_t const cb = rest % colBlocks;
        int32_t const rb = rest / colBlocks;
        int32_t const slotOff = nthSlot(active, a) * p.slotFloats;
        int32_t const j0 = cb * kCols;
        float const* uCol = sU + slotOff + j0;
        int32_t ic[Q];
#pragma unroll
        for (int32_t q = 0; q < Q; ++q)
        {
            int32_t const i = rb * 32 * Q + lane + 32 * q;
            ic[q] = i < d1 ? i : d1 - 1;
        }
        float acc[kCols][Q];
#pragma unroll
        for (int32_t c = 0; c < kCols; ++c)
        {
#pragma unroll
            for (int32_t q = 0; q < Q; ++q)
            {
                acc[c][q] = 0.0f;
            }
        }
        for (int32_t m = 0; m < d1; ++m)
        {
            float av[Q];
#pragma unroll
            for (int32_t q = 0; q < Q; ++q)
            {
                av[q] = A[m * d1 + ic[q]];
            }
            float const* uRow = uCol + m * p.stride;
#pragma unroll
            for (int32_t c4 = 0; c4 < kCols / 4; ++c4)
            {
                float4 const u = *reinterpret_cast<float4 const*>(uRow + 4 * c4);
#pragma unroll
                for (int32_t q = 0; q < Q; ++q)
                {
                    acc[4 * c4 + 0][q] = fmaf(av[q], u.x, acc[4 * c4 + 0][q]);
                    acc[4 * c4 + 1][q] = fmaf(av[q], u.y, acc[4 * c4 + 1][q]);
                    acc[4 * c4 + 2][q] = fmaf(av[q], u.z, acc[4 * c4 + 2][q]);
                    acc[4 * c4 + 3][q] = fmaf(av[q], u.w, acc[4 * c4 + 3][q]);
                }
            }
        }
        __syncwarp();
#pragma unroll
        for (int32_t q = 0; q < Q; ++q)
        {
            int32_t const i = rb * 32 * Q + lane + 32 * q;
            if (i < d1)
            {
#pragma unroll
                for (int32_t c = 0; c < kCols; ++c)
                {
                    if (j0 + c < d2)
                    {
                        sY[slotOff + i * p.stride + j0 + c] = acc[c][q];
                    }
                }
            }
        }
    }
}

//! Step 3 for one token, by one warp: mask, amax, scale, codes. grid = the token's Y grid.
__device__ void finishToken(QuantizeParams const& p, float* grid, int64_t token, int32_t type)
{
    int32_t const lane = threadIdx.x & 31;
    int32_t const d = p.d;
    int32_t const d2 = p.d2;
    float const* mask = p.masks + static_cast<int64_t>(type) * d;
    float amax = 0.0f;
    {
        math::GridCursor cur(lane, 32, d2);
        for (int32_t e = lane; e < d; e += 32, cur.advance())
        {
            float* cell = grid + cur.i * p.stride + cur.j;
            float const y = math::mulRn(*cell, __ldg(mask + e));
            *cell = y;
            amax = fmaxf(amax, fabsf(y));
        }
    }
#pragma unroll
    for (int32_t off = 16; off > 0; off >>= 1)
    {
        amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, off));
    }
    int32_t const qmax = math::qmaxForBits(p.bits);
    float const s = math::tokenScale(amax, __ldg(p.clip + type), qmax);
    if (lane == 0)
    {
        p.scale[token] = s;
    }
    __syncwarp(); // the masked y written above is read below by other lanes
    auto code = [&](int32_t i, int32_t j) { return math::quantizeCode(grid[i * p.stride + j], s, qmax); };
    if (p.vecCodes)
    {
        // 8 elements per lane step: one 32-bit (INT4) or 64-bit (INT8) store.
        int32_t const groups = d / 8;
        for (int32_t g = lane; g < groups; g += 32)
        {
            int32_t e = 8 * g;
            int32_t i = e / d2;
            int32_t j = e - i * d2;
            int32_t c[8];
#pragma unroll
            for (int32_t u = 0; u < 8; ++u)
            {
                c[u] = code(i, j);
                if (++j == d2)
                {
                    j = 0;
                    ++i;
                }
            }
            if (p.bits == 4)
            {
                uint32_t word = 0;
#pragma unroll
                for (int32_t b = 0; b < 4; ++b)
                {
                    word |= static_cast<uint32_t>(math::packPair(c[2 * b], c[2 * b + 1])) << (8 * b);
                }
                reinterpret_cast<uint32_t*>(p.codes + token * (d / 2))[g] = word;
            }
            else
            {
                uint32_t lo = 0;
                uint32_t hi = 0;
#pragma unroll
                for (int32_t b = 0; b < 4; ++b)
                {
                    lo |= (static_cast<uint32_t>(c[b]) & 0xFFu) << (8 * b);
                    hi |= (static_cast<uint32_t>(c[b + 4]) & 0xFFu) << (8 * b);
                }
                reinterpret_cast<uint2*>(p.codes + token * d)[g] = make_uint2(lo, hi);
            }
        }
    }
    else if (p.bits == 4)
    {
        int8_t* out = p.codes + token * (d / 2);
        math::GridCursor cur(2 * lane, 64, d2);
        for (int32_t pair = lane; pair < d / 2; pair += 32, cur.advance())
        {
            int32_t i = cur.i;
            int32_t j = cur.j + 1;
            if (j == d2)
            {
                j = 0;
                ++i;
            }
            out[pair] = static_cast<int8_t>(math::packPair(code(cur.i, cur.j), code(i, j)));
        }
    }
    else
    {
        int8_t* out = p.codes + token * d;
        math::GridCursor cur(lane, 32, d2);
        for (int32_t e = lane; e < d; e += 32, cur.advance())
        {
            out[e] = static_cast<int8_t>(code(cur.i, cur.j));
        }
    }
}

template <int Q>
__global__ void __launch_bounds__(kThreads) quantizeTileKernel(QuantizeParams p)
{
    extern __shared__ float4 smemRaw[];
    float* smem = reinterpret_cast<float*>(smemRaw);
    __shared__ int32_t sType[kMaxTile];
    static_assert(sizeof(sType) <= launch::kStaticSmemBytes, "the launch plan reserves this much");

    int32_t const sizeA = p.smemA ? ((p.d1 * p.d1 + 3) & ~3) : 0;
    int32_t const sizeB = p.smemB ? ((p.d2 * p.d2 + 3) & ~3) : 0;
    float* sA = smem;
    float* sB = sA + sizeA;
    float* sV = sB + sizeB;
    float* sU = p.inPlace ? sV : sV + p.bufFloats;

    int32_t loadedType = -1; // type whose factors sit in shared memory
    int64_t const numTiles = (p.tokens + p.tile - 1) / p.tile;
    for (int64_t tileIdx = blockIdx.x; tileIdx < numTiles; tileIdx += gridDim.x)
    {
        int64_t const tok0 = tileIdx * p.tile;
        int32_t const count = static_cast<int32_t>(min(static_cast<int64_t>(p.tile), p.tokens - tok0));
        if (threadIdx.x < count)
        {
            sType[threadIdx.x] = clampType(__ldg(p.types + tok0 + threadIdx.x), p.numTypes);
        }
        loadTile(p, sV, tok0, count);
        __syncthreads();
        if (p.kronecker)
        {
            int32_t prevType = -1;
            while (true)
            {
                // Next factor type to apply and the slots that take it.
                int32_t cur = -1;
                uint32_t active = 0;
                if (p.kronPerType)
                {
                    for (int32_t s = 0; s < count; ++s)
                    {
                        int32_t const t = sType[s];
                        if (t > prevType && (cur < 0 || t < cur))
                        {
                            cur = t;
                        }
                    }
                    if (cur < 0)
                    {
                        break;
                    }
                    for (int32_t s = 0; s < count; ++s)
                    {
                        active |= (sType[s] == cur ? 1u : 0u) << s;
                    }
                }
                else
                {
                    if (prevType >= 0)
                    {
                        break;
                    }
                    cur = 0;
                    active = (1u << count) - 1u;
                }
                prevType = cur;
                int32_t const n = __popc(active);
                int64_t const typeOff = p.kronPerType ? cur : 0;
                float const* gA = p.kron1 + typeOff * p.d1 * p.d1;
                float const* gB = p.kron2 + typeOff * p.d2 * p.d2;
                if ((p.smemA || p.smemB) && loadedType != cur)
                {
                    // The previous type's products have finished (a __syncthreads ends each step).
                    if (p.smemA)
                    {
                        copyFactor(sA, gA, p.d1 * p.d1);
                    }
                    if (p.smemB)
                    {
                        copyFactor(sB, gB, p.d2 * p.d2);
                    }
                    loadedType = cur;
                    __syncthreads();
                }
                productRight<Q>(p, sV, sU, p.smemB ? sB : gB, active, n);
                __syncthreads();
                productLeft<Q>(p, sU, sV, p.smemA ? sA : gA, active, n);
                __syncthreads();
            }
        }
        for (int32_t slot = threadIdx.x >> 5; slot < count; slot += kWarps)
        {
            finishToken(p, sV + slot * p.slotFloats, tok0 + slot, sType[slot]);
        }
        __syncthreads(); // the next tile overwrites sV and sType
    }
}

//! Fallback for rows that do not fit the tile kernel: one CTA per token, V in shared memory plus one
//! row/column of scratch; U = V B row by row, then Y = Aᵀ U column by column, in place.
__global__ void __launch_bounds__(kThreads) quantizeRowKernel(QuantizeParams p)
{
    extern __shared__ float4 smemRaw[];
    float* sV = reinterpret_cast<float*>(smemRaw);
    float* scratch = sV + p.bufFloats;
    for (int64_t token = blockIdx.x; token < p.tokens; token += gridDim.x)
    {
        int32_t const type = clampType(__ldg(p.types + token), p.numTypes);
        loadTile(p, sV, token, 1);
        __syncthreads();
        if (p.kronecker)
        {
            int64_t const typeOff = p.kronPerType ? type : 0;
            float const* A = p.kron1 + typeOff * p.d1 * p.d1;
            float const* B = p.kron2 + typeOff * p.d2 * p.d2;
            for (int32_t i = 0; i < p.d1; ++i)
            {
                float* row = sV + i * p.stride;
                for (int32_t l = threadIdx.x; l < p.d2; l += kThreads)
                {
                    scratch[l] = row[l];
                }
                __syncthreads();
                for (int32_t j = threadIdx.x; j < p.d2; j += kThreads)
                {
                    float acc = 0.0f;
                    for (int32_t l = 0; l < p.d2; ++l)
                    {
                        acc = fmaf(scratch[l], __ldg(B + static_cast<int64_t>(l) * p.d2 + j), acc);
                    }
                    row[j] = acc;
                }
                __syncthreads();
            }
            for (int32_t j = 0; j < p.d2; ++j)
            {
                for (int32_t m = threadIdx.x; m < p.d1; m += kThreads)
                {
                    scratch[m] = sV[m * p.stride + j];
                }
                __syncthreads();
                for (int32_t i = threadIdx.x; i < p.d1; i += kThreads)
                {
                    float acc = 0.0f;
                    for (int32_t m = 0; m < p.d1; ++m)
                    {
                        acc = fmaf(__ldg(A + static_cast<int64_t>(m) * p.d1 + i), scratch[m], acc);
                    }
                    sV[i * p.stride + j] = acc;
                }
                __syncthreads();
            }
        }
        if (threadIdx.x < 32)
        {
            finishToken(p, sV, token, type);
        }
        __syncthreads();
    }
}

bool aligned(void const* ptr, uintptr_t bytes)
{
    return (reinterpret_cast<uintptr_t>(ptr) % bytes) == 0;
}

template <typename Kernel>
cudaError_t launchPersistent(Kernel kernel, QuantizeParams const& p, size_t smemBytes, size_t budget, int device,
    int64_t work, cudaStream_t stream)
{
    cudaError_t err = cudaSuccess;
    if (smemBytes > 48 * 1024)
    {
        // The device's whole budget, not this call's size: the attribute is per function and device, so
        // concurrent callers (two execution contexts) must all set the same value, never shrink it.
        err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(budget));
        if (err != cudaSuccess)
        {
            return err;
        }
    }
    int sms = 0;
    int perSm = 0;
    if ((err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device)) != cudaSuccess
        || (err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm, kernel, kThreads, smemBytes)) != cudaSuccess)
    {
        return err;
    }
    if (perSm < 1)
    {
        return cudaErrorInvalidConfiguration;
    }
    int64_t const grid = work < static_cast<int64_t>(sms) * perSm ? work : static_cast<int64_t>(sms) * perSm;
    kernel<<<static_cast<unsigned>(grid), kThreads, smemBytes, stream>>>(p);
    return cudaGetLastError();
}

} // namespace

cudaError_t launchFreeActQuantize(void const* x, FloatType xType, int32_t const* types, float const* smooth,
    float const* kron1, float const* kron2, float const* masks, float const* clip, QuantizeShape const& shape,
    int8_t* codes, float* scale, cudaStream_t stream) noexcept
{
    if (shape.tokens < 0 || shape.d <= 0 || shape.numTypes <= 0 || (shape.bits != 4 && shape.bits != 8)
        || (shape.bits == 4 && shape.d % 2 != 0) || (shape.kronecker != 0 && shape.kronecker != 1)
        || (shape.kronPerType != 0 && shape.kronPerType != 1)
        || (xType != FloatType::kFLOAT32 && xType != FloatType::kFLOAT16 && xType != FloatType::kBFLOAT16))
    {
        return cudaErrorInvalidValue;
    }
    if (shape.kronecker
        && (shape.d1 <= 0 || shape.d2 <= 0 || static_cast<int64_t>(shape.d1) * shape.d2 != shape.d || !kron1
            || !kron2))
    {
        return cudaErrorInvalidValue;
    }
    if (shape.kronecker
        && (static_cast<int64_t>(shape.d1) * shape.d1 > INT32_MAX || static_cast<int64_t>(shape.d2) * shape.d2 > INT32_MAX))
    {
        return cudaErrorInvalidValue; // factor indices are 32-bit
    }
    if (shape.tokens == 0)
    {
        return cudaSuccess;
    }
    if (!x || !types || !smooth || !masks || !clip || !codes || !scale)
    {
        return cudaErrorInvalidValue;
    }

    int device = 0;
    size_t budget = 0;
    cudaError_t const err = quantizeSmemBudget(&device, &budget);
    if (err != cudaSuccess)
    {
        return err;
    }
    launch::QuantizeLaunchPlan const plan
        = launch::planQuantizeLaunch(shape.kronecker, shape.d, shape.d1, shape.d2, shape.tokens, budget);
    if (plan.kernel == launch::QuantizeKernel::kNONE)
    {
        return cudaErrorInvalidValue; // a row of d floats must fit in shared memory (the plugins refuse it earlier)
    }

    QuantizeParams p{};
    p.x = x;
    p.types = types;
    p.smooth = smooth;
    p.masks = masks;
    p.clip = clip;
    p.codes = codes;
    p.scale = scale;
    p.tokens = shape.tokens;
    p.xType = static_cast<int32_t>(xType);
    p.d = shape.d;
    p.numTypes = shape.numTypes;
    p.kronPerType = shape.kronPerType;
    p.kronecker = shape.kronecker;
    p.bits = shape.bits;
    p.kron1 = plan.swapFactors ? kron2 : kron1; // unused when kronecker = 0
    p.kron2 = plan.swapFactors ? kron1 : kron2;
    p.d1 = plan.d1;
    p.d2 = plan.d2;
    p.stride = plan.stride;
    p.slotFloats = plan.slotFloats;
    p.tile = plan.tile;
    p.bufFloats = plan.bufFloats;
    p.smemA = plan.smemA;
    p.smemB = plan.smemB;
    p.inPlace = plan.inPlace;
    p.vecCodes = (p.d % 8 == 0 && aligned(codes, shape.bits == 4 ? 4 : 8)) ? 1 : 0;

    if (plan.kernel == launch::QuantizeKernel::kROW)
    {
        return launchPersistent(quantizeRowKernel, p, plan.smemBytes, budget, device, shape.tokens, stream);
    }
    int64_t const numTiles = (shape.tokens + p.tile - 1) / p.tile;
    switch (plan.q)
    {
    case 1: return launchPersistent(quantizeTileKernel<1>, p, plan.smemBytes, budget, device, numTiles, stream);
    case 2: return launchPersistent(quantizeTileKernel<2>, p, plan.smemBytes, budget, device, numTiles, stream);
    default: return launchPersistent(quantizeTileKernel<4>, p, plan.smemBytes, budget, device, numTiles, stream);
    }
}

cudaError_t quantizeSmemBudget(int* device, size_t* bytes) noexcept
{
    int maxSmem = 0;
    cudaError_t err = cudaGetDevice(device);
    if (err == cudaSuccess)
    {
        err = cudaDeviceGetAttribute(&maxSmem, cudaDevAttrMaxSharedMemoryPerBlockOptin, *device);
    }
    if (err == cudaSuccess)
    {
        *bytes = static_cast<size_t>(maxSmem) - launch::kStaticSmemBytes;
    }
    return err;
}

} // namespace freeact
