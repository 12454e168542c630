// Plain C entry points into the kernels, for callers without C++ or TensorRT headers: the torch
// bindings call them through ctypes with the data pointers of torch tensors and the current CUDA
// stream (freeact_export/runtime/kernels.py). Each returns a cudaError_t value (0 = success);
// sizes are checked as in kernels/freeActKernels.h. Exported with default visibility.
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

//! x_type: 0 float32, 1 float16, 2 bfloat16. kron_per_type, kronecker: 0/1. bits: 4 or 8.
int32_t freeactQuantize(void const* x, int32_t x_type, int32_t const* types, float const* smooth, float const* kron1,
    float const* kron2, float const* masks, float const* clip, int64_t tokens, int32_t d, int32_t d1, int32_t d2,
    int32_t num_types, int32_t kron_per_type, int32_t kronecker, int32_t bits, int8_t* codes, float* scale,
    void* stream);

//! y_type: 0 float32, 1 float16, 2 bfloat16. bias may be NULL.
int32_t freeactInt4MatMul(int8_t const* codes, float const* scale, int8_t const* weight, float const* weight_scale,
    float const* bias, int64_t tokens, int32_t k, int32_t n, int32_t act_bits, int32_t group_size, void* y,
    int32_t y_type, void* stream);

//! Version of this C interface (bumped on any signature change), so Python can refuse a stale library.
int32_t freeactCApiVersion(void);

#ifdef __cplusplus
}
#endif
