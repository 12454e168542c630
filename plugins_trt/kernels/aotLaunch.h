// Torch-free launchers of the two custom ops' kernels: the Triton kernels of
// freeact_export/kernels/, compiled ahead of time to cubins (aotKernels.h) and launched through the
// CUDA driver API (cudaDriver.h, loaded at first use). The semantics are the op schemas'
// (freeact_export/ops/schema.py); freeact_export/kernels/launch.py launches the same kernels from
// torch and is the reference for every choice made here: grid, arguments, tiles, split-K.
//
// Packed INT4 everywhere: int8 [..., K/2]; byte i holds element 2i in its low nibble and element
// 2i+1 in its high nibble, 4-bit two's complement. The launchers check what they are given, launch
// on the given stream only, and return an error message (empty: launched) instead of throwing.
#pragma once

#include "aotKernels.h"
#include "aotSelect.h"

#include <cstddef>
#include <cstdint>
#include <string>

namespace freeact
{

//! Element type of a float tensor crossing the launcher boundary (the cubins hold these two for x).
enum class FloatType : int32_t
{
    kFLOAT32 = 0,
    kFLOAT16 = 1,
};

//! Shapes and attributes of one FreeActQuantize call (see the FreeActQuantize schema).
struct QuantizeShape
{
    int64_t tokens{0};      //!< rows of x (all leading dims flattened)
    int32_t d{0};           //!< features per token; even when bits == 4
    int32_t d1{1};          //!< left Kronecker factor's order (d1 * d2 == d when kronecker)
    int32_t d2{1};          //!< right Kronecker factor's order
    int32_t numTypes{1};    //!< K: rows of masks and clip
    int32_t kronPerType{0}; //!< 1: kron1/kron2 hold K pairs [K, d1, d1] / [K, d2, d2]; 0: one shared pair
    int32_t kronecker{1};   //!< 0: no transform (kron1/kron2 are ignored)
    int32_t bits{4};        //!< 4 (codes packed [tokens, d/2]) or 8 (codes [tokens, d])
};

//! Shapes and attributes of one Int4MatMul call (see the Int4MatMul schema).
struct MatMulShape
{
    int64_t tokens{0};    //!< rows of the activations
    int32_t k{0};         //!< inner dimension d (even)
    int32_t n{0};         //!< output channels
    int32_t actBits{4};   //!< 4: codes packed [tokens, k/2]; 8: codes [tokens, k]
    int32_t groupSize{0}; //!< 0: weightScale [n, 1]; else weightScale [n, k / groupSize]
};

//! The largest inner dimension Int4MatMul takes: a segment's int32 sum of products (|a · w| <= 128 · 8)
//! cannot overflow below it (65536 · 1024 = 2^26), with room to spare.
constexpr int32_t kMaxInnerDim = 65536;

//! Empty when FreeActQuantize has a kernel for the shape (unknown extents, < 0, count as fine); else
//! why not, in one sentence: a Kronecker pair no tile holds, or an odd right factor with INT4 packing
//! (the messages of launch.py's unsupported_tile). Needs no GPU: the plugin refuses at build time.
std::string quantizeUnsupported(QuantizeShape const& shape);

//! Empty when the current CUDA device has cubins in this library, or when there is nothing to check
//! (no driver, no current context: building on a machine without a GPU); else the error a launch
//! would give (the device's sm_XY and the architectures the library holds).
std::string currentDeviceUnsupported();

//! y = ((x / smooth) (kron1[t] ⊗ kron2[t])) ⊙ masks[t] in float32 for a token of type t, then
//! scale = amax|y| · clip[t] / qmax (1 where that is 0) and codes = clamp(rint(y / scale), -qmax-1, qmax).
//! Types must lie in [0, K) (the op contract; the kernel clamps any other into range, reading nothing
//! out of bounds). Every pointer must be
//! 16-byte aligned (the cubins are compiled so). `stream` is a CUstream / cudaStream_t.
std::string launchFreeActQuantize(void const* x, FloatType xType, int32_t const* types, float const* smooth,
    float const* kron1, float const* kron2, float const* masks, float const* clip, QuantizeShape const& shape,
    int8_t* codes, float* scale, void* stream);

//! Workspace for the split-K partial sums of an Int4MatMul with at most maxTokens tokens, whatever the
//! GPU: splits × min(maxTokens, the split-K tile's tokens) × n × 4 bytes, with splits the most
//! split_plan gives for any number of multiprocessors; 0 where no split happens.
size_t int4MatMulWorkspaceSize(int64_t maxTokens, int64_t k, int64_t n, int32_t groupSize);

//! y[t, j] = scale[t] · Σ_g weightScale[j, g] · (Σ_{i in g} a[t, i] w[j, i]) + bias[j] in float32.
//! weight: packed INT4 [n, k/2]; bias may be null (no bias). Chooses the tile by token count and splits
//! K as launch.py does; split-K partial sums go to `workspace` (workspaceBytes of it, 16-byte aligned,
//! at least int4MatMulWorkspaceSize(tokens, ...)).
std::string launchInt4MatMul(int8_t const* codes, float const* scale, int8_t const* weight, float const* weightScale,
    float const* bias, MatMulShape const& shape, float* y, void* workspace, size_t workspaceBytes, void* stream);

} // namespace freeact
