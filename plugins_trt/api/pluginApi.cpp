// The TensorRT 10 dynamic-plugin interface (IPluginRegistry::loadLibrary, trtexec
// --dynamicPlugins): getCreators lists the creators, setLoggerFinder gives them a logger.
#include "pluginCreators.h"

#include "../common/pluginLogger.h"
#include "../freeActQuantizePlugin/freeActQuantizePlugin.h"
#include "../int4MatMulPlugin/int4MatMulPlugin.h"

#define FREEACT_EXPORT __attribute__((visibility("default")))

namespace freeact
{
namespace plugin
{

nvinfer1::IPluginCreatorInterface* const* pluginCreators(int32_t& count) noexcept
{
    // Function-local statics: built on first use, so the load-time registration may run first.
    static FreeActQuantizeCreator quantizeCreator;
    static Int4MatMulCreator matMulCreator;
    static nvinfer1::IPluginCreatorInterface* const kCREATORS[] = {&quantizeCreator, &matMulCreator};
    count = static_cast<int32_t>(sizeof(kCREATORS) / sizeof(kCREATORS[0]));
    return kCREATORS;
}

} // namespace plugin
} // namespace freeact

extern "C" FREEACT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    return freeact::plugin::pluginCreators(nbCreators);
}

extern "C" FREEACT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    freeact::plugin::setLoggerFinder(finder);
}
