// The host test's harness: a logger that captures what plugins report, the check counters, and a
// constant-folding IExprBuilder and resource context standing in for TensorRT's builder.
#pragma once

#include "NvInferRuntime.h"

#include <dlfcn.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace hostTest
{

using namespace nvinfer1;

// ---------------------------------------------------------------------------------------------
// Harness: logger, results, a constant-folding IExprBuilder

class CapturingLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kERROR)
        {
            ++mErrors;
            mLast = msg != nullptr ? msg : "";
        }
        if (mVerbose)
        {
            std::cout << "    [plugin log " << static_cast<int32_t>(severity) << "] " << (msg ? msg : "") << "\n";
        }
    }
    int32_t errors() const
    {
        return mErrors;
    }
    std::string const& last() const
    {
        return mLast;
    }
    void verbose(bool on)
    {
        mVerbose = on;
    }

private:
    int32_t mErrors{0};
    std::string mLast;
    bool mVerbose{false};
};

class TestLoggerFinder : public ILoggerFinder
{
public:
    explicit TestLoggerFinder(ILogger* logger)
        : mLogger(logger)
    {
    }
    ILogger* findLogger() override
    {
        return mLogger;
    }

private:
    ILogger* mLogger;
};

inline int32_t gChecks = 0;
inline int32_t gFailures = 0;

inline void check(bool ok, std::string const& what)
{
    ++gChecks;
    if (!ok)
    {
        ++gFailures;
        std::cout << "FAIL: " << what << "\n";
    }
}

//! A dimension that is either a constant or an opaque symbol (a dynamic extent).
class TestDimExpr : public IDimensionExpr
{
public:
    TestDimExpr(bool constant, int64_t value)
        : mValueImpl(constant, value)
    {
        mImpl = &mValueImpl;
    }
    ~TestDimExpr() override = default;

private:
    class Impl : public apiv::VDimensionExpr
    {
    public:
        Impl(bool constant, int64_t value)
            : mConstant(constant)
            , mValue(value)
        {
        }
        bool isConstant() const override
        {
            return mConstant;
        }
        int64_t getConstantValue() const override
        {
            return mConstant ? mValue : -1;
        }
        bool isSizeTensor() const override
        {
            return false;
        }

    private:
        bool mConstant;
        int64_t mValue;
    };
    Impl mValueImpl;
};

//! Folds operations on constants, as TensorRT does; anything involving a symbol is a new symbol.
class TestExprBuilder : public IExprBuilder
{
public:
    TestExprBuilder()
        : mBuilderImpl(*this)
    {
        mImpl = &mBuilderImpl;
    }
    ~TestExprBuilder() override = default;

    IDimensionExpr const* make(bool constant, int64_t value)
    {
        mPool.push_back(std::make_unique<TestDimExpr>(constant, value));
        return mPool.back().get();
    }
    IDimensionExpr const* symbol()
    {
        return make(false, 0);
    }

private:
    class Impl : public apiv::VExprBuilder
    {
    public:
        explicit Impl(TestExprBuilder& owner)
            : mOwner(owner)
        {
        }
        IDimensionExpr const* constant(int64_t value) override
        {
            return mOwner.make(true, value);
        }
        IDimensionExpr const* operation(
            DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) override
        {
            if (!first.isConstant() || !second.isConstant())
            {
                return mOwner.symbol();
            }
            int64_t const a = first.getConstantValue();
            int64_t const b = second.getConstantValue();
            switch (op)
            {
            case DimensionOperation::kSUM: return constant(a + b);
            case DimensionOperation::kPROD: return constant(a * b);
            case DimensionOperation::kMAX: return constant(std::max(a, b));
            case DimensionOperation::kMIN: return constant(std::min(a, b));
            case DimensionOperation::kSUB: return constant(a - b);
            case DimensionOperation::kEQUAL: return constant(a == b ? 1 : 0);
            case DimensionOperation::kLESS: return constant(a < b ? 1 : 0);
            case DimensionOperation::kFLOOR_DIV:
                return b == 0 ? nullptr : constant(a / b - ((a % b != 0 && ((a < 0) != (b < 0))) ? 1 : 0));
            case DimensionOperation::kCEIL_DIV: return b == 0 ? nullptr : constant((a + b - 1) / b);
            }
            return nullptr;
        }
        IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
        {
            return nullptr;
        }

    private:
        TestExprBuilder& mOwner;
    };
    Impl mBuilderImpl;
    std::vector<std::unique_ptr<TestDimExpr>> mPool;
};

class TestResourceContext : public IPluginResourceContext
{
public:
    IGpuAllocator* getGpuAllocator() const noexcept override
    {
        return nullptr;
    }
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
};

} // namespace hostTest
