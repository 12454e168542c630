#include "shapeChecks.h"

#include "checks.h"

#include <limits>
#include <sstream>

namespace freeact
{
namespace plugin
{

std::string dimsString(nvinfer1::Dims const& dims)
{
    std::ostringstream out;
    out << "[";
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        out << (i ? ", " : "") << dims.d[i];
    }
    out << "]";
    return out.str();
}

void sameExtent(int64_t a, int64_t b, std::string const& what)
{
    if (a >= 0 && b >= 0 && a != b)
    {
        fail(what + " (" + std::to_string(a) + " != " + std::to_string(b) + ")");
    }
}

void requireRank(nvinfer1::Dims const& dims, int32_t rank, char const* name, char const* shape)
{
    if (dims.nbDims != rank)
    {
        fail(std::string(name) + " must be " + shape + " (got " + dimsString(dims) + ")");
    }
}

int64_t leadingVolume(nvinfer1::Dims const& dims) noexcept
{
    int64_t product = 1;
    for (int32_t i = 0; i + 1 < dims.nbDims; ++i)
    {
        if (dims.d[i] < 0)
        {
            return -1;
        }
        product *= dims.d[i];
    }
    return product;
}

int32_t toInt32(int64_t value, char const* what)
{
    if (value > std::numeric_limits<int32_t>::max())
    {
        fail(std::string(what) + " " + std::to_string(value) + " does not fit in int32");
    }
    return value < 0 ? -1 : static_cast<int32_t>(value);
}

} // namespace plugin
} // namespace freeact
