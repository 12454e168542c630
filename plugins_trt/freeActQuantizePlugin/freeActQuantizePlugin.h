// FreeActQuantize as a TensorRT IPluginV3: per-token transform + symmetric INT4/INT8 quantization.
// Inputs x [..., d] (float32/float16), types [...] (int32), smooth [d], kron_1 [d1, d1] or
// [K, d1, d1], kron_2 [d2, d2] or [K, d2, d2], masks [K, d], clip [K] (float32); outputs codes
// (int8 [..., d/2] packed or [..., d]) and scale (float32 [..., 1]). See ops/schema.py.
#pragma once

#include "../common/pluginBase.h"
#include "../kernels/aotLaunch.h"

namespace freeact
{
namespace plugin
{

//! The launcher's shape from the inputs' dims, checked against each other and the attributes.
//! Extents < 0 (dynamic at build time) are not checked and leave tokens / d at -1.
QuantizeShape quantizeShapeOf(nvinfer1::Dims const* inputs, int32_t nbInputs, int32_t bits, int32_t kronecker);

class FreeActQuantizePlugin : public PluginBase
{
public:
    FreeActQuantizePlugin(std::string layerName, AttributeValues attributes);

    nvinfer1::IPluginV3* clone() noexcept override;

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;

    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

private:
    //! Checks the output dims against the inputs' (extents < 0 skipped).
    void checkOutputs(QuantizeShape const& shape, nvinfer1::Dims const& x, nvinfer1::Dims const* outputs) const;

    QuantizeShape mShape{}; //!< from the last onShapeChange; enqueue takes tokens from its own dims
    bool mShapeKnown{false};
};

class FreeActQuantizeCreator : public CreatorBase
{
public:
    FreeActQuantizeCreator();

protected:
    std::unique_ptr<PluginBase> make(std::string layerName, AttributeValues attributes) const override;
};

} // namespace plugin
} // namespace freeact
