// The library's plugin creators, one instance each for the life of the library.
#pragma once

#include "NvInferRuntime.h"

#include <cstdint>

namespace freeact
{
namespace plugin
{

//! Both creators (FreeActQuantize, Int4MatMul); count is set to their number.
nvinfer1::IPluginCreatorInterface* const* pluginCreators(int32_t& count) noexcept;

} // namespace plugin
} // namespace freeact
