#include "freeActQuantizePlugin.h"

namespace freeact
{
namespace plugin
{
namespace
{
using nvinfer1::DataType;
using nvinfer1::Dims;

// Tensor positions, in schema order (inputs, then outputs).
constexpr int32_t kX = 0;
constexpr int32_t kTYPES = 1;
constexpr int32_t kSMOOTH = 2;
constexpr int32_t kKRON1 = 3;
constexpr int32_t kKRON2 = 4;
constexpr int32_t kMASKS = 5;
constexpr int32_t kCLIP = 6;
constexpr int32_t kNB_INPUTS = 7;
constexpr int32_t kCODES = 0;
constexpr int32_t kSCALE = 1;
constexpr int32_t kNB_OUTPUTS = 2;

char const* const kINPUT_NAMES[kNB_INPUTS] = {"x", "types", "smooth", "kron_1", "kron_2", "masks", "clip"};

//! The schema's dtypes (x may also be float16), linear layout only; pos counts inputs, then outputs.
bool supportedDesc(int32_t pos, nvinfer1::PluginTensorDesc const& desc) noexcept
{
    if (desc.format != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case kX: return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
    case kTYPES: return desc.type == DataType::kINT32;
    case kNB_INPUTS + kCODES: return desc.type == DataType::kINT8;
    default: return desc.type == DataType::kFLOAT; // smooth, kron_1, kron_2, masks, clip, scale
    }
}

void requireSupported(int32_t pos, nvinfer1::PluginTensorDesc const& desc)
{
    if (!supportedDesc(pos, desc))
    {
        char const* name = pos < kNB_INPUTS ? kINPUT_NAMES[pos] : (pos == kNB_INPUTS + kCODES ? "codes" : "scale");
        fail(std::string(name) + " has an unsupported type or format (see the FreeActQuantize schema)");
    }
}

//! Refuses, before any enqueue, a shape no kernel runs: Kronecker factors no tile of the ahead-of-time
//! cubins holds, or an odd right factor with INT4 packing (aotLaunch.h). Needs no GPU. On a GPU, also
//! a device the library holds no cubins for (without a current CUDA context there is nothing to check).
void requireLaunchable(QuantizeShape const& shape)
{
    std::string const why = quantizeUnsupported(shape);
    if (!why.empty())
    {
        fail(why);
    }
    std::string const device = currentDeviceUnsupported();
    if (!device.empty())
    {
        fail(device);
    }
}

FloatType floatTypeOf(DataType type)
{
    switch (type)
    {
    case DataType::kFLOAT: return FloatType::kFLOAT32;
    case DataType::kHALF: return FloatType::kFLOAT16;
    default: fail("x must be float32 or float16");
    }
}
} // namespace

QuantizeShape quantizeShapeOf(Dims const* in, int32_t nbInputs, int32_t bits, int32_t kronecker)
{
    if (in == nullptr || nbInputs != kNB_INPUTS)
    {
        fail("expects 7 inputs (x, types, smooth, kron_1, kron_2, masks, clip), got " + std::to_string(nbInputs));
    }
    Dims const& x = in[kX];
    if (x.nbDims < 1)
    {
        fail("x must be [..., d] (got " + dimsString(x) + ")");
    }
    int64_t const d = x.d[x.nbDims - 1];
    Dims const& types = in[kTYPES];
    if (types.nbDims != x.nbDims - 1)
    {
        fail("types " + dimsString(types) + " must have the leading shape of x " + dimsString(x));
    }
    for (int32_t i = 0; i < types.nbDims; ++i)
    {
        sameExtent(types.d[i], x.d[i], "types " + dimsString(types) + " must have the leading shape of x " + dimsString(x));
    }
    requireRank(in[kSMOOTH], 1, "smooth", "[d]");
    sameExtent(in[kSMOOTH].d[0], d, "smooth must have d entries");
    requireRank(in[kMASKS], 2, "masks", "[K, d]");
    int64_t const numTypes = in[kMASKS].d[0];
    if (numTypes == 0)
    {
        fail("masks must have at least one token type");
    }
    sameExtent(in[kMASKS].d[1], d, "masks must be [K, d]");
    requireRank(in[kCLIP], 1, "clip", "[K]");
    sameExtent(in[kCLIP].d[0], numTypes, "clip must have one entry per token type (masks' K)");

    QuantizeShape shape;
    shape.bits = bits;
    shape.kronecker = kronecker;
    shape.tokens = leadingVolume(x);
    shape.d = toInt32(d, "d");
    shape.numTypes = toInt32(numTypes, "K");
    if (bits == 4 && d >= 0 && d % 2 != 0)
    {
        fail("bits=4 packs two codes per byte and needs an even d (got " + std::to_string(d) + ")");
    }
    if (kronecker == 0)
    {
        // kron_1 / kron_2 are placeholders ([[1.]]) the kernel does not read.
        shape.d1 = 1;
        shape.d2 = 1;
        shape.kronPerType = 0;
        return shape;
    }
    Dims const& kron1 = in[kKRON1];
    Dims const& kron2 = in[kKRON2];
    if ((kron1.nbDims != 2 && kron1.nbDims != 3) || kron2.nbDims != kron1.nbDims)
    {
        fail("kron_1 " + dimsString(kron1) + " and kron_2 " + dimsString(kron2)
            + " must both be [d1, d1] / [d2, d2] (shared) or [K, d1, d1] / [K, d2, d2] (per type)");
    }
    bool const perType = kron1.nbDims == 3;
    int32_t const axis = perType ? 1 : 0;
    sameExtent(kron1.d[axis], kron1.d[axis + 1], "kron_1 must be square");
    sameExtent(kron2.d[axis], kron2.d[axis + 1], "kron_2 must be square");
    if (perType)
    {
        sameExtent(kron1.d[0], numTypes, "per-type kron_1 must have one factor per token type (masks' K)");
        sameExtent(kron2.d[0], numTypes, "per-type kron_2 must have one factor per token type (masks' K)");
    }
    int64_t const d1 = kron1.d[axis];
    int64_t const d2 = kron2.d[axis];
    if (d1 >= 0 && d2 >= 0)
    {
        sameExtent(d1 * d2, d, "kron_1 " + dimsString(kron1) + " ⊗ kron_2 " + dimsString(kron2) + " must act on d");
    }
    shape.d1 = toInt32(d1, "d1");
    shape.d2 = toInt32(d2, "d2");
    shape.kronPerType = perType ? 1 : 0;
    return shape;
}

FreeActQuantizePlugin::FreeActQuantizePlugin(std::string layerName, AttributeValues attributes)
    : PluginBase(std::move(layerName), std::move(attributes))
{
}

nvinfer1::IPluginV3* FreeActQuantizePlugin::clone() noexcept
{
    try
    {
        return new FreeActQuantizePlugin(*this);
    }
    catch (std::exception const& e)
    {
        logError(std::string("FreeActQuantize.clone: ") + e.what());
    }
    return nullptr;
}

int32_t FreeActQuantizePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    return guard("getOutputDataTypes", [&] {
        require(outputTypes != nullptr && nbOutputs == kNB_OUTPUTS, "expects 2 outputs (codes, scale)");
        require(inputTypes != nullptr && nbInputs == kNB_INPUTS, "expects 7 inputs");
        outputTypes[kCODES] = DataType::kINT8;
        outputTypes[kSCALE] = DataType::kFLOAT;
        return kSTATUS_SUCCESS;
    });
}

int32_t FreeActQuantizePlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    return guard("getOutputShapes", [&] {
        require(inputs != nullptr && nbInputs == kNB_INPUTS, "expects 7 inputs");
        require(outputs != nullptr && nbOutputs == kNB_OUTPUTS, "expects 2 outputs (codes, scale)");
        nvinfer1::DimsExprs const& x = inputs[kX];
        require(x.nbDims >= 1, "x must be [..., d]");
        int32_t const last = x.nbDims - 1;
        nvinfer1::IDimensionExpr const* d = x.d[last];
        require(d != nullptr, "x has no last dimension");
        bool const packed = attribute("bits") == 4;
        if (packed && d->isConstant())
        {
            require(d->getConstantValue() % 2 == 0,
                "bits=4 needs an even d (got " + std::to_string(d->getConstantValue()) + ")");
        }
        nvinfer1::IDimensionExpr const* codesWidth
            = packed ? exprBuilder.operation(nvinfer1::DimensionOperation::kFLOOR_DIV, *d, *exprBuilder.constant(2)) : d;
        nvinfer1::IDimensionExpr const* one = exprBuilder.constant(1);
        require(codesWidth != nullptr && one != nullptr, "the expression builder returned no expression");
        for (int32_t out : {kCODES, kSCALE})
        {
            outputs[out].nbDims = x.nbDims;
            for (int32_t i = 0; i < last; ++i)
            {
                outputs[out].d[i] = x.d[i];
            }
        }
        outputs[kCODES].d[last] = codesWidth;
        outputs[kSCALE].d[last] = one;
        return kSTATUS_SUCCESS;
    });
}

bool FreeActQuantizePlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS || pos < 0
        || pos >= kNB_INPUTS + kNB_OUTPUTS)
    {
        return false;
    }
    return supportedDesc(pos, inOut[pos].desc);
}

void FreeActQuantizePlugin::checkOutputs(QuantizeShape const& shape, Dims const& x, Dims const* outputs) const
{
    int64_t const width = shape.d < 0 ? -1 : (shape.bits == 4 ? shape.d / 2 : shape.d);
    for (int32_t out : {kCODES, kSCALE})
    {
        Dims const& dims = outputs[out];
        char const* name = out == kCODES ? "codes" : "scale";
        if (dims.nbDims != x.nbDims)
        {
            fail(std::string(name) + " " + dimsString(dims) + " must have the rank of x " + dimsString(x));
        }
        for (int32_t i = 0; i + 1 < x.nbDims; ++i)
        {
            sameExtent(dims.d[i], x.d[i], std::string(name) + " must have the leading shape of x");
        }
        sameExtent(dims.d[x.nbDims - 1], out == kCODES ? width : 1, std::string(name) + "'s last extent");
    }
}

int32_t FreeActQuantizePlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    return guard("configurePlugin", [&] {
        require(in != nullptr && nbInputs == kNB_INPUTS, "expects 7 inputs");
        require(out != nullptr && nbOutputs == kNB_OUTPUTS, "expects 2 outputs (codes, scale)");
        Dims inDims[kNB_INPUTS];
        for (int32_t i = 0; i < kNB_INPUTS; ++i)
        {
            inDims[i] = in[i].desc.dims;
            requireSupported(i, in[i].desc);
        }
        requireSupported(kNB_INPUTS + kCODES, out[kCODES].desc);
        requireSupported(kNB_INPUTS + kSCALE, out[kSCALE].desc);
        Dims const outDims[kNB_OUTPUTS] = {out[kCODES].desc.dims, out[kSCALE].desc.dims};
        QuantizeShape const shape = quantizeShapeOf(inDims, nbInputs, attribute("bits"), attribute("kronecker"));
        checkOutputs(shape, inDims[kX], outDims);
        requireLaunchable(shape);
        return kSTATUS_SUCCESS;
    });
}

int32_t FreeActQuantizePlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    return guard("onShapeChange", [&] {
        require(in != nullptr && nbInputs == kNB_INPUTS, "expects 7 inputs");
        require(out != nullptr && nbOutputs == kNB_OUTPUTS, "expects 2 outputs (codes, scale)");
        Dims inDims[kNB_INPUTS];
        for (int32_t i = 0; i < kNB_INPUTS; ++i)
        {
            inDims[i] = in[i].dims;
        }
        Dims const outDims[kNB_OUTPUTS] = {out[kCODES].dims, out[kSCALE].dims};
        QuantizeShape const shape = quantizeShapeOf(inDims, nbInputs, attribute("bits"), attribute("kronecker"));
        require(shape.tokens >= 0 && shape.d >= 0 && shape.numTypes >= 0 && shape.d1 >= 0 && shape.d2 >= 0,
            "runtime shapes must be fully known");
        checkOutputs(shape, inDims[kX], outDims);
        requireLaunchable(shape);
        for (int32_t i = 0; i < kNB_INPUTS; ++i)
        {
            requireSupported(i, in[i]);
        }
        requireSupported(kNB_INPUTS + kCODES, out[kCODES]);
        requireSupported(kNB_INPUTS + kSCALE, out[kSCALE]);
        mShape = shape;
        mShapeKnown = true;
        return kSTATUS_SUCCESS;
    });
}

int32_t FreeActQuantizePlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    return guard("enqueue", [&] {
        require(inputDesc != nullptr && inputs != nullptr && outputs != nullptr, "null tensors");
        QuantizeShape shape = mShape;
        if (!mShapeKnown)
        {
            Dims inDims[kNB_INPUTS];
            for (int32_t i = 0; i < kNB_INPUTS; ++i)
            {
                inDims[i] = inputDesc[i].dims;
            }
            shape = quantizeShapeOf(inDims, kNB_INPUTS, attribute("bits"), attribute("kronecker"));
        }
        // Tokens from this call's dims: onShapeChange may not precede every enqueue with new token counts.
        shape.tokens = leadingVolume(inputDesc[kX].dims);
        if (shape.tokens < 0)
        {
            fail("x has unknown extents at enqueue");
        }
        if (shape.tokens == 0)
        {
            return kSTATUS_SUCCESS;
        }
        std::string const error = launchFreeActQuantize(inputs[kX], floatTypeOf(inputDesc[kX].type),
            static_cast<int32_t const*>(inputs[kTYPES]), static_cast<float const*>(inputs[kSMOOTH]),
            static_cast<float const*>(inputs[kKRON1]), static_cast<float const*>(inputs[kKRON2]),
            static_cast<float const*>(inputs[kMASKS]), static_cast<float const*>(inputs[kCLIP]), shape,
            static_cast<int8_t*>(outputs[kCODES]), static_cast<float*>(outputs[kSCALE]), stream);
        if (!error.empty())
        {
            fail(error);
        }
        return kSTATUS_SUCCESS;
    });
}

FreeActQuantizeCreator::FreeActQuantizeCreator()
    : CreatorBase(freeActQuantizeSpec())
{
}

std::unique_ptr<PluginBase> FreeActQuantizeCreator::make(std::string layerName, AttributeValues attributes) const
{
    return std::make_unique<FreeActQuantizePlugin>(std::move(layerName), std::move(attributes));
}

} // namespace plugin
} // namespace freeact
