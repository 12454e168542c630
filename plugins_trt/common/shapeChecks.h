// Checks on tensor dims shared by both plugins. Extents < 0 stand for "not known yet" (dynamic
// dims at build time) and pass every comparison; the runtime checks see them all known.
#pragma once

#include "NvInferRuntime.h"

#include <cstdint>
#include <string>

namespace freeact
{
namespace plugin
{

//! Dims as "[3, 5, 64]" for messages.
std::string dimsString(nvinfer1::Dims const& dims);

//! Throws PluginError "<what> (a != b)" when both are known and differ.
void sameExtent(int64_t a, int64_t b, std::string const& what);

//! Throws PluginError "<name> must be <shape> (got [..])" unless dims has `rank` dimensions.
void requireRank(nvinfer1::Dims const& dims, int32_t rank, char const* name, char const* shape);

//! Product of all but the last extent (the tokens of a [..., d] tensor); -1 if any is unknown.
int64_t leadingVolume(nvinfer1::Dims const& dims) noexcept;

//! value as int32 (the launchers' width for d, n, K); -1 stays -1; throws PluginError if too large.
int32_t toInt32(int64_t value, char const* what);

} // namespace plugin
} // namespace freeact
