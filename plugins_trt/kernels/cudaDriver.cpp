#include "cudaDriver.h"

#include <dlfcn.h>

namespace freeact
{
namespace cu
{
namespace
{

struct Loaded
{
    Driver api{};
    bool ok{false};
    std::string error;
};

template <typename Fn>
bool bind(void* handle, char const* name, Fn& slot, std::string& missing)
{
    slot = reinterpret_cast<Fn>(dlsym(handle, name));
    if (slot == nullptr && missing.empty())
    {
        missing = name;
    }
    return slot != nullptr;
}

Loaded load()
{
    Loaded out;
    // RTLD_LOCAL: the process' own libcuda (loaded by the CUDA runtime or TensorRT) is found and
    // shared; nothing of it leaks into the global namespace through us.
    void* handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr)
    {
        char const* why = dlerror();
        out.error = std::string("cannot load the CUDA driver (") + (why != nullptr ? why : "libcuda.so.1 not found")
            + "); running the plugins' kernels needs an NVIDIA GPU and its driver";
        return out;
    }
    Driver& d = out.api;
    std::string missing;
    bind(handle, "cuInit", d.init, missing);
    bind(handle, "cuGetErrorName", d.getErrorName, missing);
    bind(handle, "cuGetErrorString", d.getErrorString, missing);
    bind(handle, "cuDeviceGetCount", d.deviceGetCount, missing);
    bind(handle, "cuDeviceGet", d.deviceGet, missing);
    bind(handle, "cuDeviceGetAttribute", d.deviceGetAttribute, missing);
    bind(handle, "cuCtxGetCurrent", d.ctxGetCurrent, missing);
    bind(handle, "cuCtxSetCurrent", d.ctxSetCurrent, missing);
    bind(handle, "cuCtxGetDevice", d.ctxGetDevice, missing);
    bind(handle, "cuDevicePrimaryCtxRetain", d.devicePrimaryCtxRetain, missing);
    bind(handle, "cuDevicePrimaryCtxRelease_v2", d.devicePrimaryCtxRelease, missing);
    bind(handle, "cuModuleLoadData", d.moduleLoadData, missing);
    bind(handle, "cuModuleUnload", d.moduleUnload, missing);
    bind(handle, "cuModuleGetFunction", d.moduleGetFunction, missing);
    bind(handle, "cuFuncGetAttribute", d.funcGetAttribute, missing);
    bind(handle, "cuFuncSetAttribute", d.funcSetAttribute, missing);
    bind(handle, "cuLaunchKernel", d.launchKernel, missing);
    bind(handle, "cuMemAlloc_v2", d.memAlloc, missing);
    bind(handle, "cuMemFree_v2", d.memFree, missing);
    bind(handle, "cuMemcpyHtoD_v2", d.memcpyHtoD, missing);
    bind(handle, "cuMemcpyDtoH_v2", d.memcpyDtoH, missing);
    bind(handle, "cuMemsetD8_v2", d.memsetD8, missing);
    bind(handle, "cuStreamCreate", d.streamCreate, missing);
    bind(handle, "cuStreamSynchronize", d.streamSynchronize, missing);
    bind(handle, "cuStreamDestroy_v2", d.streamDestroy, missing);
    if (!missing.empty())
    {
        out.error = "the CUDA driver (libcuda.so.1) has no " + missing + "; it is too old for these plugins";
        return out; // the handle stays open: a driver is never unloaded from a process anyway
    }
    std::string optional;
    bind(handle, "cuCtxGetId", d.ctxGetId, optional);
    Result const status = d.init(0);
    if (status != kSUCCESS)
    {
        char const* name = nullptr;
        d.getErrorName(status, &name);
        out.error = std::string("cuInit failed (") + (name != nullptr ? name : std::to_string(status).c_str())
            + (status == kERROR_NO_DEVICE ? ": no CUDA device" : "") + ")";
        return out;
    }
    out.ok = true;
    return out;
}

} // namespace

Driver const* driver(std::string* error) noexcept
{
    try
    {
        static Loaded const loaded = load(); // initialised once, thread-safe (C++11 statics)
        if (!loaded.ok)
        {
            if (error != nullptr)
            {
                *error = loaded.error;
            }
            return nullptr;
        }
        return &loaded.api;
    }
    catch (...)
    {
        return nullptr; // out of memory while loading
    }
}

std::string resultText(Result result)
{
    std::string unused;
    Driver const* d = driver(&unused);
    char const* name = nullptr;
    char const* text = nullptr;
    if (d != nullptr)
    {
        d->getErrorName(result, &name);
        d->getErrorString(result, &text);
    }
    std::string out = name != nullptr ? name : "CUDA error " + std::to_string(result);
    if (text != nullptr)
    {
        out += std::string(" (") + text + ")";
    }
    return out;
}

} // namespace cu
} // namespace freeact
