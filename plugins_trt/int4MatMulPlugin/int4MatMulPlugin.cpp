#include "int4MatMulPlugin.h"

namespace freeact
{
namespace plugin
{
namespace
{
using nvinfer1::DataType;
using nvinfer1::Dims;

// Tensor positions, in schema order (inputs, then outputs).
constexpr int32_t kCODES = 0;
constexpr int32_t kSCALE = 1;
constexpr int32_t kWEIGHT = 2;
constexpr int32_t kWEIGHT_SCALE = 3;
constexpr int32_t kBIAS = 4;
constexpr int32_t kNB_INPUTS = 5;
constexpr int32_t kY = 0;
constexpr int32_t kNB_OUTPUTS = 1;

char const* const kTENSOR_NAMES[kNB_INPUTS + kNB_OUTPUTS] = {"codes", "scale", "weight", "weight_scale", "bias", "y"};

//! The schema's dtypes, linear layout only; pos counts inputs, then outputs. y is float32 only: the
//! ahead-of-time cubins write float32 (aot.py compiles out_ptr as *fp32).
bool supportedDesc(int32_t pos, nvinfer1::PluginTensorDesc const& desc) noexcept
{
    if (desc.format != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case kCODES:
    case kWEIGHT: return desc.type == DataType::kINT8;
    default: return desc.type == DataType::kFLOAT; // scale, weight_scale, bias, y
    }
}

void requireSupported(int32_t pos, nvinfer1::PluginTensorDesc const& desc)
{
    if (!supportedDesc(pos, desc))
    {
        fail(std::string(kTENSOR_NAMES[pos]) + " has an unsupported type or format (see the Int4MatMul schema)");
    }
}

void checkOutput(MatMulShape const& shape, Dims const& codes, Dims const& y)
{
    if (y.nbDims != codes.nbDims)
    {
        fail("y " + dimsString(y) + " must have the rank of codes " + dimsString(codes));
    }
    for (int32_t i = 0; i + 1 < codes.nbDims; ++i)
    {
        sameExtent(y.d[i], codes.d[i], "y must have the leading shape of codes");
    }
    sameExtent(y.d[y.nbDims - 1], shape.n, "y must have n (weight's rows) columns");
}
} // namespace

MatMulShape matMulShapeOf(Dims const* in, int32_t nbInputs, int32_t actBits, int32_t groupSize)
{
    if (in == nullptr || nbInputs != kNB_INPUTS)
    {
        fail("expects 5 inputs (codes, scale, weight, weight_scale, bias), got " + std::to_string(nbInputs));
    }
    Dims const& codes = in[kCODES];
    if (codes.nbDims < 1)
    {
        fail("codes must be [..., d/2] or [..., d] (got " + dimsString(codes) + ")");
    }
    int64_t const width = codes.d[codes.nbDims - 1];
    int64_t const k = width < 0 ? -1 : (actBits == 4 ? 2 * width : width);
    Dims const& scale = in[kSCALE];
    if (scale.nbDims != codes.nbDims)
    {
        fail("scale " + dimsString(scale) + " must be [..., 1] with the leading shape of codes " + dimsString(codes));
    }
    for (int32_t i = 0; i + 1 < codes.nbDims; ++i)
    {
        sameExtent(scale.d[i], codes.d[i], "scale must have the leading shape of codes");
    }
    sameExtent(scale.d[scale.nbDims - 1], 1, "scale must be [..., 1]");

    requireRank(in[kWEIGHT], 2, "weight", "[n, d/2]");
    int64_t const n = in[kWEIGHT].d[0];
    int64_t const packedK = in[kWEIGHT].d[1];
    if (packedK >= 0)
    {
        sameExtent(2 * packedK, k, "weight [n, d/2] must match the activations' d");
    }
    if (actBits == 8 && k >= 0 && k % 2 != 0)
    {
        fail("d must be even (packed INT4 weights), got " + std::to_string(k));
    }
    if (k > kMaxInnerDim)
    {
        // The kernels' int32 segment sums are exact up to this inner dimension (aotLaunch.h).
        fail("d=" + std::to_string(k) + " exceeds the largest inner dimension the kernels sum exactly ("
            + std::to_string(kMaxInnerDim) + ")");
    }
    requireRank(in[kWEIGHT_SCALE], 2, "weight_scale", "[n, G]");
    sameExtent(in[kWEIGHT_SCALE].d[0], n, "weight_scale must have one row per output channel");
    int64_t const groups = in[kWEIGHT_SCALE].d[1];
    if (groupSize == 0)
    {
        sameExtent(groups, 1, "group_size=0 needs weight_scale [n, 1]");
    }
    else if (k >= 0)
    {
        if (k % groupSize != 0)
        {
            fail("group_size " + std::to_string(groupSize) + " must divide d " + std::to_string(k));
        }
        sameExtent(groups, k / groupSize, "weight_scale must be [n, d / group_size]");
    }
    requireRank(in[kBIAS], 1, "bias", "[n]");
    sameExtent(in[kBIAS].d[0], n, "bias must have one entry per output channel");

    MatMulShape shape;
    shape.tokens = leadingVolume(codes);
    shape.k = toInt32(k, "d");
    shape.n = toInt32(n, "n");
    shape.actBits = actBits;
    shape.groupSize = groupSize;
    return shape;
}

Int4MatMulPlugin::Int4MatMulPlugin(std::string layerName, AttributeValues attributes)
    : PluginBase(std::move(layerName), std::move(attributes))
{
}

nvinfer1::IPluginV3* Int4MatMulPlugin::clone() noexcept
{
    try
    {
        return new Int4MatMulPlugin(*this);
    }
    catch (std::exception const& e)
    {
        logError(std::string("Int4MatMul.clone: ") + e.what());
    }
    return nullptr;
}

int32_t Int4MatMulPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    return guard("getOutputDataTypes", [&] {
        require(outputTypes != nullptr && nbOutputs == kNB_OUTPUTS, "expects 1 output (y)");
        require(inputTypes != nullptr && nbInputs == kNB_INPUTS, "expects 5 inputs");
        outputTypes[kY] = DataType::kFLOAT; // the schema's y, and the only one the cubins write
        return kSTATUS_SUCCESS;
    });
}

int32_t Int4MatMulPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    return guard("getOutputShapes", [&] {
        require(inputs != nullptr && nbInputs == kNB_INPUTS, "expects 5 inputs");
        require(outputs != nullptr && nbOutputs == kNB_OUTPUTS, "expects 1 output (y)");
        nvinfer1::DimsExprs const& codes = inputs[kCODES];
        nvinfer1::DimsExprs const& weight = inputs[kWEIGHT];
        require(codes.nbDims >= 1, "codes must be [..., d/2] or [..., d]");
        require(weight.nbDims == 2 && weight.d[0] != nullptr, "weight must be [n, d/2]");
        outputs[kY].nbDims = codes.nbDims;
        for (int32_t i = 0; i + 1 < codes.nbDims; ++i)
        {
            outputs[kY].d[i] = codes.d[i];
        }
        outputs[kY].d[codes.nbDims - 1] = weight.d[0];
        return kSTATUS_SUCCESS;
    });
}

bool Int4MatMulPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS || pos < 0
        || pos >= kNB_INPUTS + kNB_OUTPUTS)
    {
        return false;
    }
    return supportedDesc(pos, inOut[pos].desc);
}

int32_t Int4MatMulPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    return guard("configurePlugin", [&] {
        require(in != nullptr && nbInputs == kNB_INPUTS, "expects 5 inputs");
        require(out != nullptr && nbOutputs == kNB_OUTPUTS, "expects 1 output (y)");
        Dims inDims[kNB_INPUTS];
        for (int32_t i = 0; i < kNB_INPUTS; ++i)
        {
            inDims[i] = in[i].desc.dims;
            requireSupported(i, in[i].desc);
        }
        requireSupported(kNB_INPUTS + kY, out[kY].desc);
        MatMulShape const shape = matMulShapeOf(inDims, nbInputs, attribute("act_bits"), attribute("group_size"));
        checkOutput(shape, inDims[kCODES], out[kY].desc.dims);
        std::string const device = currentDeviceUnsupported();
        if (!device.empty())
        {
            fail(device);
        }
        return kSTATUS_SUCCESS;
    });
}

int32_t Int4MatMulPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    return guard("onShapeChange", [&] {
        require(in != nullptr && nbInputs == kNB_INPUTS, "expects 5 inputs");
        require(out != nullptr && nbOutputs == kNB_OUTPUTS, "expects 1 output (y)");
        Dims inDims[kNB_INPUTS];
        for (int32_t i = 0; i < kNB_INPUTS; ++i)
        {
            inDims[i] = in[i].dims;
            requireSupported(i, in[i]);
        }
        requireSupported(kNB_INPUTS + kY, out[kY]);
        MatMulShape const shape = matMulShapeOf(inDims, nbInputs, attribute("act_bits"), attribute("group_size"));
        require(shape.tokens >= 0 && shape.k >= 0 && shape.n >= 0, "runtime shapes must be fully known");
        checkOutput(shape, inDims[kCODES], out[kY].dims);
        mShape = shape;
        mShapeKnown = true;
        return kSTATUS_SUCCESS;
    });
}

size_t Int4MatMulPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept
{
    size_t bytes = 0;
    int32_t const status = guard("getWorkspaceSize", [&] {
        require(inputs != nullptr && nbInputs == kNB_INPUTS, "expects 5 inputs");
        require(outputs != nullptr && nbOutputs == kNB_OUTPUTS, "expects 1 output (y)");
        // The profile's largest shape; the bound does not depend on the GPU (aotLaunch.h).
        Dims const& codes = inputs[kCODES].max;
        Dims const& weight = inputs[kWEIGHT].max;
        require(codes.nbDims >= 1 && weight.nbDims == 2, "codes must be [..., d/2] or [..., d] and weight [n, d/2]");
        int64_t const width = codes.d[codes.nbDims - 1];
        int64_t const k = attribute("act_bits") == 4 ? 2 * width : width;
        bytes = int4MatMulWorkspaceSize(leadingVolume(codes), k, weight.d[0], attribute("group_size"));
        return kSTATUS_SUCCESS;
    });
    return status == kSTATUS_SUCCESS ? bytes : 0;
}

int32_t Int4MatMulPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* outputDesc, void const* const* inputs, void* const* outputs, void* workspace,
    cudaStream_t stream) noexcept
{
    return guard("enqueue", [&] {
        require(inputDesc != nullptr && outputDesc != nullptr && inputs != nullptr && outputs != nullptr,
            "null tensors");
        MatMulShape shape = mShape;
        if (!mShapeKnown)
        {
            Dims inDims[kNB_INPUTS];
            for (int32_t i = 0; i < kNB_INPUTS; ++i)
            {
                inDims[i] = inputDesc[i].dims;
            }
            shape = matMulShapeOf(inDims, kNB_INPUTS, attribute("act_bits"), attribute("group_size"));
        }
        // Tokens from this call's dims: onShapeChange may not precede every enqueue with new token counts.
        shape.tokens = leadingVolume(inputDesc[kCODES].dims);
        if (shape.tokens < 0)
        {
            fail("codes has unknown extents at enqueue");
        }
        if (shape.tokens == 0 || shape.n == 0)
        {
            return kSTATUS_SUCCESS;
        }
        if (outputDesc[kY].type != DataType::kFLOAT)
        {
            fail("y must be float32");
        }
        // TensorRT gives at least getWorkspaceSize of the profile's largest shape, which bounds this one's.
        size_t const workspaceBytes = int4MatMulWorkspaceSize(shape.tokens, shape.k, shape.n, shape.groupSize);
        std::string const error = launchInt4MatMul(static_cast<int8_t const*>(inputs[kCODES]),
            static_cast<float const*>(inputs[kSCALE]), static_cast<int8_t const*>(inputs[kWEIGHT]),
            static_cast<float const*>(inputs[kWEIGHT_SCALE]), static_cast<float const*>(inputs[kBIAS]), shape,
            static_cast<float*>(outputs[kY]), workspace, workspaceBytes, stream);
        if (!error.empty())
        {
            fail(error);
        }
        return kSTATUS_SUCCESS;
    });
}

Int4MatMulCreator::Int4MatMulCreator()
    : CreatorBase(int4MatMulSpec())
{
}

std::unique_ptr<PluginBase> Int4MatMulCreator::make(std::string layerName, AttributeValues attributes) const
{
    return std::make_unique<Int4MatMulPlugin>(std::move(layerName), std::move(attributes));
}

} // namespace plugin
} // namespace freeact
