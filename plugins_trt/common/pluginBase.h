// What both plugins share: the IPluginV3 capability plumbing, the identity from the op spec, the
// attribute fields (serialization), and a creator that validates fields before building a plugin.
// Each op adds its shapes, types and launch.
#pragma once

#include "NvInferRuntime.h"
#include "checks.h"
#include "pluginFields.h"
#include "shapeChecks.h"

#include <cstdint>
#include <memory>
#include <string>

static_assert(NV_TENSORRT_MAJOR >= 10, "plugins_trt needs TensorRT 10 headers (IPluginV3)");

namespace freeact
{
namespace plugin
{

class PluginBase : public nvinfer1::IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuild,
                   public nvinfer1::IPluginV3OneRuntime
{
public:
    PluginBase(std::string layerName, AttributeValues attributes);
    ~PluginBase() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild (the op-specific ones stay pure)
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

protected:
    int32_t attribute(char const* name) const
    {
        return mAttributes.get(name);
    }
    AttributeValues const& attributes() const noexcept
    {
        return mAttributes;
    }
    std::string const& layerName() const noexcept
    {
        return mLayerName;
    }
    //! "Int4MatMul 'layer' (act_bits=4, group_size=0).method", the prefix of every message.
    std::string where(char const* method) const;

    //! Runs `body` at a noexcept boundary: exceptions are logged with where(method) and become an error code.
    template <typename Body>
    int32_t guard(char const* method, Body&& body) const noexcept
    {
        return guarded([this, method] { return where(method); }, body);
    }

private:
    std::string mLayerName;
    AttributeValues mAttributes;
};

//! A creator of plugins of one op: fields from the op spec, checked before make() runs.
class CreatorBase : public nvinfer1::IPluginCreatorV3One
{
public:
    explicit CreatorBase(OpSpec const& spec);

    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

protected:
    virtual std::unique_ptr<PluginBase> make(std::string layerName, AttributeValues attributes) const = 0;

private:
    OpSpec const& mSpec;
    FieldNames mFieldNames;
};

} // namespace plugin
} // namespace freeact
