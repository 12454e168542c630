// Host test, run mode: one op on the GPU through the plugin's own interface (exit 77 without a device).
// The GPU is reached through the CUDA driver API, dlopen()ed (kernels/cudaDriver.h, the library's own
// loader compiled in here too): neither this test nor the library links the CUDA runtime.
#include "hostLibrary.h"

#include "kernels/cudaDriver.h"

namespace hostTest
{
namespace
{

// ---------------------------------------------------------------------------------------------
// run mode: one op on the GPU, through the plugin's own interface

namespace cu = freeact::cu;

void cuCheck(cu::Result status, char const* what)
{
    if (status != cu::kSUCCESS)
    {
        throw std::runtime_error(std::string(what) + ": " + cu::resultText(status));
    }
}

//! Device memory, freed on every path out of runCase.
struct DeviceBuffers
{
    cu::Driver const* driver{nullptr};
    std::vector<cu::DevicePtr> owned;

    void* allocate(size_t bytes)
    {
        cu::DevicePtr ptr = 0;
        cuCheck(driver->memAlloc(&ptr, std::max<size_t>(bytes, 1)), "cuMemAlloc");
        owned.push_back(ptr);
        return reinterpret_cast<void*>(static_cast<uintptr_t>(ptr));
    }
    ~DeviceBuffers()
    {
        for (cu::DevicePtr ptr : owned)
        {
            driver->memFree(ptr);
        }
    }
};

cu::DevicePtr devicePtr(void* p)
{
    return static_cast<cu::DevicePtr>(reinterpret_cast<uintptr_t>(p));
}

struct CaseTensor
{
    std::string name;
    DataType type{DataType::kFLOAT};
    Extents dims;
};

int64_t volumeOf(Extents const& e)
{
    int64_t v = 1;
    for (int64_t x : e)
    {
        v *= x;
    }
    return v;
}

std::vector<char> readBinary(std::string const& path, size_t bytes)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        throw std::runtime_error("cannot read " + path);
    }
    std::vector<char> data(bytes);
    in.read(data.data(), static_cast<std::streamsize>(bytes));
    if (static_cast<size_t>(in.gcount()) != bytes || in.peek() != std::char_traits<char>::eof())
    {
        throw std::runtime_error(path + " does not hold " + std::to_string(bytes) + " bytes");
    }
    return data;
}

} // namespace

int32_t runCase(std::string const& libraryPath, std::string const& caseDir)
{
    std::string why;
    cu::Driver const* driver = cu::driver(&why);
    int devices = 0;
    if (driver != nullptr && driver->deviceGetCount(&devices) != cu::kSUCCESS)
    {
        devices = 0;
    }
    if (driver == nullptr || devices == 0)
    {
        std::cout << "SKIP: no CUDA device (" << (driver == nullptr ? why : "cuDeviceGetCount reports none") << ")\n";
        return 77;
    }
    // The primary context of device 0 made current, as the CUDA runtime (and so TensorRT) does.
    cu::Device device = 0;
    cu::Context cudaContext = nullptr;
    cuCheck(driver->deviceGet(&device, 0), "cuDeviceGet");
    cuCheck(driver->devicePrimaryCtxRetain(&cudaContext, device), "cuDevicePrimaryCtxRetain");
    cuCheck(driver->ctxSetCurrent(cudaContext), "cuCtxSetCurrent");
    int major = 0;
    int minor = 0;
    driver->deviceGetAttribute(&major, cu::kATTR_COMPUTE_CAPABILITY_MAJOR, device);
    driver->deviceGetAttribute(&minor, cu::kATTR_COMPUTE_CAPABILITY_MINOR, device);
    std::ifstream spec(caseDir + "/case.txt");
    if (!spec)
    {
        throw std::runtime_error("cannot read " + caseDir + "/case.txt");
    }
    std::string opName;
    Attrs attrs;
    std::vector<CaseTensor> inputs;
    std::vector<std::pair<std::string, DataType>> outputs; // in the op's output order
    std::string line;
    while (std::getline(spec, line))
    {
        std::istringstream words(line);
        std::string kind;
        if (!(words >> kind) || kind[0] == '#')
        {
            continue;
        }
        if (kind == "op")
        {
            words >> opName;
        }
        else if (kind == "attr")
        {
            std::string name;
            int32_t value = 0;
            words >> name >> value;
            attrs[name] = value;
        }
        else if (kind == "input")
        {
            CaseTensor t;
            std::string dtype;
            int32_t rank = 0;
            words >> t.name >> dtype >> rank;
            t.type = dataTypeOf(dtype);
            for (int32_t i = 0; i < rank; ++i)
            {
                int64_t e = 0;
                words >> e;
                t.dims.push_back(e);
            }
            inputs.push_back(t);
        }
        else if (kind == "output")
        {
            std::string name;
            std::string dtype;
            words >> name >> dtype;
            outputs.emplace_back(name, dataTypeOf(dtype));
        }
        else
        {
            throw std::runtime_error("case.txt: unknown line '" + line + "'");
        }
    }

    CapturingLogger logger;
    TestLoggerFinder finder(&logger);
    Library lib = openLibrary(libraryPath, false);
    lib.setLoggerFinder(&finder);
    if (lib.creators.count(opName) == 0)
    {
        throw std::runtime_error("no creator for op '" + opName + "'");
    }
    IPluginCreatorV3One& creator = *lib.creators[opName];
    Fields fields;
    for (auto const& kv : attrs)
    {
        fields.addInt(kv.first, kv.second);
    }
    PluginPtr built(creator.createPlugin(opName.c_str(), fields.collection(), TensorRTPhase::kBUILD));
    if (!built)
    {
        throw std::runtime_error("createPlugin refused the case's attributes: " + logger.last());
    }
    IPluginV3OneBuild* build = buildOf(*built);
    int32_t const nbInputs = static_cast<int32_t>(inputs.size());
    int32_t const nbOutputs = build->getNbOutputs();

    // Build phase, as TensorRT runs it: types, shapes, formats, configure.
    std::vector<DataType> inTypes;
    for (auto const& t : inputs)
    {
        inTypes.push_back(t.type);
    }
    std::vector<DataType> outTypes(nbOutputs);
    if (build->getOutputDataTypes(outTypes.data(), nbOutputs, inTypes.data(), nbInputs) != 0)
    {
        throw std::runtime_error("getOutputDataTypes failed: " + logger.last());
    }
    TestExprBuilder builder;
    std::vector<Extents> inDims;
    for (auto const& t : inputs)
    {
        inDims.push_back(t.dims);
    }
    std::vector<Extents> outDims = outputShapes(*built, inDims, nbOutputs, builder);
    if (outDims.size() != static_cast<size_t>(nbOutputs))
    {
        throw std::runtime_error("getOutputShapes failed: " + logger.last());
    }
    if (outputs.size() != static_cast<size_t>(nbOutputs))
    {
        throw std::runtime_error("case.txt must name the op's " + std::to_string(nbOutputs) + " outputs in order");
    }
    std::vector<DynamicPluginTensorDesc> inDesc;
    std::vector<DynamicPluginTensorDesc> outDesc;
    for (auto const& t : inputs)
    {
        inDesc.push_back(dynamicDesc(t.dims, t.type));
    }
    for (int32_t i = 0; i < nbOutputs; ++i)
    {
        // The case may ask for another supported output type (Int4MatMul's y in float16).
        outTypes[i] = outputs[i].second;
        outDesc.push_back(dynamicDesc(outDims[i], outTypes[i]));
    }
    std::vector<DynamicPluginTensorDesc> all = inDesc;
    all.insert(all.end(), outDesc.begin(), outDesc.end());
    for (int32_t pos = 0; pos < nbInputs + nbOutputs; ++pos)
    {
        if (!build->supportsFormatCombination(pos, all.data(), nbInputs, nbOutputs))
        {
            throw std::runtime_error("the plugin does not support tensor " + std::to_string(pos) + " as given");
        }
    }
    if (build->configurePlugin(inDesc.data(), nbInputs, outDesc.data(), nbOutputs) != 0)
    {
        throw std::runtime_error("configurePlugin failed: " + logger.last());
    }

    // Runtime phase, as an engine runs it: rebuilt from the serialized fields, attached, shaped, enqueued.
    PluginPtr plugin(creator.createPlugin(opName.c_str(), runtimeOf(*built)->getFieldsToSerialize(),
        TensorRTPhase::kRUNTIME));
    if (!plugin)
    {
        throw std::runtime_error("the runtime creator refused the serialized fields: " + logger.last());
    }
    TestResourceContext context;
    PluginPtr attached(runtimeOf(*plugin)->attachToContext(&context));
    if (!attached)
    {
        throw std::runtime_error("attachToContext failed");
    }
    IPluginV3OneRuntime* runtime = runtimeOf(*attached);
    std::vector<PluginTensorDesc> inRt;
    std::vector<PluginTensorDesc> outRt;
    for (auto const& d : inDesc)
    {
        inRt.push_back(d.desc);
    }
    for (auto const& d : outDesc)
    {
        outRt.push_back(d.desc);
    }
    if (runtime->onShapeChange(inRt.data(), nbInputs, outRt.data(), nbOutputs) != 0)
    {
        throw std::runtime_error("onShapeChange failed: " + logger.last());
    }

    DeviceBuffers buffers{driver, {}};
    std::vector<void*> deviceIn(nbInputs, nullptr);
    std::vector<void*> deviceOut(nbOutputs, nullptr);
    std::vector<size_t> outBytes(nbOutputs);
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        size_t const bytes = static_cast<size_t>(volumeOf(inputs[i].dims)) * elementSize(inputs[i].type);
        std::vector<char> host = readBinary(caseDir + "/" + inputs[i].name + ".bin", bytes);
        deviceIn[i] = buffers.allocate(bytes);
        cuCheck(driver->memcpyHtoD(devicePtr(deviceIn[i]), host.data(), bytes), "cuMemcpyHtoD");
    }
    for (int32_t i = 0; i < nbOutputs; ++i)
    {
        outBytes[i] = static_cast<size_t>(volumeOf(outDims[i])) * elementSize(outTypes[i]);
        deviceOut[i] = buffers.allocate(outBytes[i]);
        cuCheck(driver->memsetD8(devicePtr(deviceOut[i]), 0xFF, outBytes[i]), "cuMemsetD8");
    }
    // The workspace the build phase asked for, as an engine allocates it (Int4MatMul's split-K partials).
    size_t const workspaceBytes = build->getWorkspaceSize(inDesc.data(), nbInputs, outDesc.data(), nbOutputs);
    void* workspace = workspaceBytes > 0 ? buffers.allocate(workspaceBytes) : nullptr;
    cu::Stream stream = nullptr;
    cuCheck(driver->streamCreate(&stream, cu::kSTREAM_NON_BLOCKING), "cuStreamCreate");
    int32_t const status
        = runtime->enqueue(inRt.data(), outRt.data(), deviceIn.data(), deviceOut.data(), workspace, stream);
    cu::Result const synced = driver->streamSynchronize(stream);
    driver->streamDestroy(stream);
    cuCheck(synced, "cuStreamSynchronize");
    if (status != 0)
    {
        throw std::runtime_error("enqueue failed: " + logger.last());
    }
    std::ofstream manifest(caseDir + "/outputs.txt");
    for (int32_t i = 0; i < nbOutputs; ++i)
    {
        std::vector<char> host(outBytes[i]);
        cuCheck(driver->memcpyDtoH(host.data(), devicePtr(deviceOut[i]), outBytes[i]), "cuMemcpyDtoH");
        std::ofstream out(caseDir + "/" + outputs[i].first + ".bin", std::ios::binary);
        out.write(host.data(), static_cast<std::streamsize>(host.size()));
        manifest << outputs[i].first << " " << dtypeName(outTypes[i]) << " " << outDims[i].size();
        for (int64_t e : outDims[i])
        {
            manifest << " " << e;
        }
        manifest << "\n";
    }
    std::cout << opName << " ran (" << describe(attrs) << ") on sm_" << major * 10 + minor << ", workspace "
              << workspaceBytes << " bytes\n";
    return 0;
}

} // namespace hostTest
