#include "aotLaunch.h"

#include "cubinInfo.h"
#include "cudaDriver.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

namespace freeact
{

namespace
{

using aot::AotKernel;
using aot::KernelKind;

char const* kindName(KernelKind kind)
{
    switch (kind)
    {
    case KernelKind::kQUANTIZE_KRON: return "quantize_kron";
    case KernelKind::kQUANTIZE_PLAIN: return "quantize_plain";
    case KernelKind::kINT4_MATMUL: return "int4_matmul";
    case KernelKind::kSPLITK_REDUCE: return "splitk_reduce";
    }
    return "?";
}

//! The parameters the launcher passes to each kernel (P: 64-bit pointer, I: 32-bit integer), the kernel
//! body's non-constexpr ones in order, then Triton's global and profile scratch pointers.
char const* layoutOf(KernelKind kind)
{
    switch (kind)
    {
    case KernelKind::kQUANTIZE_KRON: return "PPPPPPPPP" "IIIIII" "PP";
    case KernelKind::kQUANTIZE_PLAIN: return "PPPPPPP" "II" "PP";
    case KernelKind::kINT4_MATMUL: return "PPPPPP" "IIIIIIIII" "PP";
    case KernelKind::kSPLITK_REDUCE: return "PPPP" "IIII" "PP";
    }
    return "";
}

std::string describe(AotKernel const& k)
{
    std::string out = kindName(k.kernel);
    switch (k.kernel)
    {
    case KernelKind::kQUANTIZE_KRON:
        out += std::string(" (x ") + (k.xHalf ? "float16" : "float32") + ", tile " + std::to_string(k.d1p) + " x "
            + std::to_string(k.d2p) + ")";
        break;
    case KernelKind::kQUANTIZE_PLAIN: out += std::string(" (x ") + (k.xHalf ? "float16" : "float32") + ")"; break;
    case KernelKind::kINT4_MATMUL:
        out += " (A_KIND " + std::to_string(k.aKind) + ", " + std::to_string(k.bm) + " x " + std::to_string(k.bn)
            + " x " + std::to_string(k.bk) + (k.partial ? ", partial sums)" : ")");
        break;
    case KernelKind::kSPLITK_REDUCE: out += " (BN " + std::to_string(k.bn) + ")"; break;
    }
    return out + " for sm_" + std::to_string(k.arch);
}

//! Kernel arguments with storage: cuLaunchKernel reads each through a pointer to it.
class Args
{
public:
    Args& ptr(void const* p)
    {
        mPointers[mCount] = p;
        mSlots[mCount] = &mPointers[mCount];
        mLayout[mCount++] = 'P';
        return *this;
    }
    Args& i32(int64_t v)
    {
        mInts[mCount] = static_cast<int32_t>(v);
        mSlots[mCount] = &mInts[mCount];
        mLayout[mCount++] = 'I';
        return *this;
    }
    //! Triton's global and profile scratch pointers, null: the kernels use neither.
    Args& scratch()
    {
        return ptr(nullptr).ptr(nullptr);
    }
    std::string layout() const
    {
        return std::string(mLayout, static_cast<size_t>(mCount));
    }
    void** slots()
    {
        return mSlots;
    }

private:
    static constexpr int32_t kMAX = 24;
    void const* mPointers[kMAX]{};
    int32_t mInts[kMAX]{};
    void* mSlots[kMAX]{};
    char mLayout[kMAX]{};
    int32_t mCount{0};
};

struct DeviceProps
{
    int32_t sm{0};
    int32_t multiprocessors{1};
    int32_t sharedOptin{0};
    int32_t arch{0}; //!< the table's architecture for it, 0 when none
    std::string archError;
};

struct Function
{
    cu::Module module{nullptr};
    cu::Function function{nullptr};
};

std::mutex gMutex;
std::map<cu::Device, DeviceProps> gDevices;
//! (context, kKernels index) -> the loaded kernel. A context's modules live as long as it; with cuCtxGetId
//! the key is the context's unique id, so a new context at a freed one's address never finds them.
std::map<std::pair<unsigned long long, size_t>, Function> gFunctions;

struct Current
{
    cu::Driver const* driver{nullptr};
    unsigned long long contextKey{0};
    DeviceProps props;
};

std::string currentDevice(Current& out)
{
    std::string error;
    out.driver = cu::driver(&error);
    if (out.driver == nullptr)
    {
        return error;
    }
    cu::Driver const& d = *out.driver;
    cu::Context context = nullptr;
    cu::Result status = d.ctxGetCurrent(&context);
    if (status != cu::kSUCCESS || context == nullptr)
    {
        return "no current CUDA context on this thread (" + cu::resultText(status)
            + "): the launchers run in the caller's context, as TensorRT's enqueue provides";
    }
    unsigned long long id = 0;
    out.contextKey = (d.ctxGetId != nullptr && d.ctxGetId(context, &id) == cu::kSUCCESS)
        ? id
        : static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(context));
    cu::Device device = 0;
    status = d.ctxGetDevice(&device);
    if (status != cu::kSUCCESS)
    {
        return "cuCtxGetDevice failed: " + cu::resultText(status);
    }
    std::lock_guard<std::mutex> lock(gMutex);
    auto found = gDevices.find(device);
    if (found == gDevices.end())
    {
        int major = 0;
        int minor = 0;
        int sms = 0;
        int optin = 0;
        for (auto const& query : {std::make_pair(&major, cu::kATTR_COMPUTE_CAPABILITY_MAJOR),
                 std::make_pair(&minor, cu::kATTR_COMPUTE_CAPABILITY_MINOR),
                 std::make_pair(&sms, cu::kATTR_MULTIPROCESSOR_COUNT),
                 std::make_pair(&optin, cu::kATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)})
        {
            status = d.deviceGetAttribute(query.first, query.second, device);
            if (status != cu::kSUCCESS)
            {
                return "cuDeviceGetAttribute(" + std::to_string(query.second) + ") failed: " + cu::resultText(status);
            }
        }
        DeviceProps props;
        props.sm = major * 10 + minor;
        props.multiprocessors = std::max(1, sms);
        props.sharedOptin = optin;
        props.arch = aot::chooseArch(props.sm, &props.archError);
        found = gDevices.emplace(device, props).first;
    }
    out.props = found->second;
    if (out.props.arch == 0)
    {
        return out.props.archError;
    }
    return "";
}

//! The kKernels row of a variant for an architecture, or -1.
long findKernel(KernelKind kind, int32_t xHalf, int32_t d1p, int32_t d2p, int32_t aKind, int32_t bm, int32_t bn,
    int32_t bk, int32_t partial, int32_t arch)
{
    for (size_t i = 0; i < aot::kKernelCount; ++i)
    {
        AotKernel const& k = aot::kKernels[i];
        if (k.kernel == kind && k.arch == arch && k.xHalf == xHalf && k.d1p == d1p && k.d2p == d2p && k.aKind == aKind
            && k.bm == bm && k.bn == bn && k.bk == bk && k.partial == partial)
        {
            return static_cast<long>(i);
        }
    }
    return -1;
}

std::string missingKernel(KernelKind kind, Current const& current, std::string const& variant)
{
    return std::string("the plugin library has no ") + kindName(kind) + " cubin (" + variant + ") for sm_"
        + std::to_string(current.props.arch) + " (this GPU is sm_" + std::to_string(current.props.sm)
        + "): the ahead-of-time build left it out (see aot_kernels.json's left_out)";
}

//! The kernel of row `index` in the current context: loaded once per context, after checking that the
//! cubin takes the parameters the launcher passes and that its shared memory fits this GPU.
std::string loadFunction(Current const& current, size_t index, cu::Function& out)
{
    cu::Driver const& d = *current.driver;
    AotKernel const& k = aot::kKernels[index];
    std::lock_guard<std::mutex> lock(gMutex);
    auto const key = std::make_pair(current.contextKey, index);
    auto found = gFunctions.find(key);
    if (found != gFunctions.end())
    {
        out = found->second.function;
        return "";
    }
    aot::CubinInfo const info = aot::inspectCubin(k.image, k.imageSize, k.entry);
    if (!info.error.empty())
    {
        return "the " + describe(k) + " cubin is not usable: " + info.error;
    }
    std::string elfLayout;
    for (int32_t bytes : info.paramSizes)
    {
        elfLayout += bytes == 8 ? 'P' : (bytes == 4 ? 'I' : '?');
    }
    std::string const layout = layoutOf(k.kernel);
    if (elfLayout != layout || k.params != static_cast<int32_t>(layout.size()))
    {
        return "the " + describe(k) + " cubin takes parameters " + elfLayout + " (table: " + std::to_string(k.params)
            + "), the launcher passes " + layout + " (P pointer, I int32)";
    }
    cu::Module module = nullptr;
    cu::Result status = d.moduleLoadData(&module, k.image);
    if (status != cu::kSUCCESS)
    {
        std::string why = "cannot load the " + describe(k) + " cubin on this GPU (sm_" + std::to_string(current.props.sm)
            + "): " + cu::resultText(status);
        if (status == cu::kERROR_NO_BINARY_FOR_GPU && info.archSpecific)
        {
            why += "; it is compiled arch-specific (" + info.target + ")";
        }
        return why;
    }
    cu::Function function = nullptr;
    status = d.moduleGetFunction(&function, module, k.entry);
    int staticShared = 0;
    if (status == cu::kSUCCESS)
    {
        status = d.funcGetAttribute(&staticShared, cu::kFUNC_ATTR_SHARED_SIZE_BYTES, function);
    }
    std::string why;
    if (status != cu::kSUCCESS)
    {
        why = "cannot get kernel " + std::string(k.entry) + " of the " + describe(k) + " cubin: " + cu::resultText(status);
    }
    else if (static_cast<int64_t>(k.sharedBytes) + staticShared > current.props.sharedOptin)
    {
        why = describe(k) + " needs " + std::to_string(k.sharedBytes + staticShared)
            + " bytes of shared memory per block and this GPU (sm_" + std::to_string(current.props.sm) + ") allows "
            + std::to_string(current.props.sharedOptin);
    }
    else if (static_cast<int64_t>(k.sharedBytes) + staticShared > cu::kDEFAULT_SHARED_PER_BLOCK)
    {
        // Above 48 KiB a kernel must opt in, as Triton's own launcher does.
        status = d.funcSetAttribute(function, cu::kFUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES, k.sharedBytes);
        if (status != cu::kSUCCESS)
        {
            why = "cannot give " + describe(k) + " " + std::to_string(k.sharedBytes)
                + " bytes of dynamic shared memory: " + cu::resultText(status);
        }
    }
    if (!why.empty())
    {
        d.moduleUnload(module);
        return why;
    }
    gFunctions.emplace(key, Function{module, function});
    out = function;
    return "";
}

std::string launch(Current const& current, long index, uint64_t gridX, uint64_t gridY, uint64_t gridZ, Args& args,
    void* stream)
{
    AotKernel const& k = aot::kKernels[index];
    if (args.layout() != layoutOf(k.kernel))
    {
        return std::string("launcher error: ") + kindName(k.kernel) + " takes " + layoutOf(k.kernel) + ", got "
            + args.layout();
    }
    if (gridX > static_cast<uint64_t>(INT32_MAX) || gridY > 65535 || gridZ > 65535)
    {
        return describe(k) + ": grid " + std::to_string(gridX) + " x " + std::to_string(gridY) + " x "
            + std::to_string(gridZ) + " exceeds CUDA's limits (2^31 - 1 x 65535 x 65535)";
    }
    cu::Function function = nullptr;
    std::string error = loadFunction(current, static_cast<size_t>(index), function);
    if (!error.empty())
    {
        return error;
    }
    cu::Result const status = current.driver->launchKernel(function, static_cast<unsigned int>(gridX),
        static_cast<unsigned int>(gridY), static_cast<unsigned int>(gridZ), static_cast<unsigned int>(k.numWarps * 32),
        1, 1, static_cast<unsigned int>(k.sharedBytes), static_cast<cu::Stream>(stream), args.slots(), nullptr);
    if (status != cu::kSUCCESS)
    {
        return "launching " + describe(k) + " failed: " + cu::resultText(status);
    }
    return "";
}

//! Empty when p is usable: 16-byte aligned (as the cubins are compiled), and not null where `needed`.
std::string pointerProblem(char const* op, char const* name, void const* p, bool needed)
{
    if (needed && p == nullptr)
    {
        return std::string(op) + ": " + name + " is null";
    }
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
    {
        char address[32];
        std::snprintf(address, sizeof(address), "%p", p);
        return std::string(op) + ": " + name + " (" + address
            + ") is not 16-byte aligned; the kernels are compiled for 16-byte aligned tensors";
    }
    return "";
}

} // namespace

std::string quantizeUnsupported(QuantizeShape const& shape)
{
    if (shape.bits == 4 && shape.d > 0 && shape.d % 2 != 0)
    {
        return "FreeActQuantize with bits=4 packs pairs: d must be even (got " + std::to_string(shape.d) + ")";
    }
    if (!shape.kronecker || shape.d1 < 0 || shape.d2 < 0)
    {
        return ""; // the plain kernel takes any d (in chunks); unknown factors are checked at run time
    }
    if (aot::kronTile(shape.d1, shape.d2) == nullptr)
    {
        aot::KronTile const& largest = aot::kKronTiles[aot::kKronTileCount - 1];
        return "FreeActQuantize has no kernel tile for Kronecker factors " + std::to_string(shape.d1) + " x "
            + std::to_string(shape.d2) + ": the largest is " + std::to_string(largest.d1p) + " x "
            + std::to_string(largest.d2p) + " (d1 <= d2, as quantize.freeact.kron_dims splits d)";
    }
    if (shape.bits == 4 && shape.d2 % 2 != 0)
    {
        return "FreeActQuantize packs INT4 codes along the right factor, which must be even (Kronecker factors "
            + std::to_string(shape.d1) + " x " + std::to_string(shape.d2) + ")";
    }
    return "";
}

std::string currentDeviceUnsupported()
{
    try
    {
        std::string unused;
        cu::Driver const* d = cu::driver(&unused);
        cu::Context context = nullptr;
        if (d == nullptr || d->ctxGetCurrent(&context) != cu::kSUCCESS || context == nullptr)
        {
            return ""; // no GPU here: nothing to check against
        }
        Current current;
        std::string const error = currentDevice(current);
        return current.props.arch == 0 && current.props.sm != 0 ? error : "";
    }
    catch (std::exception const& e)
    {
        return e.what();
    }
}

std::string launchFreeActQuantize(void const* x, FloatType xType, int32_t const* types, float const* smooth,
    float const* kron1, float const* kron2, float const* masks, float const* clip, QuantizeShape const& shape,
    int8_t* codes, float* scale, void* stream)
{
    try
    {
        char const* op = "FreeActQuantize";
        if ((shape.bits != 4 && shape.bits != 8) || (shape.kronecker != 0 && shape.kronecker != 1))
        {
            return "FreeActQuantize: bits must be 4 or 8 and kronecker 0 or 1";
        }
        if (shape.tokens < 0 || shape.d < 0 || shape.numTypes <= 0
            || (shape.kronecker && (shape.d1 < 0 || shape.d2 < 0 || int64_t{shape.d1} * shape.d2 != shape.d)))
        {
            return "FreeActQuantize: invalid shape (tokens " + std::to_string(shape.tokens) + ", d "
                + std::to_string(shape.d) + ", d1 " + std::to_string(shape.d1) + ", d2 " + std::to_string(shape.d2)
                + ", K " + std::to_string(shape.numTypes) + ")";
        }
        if (shape.tokens == 0)
        {
            return "";
        }
        std::string error = quantizeUnsupported(shape);
        if (!error.empty())
        {
            return error;
        }
        bool const wide = shape.d > 0;
        bool const kron = shape.kronecker != 0;
        for (std::string const& problem : {pointerProblem(op, "x", x, wide), pointerProblem(op, "types", types, true),
                 pointerProblem(op, "smooth", smooth, wide), pointerProblem(op, "kron_1", kron ? kron1 : nullptr, kron && wide),
                 pointerProblem(op, "kron_2", kron ? kron2 : nullptr, kron && wide),
                 pointerProblem(op, "masks", masks, wide), pointerProblem(op, "clip", clip, true),
                 pointerProblem(op, "codes", codes, wide), pointerProblem(op, "scale", scale, true)})
        {
            if (!problem.empty())
            {
                return problem;
            }
        }
        Current current;
        error = currentDevice(current);
        if (!error.empty())
        {
            return "FreeActQuantize: " + error;
        }
        int32_t const xHalf = xType == FloatType::kFLOAT16 ? 1 : 0;
        Args args;
        long index = -1;
        if (kron)
        {
            aot::KronTile const* tile = aot::kronTile(shape.d1, shape.d2);
            index = findKernel(KernelKind::kQUANTIZE_KRON, xHalf, tile->d1p, tile->d2p, 0, 0, 0, 0, 0, current.props.arch);
            if (index < 0)
            {
                return missingKernel(KernelKind::kQUANTIZE_KRON, current,
                    "tile " + std::to_string(tile->d1p) + " x " + std::to_string(tile->d2p));
            }
            int64_t const stride1 = shape.kronPerType ? int64_t{shape.d1} * shape.d1 : 0;
            int64_t const stride2 = shape.kronPerType ? int64_t{shape.d2} * shape.d2 : 0;
            args.ptr(x).ptr(types).ptr(smooth).ptr(kron1).ptr(kron2).ptr(masks).ptr(clip).ptr(codes).ptr(scale);
            args.i32(shape.d).i32(shape.d1).i32(shape.d2).i32(stride1).i32(stride2).i32(shape.bits);
            args.i32(shape.numTypes).scratch();
        }
        else
        {
            index = findKernel(KernelKind::kQUANTIZE_PLAIN, xHalf, 0, 0, 0, 0, 0, 0, 0, current.props.arch);
            if (index < 0)
            {
                return missingKernel(KernelKind::kQUANTIZE_PLAIN, current, "no transform");
            }
            args.ptr(x).ptr(types).ptr(smooth).ptr(masks).ptr(clip).ptr(codes).ptr(scale);
            args.i32(shape.d).i32(shape.bits).i32(shape.numTypes).scratch();
        }
        // One program per token (launch.py: grid (tokens,)).
        return launch(current, index, static_cast<uint64_t>(shape.tokens), 1, 1, args, stream);
    }
    catch (std::exception const& e)
    {
        return std::string("FreeActQuantize: ") + e.what();
    }
}

size_t int4MatMulWorkspaceSize(int64_t maxTokens, int64_t k, int64_t n, int32_t groupSize)
{
    if (maxTokens <= 0 || k <= 0 || n <= 0 || groupSize < 0)
    {
        return 0;
    }
    size_t most = 0;
    for (size_t i = 0; i < aot::kMatmulTileCount; ++i)
    {
        aot::MatmulTile const& tile = aot::kMatmulTiles[i];
        int64_t const splits = aot::maxSplits(tile, k, groupSize);
        if (splits > 1)
        {
            // Only token counts of this tile's bucket take it: at most its maxTokens.
            int64_t const tokens = tile.maxTokens > 0 ? std::min<int64_t>(maxTokens, tile.maxTokens) : maxTokens;
            most = std::max(most, static_cast<size_t>(splits) * static_cast<size_t>(tokens) * static_cast<size_t>(n)
                    * sizeof(float));
        }
    }
    return most;
}

std::string launchInt4MatMul(int8_t const* codes, float const* scale, int8_t const* weight, float const* weightScale,
    float const* bias, MatMulShape const& shape, float* y, void* workspace, size_t workspaceBytes, void* stream)
{
    try
    {
        char const* op = "Int4MatMul";
        if ((shape.actBits != 4 && shape.actBits != 8) || shape.groupSize < 0 || shape.groupSize % 2 != 0)
        {
            return "Int4MatMul: act_bits must be 4 or 8 and group_size 0 or a positive even number";
        }
        if (shape.tokens < 0 || shape.n < 0 || shape.k < 0 || shape.k % 2 != 0 || shape.k > kMaxInnerDim
            || shape.tokens > INT32_MAX || (shape.groupSize > 0 && shape.k % shape.groupSize != 0))
        {
            return "Int4MatMul: invalid shape (tokens " + std::to_string(shape.tokens) + ", k "
                + std::to_string(shape.k) + ", n " + std::to_string(shape.n) + ", group_size "
                + std::to_string(shape.groupSize) + ")";
        }
        if (shape.tokens == 0 || shape.n == 0)
        {
            return "";
        }
        int64_t const groups = shape.groupSize > 0 ? shape.k / shape.groupSize : 1;
        bool const deep = shape.k > 0;
        for (std::string const& problem : {pointerProblem(op, "codes", codes, deep),
                 pointerProblem(op, "scale", scale, true), pointerProblem(op, "weight", weight, deep),
                 pointerProblem(op, "weight_scale", weightScale, groups > 0), pointerProblem(op, "bias", bias, false),
                 pointerProblem(op, "y", y, true), pointerProblem(op, "workspace", workspace, false)})
        {
            if (!problem.empty())
            {
                return problem;
            }
        }
        Current current;
        std::string error = currentDevice(current);
        if (!error.empty())
        {
            return "Int4MatMul: " + error;
        }
        int32_t const aKind = shape.actBits == 4 ? 0 : 1;
        aot::MatmulTile const& tile = aot::matmulTile(shape.tokens);
        aot::SplitPlan const plan
            = aot::splitPlan(tile, shape.n, shape.k, shape.groupSize, current.props.multiprocessors);
        // launch.py passes any valid tensor where the kernel reads nothing (no bias).
        float const* biasArg = bias != nullptr ? bias : weightScale;
        int32_t const hasBias = bias != nullptr ? 1 : 0;
        uint64_t const gridX = static_cast<uint64_t>(ceilDiv(shape.tokens, tile.bm));
        uint64_t const gridY = static_cast<uint64_t>(ceilDiv(shape.n, tile.bn));
        int32_t const partial = plan.splits > 1 ? 1 : 0;
        long const index
            = findKernel(KernelKind::kINT4_MATMUL, 0, 0, 0, aKind, tile.bm, tile.bn, tile.bk, partial, current.props.arch);
        if (index < 0)
        {
            return missingKernel(KernelKind::kINT4_MATMUL, current,
                "A_KIND " + std::to_string(aKind) + ", " + std::to_string(tile.bm) + " x " + std::to_string(tile.bn)
                    + " x " + std::to_string(tile.bk) + (partial ? ", partial sums" : ""));
        }
        Args args;
        args.ptr(codes).ptr(scale).ptr(weight).ptr(weightScale).ptr(biasArg);
        if (!partial)
        {
            args.ptr(y).i32(shape.tokens).i32(shape.n).i32(shape.k).i32(plan.segLen).i32(plan.segs);
            args.i32(plan.segsPerSplit).i32(plan.wsSegDiv).i32(groups).i32(hasBias).scratch();
            return launch(current, index, gridX, gridY, 1, args, stream);
        }
        // Split-K: fp32 partial sums [splits, tokens, n] in the workspace, then splitk_reduce adds them in
        // split order and applies the epilogue (launch.py's two launches).
        size_t const needed = static_cast<size_t>(plan.splits) * static_cast<size_t>(shape.tokens)
            * static_cast<size_t>(shape.n) * sizeof(float);
        if (workspace == nullptr || workspaceBytes < needed)
        {
            return "Int4MatMul: split-K in " + std::to_string(plan.splits) + " needs " + std::to_string(needed)
                + " bytes of workspace, got " + std::to_string(workspace == nullptr ? 0 : workspaceBytes);
        }
        long const reduce
            = findKernel(KernelKind::kSPLITK_REDUCE, 0, 0, 0, 0, 0, aot::kReduceBn, 0, 0, current.props.arch);
        if (reduce < 0)
        {
            // One splitk_reduce serves both A_KINDs: it scales unless A_KIND is 2 (float activations).
            return missingKernel(KernelKind::kSPLITK_REDUCE, current, "BN " + std::to_string(aot::kReduceBn));
        }
        args.ptr(workspace).i32(shape.tokens).i32(shape.n).i32(shape.k).i32(plan.segLen).i32(plan.segs);
        args.i32(plan.segsPerSplit).i32(plan.wsSegDiv).i32(groups).i32(0).scratch();
        error = launch(current, index, gridX, gridY, static_cast<uint64_t>(plan.splits), args, stream);
        if (!error.empty())
        {
            return error;
        }
        Args reduceArgs;
        reduceArgs.ptr(workspace).ptr(scale).ptr(biasArg).ptr(y);
        reduceArgs.i32(shape.tokens).i32(shape.n).i32(plan.splits).i32(hasBias).scratch();
        return launch(current, reduce, static_cast<uint64_t>(shape.tokens),
            static_cast<uint64_t>(ceilDiv(shape.n, aot::kReduceBn)), 1, reduceArgs, stream);
    }
    catch (std::exception const& e)
    {
        return std::string("Int4MatMul: ") + e.what();
    }
}

} // namespace freeact
