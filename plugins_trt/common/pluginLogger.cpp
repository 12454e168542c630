#include "pluginLogger.h"

#include <atomic>

namespace freeact
{
namespace plugin
{
namespace
{
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};
std::atomic<nvinfer1::ILogger*> gFallbackLogger{nullptr};
} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

void setFallbackLogger(nvinfer1::ILogger* logger) noexcept
{
    gFallbackLogger.store(logger);
}

void logMessage(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        nvinfer1::ILogger* logger = nullptr;
        if (nvinfer1::ILoggerFinder* finder = gLoggerFinder.load())
        {
            // The finder returns the logger of the builder or runtime in use, which may change.
            logger = finder->findLogger();
        }
        else
        {
            logger = gFallbackLogger.load();
        }
        if (logger != nullptr)
        {
            logger->log(severity, message.c_str());
        }
    }
    catch (...)
    {
        // A logger that throws must not take the caller (a noexcept plugin method) down with it.
    }
}

} // namespace plugin
} // namespace freeact
