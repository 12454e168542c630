// The op schema (as pytest writes it), the dlopen()ed library under test and helpers to create and
// query its plugins; shared by the check mode (hostCheck.cpp) and the run mode (hostRun.cpp).
#pragma once

#include "hostHarness.h"

namespace hostTest
{

// ---------------------------------------------------------------------------------------------
// The schema, as written by freeact_export.ops.schema.schema_json()

struct SchemaAttr
{
    std::string name;
    std::string type;
    int64_t defaultValue{0};
    std::optional<std::vector<int64_t>> allowed;
    std::optional<int64_t> minimum;
    std::optional<int64_t> multipleOf;

    //! schema.AttrSpec.problem(value) is None.
    bool valid(int64_t value) const
    {
        if (allowed && std::find(allowed->begin(), allowed->end(), value) == allowed->end())
        {
            return false;
        }
        if (minimum && value < *minimum)
        {
            return false;
        }
        return !(multipleOf && value % *multipleOf != 0);
    }
};

struct SchemaTensor
{
    std::string name;
    std::vector<std::string> dtypes;
};

struct SchemaOp
{
    std::string name;
    std::vector<SchemaTensor> inputs;
    std::vector<SchemaTensor> outputs;
    std::vector<SchemaAttr> attributes;
};

struct Schema
{
    std::string pluginVersion;
    std::string pluginNamespace;
    std::vector<SchemaOp> ops;
};

using Json = nlohmann::json;

//! The member `key` of `object` (nlohmann's at() throws when it is absent), required to be an array:
//! iterating a scalar would yield the scalar itself.
inline Json const& arrayAt(Json const& object, char const* key)
{
    Json const& value = object.at(key);
    if (!value.is_array())
    {
        throw std::runtime_error(std::string("schema JSON: '") + key + "' is not an array");
    }
    return value;
}

inline int64_t intOf(Json const& value, char const* key)
{
    if (!value.is_number_integer())
    {
        throw std::runtime_error(std::string("schema JSON: '") + key + "' is not an integer");
    }
    return value.get<int64_t>();
}

//! The integer member `key` of `object`, or nothing where it is null.
inline std::optional<int64_t> optionalIntAt(Json const& object, char const* key)
{
    Json const& value = object.at(key);
    return value.is_null() ? std::nullopt : std::optional<int64_t>(intOf(value, key));
}

inline Schema loadSchema(std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        throw std::runtime_error("cannot read " + path);
    }
    Json const json = Json::parse(in);
    Schema schema;
    schema.pluginVersion = json.at("plugin_version").get<std::string>();
    schema.pluginNamespace = json.at("plugin_namespace").get<std::string>();
    auto tensors = [](Json const& list) {
        std::vector<SchemaTensor> out;
        for (auto const& t : list)
        {
            SchemaTensor tensor{t.at("name").get<std::string>(), {}};
            for (auto const& d : arrayAt(t, "dtypes"))
            {
                tensor.dtypes.push_back(d.get<std::string>());
            }
            out.push_back(tensor);
        }
        return out;
    };
    for (auto const& op : arrayAt(json, "ops"))
    {
        SchemaOp entry{
            op.at("name").get<std::string>(), tensors(arrayAt(op, "inputs")), tensors(arrayAt(op, "outputs")), {}};
        for (auto const& a : arrayAt(op, "attributes"))
        {
            SchemaAttr attr;
            attr.name = a.at("name").get<std::string>();
            attr.type = a.at("type").get<std::string>();
            if (attr.type != "int")
            {
                throw std::runtime_error("host test: attribute type " + attr.type + " is not handled");
            }
            attr.defaultValue = intOf(a.at("default"), "default");
            if (!a.at("allowed").is_null())
            {
                attr.allowed.emplace();
                for (auto const& v : arrayAt(a, "allowed"))
                {
                    attr.allowed->push_back(intOf(v, "allowed"));
                }
            }
            attr.minimum = optionalIntAt(a, "minimum");
            attr.multipleOf = optionalIntAt(a, "multiple_of");
            entry.attributes.push_back(attr);
        }
        schema.ops.push_back(entry);
    }
    return schema;
}

inline DataType dataTypeOf(std::string const& dtype)
{
    if (dtype == "float32")
        return DataType::kFLOAT;
    if (dtype == "float16")
        return DataType::kHALF;
    if (dtype == "int32")
        return DataType::kINT32;
    if (dtype == "int8")
        return DataType::kINT8;
    throw std::runtime_error("host test: unknown dtype " + dtype);
}

inline size_t elementSize(DataType type)
{
    switch (type)
    {
    case DataType::kFLOAT:
    case DataType::kINT32: return 4;
    case DataType::kHALF: return 2;
    case DataType::kINT8: return 1;
    default: throw std::runtime_error("host test: unexpected data type");
    }
}

inline std::string dtypeName(DataType type)
{
    switch (type)
    {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kINT32: return "int32";
    case DataType::kINT8: return "int8";
    default: return "other(" + std::to_string(static_cast<int32_t>(type)) + ")";
    }
}

// ---------------------------------------------------------------------------------------------
// The library under test

struct Library
{
    void* handle{nullptr};
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    using SetLoggerFinder = void (*)(ILoggerFinder*);
    GetCreators getCreators{nullptr};
    SetLoggerFinder setLoggerFinder{nullptr};
    std::map<std::string, IPluginCreatorV3One*> creators;
};

inline Library openLibrary(std::string const& path, bool checkSymbols)
{
    Library lib;
    lib.handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib.handle == nullptr)
    {
        throw std::runtime_error(std::string("dlopen failed: ") + dlerror());
    }
    lib.getCreators = reinterpret_cast<Library::GetCreators>(dlsym(lib.handle, "getCreators"));
    lib.setLoggerFinder = reinterpret_cast<Library::SetLoggerFinder>(dlsym(lib.handle, "setLoggerFinder"));
    if (lib.getCreators == nullptr || lib.setLoggerFinder == nullptr)
    {
        throw std::runtime_error("the library does not export getCreators and setLoggerFinder");
    }
    if (checkSymbols)
    {
        check(dlsym(lib.handle, "freeactAotManifest") != nullptr, "freeactAotManifest is exported");
        // The C API of the hand-written CUDA kernels is gone: the Triton kernels run from torch directly.
        for (char const* symbol : {"freeactQuantize", "freeactInt4MatMul", "freeactCApiVersion"})
        {
            check(dlsym(lib.handle, symbol) == nullptr, std::string("the retired C API symbol ") + symbol
                    + " is not exported");
        }
        check(dlsym(lib.handle, "getPluginRegistry") == nullptr, "the library does not define getPluginRegistry");
    }
    int32_t count = -1;
    IPluginCreatorInterface* const* list = lib.getCreators(count);
    if (list == nullptr || count <= 0)
    {
        throw std::runtime_error("getCreators returned no creators");
    }
    for (int32_t i = 0; i < count; ++i)
    {
        InterfaceInfo const info = list[i]->getInterfaceInfo();
        check(std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") == 0 && info.major == 1,
            std::string("creator ") + std::to_string(i) + " is an IPluginCreatorV3One (got " + info.kind + ")");
        auto* creator = static_cast<IPluginCreatorV3One*>(list[i]);
        lib.creators[creator->getPluginName()] = creator;
    }
    check(static_cast<int32_t>(lib.creators.size()) == count, "creator names are distinct");
    return lib;
}

//! Plugin fields with storage, in any order and of any type (for invalid ones too).
class Fields
{
public:
    Fields& add(std::string name, PluginFieldType type, std::vector<uint8_t> bytes, int32_t length)
    {
        mEntries.push_back({std::move(name), type, std::move(bytes), length});
        return *this;
    }
    Fields& addInt(std::string name, int32_t value)
    {
        std::vector<uint8_t> bytes(sizeof(value));
        std::memcpy(bytes.data(), &value, sizeof(value));
        return add(std::move(name), PluginFieldType::kINT32, bytes, 1);
    }
    PluginFieldCollection const* collection()
    {
        mFields.clear();
        for (auto const& e : mEntries)
        {
            mFields.emplace_back(e.name.c_str(), e.bytes.empty() ? nullptr : e.bytes.data(), e.type, e.length);
        }
        mCollection.nbFields = static_cast<int32_t>(mFields.size());
        mCollection.fields = mFields.data();
        return &mCollection;
    }

private:
    struct Entry
    {
        std::string name;
        PluginFieldType type;
        std::vector<uint8_t> bytes;
        int32_t length;
    };
    std::vector<Entry> mEntries;
    std::vector<PluginField> mFields;
    PluginFieldCollection mCollection{};
};

using Attrs = std::map<std::string, int32_t>;

inline Fields fieldsOf(SchemaOp const& op, Attrs const& attrs)
{
    Fields fields;
    for (auto const& a : op.attributes)
    {
        fields.addInt(a.name, attrs.at(a.name));
    }
    return fields;
}

inline std::string describe(Attrs const& attrs)
{
    std::string out;
    for (auto const& kv : attrs)
    {
        out += (out.empty() ? "" : ", ") + kv.first + "=" + std::to_string(kv.second);
    }
    return out;
}

struct PluginDeleter
{
    void operator()(IPluginV3* plugin) const
    {
        delete plugin;
    }
};
using PluginPtr = std::unique_ptr<IPluginV3, PluginDeleter>;

inline IPluginV3OneCore* coreOf(IPluginV3& plugin)
{
    return static_cast<IPluginV3OneCore*>(plugin.getCapabilityInterface(PluginCapabilityType::kCORE));
}
inline IPluginV3OneBuild* buildOf(IPluginV3& plugin)
{
    return static_cast<IPluginV3OneBuild*>(plugin.getCapabilityInterface(PluginCapabilityType::kBUILD));
}
inline IPluginV3OneRuntime* runtimeOf(IPluginV3& plugin)
{
    return static_cast<IPluginV3OneRuntime*>(plugin.getCapabilityInterface(PluginCapabilityType::kRUNTIME));
}

//! The kINT32 fields of a collection by name; a field of another type or length maps to INT_MIN.
inline Attrs readFields(PluginFieldCollection const* fc)
{
    Attrs out;
    if (fc == nullptr)
    {
        return out;
    }
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        int32_t value = INT_MIN;
        if (f.type == PluginFieldType::kINT32 && f.length == 1 && f.data != nullptr)
        {
            std::memcpy(&value, f.data, sizeof(value));
        }
        out[f.name != nullptr ? f.name : "<null>"] = value;
    }
    return out;
}

inline Dims dimsOf(std::vector<int64_t> const& extents)
{
    Dims dims{};
    dims.nbDims = static_cast<int32_t>(extents.size());
    for (size_t i = 0; i < extents.size(); ++i)
    {
        dims.d[i] = extents[i];
    }
    return dims;
}

inline DynamicPluginTensorDesc dynamicDesc(std::vector<int64_t> const& extents, DataType type)
{
    DynamicPluginTensorDesc desc{};
    desc.desc.dims = dimsOf(extents);
    desc.desc.type = type;
    desc.desc.format = TensorFormat::kLINEAR;
    desc.desc.scale = 1.0F;
    desc.min = desc.desc.dims;
    desc.opt = desc.desc.dims;
    desc.max = desc.desc.dims;
    for (int32_t i = 0; i < desc.desc.dims.nbDims; ++i)
    {
        if (desc.desc.dims.d[i] < 0)
        {
            desc.min.d[i] = 1;
            desc.opt.d[i] = 16;
            desc.max.d[i] = 4096;
        }
    }
    return desc;
}

// ---------------------------------------------------------------------------------------------
// Output shapes through the build interface (both modes)


using Extents = std::vector<int64_t>;

//! Output shapes for constant inputs, or an empty vector when getOutputShapes fails.
inline std::vector<Extents> outputShapes(IPluginV3& plugin, std::vector<Extents> const& inputs, size_t nbOutputs,
    TestExprBuilder& builder, int32_t symbolicLeading = 0, std::vector<IDimensionExpr const*>* symbols = nullptr)
{
    std::vector<DimsExprs> in(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i)
    {
        in[i].nbDims = static_cast<int32_t>(inputs[i].size());
        for (size_t j = 0; j < inputs[i].size(); ++j)
        {
            bool const symbolic = (i <= 1) && static_cast<int32_t>(j) < symbolicLeading;
            in[i].d[j] = symbolic ? (symbols != nullptr && j < symbols->size() ? (*symbols)[j] : builder.symbol())
                                  : builder.constant(inputs[i][j]);
        }
    }
    std::vector<DimsExprs> out(nbOutputs);
    int32_t const status = buildOf(plugin)->getOutputShapes(in.data(), static_cast<int32_t>(in.size()), nullptr, 0,
        out.data(), static_cast<int32_t>(out.size()), builder);
    if (status != 0)
    {
        return {};
    }
    std::vector<Extents> shapes;
    for (auto const& o : out)
    {
        Extents e;
        for (int32_t j = 0; j < o.nbDims; ++j)
        {
            e.push_back(o.d[j] == nullptr ? -2 : (o.d[j]->isConstant() ? o.d[j]->getConstantValue() : -1));
        }
        shapes.push_back(e);
    }
    return shapes;
}

// The two modes (see hostTest.cpp for their command lines).
int32_t runChecks(std::string const& libraryPath, std::string const& schemaPath, std::string const& aotJsonPath);
int32_t runCase(std::string const& libraryPath, std::string const& caseDir);

//! Check mode, the cubin table: the library's freeactAotManifest() against the build's aot_kernels.json
//! (hostAot.cpp); failures are counted with check().
void checkAotManifest(Library const& lib, std::string const& aotJsonPath);

} // namespace hostTest
