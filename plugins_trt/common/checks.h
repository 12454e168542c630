// Error handling that never throws across TensorRT's noexcept interface: checks throw a
// PluginError inside the plugin, and guarded() turns any exception into a logged message and
// an error code at the noexcept boundary.
#pragma once

#include "pluginLogger.h"

#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>

namespace freeact
{
namespace plugin
{

class PluginError : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail(std::string const& message)
{
    throw PluginError(message);
}

//! For cold paths (the message is built even when the check passes); hot ones use `if (...) fail(...)`.
inline void require(bool condition, std::string const& message)
{
    if (!condition)
    {
        fail(message);
    }
}

constexpr int32_t kSTATUS_SUCCESS = 0;
constexpr int32_t kSTATUS_FAILURE = -1;

//! Logs "<where()>: <what>"; `where` builds the prefix only when there is something to report.
template <typename Where>
void reportFailure(Where& where, char const* what) noexcept
{
    try
    {
        logError(where() + ": " + what);
    }
    catch (...)
    {
        // Out of memory while reporting: nothing left to do but return the error code.
    }
}

//! Runs `body` (returning an int32_t status); any exception is logged and becomes kSTATUS_FAILURE.
template <typename Where, typename Body>
int32_t guarded(Where&& where, Body&& body) noexcept
{
    try
    {
        return body();
    }
    catch (std::exception const& e)
    {
        reportFailure(where, e.what());
    }
    catch (...)
    {
        reportFailure(where, "unknown error");
    }
    return kSTATUS_FAILURE;
}

} // namespace plugin
} // namespace freeact
