// Tile, split and architecture choice: aotSelect.h.
#include "aotSelect.h"
#include "cubinInfo.h"

#include <algorithm>
#include <vector>

namespace freeact
{

namespace aot
{
namespace
{

//! split_plan's K walk for `wanted` splits (its first line computes wanted from the GPU).
SplitPlan segmentPlan(MatmulTile const& tile, int64_t k, int64_t groupSize, int64_t wanted)
{
    SplitPlan p;
    if (k <= 0)
    {
        // Nothing to sum (launch.py never gets here: it returns y unwritten): no segment, one split,
        // and the kernel's epilogue writes scale · 0 + bias.
        p.segLen = 0;
        p.segs = 0;
        p.segsPerSplit = 1;
        p.wsSegDiv = 1;
        p.splits = 1;
        return p;
    }
    if (groupSize > 0)
    {
        p.segs = k / groupSize;
        int64_t const perSplit
            = wanted > 1 ? std::max(ceilDiv(p.segs, wanted), ceilDiv(kMinSplitK, groupSize)) : p.segs;
        p.segLen = groupSize;
        p.segsPerSplit = std::max<int64_t>(1, std::min(perSplit, p.segs));
        p.wsSegDiv = 1;
    }
    else
    {
        int64_t const slices = std::min(wanted, std::max<int64_t>(1, k / kMinSplitK));
        p.segLen = slices > 1 ? ceilDiv(ceilDiv(k, slices), tile.bk) * tile.bk : k;
        p.segs = ceilDiv(k, p.segLen);
        p.segsPerSplit = 1;
        p.wsSegDiv = p.segs;
    }
    p.splits = std::max<int64_t>(1, ceilDiv(p.segs, p.segsPerSplit));
    return p;
}

struct ArchInfo
{
    int32_t arch;
    bool archSpecific; //!< its cubins are sm_XYa: they run on exactly compute capability X.Y
    std::string target;
};

//! The architectures of kKernels with what their cubins' ELF says, read once.
std::vector<ArchInfo> const& tableArchs()
{
    static std::vector<ArchInfo> const archs = [] {
        std::vector<ArchInfo> out;
        for (size_t i = 0; i < kKernelCount; ++i)
        {
            AotKernel const& k = kKernels[i];
            auto same = [&](ArchInfo const& a) { return a.arch == k.arch; };
            if (std::none_of(out.begin(), out.end(), same))
            {
                CubinInfo const info = inspectCubin(k.image, k.imageSize, k.entry);
                out.push_back({k.arch, info.archSpecific, info.target});
            }
        }
        std::sort(out.begin(), out.end(), [](ArchInfo const& a, ArchInfo const& b) { return a.arch < b.arch; });
        return out;
    }();
    return archs;
}

} // namespace

KronTile const* kronTile(int64_t d1, int64_t d2)
{
    for (size_t i = 0; i < kKronTileCount; ++i)
    {
        if (d1 <= kKronTiles[i].d1p && d2 <= kKronTiles[i].d2p)
        {
            return &kKronTiles[i];
        }
    }
    return nullptr;
}

MatmulTile const& matmulTile(int64_t tokens)
{
    for (size_t i = 0; i < kMatmulTileCount; ++i)
    {
        if (kMatmulTiles[i].maxTokens == 0 || tokens <= kMatmulTiles[i].maxTokens)
        {
            return kMatmulTiles[i];
        }
    }
    return kMatmulTiles[kMatmulTileCount - 1]; // the generator ends the table with an "any" bucket
}

SplitPlan splitPlan(MatmulTile const& tile, int64_t n, int64_t k, int64_t groupSize, int64_t multiprocessors)
{
    int64_t wanted = 1;
    if (tile.splitK)
    {
        int64_t const columnTiles = std::max<int64_t>(1, ceilDiv(n, tile.bn));
        wanted = std::max<int64_t>(1, kSplitTargetPerSm * multiprocessors / columnTiles);
    }
    return segmentPlan(tile, k, groupSize, wanted);
}

int64_t maxSplits(MatmulTile const& tile, int64_t k, int64_t groupSize)
{
    // The splits only grow with `wanted`, and `wanted` >= k leaves one segment per split wherever a
    // segment may be alone (a group is >= 2 wide, a slice >= kMinSplitK).
    return tile.splitK ? segmentPlan(tile, k, groupSize, std::max<int64_t>(2, k)).splits : 1;
}

std::string archList()
{
    std::string out;
    for (ArchInfo const& a : tableArchs())
    {
        out += (out.empty() ? "sm_" : ", sm_") + std::to_string(a.arch);
    }
    return out.empty() ? "none" : out;
}

int32_t chooseArch(int32_t sm, std::string* error)
{
    std::vector<ArchInfo> const& archs = tableArchs();
    int32_t best = 0;
    std::string specificOnly;
    for (ArchInfo const& a : archs)
    {
        if (a.arch == sm)
        {
            return sm;
        }
        if (a.arch / 10 == sm / 10 && a.arch % 10 < sm % 10)
        {
            if (!a.archSpecific)
            {
                best = std::max(best, a.arch);
            }
            else
            {
                specificOnly += ", and sm_" + std::to_string(a.arch) + " is compiled arch-specific (" + a.target
                    + "): it runs on compute capability " + std::to_string(a.arch / 10) + "."
                    + std::to_string(a.arch % 10) + " only";
            }
        }
    }
    if (best != 0)
    {
        return best;
    }
    if (error != nullptr)
    {
        std::string const major = std::to_string(sm / 10);
        *error = "this GPU is sm_" + std::to_string(sm) + " (compute capability " + major + "."
            + std::to_string(sm % 10) + ") and the plugin library holds cubins for " + archList() + " only: none is sm_"
            + std::to_string(sm) + " or a usable earlier sm_" + major + "x" + specificOnly
            + "; build the library with -DFREEACT_CUDA_ARCHS including " + std::to_string(sm)
            + " (where freeact_export/kernels/aot.py compiles for it)";
    }
    return 0;
}

} // namespace aot

} // namespace freeact
