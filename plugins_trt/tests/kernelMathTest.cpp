// CPU checks of plugins_trt/kernels/freeActMath.cuh, the index / unpack / rounding helpers both kernels
// run, against the op semantics with exact expectations, and of FreeActQuantize's launch plan
// (quantizeLaunchPlan.h) against shared-memory budgets of real GPUs. No GPU, no CUDA runtime: plain C++17.
//   g++ -std=c++17 -O2 -Wall -Wextra -I plugins_trt/kernels plugins_trt/tests/kernelMathTest.cpp -o kernelMathTest
// Prints "N passed, 0 failed" and exits non-zero on any failure.
#include "freeActMath.cuh"
#include "quantizeLaunchPlan.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

namespace m = freeact::math;

namespace
{

int gPassed = 0;
int gFailed = 0;

void check(bool ok, char const* what, long long a = 0, long long b = 0)
{
    if (ok)
    {
        ++gPassed;
        return;
    }
    ++gFailed;
    if (gFailed <= 20)
    {
        std::printf("FAIL %s (%lld, %lld)\n", what, a, b);
    }
}

int32_t signedNibble(uint32_t v)
{
    v &= 0xFu;
    return v >= 8 ? static_cast<int32_t>(v) - 16 : static_cast<int32_t>(v);
}

void testNibbles()
{
    for (uint32_t byte = 0; byte < 256; ++byte)
    {
        check(m::nibbleLo(byte) == signedNibble(byte), "nibbleLo", byte, m::nibbleLo(byte));
        check(m::nibbleHi(byte) == signedNibble(byte >> 4), "nibbleHi", byte, m::nibbleHi(byte));
        check(m::packPair(m::nibbleLo(byte), m::nibbleHi(byte)) == byte, "packPair round trip", byte);
        // x16 form: each byte position of a word, with the other bytes set to other values.
        for (int32_t pos = 0; pos < 4; ++pos)
        {
            uint32_t const word = (0xA5C3E781u & ~(0xFFu << (8 * pos))) | (byte << (8 * pos));
            check(m::laneOf(m::evens16(word), pos) == 16 * signedNibble(byte), "evens16", byte, pos);
            check(m::laneOf(m::odds16(word), pos) == 16 * signedNibble(byte >> 4), "odds16", byte, pos);
        }
    }
}

void testBytePermAndDots(std::mt19937& rng)
{
    std::uniform_int_distribution<uint32_t> word(0, 0xFFFFFFFFu);
    for (int32_t trial = 0; trial < 2000; ++trial)
    {
        uint32_t const lo = word(rng);
        uint32_t const hi = word(rng);
        int32_t e[8];
        for (int32_t b = 0; b < 4; ++b)
        {
            e[b] = m::laneOf(lo, b);
            e[b + 4] = m::laneOf(hi, b);
        }
        uint32_t const ev = m::evenBytes(lo, hi);
        uint32_t const od = m::oddBytes(lo, hi);
        bool ok = true;
        for (int32_t b = 0; b < 4; ++b)
        {
            ok = ok && m::laneOf(ev, b) == e[2 * b] && m::laneOf(od, b) == e[2 * b + 1];
        }
        check(ok, "evenBytes/oddBytes", lo, hi);

        // 8-element dot products: INT4 weights against INT4 (×256) and INT8 (×16) activations.
        uint32_t const w = word(rng);
        uint32_t const a4 = trial < 2 ? (trial == 0 ? 0x88888888u : 0x77777777u) : word(rng);
        uint32_t const w4 = trial < 2 ? (trial == 0 ? 0x88888888u : 0x77777777u) : w;
        int32_t exact4 = 0;
        int32_t exact8 = 0;
        for (int32_t b = 0; b < 4; ++b)
        {
            uint32_t const wb = (w4 >> (8 * b)) & 0xFFu;
            uint32_t const ab = (a4 >> (8 * b)) & 0xFFu;
            exact4 += signedNibble(ab) * signedNibble(wb) + signedNibble(ab >> 4) * signedNibble(wb >> 4);
            exact8 += e[2 * b] * signedNibble(wb) + e[2 * b + 1] * signedNibble(wb >> 4);
        }
        check(m::dot8Act4(a4, w4, 5 * 256) == 256 * (exact4 + 5), "dot8Act4 = 256·dot", exact4);
        check(m::dot8Act8(lo, hi, w4, -3 * 16) == 16 * (exact8 - 3), "dot8Act8 = 16·dot", exact8);
    }
    // Worst case per term stays 16384 for both forms: -128·-8·16 and -8·-8·256.
    check(m::dot8Act8(0x80808080u, 0x80808080u, 0x88888888u, 0) == 8 * 16384, "act8 extreme");
    check(m::dot8Act4(0x88888888u, 0x88888888u, 0) == 8 * 16384, "act4 extreme");
    check(static_cast<int64_t>(m::kMaxInnerDim) * 16384 < (int64_t{1} << 31), "kMaxInnerDim bound");
    check(m::bytePerm(0x03020100u, 0x87060504u, 0x0000F7E5u) == 0xFF870005u, "bytePerm sign replicate");
}

void testRounding(std::mt19937& rng)
{
    struct Tie
    {
        float v;
        float r;
    };
    Tie const ties[] = {{0.5f, 0.0f}, {1.5f, 2.0f}, {2.5f, 2.0f}, {3.5f, 4.0f}, {-0.5f, -0.0f}, {-1.5f, -2.0f},
        {-2.5f, -2.0f}, {6.5f, 6.0f}, {7.5f, 8.0f}, {-7.5f, -8.0f}, {-8.5f, -8.0f}, {0.49999997f, 0.0f},
        {126.5f, 126.0f}, {127.5f, 128.0f}};
    for (Tie const& t : ties)
    {
        check(m::roundHalfEven(t.v) == t.r, "roundHalfEven tie", static_cast<long long>(t.v * 10),
            static_cast<long long>(m::roundHalfEven(t.v) * 10));
    }
    // Codes with scale 1 are the rounded, clamped values.
    struct Code
    {
        float y;
        int32_t bits;
        int32_t code;
    };
    Code const codes[] = {{7.5f, 4, 7}, {6.5f, 4, 6}, {-8.5f, 4, -8}, {-9.0f, 4, -8}, {-7.5f, 4, -8}, {100.0f, 4, 7},
        {127.5f, 8, 127}, {-128.5f, 8, -128}, {-127.5f, 8, -128}, {126.5f, 8, 126}, {-0.4f, 4, 0}, {0.5f, 8, 0}};
    for (Code const& c : codes)
    {
        check(m::quantizeCode(c.y, 1.0f, m::qmaxForBits(c.bits)) == c.code, "quantizeCode", c.code,
            m::quantizeCode(c.y, 1.0f, m::qmaxForBits(c.bits)));
    }
    // Scale: (amax · clip) / qmax in that order, 1 when not positive.
    check(m::tokenScale(0.0f, 0.9f, 7) == 1.0f, "scale of zero row");
    check(m::tokenScale(3.0f, 0.0f, 7) == 1.0f, "scale of zero clip");
    std::uniform_real_distribution<float> mag(1e-3f, 1e3f);
    std::uniform_real_distribution<float> clipDist(0.3f, 1.0f);
    int32_t orderMatters = 0;
    for (int32_t i = 0; i < 5000; ++i)
    {
        volatile float amax = mag(rng);
        volatile float clip = clipDist(rng);
        int32_t const qmax = (i & 1) ? 7 : 127;
        volatile float prod = amax * clip;
        float const expect = prod / static_cast<float>(qmax);
        float const got = m::tokenScale(amax, clip, qmax);
        check(got == expect, "tokenScale order");
        volatile float other = clip / static_cast<float>(qmax);
        orderMatters += (amax * other) != expect;
        // A code from true float32 division and ties-to-even.
        std::uniform_real_distribution<float> yDist(-amax, amax);
        float const y = yDist(rng);
        volatile float ratio = y / got;
        float r = std::nearbyint(ratio);
        r = r < -qmax - 1 ? static_cast<float>(-qmax - 1) : (r > qmax ? static_cast<float>(qmax) : r);
        check(m::quantizeCode(y, got, qmax) == static_cast<int32_t>(r), "quantizeCode division");
    }
    check(orderMatters > 0, "the scale's operation order is observable", orderMatters);
}

void testCursorAndStride()
{
    int32_t const d2s[] = {1, 2, 3, 24, 48, 64, 112, 128, 4096};
    int32_t const steps[] = {1, 32, 64, 256};
    for (int32_t d2 : d2s)
    {
        int32_t const stride = m::paddedStride(d2);
        check(stride % 4 == 0 && stride >= d2 + 4, "paddedStride", d2, stride);
        for (int32_t step : steps)
        {
            for (int32_t start : {0, 1, 5, 31, 255})
            {
                m::GridCursor cur(start, step, d2);
                bool ok = true;
                for (int32_t e = start; e < start + 40 * step; e += step, cur.advance())
                {
                    ok = ok && cur.i == e / d2 && cur.j == e % d2;
                }
                check(ok, "GridCursor", d2, step);
            }
        }
    }
}

// The two products exactly as the tile kernel orders them (U = V B over l, then Y = Aᵀ U over m, fmaf,
// padded grids), against the Kronecker product written out element by element in double.
void testKronecker(std::mt19937& rng)
{
    std::normal_distribution<float> nd(0.0f, 1.0f);
    struct Case
    {
        int32_t d1;
        int32_t d2;
    };
    Case const cases[] = {{3, 4}, {4, 2}, {2, 5}, {6, 1}, {1, 7}, {8, 8}, {5, 3}};
    for (Case const& c : cases)
    {
        int32_t const d = c.d1 * c.d2;
        std::vector<float> v(d), A(c.d1 * c.d1), B(c.d2 * c.d2);
        for (float& x : v)
        {
            x = nd(rng);
        }
        for (float& x : A)
        {
            x = nd(rng);
        }
        for (float& x : B)
        {
            x = nd(rng);
        }
        // Direct: y[(m, j)] = Σ_{(i, l)} v[(i, l)] · (A ⊗ B)[(i, l), (m, j)] with (A ⊗ B) = A[i][m] · B[l][j].
        std::vector<double> direct(d, 0.0);
        for (int32_t row = 0; row < d; ++row)
        {
            for (int32_t col = 0; col < d; ++col)
            {
                double const kron = static_cast<double>(A[(row / c.d2) * c.d1 + col / c.d2])
                    * static_cast<double>(B[(row % c.d2) * c.d2 + col % c.d2]);
                direct[col] += static_cast<double>(v[row]) * kron;
            }
        }
        // Kernel order; a dense transform (d2 = 1) runs as [[b]] ⊗ A, as the launcher swaps it.
        bool const swap = c.d2 == 1 && c.d1 > 1;
        int32_t const d1 = swap ? 1 : c.d1;
        int32_t const d2 = swap ? d : c.d2;
        std::vector<float> const& fa = swap ? B : A;
        std::vector<float> const& fb = swap ? A : B;
        int32_t const stride = m::paddedStride(d2);
        std::vector<float> grid(d1 * stride, -1e30f), u(d1 * stride, -1e30f);
        m::GridCursor cur(0, 1, d2);
        for (int32_t e = 0; e < d; ++e, cur.advance())
        {
            grid[cur.i * stride + cur.j] = v[e];
        }
        for (int32_t i = 0; i < d1; ++i)
        {
            for (int32_t j = 0; j < d2; ++j)
            {
                float acc = 0.0f;
                for (int32_t l = 0; l < d2; ++l)
                {
                    acc = std::fma(grid[i * stride + l], fb[l * d2 + j], acc);
                }
                u[i * stride + j] = acc;
            }
        }
        for (int32_t i = 0; i < d1; ++i)
        {
            for (int32_t j = 0; j < d2; ++j)
            {
                float acc = 0.0f;
                for (int32_t mm = 0; mm < d1; ++mm)
                {
                    acc = std::fma(fa[mm * d1 + i], u[mm * stride + j], acc);
                }
                grid[i * stride + j] = acc;
            }
        }
        double err = 0.0;
        double norm = 0.0;
        m::GridCursor out(0, 1, d2);
        for (int32_t e = 0; e < d; ++e, out.advance())
        {
            err = std::fmax(err, std::fabs(grid[out.i * stride + out.j] - direct[e]));
            norm = std::fmax(norm, std::fabs(direct[e]));
        }
        check(err <= 1e-5 * (norm + 1.0), "Kronecker two-step product vs direct", c.d1, c.d2);
    }
}

// m16n8k32 s8 fragments as the MMA kernel builds them, multiplied by the PTX fragment layout, against the
// exact product: checks that A and B use the same permuted k order and that a0..a3 / b0..b1 are right.
void testMmaFragments(std::mt19937& rng, int32_t actBits)
{
    std::uniform_int_distribution<int32_t> a4(-8, 7), a8(-128, 127), w4(-8, 7);
    int32_t A[16][32], W[8][32];
    for (auto& row : A)
    {
        for (int32_t& x : row)
        {
            x = actBits == 4 ? a4(rng) : a8(rng);
        }
    }
    for (auto& row : W)
    {
        for (int32_t& x : row)
        {
            x = w4(rng);
        }
    }
    auto packedWord = [](int32_t const* row, int32_t q) { // word q (elements 8q..8q+7) of a packed row
        uint32_t w = 0;
        for (int32_t b = 0; b < 4; ++b)
        {
            w |= static_cast<uint32_t>(m::packPair(row[8 * q + 2 * b], row[8 * q + 2 * b + 1])) << (8 * b);
        }
        return w;
    };
    auto int8Word = [](int32_t const* row, int32_t first) {
        uint32_t w = 0;
        for (int32_t b = 0; b < 4; ++b)
        {
            w |= (static_cast<uint32_t>(row[first + b]) & 0xFFu) << (8 * b);
        }
        return w;
    };
    // Fragments per lane: a[4], b[2], exactly as computeStep assembles them.
    uint32_t fa[32][4], fb[32][2];
    for (int32_t lane = 0; lane < 32; ++lane)
    {
        int32_t const g = lane >> 2;
        int32_t const q = lane & 3;
        for (int32_t h = 0; h < 2; ++h)
        {
            int32_t const* row = A[g + 8 * h];
            uint32_t ev, od;
            if (actBits == 4)
            {
                uint32_t const w = packedWord(row, q); // what ldmatrix hands lane (g, q)
                ev = m::evens16(w);
                od = m::odds16(w);
            }
            else
            {
                uint32_t const lo = int8Word(row, 8 * q); // the LDS.64 of bytes 8q..8q+7
                uint32_t const hi = int8Word(row, 8 * q + 4);
                ev = m::evenBytes(lo, hi);
                od = m::oddBytes(lo, hi);
            }
            fa[lane][h] = ev;     // a0 (row g), a1 (row g + 8)
            fa[lane][2 + h] = od; // a2, a3
        }
        uint32_t const wq = packedWord(W[g], q);
        fb[lane][0] = m::evens16(wq);
        fb[lane][1] = m::odds16(wq);
    }
    // PTX layout: A element (row, k): lane = 4·(row % 8) + (k % 16) / 4, register (row ≥ 8) + 2·(k ≥ 16),
    // byte k % 4. B element (k, col): lane = 4·col + (k % 16) / 4, register k ≥ 16, byte k % 4.
    bool ok = true;
    for (int32_t row = 0; row < 16; ++row)
    {
        for (int32_t col = 0; col < 8; ++col)
        {
            int64_t mma = 0;
            int64_t exact = 0;
            for (int32_t k = 0; k < 32; ++k)
            {
                int32_t const la = 4 * (row % 8) + (k % 16) / 4;
                int32_t const ra = (row >= 8 ? 1 : 0) + 2 * (k >= 16 ? 1 : 0);
                int32_t const lb = 4 * col + (k % 16) / 4;
                int32_t const rb = k >= 16 ? 1 : 0;
                mma += static_cast<int64_t>(m::laneOf(fa[la][ra], k % 4)) * m::laneOf(fb[lb][rb], k % 4);
                exact += static_cast<int64_t>(A[row][k]) * W[col][k];
                ok = ok
                    && m::mmaSlotElement(k)
                        == 8 * ((k % 16) / 4) + 2 * (k % 4) + (k >= 16 ? 1 : 0); // the documented slot map
            }
            ok = ok && mma == exact * m::dotScale(actBits);
        }
    }
    check(ok, actBits == 4 ? "MMA fragments act4" : "MMA fragments act8");
    bool seen[32] = {};
    for (int32_t slot = 0; slot < 32; ++slot)
    {
        seen[m::mmaSlotElement(slot)] = true;
    }
    bool all = true;
    for (bool s : seen)
    {
        all = all && s;
    }
    check(all, "mmaSlotElement is a bijection");
}

// The decode kernel's split of a row into (group, segment, lane, chunk) covers every chunk exactly once,
// and the MMA kernel's k32-step flushes hit every group end exactly once, in order.
void testWorkSplits()
{
    check(m::segmentWidth(1) == 1 && m::segmentWidth(2) == 2 && m::segmentWidth(3) == 4 && m::segmentWidth(18) == 32
            && m::segmentWidth(32) == 32 && m::segmentWidth(500) == 32,
        "segmentWidth");
    int32_t const ks[] = {64, 576, 960, 1536, 4096, 14336, 96};
    int32_t const groupSizes[] = {0, 2, 6, 32, 64, 96, 128, 192};
    for (int32_t k : ks)
    {
        for (int32_t gs : groupSizes)
        {
            if (gs && k % gs)
            {
                continue;
            }
            for (int32_t chunk : {32, 2})
            {
                if (k % chunk || (gs && gs % chunk))
                {
                    continue;
                }
                int32_t const cpr = k / chunk;
                int32_t const cpg = gs ? gs / chunk : cpr;
                int32_t const groups = gs ? k / gs : 1;
                int32_t const width = m::segmentWidth(cpg);
                int32_t const perStep = 32 / width;
                std::vector<int32_t> hits(cpr, 0);
                bool groupOk = true;
                for (int32_t g0 = 0; g0 < groups; g0 += perStep)
                {
                    for (int32_t lane = 0; lane < 32; ++lane)
                    {
                        int32_t const g = g0 + lane / width;
                        if (g >= groups)
                        {
                            continue;
                        }
                        for (int32_t c = lane % width; c < cpg; c += width)
                        {
                            int32_t const ch = g * cpg + c;
                            ++hits[ch];
                            groupOk = groupOk && (ch * chunk) / (gs ? gs : k) == g;
                        }
                    }
                }
                bool once = groupOk;
                for (int32_t h : hits)
                {
                    once = once && h == 1;
                }
                check(once, "decode split covers each chunk once", k, gs);
            }
            if (k % 32 == 0 && gs % 32 == 0)
            {
                std::vector<int32_t> flushed;
                int32_t const kTiles = (k + 127) / 128;
                for (int32_t kt = 0; kt < kTiles; ++kt)
                {
                    for (int32_t s = 0; s < 4; ++s)
                    {
                        int32_t const kEnd = kt * 128 + 32 * (s + 1);
                        if (kEnd - 32 >= k)
                        {
                            break;
                        }
                        if (gs != 0 && kEnd % gs == 0)
                        {
                            flushed.push_back(kEnd / gs - 1);
                        }
                    }
                }
                bool ok = gs == 0 ? flushed.empty() : static_cast<int32_t>(flushed.size()) == k / gs;
                for (size_t i = 0; ok && i < flushed.size(); ++i)
                {
                    ok = flushed[i] == static_cast<int32_t>(i);
                }
                check(ok, "MMA group flushes", k, gs);
            }
        }
    }
}

// A small Int4MatMul through the decode kernel's arithmetic (x16 dots, exact group sums, the epilogue),
// against the float64 reference: integer dots exact, outputs within float32 rounding.
void testMatMulEpilogue(std::mt19937& rng)
{
    int32_t const k = 256;
    int32_t const n = 5;
    int32_t const tokens = 3;
    for (int32_t actBits : {4, 8})
    {
        for (int32_t gs : {0, 64, 128})
        {
            int32_t const groups = gs ? k / gs : 1;
            std::uniform_int_distribution<int32_t> w4(-8, 7), a(actBits == 4 ? -8 : -128, actBits == 4 ? 7 : 127);
            std::uniform_real_distribution<float> pos(0.001f, 0.1f), bd(-1.0f, 1.0f);
            std::vector<int32_t> W(n * k), X(tokens * k);
            std::vector<float> ws(n * groups), scale(tokens), bias(n);
            for (int32_t& v : W)
            {
                v = w4(rng);
            }
            for (int32_t& v : X)
            {
                v = a(rng);
            }
            for (float& v : ws)
            {
                v = pos(rng);
            }
            for (float& v : scale)
            {
                v = pos(rng);
            }
            for (float& v : bias)
            {
                v = bd(rng);
            }
            bool dotsExact = true;
            double worst = 0.0;
            for (int32_t t = 0; t < tokens; ++t)
            {
                for (int32_t j = 0; j < n; ++j)
                {
                    float acc = 0.0f;
                    double ref = 0.0;
                    for (int32_t g = 0; g < groups; ++g)
                    {
                        int32_t const len = gs ? gs : k;
                        int32_t scaled = 0;
                        int64_t exact = 0;
                        for (int32_t e = g * len; e < (g + 1) * len; e += 8)
                        {
                            uint32_t wWord = 0, aWord = 0, aLo = 0, aHi = 0;
                            for (int32_t b = 0; b < 4; ++b)
                            {
                                wWord |= static_cast<uint32_t>(m::packPair(W[j * k + e + 2 * b], W[j * k + e + 2 * b + 1]))
                                    << (8 * b);
                                aWord |= static_cast<uint32_t>(m::packPair(X[t * k + e + 2 * b], X[t * k + e + 2 * b + 1]))
                                    << (8 * b);
                                aLo |= (static_cast<uint32_t>(X[t * k + e + b]) & 0xFFu) << (8 * b);
                                aHi |= (static_cast<uint32_t>(X[t * k + e + 4 + b]) & 0xFFu) << (8 * b);
                            }
                            scaled = actBits == 4 ? m::dot8Act4(aWord, wWord, scaled) : m::dot8Act8(aLo, aHi, wWord, scaled);
                            for (int32_t u = 0; u < 8; ++u)
                            {
                                exact += static_cast<int64_t>(W[j * k + e + u]) * X[t * k + e + u];
                            }
                        }
                        int32_t const dot = scaled / m::dotScale(actBits);
                        dotsExact = dotsExact && dot == exact && scaled % m::dotScale(actBits) == 0;
                        acc = m::groupFma(acc, ws[j * groups + g], dot);
                        ref += static_cast<double>(exact) * ws[j * groups + g];
                    }
                    float const y = m::outputValue(acc, scale[t], bias[j]);
                    double const yRef = ref * scale[t] + bias[j];
                    check(y == std::fma(acc, scale[t], bias[j]), "outputValue is one fma");
                    worst = std::fmax(worst, std::fabs(y - yRef) / (std::fabs(yRef) + 1e-3));
                }
            }
            check(dotsExact, "x16 dots divide back to the exact dot", actBits, gs);
            check(worst < 1e-5, "epilogue within float32 rounding of float64", actBits, gs);
        }
    }
}

//! FreeActQuantize's launch plan: what it puts in shared memory always fits the budget and adds up
//! (recomputed here from the layout in freeActQuantize.cu), the row kernel is taken only when no tile
//! does, a shape is refused only when nothing fits, and the header's H100 examples hold.
void testQuantizeLaunchPlan(std::mt19937& rng)
{
    namespace l = freeact::launch;
    // cudaDevAttrMaxSharedMemoryPerBlockOptin of sm_89 (Ada), sm_80/87 (A100, Orin), sm_90 (H100), less
    // the kernels' static part; and the 48 KB every GPU allows without opt-in.
    size_t const budgets[] = {48 * 1024 - 64, 101376 - 64, 166912 - 64, 232448 - 64};
    size_t const h100 = 232448 - 64;
    auto padded4 = [](int64_t v) { return (v + 3) & ~int64_t{3}; };
    std::uniform_int_distribution<int32_t> side(1, 256);
    int64_t const tokenCounts[] = {1, 3, 8, 100};
    bool allOk = true;
    int32_t seen[3] = {0, 0, 0};
    for (int32_t trial = 0; trial < 3000; ++trial)
    {
        int32_t const kronecker = trial % 5 == 0 ? 0 : 1;
        int32_t const d1 = trial % 7 == 0 ? side(rng) * 4 : side(rng);
        int32_t const d2 = trial % 11 == 0 ? 1 : side(rng);
        int32_t const d = d1 * d2;
        int64_t const tokens = tokenCounts[trial % 4];
        size_t const budget = budgets[(trial / 4) % 4];
        l::QuantizeLaunchPlan const plan = l::planQuantizeLaunch(kronecker, d, d1, d2, tokens, budget);
        ++seen[static_cast<int32_t>(plan.kernel)];
        bool const dense = kronecker && d2 == 1 && d1 > 1;
        int32_t const g1 = (!kronecker || dense) ? 1 : d1;
        int32_t const g2 = (!kronecker || dense) ? d : d2;
        bool ok = plan.d1 == g1 && plan.d2 == g2 && plan.swapFactors == (dense ? 1 : 0)
            && plan.stride == m::paddedStride(g2) && plan.slotFloats == g1 * plan.stride;
        // The tile kernel runs in place when every task owns whole rows / columns; the row kernel always does.
        int32_t const tileInPlace = (!kronecker || (g1 <= 32 * plan.q && g2 <= 32 * plan.q)) ? 1 : 0;
        ok = ok && plan.inPlace == (plan.kernel == l::QuantizeKernel::kTILE ? tileInPlace : 1);
        int64_t const factors = kronecker ? padded4(int64_t{g1} * g1) * plan.smemA + padded4(int64_t{g2} * g2) * plan.smemB : 0;
        int64_t const oneTile = int64_t{plan.slotFloats} + l::kTailFloats; // a tile of one token, no factors
        int64_t const rowFloats = padded4(plan.slotFloats) + (g1 > g2 ? g1 : g2);
        switch (plan.kernel)
        {
        case l::QuantizeKernel::kTILE:
            ok = ok && plan.tile >= 1 && plan.tile <= l::kMaxTile && plan.tile <= tokens
                && plan.bufFloats == int64_t{plan.tile} * plan.slotFloats + l::kTailFloats
                && plan.smemBytes == static_cast<size_t>(factors + int64_t{plan.bufFloats} * (plan.inPlace ? 1 : 2)) * 4
                && plan.smemBytes <= budget;
            break;
        case l::QuantizeKernel::kROW:
            ok = ok && static_cast<size_t>(oneTile * (tileInPlace ? 1 : 2)) * 4 > budget
                && plan.smemBytes == static_cast<size_t>(rowFloats) * 4 && plan.smemBytes <= budget;
            break;
        case l::QuantizeKernel::kNONE:
            ok = ok && static_cast<size_t>(oneTile * (tileInPlace ? 1 : 2)) * 4 > budget
                && static_cast<size_t>(rowFloats) * 4 > budget;
            break;
        }
        if (!ok && allOk)
        {
            std::printf("launch plan: kronecker %d, %d x %d, tokens %lld, budget %zu\n", kronecker, d1, d2,
                static_cast<long long>(tokens), budget);
        }
        allOk = allOk && ok;
    }
    check(allOk, "launch plan fits, adds up, and falls back only when it must");
    check(seen[0] > 0 && seen[1] > 0 && seen[2] > 0, "the trials reach the tile kernel, the row kernel and refusal",
        seen[1], seen[2]);

    // The header's H100 examples.
    l::QuantizeLaunchPlan const p4096 = l::planQuantizeLaunch(1, 4096, 64, 64, 2048, h100);
    check(p4096.kernel == l::QuantizeKernel::kTILE && p4096.q == 2 && p4096.tile == 2 && p4096.inPlace == 1
            && p4096.smemA == 1 && p4096.smemB == 1 && p4096.smemBytes == (4096 + 4096 + 2 * 64 * 68 + 64) * 4,
        "d = 4096 (64 x 64) on H100: Q 2, tile 2, factors in shared memory, 66 KB", p4096.tile,
        static_cast<long long>(p4096.smemBytes));
    l::QuantizeLaunchPlan const p14336 = l::planQuantizeLaunch(1, 14336, 112, 128, 2048, h100);
    check(p14336.kernel == l::QuantizeKernel::kTILE && p14336.q == 4 && p14336.tile == 1 && p14336.inPlace == 1
            && p14336.smemA == 1 && p14336.smemB == 1
            && p14336.smemBytes == (112 * 112 + 128 * 128 + 112 * 132 + 64) * 4,
        "d = 14336 (112 x 128) on H100: Q 4 in place, tile 1, both factors, 171 KB", p14336.q,
        static_cast<long long>(p14336.smemBytes));
    check(l::chooseQ(112, 128) == 4, "a cost tie goes to the Q that runs in place", l::chooseQ(112, 128));
    // A 70B-class FFN width without a transform: one row of 28672 floats (112 KB) exceeds sm_89's 99 KB.
    check(l::planQuantizeLaunch(0, 28672, 1, 1, 1, 101376 - 64).kernel == l::QuantizeKernel::kNONE,
        "d = 28672 does not fit sm_89");
    check(l::planQuantizeLaunch(0, 28672, 1, 1, 1, h100).kernel != l::QuantizeKernel::kNONE, "d = 28672 fits H100");
}

} // namespace

int main()
{
    std::mt19937 rng(20240601u);
    testNibbles();
    testBytePermAndDots(rng);
    testRounding(rng);
    testCursorAndStride();
    testKronecker(rng);
    testMmaFragments(rng, 4);
    testMmaFragments(rng, 8);
    testWorkSplits();
    testMatMulEpilogue(rng);
    testQuantizeLaunchPlan(rng);
    std::printf("%d passed, %d failed\n", gPassed, gFailed);
    return gFailed == 0 ? 0 : 1;
}
