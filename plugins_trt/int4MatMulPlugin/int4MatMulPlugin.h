// Int4MatMul as a TensorRT IPluginV3: packed INT4 weights times per-token quantized activations.
// Inputs codes (int8 [..., d/2] packed or [..., d]), scale (float32 [..., 1]), weight (int8
// [n, d/2] packed), weight_scale (float32 [n, G]), bias (float32 [n]); output y [..., n], float32
// (the schema's type, and the only one the ahead-of-time cubins write). See ops/schema.py.
#pragma once

#include "../common/pluginBase.h"
#include "../kernels/aotLaunch.h"

namespace freeact
{
namespace plugin
{

//! The launcher's shape from the inputs' dims, checked against each other and the attributes.
//! Extents < 0 (dynamic at build time) are not checked and leave tokens / k / n at -1.
MatMulShape matMulShapeOf(nvinfer1::Dims const* inputs, int32_t nbInputs, int32_t actBits, int32_t groupSize);

class Int4MatMulPlugin : public PluginBase
{
public:
    Int4MatMulPlugin(std::string layerName, AttributeValues attributes);

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
    //! Split-K partial sums of the profile's largest shape (aotLaunch.h int4MatMulWorkspaceSize).
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

private:
    MatMulShape mShape{}; //!< from the last onShapeChange; enqueue takes tokens from its own dims
    bool mShapeKnown{false};
};

class Int4MatMulCreator : public CreatorBase
{
public:
    Int4MatMulCreator();

protected:
    std::unique_ptr<PluginBase> make(std::string layerName, AttributeValues attributes) const override;
};

} // namespace plugin
} // namespace freeact
