// How launchFreeActQuantize runs a shape: which kernel, columns per lane, tile of tokens and what it
// keeps in shared memory, for a given budget of dynamic shared memory per block. Plain host C++ so
// that the plugin can refuse, at build time, a shape no kernel can run on the GPU at hand, and
// plugins_trt/tests/kernelMathTest.cpp can check the choices on a CPU. freeActQuantize.cu explains
// the kernels these choices feed.
#pragma once

#include "freeActMath.cuh"

#include <cstddef>
#include <cstdint>
#include <initializer_list>

namespace freeact
{
namespace launch
{

constexpr int32_t kQuantizeThreads = 256;
constexpr int32_t kQuantizeWarps = kQuantizeThreads / 32;
constexpr int32_t kMaxTile = 8;
//! Slack after each buffer for over-reads of discarded columns: productLeft's float4 loads cover
//! columns [j0, j0 + 32/Q) of each row, up to 32/Q - 2 <= 30 floats past the last grid of a buffer.
//! Those values are discarded, but they may be cells another warp is writing: compute-sanitizer's
//! racecheck can report them as hazards without any result depending on them.
constexpr int32_t kTailFloats = 64;
static_assert(kTailFloats >= 32, "tail must cover productLeft's over-read of up to 30 floats");
//! Static __shared__ memory of the kernels (the tile's token types), kept out of the dynamic budget.
constexpr int32_t kStaticSmemBytes = 64;

enum class QuantizeKernel : int32_t
{
    kNONE = 0, //!< no kernel fits: even one token row exceeds the shared memory
    kTILE = 1, //!< quantizeTileKernel<q>: tiles of tokens, both products per tile
    kROW = 2,  //!< quantizeRowKernel: one token per CTA, V plus one scratch row/column
};

struct QuantizeLaunchPlan
{
    QuantizeKernel kernel{QuantizeKernel::kNONE};
    int32_t q{1};              //!< columns per lane / 32 (tile kernel)
    int32_t d1{1};             //!< the token grid the kernel walks: d1 rows ...
    int32_t d2{1};             //!< ... of d2 columns
    int32_t swapFactors{0};    //!< 1: a dense transform (d2 = 1) run as [[b]] ⊗ A, factors swapped
    int32_t stride{0};         //!< padded row stride of a grid in shared memory (floats)
    int32_t slotFloats{0};     //!< d1 · stride
    int32_t tile{1};           //!< tokens per tile
    int32_t bufFloats{0};      //!< floats of one V (or U) buffer
    int32_t smemA{0};          //!< 1: the left factor is copied to shared memory
    int32_t smemB{0};          //!< 1: the right factor is copied to shared memory
    int32_t inPlace{1};        //!< 1: U overwrites V (one buffer)
    size_t smemBytes{0};       //!< dynamic shared memory per block
};

//! 1 when both products of a d1 × d2 grid run in place at Q columns per lane / 32 (each task owns
//! whole rows in step 1 and whole columns in step 2).
inline int32_t runsInPlace(int32_t q, int32_t d1, int32_t d2)
{
    return (d1 <= 32 * q && d2 <= 32 * q) ? 1 : 0;
}

//! Columns per lane / 32 with the least padded work over both products; Q = 1 pays a little more
//! shared-memory traffic per FMA, so it wins only when strictly cheaper. On a tie the Q that runs in
//! place wins (one buffer instead of two leaves shared memory for the factors: 112 × 128 takes Q = 4).
inline int32_t chooseQ(int32_t d1, int32_t d2)
{
    auto roundUp = [](int64_t v, int64_t m) { return (v + m - 1) / m * m; };
    int32_t best = 2;
    double bestCost = 0.0;
    for (int32_t q : {2, 4, 1})
    {
        int64_t const rb = 32 / q;
        double cost = static_cast<double>(roundUp(d1, rb)) * roundUp(d2, 32 * q) * d2
            + static_cast<double>(roundUp(d2, rb)) * roundUp(d1, 32 * q) * d1;
        if (q == 1)
        {
            cost *= 1.1;
        }
        bool const tieInPlace = cost == bestCost && runsInPlace(q, d1, d2) && !runsInPlace(best, d1, d2);
        if (q == 2 || cost < bestCost || tieInPlace)
        {
            best = q;
            bestCost = cost;
        }
    }
    return best;
}

//! Warp tasks one token gives the cheaper of the two products.
inline int32_t tasksPerToken(int32_t q, int32_t d1, int32_t d2)
{
    int32_t const rb = 32 / q;
    int32_t const t1 = ((d1 + rb - 1) / rb) * ((d2 + 32 * q - 1) / (32 * q));
    int32_t const t2 = ((d2 + rb - 1) / rb) * ((d1 + 32 * q - 1) / (32 * q));
    return t1 < t2 ? t1 : t2;
}

//! The launch of a valid shape (kronecker: d1 · d2 == d) with tokens >= 1 and `budgetBytes` of dynamic
//! shared memory per block: the largest useful tile, factors in shared memory where they fit (a
//! smaller tile before fewer factors), else the per-token row kernel, else kNONE.
inline QuantizeLaunchPlan planQuantizeLaunch(int32_t kronecker, int32_t d, int32_t d1, int32_t d2, int64_t tokens,
    size_t budgetBytes)
{
    QuantizeLaunchPlan p;
    if (!kronecker)
    {
        p.d1 = 1; // one row of d: no products, step 3 reads it row-major
        p.d2 = d;
    }
    else if (d2 == 1 && d1 > 1)
    {
        p.d1 = 1; // A ⊗ [[b]] = [[b]] ⊗ A: stream the dense matrix as the right factor
        p.d2 = d;
        p.swapFactors = 1;
    }
    else
    {
        p.d1 = d1;
        p.d2 = d2;
    }
    p.stride = math::paddedStride(p.d2);
    p.slotFloats = p.d1 * p.stride;

    p.q = kronecker ? chooseQ(p.d1, p.d2) : 1;
    p.inPlace = kronecker ? runsInPlace(p.q, p.d1, p.d2) : 1;
    int32_t const rows = 32 / p.q;
    int32_t const perToken = kronecker ? tasksPerToken(p.q, p.d1, p.d2) : 1;
    int32_t wantTile = kronecker ? (kQuantizeWarps + perToken - 1) / perToken : kQuantizeWarps;
    if (kronecker && p.d1 < rows)
    {
        // Step-1 rows are flattened over the tile's tokens: short grids need more tokens per task.
        int32_t const byRows = (rows + p.d1 - 1) / p.d1;
        wantTile = byRows > wantTile ? byRows : wantTile;
    }
    wantTile = wantTile > kMaxTile ? kMaxTile : wantTile;
    if (tokens < wantTile)
    {
        wantTile = static_cast<int32_t>(tokens < 1 ? 1 : tokens);
    }
    int64_t const factorA = kronecker ? ((static_cast<int64_t>(p.d1) * p.d1 + 3) & ~int64_t{3}) : 0;
    int64_t const factorB = kronecker ? ((static_cast<int64_t>(p.d2) * p.d2 + 3) & ~int64_t{3}) : 0;
    bool const aFirst = factorA <= factorB;
    int32_t const choices[4][2] = {{1, 1}, {aFirst ? 1 : 0, aFirst ? 0 : 1}, {aFirst ? 0 : 1, aFirst ? 1 : 0}, {0, 0}};
    for (int32_t c = 0; c < (kronecker ? 4 : 1); ++c)
    {
        for (int32_t tile = wantTile; tile >= 1; --tile)
        {
            int64_t const buf = static_cast<int64_t>(tile) * p.slotFloats + kTailFloats;
            int64_t const floats
                = (kronecker ? choices[c][0] * factorA + choices[c][1] * factorB : 0) + buf * (p.inPlace ? 1 : 2);
            if (static_cast<size_t>(floats) * sizeof(float) <= budgetBytes)
            {
                p.kernel = QuantizeKernel::kTILE;
                p.tile = tile;
                p.bufFloats = static_cast<int32_t>(buf);
                p.smemA = kronecker ? choices[c][0] : 0;
                p.smemB = kronecker ? choices[c][1] : 0;
                p.smemBytes = static_cast<size_t>(floats) * sizeof(float);
                return p;
            }
        }
    }
    // Fallback: V of one token plus a scratch row/column, both products in place.
    p.tile = 1;
    p.inPlace = 1;
    p.smemA = 0;
    p.smemB = 0;
    p.bufFloats = (p.slotFloats + 3) & ~3;
    int64_t const scratch = p.d1 > p.d2 ? p.d1 : p.d2;
    p.smemBytes = (static_cast<size_t>(p.bufFloats) + static_cast<size_t>(scratch)) * sizeof(float);
    p.kernel = p.smemBytes <= budgetBytes ? QuantizeKernel::kROW : QuantizeKernel::kNONE;
    return p;
}

} // namespace launch
} // namespace freeact
