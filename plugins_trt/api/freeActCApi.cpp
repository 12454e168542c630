// extern "C" entry points of api/freeActCApi.h: build the launchers' shape structs and forward. The
// stream arrives as void* (ctypes passes torch.cuda.current_stream().cuda_stream); null = legacy default.
#include "freeActCApi.h"

#include "../kernels/freeActKernels.h"

#define FREEACT_C_API extern "C" __attribute__((visibility("default")))

namespace
{

constexpr int32_t kCApiVersion = 1;

bool toFloatType(int32_t code, freeact::FloatType& out)
{
    if (code < 0 || code > 2)
    {
        return false;
    }
    out = static_cast<freeact::FloatType>(code);
    return true;
}

} // namespace

FREEACT_C_API int32_t freeactQuantize(void const* x, int32_t x_type, int32_t const* types, float const* smooth,
    float const* kron1, float const* kron2, float const* masks, float const* clip, int64_t tokens, int32_t d,
    int32_t d1, int32_t d2, int32_t num_types, int32_t kron_per_type, int32_t kronecker, int32_t bits, int8_t* codes,
    float* scale, void* stream)
{
    freeact::FloatType xType{};
    if (!toFloatType(x_type, xType))
    {
        return static_cast<int32_t>(cudaErrorInvalidValue);
    }
    freeact::QuantizeShape shape;
    shape.tokens = tokens;
    shape.d = d;
    shape.d1 = d1;
    shape.d2 = d2;
    shape.numTypes = num_types;
    shape.kronPerType = kron_per_type;
    shape.kronecker = kronecker;
    shape.bits = bits;
    return static_cast<int32_t>(freeact::launchFreeActQuantize(x, xType, types, smooth, kron1, kron2, masks, clip,
        shape, codes, scale, static_cast<cudaStream_t>(stream)));
}

FREEACT_C_API int32_t freeactInt4MatMul(int8_t const* codes, float const* scale, int8_t const* weight,
    float const* weight_scale, float const* bias, int64_t tokens, int32_t k, int32_t n, int32_t act_bits,
    int32_t group_size, void* y, int32_t y_type, void* stream)
{
    freeact::FloatType yType{};
    if (!toFloatType(y_type, yType))
    {
        return static_cast<int32_t>(cudaErrorInvalidValue);
    }
    freeact::MatMulShape shape;
    shape.tokens = tokens;
    shape.k = k;
    shape.n = n;
    shape.actBits = act_bits;
    shape.groupSize = group_size;
    return static_cast<int32_t>(freeact::launchInt4MatMul(codes, scale, weight, weight_scale, bias, shape, y, yType,
        static_cast<cudaStream_t>(stream)));
}

FREEACT_C_API int32_t freeactCApiVersion(void)
{
    return kCApiVersion;
}
