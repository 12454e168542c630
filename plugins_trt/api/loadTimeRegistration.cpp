// Registration at load time, for loaders that only dlopen the library and expect its creators in
// TensorRT's registry afterwards: Polygraphy --plugins, Triton's TensorRT backend
// (--backend-config=tensorrt,plugins=...), LD_PRELOAD, trtexec --staticPlugins.
//
// libnvinfer is never linked: its getPluginRegistry is looked up in the running process, and when
// TensorRT is not loaded (yet) nothing happens. When TensorRT's own IPluginRegistry::loadLibrary is
// the one loading the library, nothing happens either: loadLibrary registers what getCreators
// returns and fails if any of those creators is registered already.
#include "pluginCreators.h"

#include "../common/pluginLogger.h"

#include <cstring>
#include <dlfcn.h>
#include <link.h>
#include <string>
#include <unwind.h>
#include <vector>

namespace freeact
{
namespace plugin
{
namespace
{

//! libnvinfer.so.10, libnvinfer_lean.so.10, libnvinfer_dispatch.so.10, ... by file name.
bool isTensorRTLibrary(char const* path) noexcept
{
    if (path == nullptr)
    {
        return false;
    }
    char const* slash = std::strrchr(path, '/');
    char const* base = slash != nullptr ? slash + 1 : path;
    return std::strncmp(base, "libnvinfer", std::strlen("libnvinfer")) == 0;
}

//! A symbol of the TensorRT library in this process, or null. The global scope is searched first;
//! then the TensorRT libraries loaded privately (RTLD_LOCAL, as Python's tensorrt module loads them).
void* findTensorRTSymbol(char const* symbol)
{
    if (void* address = dlsym(RTLD_DEFAULT, symbol))
    {
        return address;
    }
    std::vector<std::string> paths;
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t /*size*/, void* data) -> int {
            if (isTensorRTLibrary(info->dlpi_name))
            {
                static_cast<std::vector<std::string>*>(data)->emplace_back(info->dlpi_name);
            }
            return 0;
        },
        &paths);
    // dlopen outside dl_iterate_phdr, which holds the loader's lock.
    for (std::string const& path : paths)
    {
        // RTLD_NOLOAD: only a library that is loaded already; the handle takes no lasting reference.
        if (void* handle = dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD))
        {
            void* address = dlsym(handle, symbol);
            dlclose(handle);
            if (address != nullptr)
            {
                return address;
            }
        }
    }
    return nullptr;
}

//! Whether code of a TensorRT library is on the stack, i.e. IPluginRegistry::loadLibrary (or an
//! engine carrying its plugin library) is dlopen-ing this library.
bool loadedByTensorRT() noexcept
{
    struct Walk
    {
        bool found{false};
        int32_t frames{0};
    } walk;
    _Unwind_Backtrace(
        [](_Unwind_Context* context, void* data) -> _Unwind_Reason_Code {
            auto* state = static_cast<Walk*>(data);
            Dl_info info{};
            auto const address = reinterpret_cast<void*>(_Unwind_GetIP(context));
            if (address != nullptr && dladdr(address, &info) != 0 && isTensorRTLibrary(info.dli_fname))
            {
                state->found = true;
                return _URC_END_OF_STACK;
            }
            return ++state->frames < 128 ? _URC_NO_REASON : _URC_END_OF_STACK;
        },
        &walk);
    return walk.found;
}

class LoadTimeRegistration
{
public:
    LoadTimeRegistration() noexcept
    {
        try
        {
            using GetRegistry = nvinfer1::IPluginRegistry* (*) ();
            using GetLogger = nvinfer1::ILogger* (*) ();
            auto getRegistry = reinterpret_cast<GetRegistry>(findTensorRTSymbol("getPluginRegistry"));
            if (getRegistry == nullptr || loadedByTensorRT())
            {
                return;
            }
            if (auto getLogger = reinterpret_cast<GetLogger>(findTensorRTSymbol("getLogger")))
            {
                setFallbackLogger(getLogger());
            }
            nvinfer1::IPluginRegistry* registry = getRegistry();
            if (registry == nullptr)
            {
                return;
            }
            int32_t count = 0;
            nvinfer1::IPluginCreatorInterface* const* creators = pluginCreators(count);
            for (int32_t i = 0; i < count; ++i)
            {
                auto* creator = static_cast<nvinfer1::IPluginCreatorV3One*>(creators[i]);
                if (registry->getCreator(creator->getPluginName(), creator->getPluginVersion(),
                        creator->getPluginNamespace())
                    != nullptr)
                {
                    logMessage(nvinfer1::ILogger::Severity::kWARNING,
                        std::string(creator->getPluginName()) + " version " + creator->getPluginVersion()
                            + " is registered already (another copy of the library?); keeping that one");
                    continue;
                }
                if (registry->registerCreator(*creators[i], creator->getPluginNamespace()))
                {
                    mRegistered.push_back(creators[i]);
                }
                else
                {
                    logError(std::string("cannot register the ") + creator->getPluginName() + " plugin creator");
                }
            }
            mRegistry = registry;
        }
        catch (...)
        {
            // Loading the library must never fail because of this convenience.
        }
    }

    ~LoadTimeRegistration()
    {
        // On dlclose the creators die with the library: TensorRT must not keep pointers to them.
        for (nvinfer1::IPluginCreatorInterface* creator : mRegistered)
        {
            mRegistry->deregisterCreator(*creator);
        }
    }

    LoadTimeRegistration(LoadTimeRegistration const&) = delete;
    LoadTimeRegistration& operator=(LoadTimeRegistration const&) = delete;

private:
    nvinfer1::IPluginRegistry* mRegistry{nullptr};
    std::vector<nvinfer1::IPluginCreatorInterface*> mRegistered;
};

LoadTimeRegistration const kLOAD_TIME_REGISTRATION;

} // namespace
} // namespace plugin
} // namespace freeact
