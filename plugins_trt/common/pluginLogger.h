// Where the plugins' messages go: the ILogger of the ILoggerFinder that TensorRT hands to
// setLoggerFinder (IPluginRegistry::loadLibrary does), else the process logger of a libnvinfer
// found at load time (self-registration), else nowhere. Never throws.
#pragma once

#include "NvInferRuntime.h"

#include <string>

namespace freeact
{
namespace plugin
{

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! Used only while no logger finder is set.
void setFallbackLogger(nvinfer1::ILogger* logger) noexcept;

void logMessage(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;

inline void logError(std::string const& message) noexcept
{
    logMessage(nvinfer1::ILogger::Severity::kERROR, message);
}

} // namespace plugin
} // namespace freeact
