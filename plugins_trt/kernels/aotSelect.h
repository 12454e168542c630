// The launchers' decisions as pure functions of the generated tables (aotKernels.h): which tile,
// which K split, which architecture's cubin. freeact_export/kernels/variants.py makes the same
// choices for the torch runtime; tests/planTest.cpp checks the two against each other.
#pragma once

#include "aotKernels.h"

#include <cstdint>
#include <string>

namespace freeact
{

//! ceil(a / b) for a >= 0, b > 0.
inline int64_t ceilDiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

namespace aot
{

// The launchers' decisions as pure functions of the generated tables, for tests
// (tests/planTest.cpp checks them against variants.py).

//! variants.kron_tile + kron_warps: the first kKronTiles entry holding [d1, d2], or null.
KronTile const* kronTile(int64_t d1, int64_t d2);

//! variants.matmul_tile: the bucket of a token count.
MatmulTile const& matmulTile(int64_t tokens);

//! variants.split_plan, and the number of splits (the grid's third axis) it gives.
struct SplitPlan
{
    int64_t segLen{0};
    int64_t segs{0};
    int64_t segsPerSplit{1};
    int64_t wsSegDiv{1};
    int64_t splits{1};
};
SplitPlan splitPlan(MatmulTile const& tile, int64_t n, int64_t k, int64_t groupSize, int64_t multiprocessors);

//! The most splits splitPlan gives for (k, groupSize) on any number of multiprocessors (1 without split_k).
int64_t maxSplits(MatmulTile const& tile, int64_t k, int64_t groupSize);

//! The cubin architecture for a device of compute capability sm (major * 10 + minor): the table's exact
//! sm, else the highest one of the same major and a lower minor that is not arch-specific (an sm_90a,
//! sm_100a cubin runs on exactly that compute capability); else 0 and `error` names the device's sm and
//! the architectures the library holds.
int32_t chooseArch(int32_t sm, std::string* error);

//! The architectures in kKernels, ascending, each once.
std::string archList();

} // namespace aot

} // namespace freeact
