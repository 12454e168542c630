// The CUDA driver API, loaded with dlopen("libcuda.so.1") on first use: the library links neither
// libcuda nor the CUDA runtime, so it loads on a machine without a GPU or a driver (building
// engines' plugin graphs, the host test) and needs the driver only to launch a kernel.
//
// Own minimal declarations, no cuda.h: the handle types are the driver's own opaque structs (the
// same ones cuda_runtime_api.h forward-declares, so a cudaStream_t is a CUstream here), and only
// the functions, attributes and enum values used by the launchers (aotLaunch.cpp) and the host
// test's run mode (tests/hostRun.cpp). Versioned entry points are looked up by their versioned
// names (cuMemAlloc_v2, ...), as cuda.h's macros would spell them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

struct CUctx_st;
struct CUmod_st;
struct CUfunc_st;
struct CUstream_st;

namespace freeact
{
namespace cu
{

using Result = int32_t; //!< CUresult
using Device = int32_t; //!< CUdevice
using Context = CUctx_st*;
using Module = CUmod_st*;
using Function = CUfunc_st*;
using Stream = CUstream_st*;
using DevicePtr = unsigned long long; //!< CUdeviceptr

constexpr Result kSUCCESS = 0;
constexpr Result kERROR_NO_DEVICE = 100;
constexpr Result kERROR_NO_BINARY_FOR_GPU = 209;

// CUdevice_attribute values
constexpr int32_t kATTR_MULTIPROCESSOR_COUNT = 16;
constexpr int32_t kATTR_COMPUTE_CAPABILITY_MAJOR = 75;
constexpr int32_t kATTR_COMPUTE_CAPABILITY_MINOR = 76;
constexpr int32_t kATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
// CUfunction_attribute values
constexpr int32_t kFUNC_ATTR_SHARED_SIZE_BYTES = 1;
constexpr int32_t kFUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
// CUstream_flags
constexpr uint32_t kSTREAM_NON_BLOCKING = 1;
//! Dynamic shared memory a kernel may use without CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES.
constexpr int64_t kDEFAULT_SHARED_PER_BLOCK = 48 * 1024;

//! The driver's entry points. Every pointer is set when driver() returns non-null, except the
//! optional ones marked so (absent from older drivers).
struct Driver
{
    Result (*init)(unsigned int flags);
    Result (*getErrorName)(Result error, char const** name);
    Result (*getErrorString)(Result error, char const** text);
    Result (*deviceGetCount)(int* count);
    Result (*deviceGet)(Device* device, int ordinal);
    Result (*deviceGetAttribute)(int* value, int32_t attribute, Device device);
    Result (*ctxGetCurrent)(Context* context);
    Result (*ctxSetCurrent)(Context context);
    Result (*ctxGetDevice)(Device* device);
    Result (*ctxGetId)(Context context, unsigned long long* id); //!< optional (CUDA 12.0 drivers on)
    Result (*devicePrimaryCtxRetain)(Context* context, Device device);
    Result (*devicePrimaryCtxRelease)(Device device);
    Result (*moduleLoadData)(Module* module, void const* image);
    Result (*moduleUnload)(Module module);
    Result (*moduleGetFunction)(Function* function, Module module, char const* name);
    Result (*funcGetAttribute)(int* value, int32_t attribute, Function function);
    Result (*funcSetAttribute)(Function function, int32_t attribute, int value);
    Result (*launchKernel)(Function function, unsigned int gridX, unsigned int gridY, unsigned int gridZ,
        unsigned int blockX, unsigned int blockY, unsigned int blockZ, unsigned int sharedBytes, Stream stream,
        void** params, void** extra);
    Result (*memAlloc)(DevicePtr* ptr, size_t bytes);
    Result (*memFree)(DevicePtr ptr);
    Result (*memcpyHtoD)(DevicePtr dst, void const* src, size_t bytes);
    Result (*memcpyDtoH)(void* dst, DevicePtr src, size_t bytes);
    Result (*memsetD8)(DevicePtr dst, unsigned char value, size_t count);
    Result (*streamCreate)(Stream* stream, unsigned int flags);
    Result (*streamSynchronize)(Stream stream);
    Result (*streamDestroy)(Stream stream);
};

//! The driver, loaded and cuInit-ed once (thread-safe); null when libcuda.so.1 cannot be loaded, lacks an
//! entry point or cuInit fails; then *error (if given) says why, in one sentence.
Driver const* driver(std::string* error = nullptr) noexcept;

//! "CUDA_ERROR_X (the driver's description)" for a result code; works without a driver too.
std::string resultText(Result result);

} // namespace cu
} // namespace freeact
