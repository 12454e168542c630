// Torch-free launchers of the two custom ops' CUDA kernels: the one place both the TensorRT
// plugins and the ctypes torch bindings (api/freeActCApi.h) call. The semantics are the op
// schemas' (freeact_export/ops/schema.py, `python -m freeact_export.ops.schema`), and the
// NumPy reference (freeact_export/ops/reference.py) is what the kernels are tested against.
//
// Packed INT4 everywhere: int8 [..., K/2]; byte i holds element 2i in its low nibble and
// element 2i+1 in its high nibble, 4-bit two's complement. Launchers check sizes, never
// throw, launch on the given stream only, and return the first CUDA error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

namespace freeact
{

//! Element type of a float tensor crossing the launcher boundary.
enum class FloatType : int32_t
{
    kFLOAT32 = 0,
    kFLOAT16 = 1,
    kBFLOAT16 = 2,
};

//! Shapes and attributes of one FreeActQuantize call (see the FreeActQuantize schema).
struct QuantizeShape
{
    int64_t tokens{0};    //!< rows of x (all leading dims flattened)
    int32_t d{0};         //!< features per token; even when bits == 4
    int32_t d1{1};        //!< left Kronecker factor's order (d1 * d2 == d when kronecker)
    int32_t d2{1};        //!< right Kronecker factor's order
    int32_t numTypes{1};  //!< K: rows of masks and clip
    int32_t kronPerType{0}; //!< 1: kron1/kron2 hold K pairs [K, d1, d1] / [K, d2, d2]; 0: one shared pair
    int32_t kronecker{1}; //!< 0: no transform (kron1/kron2 are ignored)
    int32_t bits{4};      //!< 4 (codes packed [tokens, d/2]) or 8 (codes [tokens, d])
};

//! y = ((x / smooth) (kron1[t] ⊗ kron2[t])) ⊙ masks[t] in float32 for a token of type t, then
//! scale = amax|y| · clip[t] / qmax (1 where that is 0) and codes = clamp(rint(y / scale), -qmax-1, qmax).
//! Types outside [0, K) are clamped into range (the op contract forbids them; the kernel must not read
//! out of bounds).
cudaError_t launchFreeActQuantize(void const* x, FloatType xType, int32_t const* types, float const* smooth,
    float const* kron1, float const* kron2, float const* masks, float const* clip, QuantizeShape const& shape,
    int8_t* codes, float* scale, cudaStream_t stream) noexcept;

//! The current device and the dynamic shared memory per block launchFreeActQuantize may use on it (the
//! opt-in maximum less the kernels' static part); quantizeLaunchPlan.h says what fits in it.
cudaError_t quantizeSmemBudget(int* device, size_t* bytes) noexcept;

//! Shapes and attributes of one Int4MatMul call (see the Int4MatMul schema).
struct MatMulShape
{
    int64_t tokens{0};     //!< rows of the activations
    int32_t k{0};          //!< inner dimension d (even)
    int32_t n{0};          //!< output channels
    int32_t actBits{4};    //!< 4: codes packed [tokens, k/2]; 8: codes [tokens, k]
    int32_t groupSize{0};  //!< 0: weightScale [n, 1]; else weightScale [n, k / groupSize]
};

//! y[t, j] = scale[t] · Σ_g weightScale[j, g] · (Σ_{i in g} a[t, i] w[j, i]) + bias[j]; inner sums exact int32.
//! weight: packed INT4 [n, k/2] in the canonical layout above; bias may be null (no bias).
//! Chooses the decode path (weights streamed, few tokens) or the prefill path (INT8 tensor cores) itself.
cudaError_t launchInt4MatMul(int8_t const* codes, float const* scale, int8_t const* weight, float const* weightScale,
    float const* bias, MatMulShape const& shape, void* y, FloatType yType, cudaStream_t stream) noexcept;

} // namespace freeact
