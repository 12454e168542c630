#include "pluginBase.h"

#include "checks.h"


namespace freeact
{
namespace plugin
{

PluginBase::PluginBase(std::string layerName, AttributeValues attributes)
    : mLayerName(std::move(layerName))
    , mAttributes(std::move(attributes))
{
}

nvinfer1::IPluginCapability* PluginBase::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

char const* PluginBase::getPluginName() const noexcept
{
    return mAttributes.spec().name;
}

char const* PluginBase::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* PluginBase::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

int32_t PluginBase::getNbOutputs() const noexcept
{
    return mAttributes.spec().nbOutputs;
}

size_t PluginBase::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    nvinfer1::DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0; // FreeActQuantize needs no scratch memory; Int4MatMul overrides this for split-K
}

nvinfer1::IPluginV3* PluginBase::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    // No per-context resources (no cuBLAS handle, no allocator use): a copy is a full context.
    return clone();
}

nvinfer1::PluginFieldCollection const* PluginBase::getFieldsToSerialize() noexcept
{
    return mAttributes.fields();
}

std::string PluginBase::where(char const* method) const
{
    return std::string(getPluginName()) + " '" + mLayerName + "' (" + mAttributes.describe() + ")." + method;
}

CreatorBase::CreatorBase(OpSpec const& spec)
    : mSpec(spec)
    , mFieldNames(spec)
{
}

nvinfer1::IPluginV3* CreatorBase::createPlugin(
    char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept
{
    std::string const layer = name != nullptr ? name : "";
    try
    {
        // Both phases take the same fields: the build phase from the ONNX parser, the runtime phase
        // from getFieldsToSerialize; both are checked, since an engine file is input too.
        (void) phase;
        return make(layer, AttributeValues::parse(mSpec, fc)).release();
    }
    catch (std::exception const& e)
    {
        logError(std::string(mSpec.name) + " '" + layer + "': cannot create the plugin: " + e.what());
    }
    catch (...)
    {
        logError(std::string(mSpec.name) + " '" + layer + "': cannot create the plugin: unknown error");
    }
    return nullptr;
}

nvinfer1::PluginFieldCollection const* CreatorBase::getFieldNames() noexcept
{
    return mFieldNames.collection();
}

char const* CreatorBase::getPluginName() const noexcept
{
    return mSpec.name;
}

char const* CreatorBase::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* CreatorBase::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

} // namespace plugin
} // namespace freeact
