// Host test, check mode: every interface fact of both plugins against the op schema (no GPU needed).
#include "hostLibrary.h"

namespace hostTest
{
namespace
{

// ---------------------------------------------------------------------------------------------
// check mode

//! Every combination of valid values: the allowed ones, or a few from the minimum up.
std::vector<Attrs> validAttributeSets(SchemaOp const& op)
{
    std::vector<Attrs> sets{Attrs{}};
    for (auto const& a : op.attributes)
    {
        std::vector<int64_t> values;
        if (a.allowed)
        {
            values = *a.allowed;
        }
        else
        {
            int64_t const base = a.minimum.value_or(0);
            int64_t const step = a.multipleOf.value_or(1);
            for (int64_t v : {base, base + step, base + 16 * step, int64_t{128}, int64_t{4096}})
            {
                if (a.valid(v) && std::find(values.begin(), values.end(), v) == values.end())
                {
                    values.push_back(v);
                }
            }
        }
        std::vector<Attrs> next;
        for (auto const& s : sets)
        {
            for (int64_t v : values)
            {
                Attrs extended = s;
                extended[a.name] = static_cast<int32_t>(v);
                next.push_back(extended);
            }
        }
        sets = next;
    }
    return sets;
}

Attrs defaultsOf(SchemaOp const& op)
{
    Attrs attrs;
    for (auto const& a : op.attributes)
    {
        attrs[a.name] = static_cast<int32_t>(a.defaultValue);
    }
    return attrs;
}

void checkCreatorIdentity(Schema const& schema, SchemaOp const& op, IPluginCreatorV3One& creator)
{
    check(std::string(creator.getPluginVersion()) == schema.pluginVersion, op.name + ": creator version");
    check(std::string(creator.getPluginNamespace()) == schema.pluginNamespace, op.name + ": creator namespace");
    PluginFieldCollection const* names = creator.getFieldNames();
    check(names != nullptr && names->nbFields == static_cast<int32_t>(op.attributes.size()),
        op.name + ": the creator lists exactly the op's attributes");
    if (names == nullptr)
    {
        return;
    }
    for (int32_t i = 0; i < names->nbFields && i < static_cast<int32_t>(op.attributes.size()); ++i)
    {
        PluginField const& f = names->fields[i];
        SchemaAttr const& a = op.attributes[i];
        check(f.name != nullptr && a.name == f.name, op.name + ": field " + std::to_string(i) + " is " + a.name);
        // The ONNX parser passes ONNX INT attributes as kINT32 fields.
        check(f.type == PluginFieldType::kINT32 && f.length == 1, op.name + ": field " + a.name + " is one kINT32");
    }
}

void checkPluginIdentity(Schema const& schema, SchemaOp const& op, IPluginV3& plugin, Attrs const& attrs)
{
    std::string const where = op.name + " (" + describe(attrs) + ")";
    InterfaceInfo const info = plugin.getInterfaceInfo();
    check(std::strcmp(info.kind, "PLUGIN") == 0 && info.major == 1, where + ": an IPluginV3");
    IPluginV3OneCore* core = coreOf(plugin);
    IPluginV3OneBuild* build = buildOf(plugin);
    IPluginV3OneRuntime* runtime = runtimeOf(plugin);
    check(core != nullptr && build != nullptr && runtime != nullptr, where + ": core, build and runtime capabilities");
    if (core == nullptr || build == nullptr || runtime == nullptr)
    {
        return;
    }
    check(std::strcmp(core->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0, where + ": core interface kind");
    check(std::strcmp(build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0, where + ": build interface kind");
    check(std::strcmp(runtime->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0,
        where + ": runtime interface kind");
    check(op.name == core->getPluginName(), where + ": plugin name");
    check(schema.pluginVersion == core->getPluginVersion(), where + ": plugin version");
    check(schema.pluginNamespace == core->getPluginNamespace(), where + ": plugin namespace");
    check(build->getNbOutputs() == static_cast<int32_t>(op.outputs.size()), where + ": number of outputs");
    check(readFields(runtime->getFieldsToSerialize()) == attrs, where + ": serialized fields are the attributes");
}

void checkValidSets(Schema const& schema, SchemaOp const& op, IPluginCreatorV3One& creator, CapturingLogger& logger)
{
    for (Attrs const& attrs : validAttributeSets(op))
    {
        std::string const where = op.name + " (" + describe(attrs) + ")";
        int32_t const errorsBefore = logger.errors();
        Fields fields = fieldsOf(op, attrs);
        PluginPtr plugin(creator.createPlugin("layer", fields.collection(), TensorRTPhase::kBUILD));
        check(plugin != nullptr, where + ": created from valid fields");
        check(logger.errors() == errorsBefore, where + ": no error logged for valid fields");
        if (!plugin)
        {
            continue;
        }
        checkPluginIdentity(schema, op, *plugin, attrs);

        // Serialization round trip: the runtime creator rebuilds the plugin from the serialized fields.
        PluginFieldCollection const* serialized = runtimeOf(*plugin)->getFieldsToSerialize();
        PluginPtr restored(creator.createPlugin("layer", serialized, TensorRTPhase::kRUNTIME));
        check(restored != nullptr, where + ": rebuilt from its serialized fields (kRUNTIME)");
        if (restored)
        {
            checkPluginIdentity(schema, op, *restored, attrs);
        }
        PluginPtr cloned(plugin->clone());
        check(cloned != nullptr && cloned.get() != plugin.get(), where + ": clone");
        if (cloned)
        {
            checkPluginIdentity(schema, op, *cloned, attrs);
        }
        TestResourceContext context;
        PluginPtr attached(runtimeOf(*plugin)->attachToContext(&context));
        check(attached != nullptr && attached.get() != plugin.get(), where + ": attachToContext gives a new plugin");
        if (attached)
        {
            checkPluginIdentity(schema, op, *attached, attrs);
        }
    }
}

void expectRejected(IPluginCreatorV3One& creator, PluginFieldCollection const* fc, std::string const& what,
    CapturingLogger& logger, std::string const& mention = "")
{
    for (TensorRTPhase phase : {TensorRTPhase::kBUILD, TensorRTPhase::kRUNTIME})
    {
        int32_t const errorsBefore = logger.errors();
        PluginPtr plugin(creator.createPlugin("bad_layer", fc, phase));
        std::string const where = std::string(creator.getPluginName()) + ": " + what
            + (phase == TensorRTPhase::kBUILD ? " (build)" : " (runtime)");
        check(plugin == nullptr, where + " is rejected");
        check(logger.errors() > errorsBefore, where + " logs an error");
        if (!mention.empty() && logger.errors() > errorsBefore)
        {
            check(logger.last().find(mention) != std::string::npos,
                where + ": the message names " + mention + " (got: " + logger.last() + ")");
        }
    }
}

void checkInvalidSets(SchemaOp const& op, IPluginCreatorV3One& creator, CapturingLogger& logger)
{
    Attrs const defaults = defaultsOf(op);
    expectRejected(creator, nullptr, "a null field collection", logger);
    for (auto const& a : op.attributes)
    {
        auto others = [&](Fields& fields) {
            for (auto const& b : op.attributes)
            {
                if (b.name != a.name)
                {
                    fields.addInt(b.name, defaults.at(b.name));
                }
            }
        };
        int32_t const value = defaults.at(a.name);
        std::vector<uint8_t> as32(4);
        std::memcpy(as32.data(), &value, 4);
        int64_t const wide = value;
        std::vector<uint8_t> as64(8);
        std::memcpy(as64.data(), &wide, 8);
        float const asFloat = static_cast<float>(value);
        std::vector<uint8_t> asF32(4);
        std::memcpy(asF32.data(), &asFloat, 4);
        std::string const text = std::to_string(value);
        std::vector<uint8_t> asChars(text.begin(), text.end());
        asChars.push_back(0);
        std::vector<uint8_t> two32(8, 0);
        std::memcpy(two32.data(), &value, 4);
        std::memcpy(two32.data() + 4, &value, 4);

        struct Bad
        {
            char const* what;
            PluginFieldType type;
            std::vector<uint8_t> bytes;
            int32_t length;
        };
        for (Bad const& bad : {Bad{"as kINT64", PluginFieldType::kINT64, as64, 1},
                 Bad{"as kFLOAT32", PluginFieldType::kFLOAT32, asF32, 1},
                 Bad{"as kCHAR", PluginFieldType::kCHAR, asChars, static_cast<int32_t>(asChars.size())},
                 Bad{"with two values", PluginFieldType::kINT32, two32, 2},
                 Bad{"with no value", PluginFieldType::kINT32, {}, 0},
                 Bad{"with null data", PluginFieldType::kINT32, {}, 1}})
        {
            Fields fields;
            fields.add(a.name, bad.type, bad.bytes, bad.length);
            others(fields);
            expectRejected(creator, fields.collection(), "field " + a.name + " " + bad.what, logger, a.name);
        }
        for (int64_t candidate : {int64_t{-8}, int64_t{-1}, int64_t{0}, int64_t{1}, int64_t{2}, int64_t{3},
                 int64_t{5}, int64_t{7}, int64_t{9}, int64_t{16}, int64_t{33}, int64_t{127}, int64_t{INT32_MIN},
                 int64_t{INT32_MAX}})
        {
            if (a.valid(candidate))
            {
                continue;
            }
            Fields fields;
            fields.addInt(a.name, static_cast<int32_t>(candidate));
            others(fields);
            expectRejected(creator, fields.collection(), a.name + "=" + std::to_string(candidate), logger, a.name);
        }
        Fields missing;
        others(missing);
        expectRejected(creator, missing.collection(), "missing field " + a.name, logger, a.name);
        Fields twice = fieldsOf(op, defaults);
        twice.addInt(a.name, value);
        expectRejected(creator, twice.collection(), "field " + a.name + " given twice", logger, a.name);
    }
    Fields unknown = fieldsOf(op, defaults);
    unknown.addInt("not_an_attribute", 1);
    expectRejected(creator, unknown.collection(), "an unknown field", logger, "not_an_attribute");
    for (char const* parserAttr : {"plugin_version", "plugin_namespace"})
    {
        // The parser consumes these node attributes itself; the creator does not list them.
        Fields withParser = fieldsOf(op, defaults);
        withParser.addInt(parserAttr, 1);
        expectRejected(creator, withParser.collection(), std::string("the parser attribute ") + parserAttr, logger);
    }
}

PluginPtr createDefault(SchemaOp const& op, IPluginCreatorV3One& creator, Attrs const& overrides = {})
{
    Attrs attrs = defaultsOf(op);
    for (auto const& kv : overrides)
    {
        attrs[kv.first] = kv.second;
    }
    Fields fields = fieldsOf(op, attrs);
    PluginPtr plugin(creator.createPlugin("layer", fields.collection(), TensorRTPhase::kBUILD));
    if (!plugin)
    {
        throw std::runtime_error(op.name + ": cannot create a plugin with " + describe(attrs));
    }
    return plugin;
}

void checkOutputTypes(SchemaOp const& op, IPluginCreatorV3One& creator)
{
    PluginPtr plugin = createDefault(op, creator);
    IPluginV3OneBuild* build = buildOf(*plugin);
    // Every combination of the inputs' first and last allowed dtypes.
    for (int32_t variant = 0; variant < 2; ++variant)
    {
        std::vector<DataType> inputTypes;
        for (auto const& t : op.inputs)
        {
            inputTypes.push_back(dataTypeOf(variant == 0 ? t.dtypes.front() : t.dtypes.back()));
        }
        std::vector<DataType> outputTypes(op.outputs.size(), DataType::kBOOL);
        int32_t const status = build->getOutputDataTypes(outputTypes.data(), static_cast<int32_t>(outputTypes.size()),
            inputTypes.data(), static_cast<int32_t>(inputTypes.size()));
        check(status == 0, op.name + ": getOutputDataTypes succeeds");
        for (size_t i = 0; i < op.outputs.size(); ++i)
        {
            check(outputTypes[i] == dataTypeOf(op.outputs[i].dtypes.front()),
                op.name + ": output " + op.outputs[i].name + " is " + op.outputs[i].dtypes.front() + " (got "
                    + dtypeName(outputTypes[i]) + ")");
        }
    }
    std::vector<DataType> one(1);
    DataType in[1] = {DataType::kFLOAT};
    check(build->getOutputDataTypes(one.data(), 1, in, 1) != 0 || op.outputs.size() == 1,
        op.name + ": getOutputDataTypes refuses a wrong number of tensors");
}

//! Dtypes TensorRT may pick beyond the schema's own (the schema is the ONNX contract): FreeActQuantize's x
//! may be float16 (its schema lists it); Int4MatMul's y is float32 only, the one type its cubins write.
std::vector<std::string> pluginExtraDtypes(std::string const& /*op*/, std::string const& /*tensor*/)
{
    return {};
}

void checkFormats(SchemaOp const& op, IPluginCreatorV3One& creator)
{
    PluginPtr plugin = createDefault(op, creator);
    IPluginV3OneBuild* build = buildOf(*plugin);
    std::vector<SchemaTensor> tensors = op.inputs;
    tensors.insert(tensors.end(), op.outputs.begin(), op.outputs.end());
    int32_t const nbInputs = static_cast<int32_t>(op.inputs.size());
    int32_t const nbOutputs = static_cast<int32_t>(op.outputs.size());
    std::vector<DynamicPluginTensorDesc> descs;
    for (auto const& t : tensors)
    {
        descs.push_back(dynamicDesc({4, 64}, dataTypeOf(t.dtypes.front())));
    }
    DataType const candidates[] = {DataType::kFLOAT, DataType::kHALF, DataType::kINT8, DataType::kINT32,
        DataType::kBOOL, DataType::kUINT8, DataType::kBF16, DataType::kINT64, DataType::kFP8};
    for (int32_t pos = 0; pos < nbInputs + nbOutputs; ++pos)
    {
        std::vector<std::string> allowed = tensors[pos].dtypes;
        for (auto const& extra : pluginExtraDtypes(op.name, tensors[pos].name))
        {
            allowed.push_back(extra);
        }
        for (DataType type : candidates)
        {
            bool const expected = std::any_of(
                allowed.begin(), allowed.end(), [&](std::string const& d) { return dataTypeOf(d) == type; });
            std::vector<DynamicPluginTensorDesc> trial = descs;
            trial[pos].desc.type = type;
            bool const got = build->supportsFormatCombination(pos, trial.data(), nbInputs, nbOutputs);
            check(got == expected, op.name + ": " + tensors[pos].name + " as " + dtypeName(type) + " is "
                    + (expected ? "supported" : "refused"));
        }
        std::vector<DynamicPluginTensorDesc> vectorized = descs;
        vectorized[pos].desc.format = TensorFormat::kCHW32;
        check(!build->supportsFormatCombination(pos, vectorized.data(), nbInputs, nbOutputs),
            op.name + ": " + tensors[pos].name + " in a vectorized format is refused");
    }
    check(!build->supportsFormatCombination(nbInputs + nbOutputs, descs.data(), nbInputs, nbOutputs),
        op.name + ": a position past the last tensor is refused");
    check(!build->supportsFormatCombination(0, descs.data(), nbInputs - 1, nbOutputs),
        op.name + ": a wrong number of inputs is refused");
}
std::string shapeString(Extents const& e)
{
    std::string out = "[";
    for (size_t i = 0; i < e.size(); ++i)
    {
        out += (i ? ", " : "") + std::to_string(e[i]);
    }
    return out + "]";
}

void checkQuantizeShapes(SchemaOp const& op, IPluginCreatorV3One& creator)
{
    TestExprBuilder builder;
    for (int32_t bits : {4, 8})
    {
        PluginPtr plugin = createDefault(op, creator, {{"bits", bits}});
        std::string const where = "FreeActQuantize (bits=" + std::to_string(bits) + ")";
        std::vector<Extents> const inputs
            = {{3, 5, 64}, {3, 5}, {64}, {8, 8}, {8, 8}, {2, 64}, {2}};
        std::vector<Extents> const shapes = outputShapes(*plugin, inputs, 2, builder);
        Extents const codes = {3, 5, bits == 4 ? 32 : 64};
        check(shapes.size() == 2 && shapes[0] == codes,
            where + ": codes " + shapeString(codes) + (shapes.empty() ? "" : " (got " + shapeString(shapes[0]) + ")"));
        check(shapes.size() == 2 && shapes[1] == Extents({3, 5, 1}), where + ": scale [3, 5, 1]");

        // Dynamic token dims flow through unchanged (the same expressions).
        std::vector<IDimensionExpr const*> symbols = {builder.symbol(), builder.symbol()};
        std::vector<DimsExprs> in(7);
        for (size_t i = 0; i < inputs.size(); ++i)
        {
            in[i].nbDims = static_cast<int32_t>(inputs[i].size());
            for (size_t j = 0; j < inputs[i].size(); ++j)
            {
                in[i].d[j] = (i <= 1 && j < 2) ? symbols[j] : builder.constant(inputs[i][j]);
            }
        }
        std::vector<DimsExprs> out(2);
        int32_t const status = buildOf(*plugin)->getOutputShapes(in.data(), 7, nullptr, 0, out.data(), 2, builder);
        check(status == 0 && out[0].d[0] == symbols[0] && out[0].d[1] == symbols[1] && out[1].d[0] == symbols[0]
                && out[1].d[1] == symbols[1],
            where + ": dynamic leading dims pass through to codes and scale");

        std::vector<Extents> odd = inputs;
        odd[0] = {3, 5, 63};
        check(outputShapes(*plugin, odd, 2, builder).empty() == (bits == 4),
            where + ": an odd d is " + (bits == 4 ? "refused" : "accepted"));
        std::vector<Extents> wrongCount(inputs.begin(), inputs.end() - 1);
        check(outputShapes(*plugin, wrongCount, 2, builder).empty(), where + ": 6 inputs are refused");
    }
}

void checkMatMulShapes(SchemaOp const& op, IPluginCreatorV3One& creator)
{
    TestExprBuilder builder;
    for (int32_t actBits : {4, 8})
    {
        PluginPtr plugin = createDefault(op, creator, {{"act_bits", actBits}});
        std::string const where = "Int4MatMul (act_bits=" + std::to_string(actBits) + ")";
        int64_t const width = actBits == 4 ? 32 : 64;
        std::vector<Extents> const inputs = {{3, 5, width}, {3, 5, 1}, {48, 32}, {48, 1}, {48}};
        std::vector<Extents> const shapes = outputShapes(*plugin, inputs, 1, builder);
        check(shapes.size() == 1 && shapes[0] == Extents({3, 5, 48}),
            where + ": y [3, 5, 48]" + (shapes.empty() ? "" : " (got " + shapeString(shapes[0]) + ")"));
        std::vector<Extents> const shapes2 = outputShapes(*plugin, inputs, 1, builder, 1);
        check(shapes2.size() == 1 && shapes2[0] == Extents({-1, 5, 48}), where + ": y keeps a dynamic token dim");
    }
}

//! configurePlugin and onShapeChange on consistent and inconsistent shapes.
struct ShapeCase
{
    std::string what;
    Attrs attrs;
    std::vector<Extents> inputs;
    std::vector<Extents> outputs;
    bool valid;
    std::string mention{}; //!< a refusal's message names this
};

void checkShapeCases(SchemaOp const& op, IPluginCreatorV3One& creator, std::vector<ShapeCase> const& cases,
    CapturingLogger& logger)
{
    for (ShapeCase const& c : cases)
    {
        PluginPtr plugin = createDefault(op, creator, c.attrs);
        std::string const where = op.name + " (" + describe(c.attrs) + "): " + c.what;
        std::vector<DynamicPluginTensorDesc> in;
        std::vector<DynamicPluginTensorDesc> out;
        for (size_t i = 0; i < c.inputs.size(); ++i)
        {
            in.push_back(dynamicDesc(c.inputs[i], dataTypeOf(op.inputs[i].dtypes.front())));
        }
        for (size_t i = 0; i < c.outputs.size(); ++i)
        {
            out.push_back(dynamicDesc(c.outputs[i], dataTypeOf(op.outputs[i].dtypes.front())));
        }
        int32_t const errorsBefore = logger.errors();
        int32_t const configured = buildOf(*plugin)->configurePlugin(
            in.data(), static_cast<int32_t>(in.size()), out.data(), static_cast<int32_t>(out.size()));
        check((configured == 0) == c.valid, where + ": configurePlugin " + (c.valid ? "accepts" : "refuses"));
        check(logger.errors() - errorsBefore == (c.valid ? 0 : 1),
            where + ": one error is logged exactly when configurePlugin refuses");
        if (!c.valid && !c.mention.empty())
        {
            check(logger.last().find(c.mention) != std::string::npos,
                where + ": the message names '" + c.mention + "' (got: " + logger.last() + ")");
        }

        // At run time every extent is known: a dynamic one becomes 7.
        std::vector<PluginTensorDesc> inRt;
        std::vector<PluginTensorDesc> outRt;
        for (auto d : in)
        {
            for (int32_t j = 0; j < d.desc.dims.nbDims; ++j)
            {
                d.desc.dims.d[j] = d.desc.dims.d[j] < 0 ? 7 : d.desc.dims.d[j];
            }
            inRt.push_back(d.desc);
        }
        for (auto d : out)
        {
            for (int32_t j = 0; j < d.desc.dims.nbDims; ++j)
            {
                d.desc.dims.d[j] = d.desc.dims.d[j] < 0 ? 7 : d.desc.dims.d[j];
            }
            outRt.push_back(d.desc);
        }
        int32_t const errorsBeforeChange = logger.errors();
        int32_t const changed = runtimeOf(*plugin)->onShapeChange(
            inRt.data(), static_cast<int32_t>(inRt.size()), outRt.data(), static_cast<int32_t>(outRt.size()));
        check((changed == 0) == c.valid, where + ": onShapeChange " + (c.valid ? "accepts" : "refuses"));
        check(logger.errors() - errorsBeforeChange == (c.valid ? 0 : 1),
            where + ": one error is logged exactly when onShapeChange refuses");
    }
}

std::vector<ShapeCase> quantizeShapeCases()
{
    Attrs const b4{{"bits", 4}, {"kronecker", 1}};
    Attrs const b8{{"bits", 8}, {"kronecker", 1}};
    Attrs const noKron{{"bits", 4}, {"kronecker", 0}};
    Extents const x{-1, 64};
    Extents const types{-1};
    Extents const codes4{-1, 32};
    Extents const codes8{-1, 64};
    Extents const scale{-1, 1};
    return {
        {"shared factors", b4, {x, types, {64}, {8, 8}, {8, 8}, {2, 64}, {2}}, {codes4, scale}, true},
        {"shared factors, 8 bits", b8, {x, types, {64}, {4, 4}, {16, 16}, {2, 64}, {2}}, {codes8, scale}, true},
        {"per-type factors", b4, {x, types, {64}, {2, 8, 8}, {2, 8, 8}, {2, 64}, {2}}, {codes4, scale}, true},
        {"three token types, per-type factors", b4, {{2, -1, 64}, {2, -1}, {64}, {3, 2, 2}, {3, 32, 32}, {3, 64}, {3}},
            {{2, -1, 32}, {2, -1, 1}}, true},
        {"kronecker=0 with [[1.]] placeholders", noKron, {x, types, {64}, {1, 1}, {1, 1}, {1, 64}, {1}},
            {codes4, scale}, true},
        {"smooth of the wrong length", b4, {x, types, {63}, {8, 8}, {8, 8}, {2, 64}, {2}}, {codes4, scale}, false},
        {"factors that do not multiply to d", b4, {x, types, {64}, {4, 4}, {8, 8}, {2, 64}, {2}}, {codes4, scale},
            false},
        {"a non-square factor", b4, {x, types, {64}, {8, 4}, {8, 8}, {2, 64}, {2}}, {codes4, scale}, false},
        {"per-type factors for 3 types with 2 masks", b4, {x, types, {64}, {3, 8, 8}, {3, 8, 8}, {2, 64}, {2}},
            {codes4, scale}, false},
        {"one shared and one per-type factor", b4, {x, types, {64}, {8, 8}, {2, 8, 8}, {2, 64}, {2}},
            {codes4, scale}, false},
        {"clip for 3 types with 2 masks", b4, {x, types, {64}, {8, 8}, {8, 8}, {2, 64}, {3}}, {codes4, scale}, false},
        {"masks of the wrong width", b4, {x, types, {64}, {8, 8}, {8, 8}, {2, 32}, {2}}, {codes4, scale}, false},
        {"types of the wrong rank", b4, {x, {-1, 1}, {64}, {8, 8}, {8, 8}, {2, 64}, {2}}, {codes4, scale}, false},
        {"codes of the 8-bit width at 4 bits", b4, {x, types, {64}, {8, 8}, {8, 8}, {2, 64}, {2}}, {codes8, scale},
            false},
        {"an odd d at 4 bits", b4, {{-1, 63}, types, {63}, {7, 7}, {9, 9}, {2, 63}, {2}}, {{-1, 31}, scale}, false},
        // The kernels' tiles (variants.KRON_TILES) hold factors up to 128 x 128, any d1 <= d2 pair within.
        {"the largest tile, 128 x 128", b4, {{-1, 16384}, types, {16384}, {128, 128}, {128, 128}, {2, 16384}, {2}},
            {{-1, 8192}, scale}, true},
        {"factors 64 x 2 (d1 > d2)", b8, {{-1, 128}, types, {128}, {64, 64}, {2, 2}, {2, 128}, {2}}, {{-1, 128}, scale},
            true},
        {"no kernel tile: factors 2 x 256", b8, {{-1, 512}, types, {512}, {2, 2}, {256, 256}, {2, 512}, {2}},
            {{-1, 512}, scale}, false, "no kernel tile"},
        {"no kernel tile: factors 256 x 256", b4, {{-1, 65536}, types, {65536}, {256, 256}, {256, 256}, {2, 65536}, {2}},
            {{-1, 32768}, scale}, false, "no kernel tile"},
        {"an odd right factor at 4 bits", b4, {{-1, 6}, types, {6}, {2, 2}, {3, 3}, {2, 6}, {2}}, {{-1, 3}, scale},
            false, "must be even"},
        {"an odd right factor at 8 bits", b8, {{-1, 6}, types, {6}, {2, 2}, {3, 3}, {2, 6}, {2}}, {{-1, 6}, scale},
            true},
        {"no transform, d = 28672 (any d, in chunks)", noKron, {{-1, 28672}, types, {28672}, {1, 1}, {1, 1},
            {1, 28672}, {1}}, {{-1, 14336}, scale}, true},
    };
}

std::vector<ShapeCase> matMulShapeCases()
{
    Attrs const a4{{"act_bits", 4}, {"group_size", 0}};
    Attrs const a8{{"act_bits", 8}, {"group_size", 0}};
    Attrs const g32{{"act_bits", 4}, {"group_size", 32}};
    Attrs const g24{{"act_bits", 4}, {"group_size", 24}};
    Extents const codes4{-1, 32};
    Extents const scale{-1, 1};
    Extents const y{-1, 48};
    return {
        {"per-channel scales", a4, {codes4, scale, {48, 32}, {48, 1}, {48}}, {y}, true},
        {"8-bit activations", a8, {{-1, 64}, scale, {48, 32}, {48, 1}, {48}}, {y}, true},
        {"groups of 32", g32, {codes4, scale, {48, 32}, {48, 2}, {48}}, {y}, true},
        {"batched tokens", a4, {{2, -1, 32}, {2, -1, 1}, {48, 32}, {48, 1}, {48}}, {{2, -1, 48}}, true},
        {"weight of another d", a4, {codes4, scale, {48, 16}, {48, 1}, {48}}, {y}, false},
        {"group scales without groups", a4, {codes4, scale, {48, 32}, {48, 2}, {48}}, {y}, false},
        {"the wrong number of groups", g32, {codes4, scale, {48, 32}, {48, 3}, {48}}, {y}, false},
        {"a group size that does not divide d", g24, {codes4, scale, {48, 32}, {48, 2}, {48}}, {y}, false},
        {"bias of the wrong length", a4, {codes4, scale, {48, 32}, {48, 1}, {47}}, {y}, false},
        {"scale not [..., 1]", a4, {codes4, {-1, 2}, {48, 32}, {48, 1}, {48}}, {y}, false},
        {"y of the wrong width", a4, {codes4, scale, {48, 32}, {48, 1}, {48}}, {{-1, 47}}, false},
        // The kernels' int32 segment sums are exact up to d = 65536 (aotLaunch.h): refused at build, not at enqueue.
        {"d = 65536, the kernels' limit", a4, {{-1, 32768}, scale, {48, 32768}, {48, 1}, {48}}, {y}, true},
        {"d = 65538, past it", a4, {{-1, 32769}, scale, {48, 32769}, {48, 1}, {48}}, {y}, false},
    };
}

//! The split-K bound of launch.py's plan, computed here independently of the library: with the decode
//! tile (at most 16 tokens) K splits into per-channel slices of at least 512 (k / 512 of them at most,
//! reached where k is a multiple of 512, as in the cases below) or runs of groups of at least 512
//! columns (ceil(k / g / ceil(512 / g))); each split writes fp32 partial sums [tokens, n]. One split
//! needs no workspace.
size_t expectedWorkspace(int64_t maxTokens, int64_t k, int64_t n, int64_t group)
{
    int64_t const segs = group > 0 ? k / group : 0;
    int64_t const perSplit = group > 0 ? (512 + group - 1) / group : 1;
    int64_t const splits = group > 0 ? (segs + perSplit - 1) / perSplit : std::max<int64_t>(1, k / 512);
    return splits > 1 ? static_cast<size_t>(splits * std::min<int64_t>(maxTokens, 16) * n * 4) : 0;
}

void checkWorkspace(SchemaOp const& op, IPluginCreatorV3One& creator)
{
    struct Case
    {
        int32_t actBits;
        int32_t group;
        int64_t maxTokens;
        int64_t k;
        int64_t n;
    };
    for (Case const& c : {Case{4, 0, 4096, 4096, 48}, Case{8, 0, 4096, 4096, 48}, Case{4, 0, 8, 4096, 1024},
             Case{4, 0, 4096, 1024, 48}, Case{4, 0, 4096, 1000, 48}, Case{4, 0, 4096, 512, 48},
             Case{4, 128, 4096, 4096, 48}, Case{4, 32, 4096, 4096, 48}, Case{4, 1024, 4096, 4096, 48},
             Case{4, 2, 3, 65536, 7}, Case{8, 0, 1, 65536, 4096}})
    {
        PluginPtr plugin = createDefault(op, creator, {{"act_bits", c.actBits}, {"group_size", c.group}});
        int64_t const width = c.actBits == 4 ? c.k / 2 : c.k;
        int64_t const groups = c.group > 0 ? c.k / c.group : 1;
        std::vector<DynamicPluginTensorDesc> in = {dynamicDesc({-1, width}, DataType::kINT8),
            dynamicDesc({-1, 1}, DataType::kFLOAT), dynamicDesc({c.n, c.k / 2}, DataType::kINT8),
            dynamicDesc({c.n, groups}, DataType::kFLOAT), dynamicDesc({c.n}, DataType::kFLOAT)};
        std::vector<DynamicPluginTensorDesc> out = {dynamicDesc({-1, c.n}, DataType::kFLOAT)};
        for (size_t i = 0; i < 2; ++i)
        {
            in[i].max.d[0] = c.maxTokens;
        }
        out[0].max.d[0] = c.maxTokens;
        size_t const got = buildOf(*plugin)->getWorkspaceSize(in.data(), 5, out.data(), 1);
        size_t const want = expectedWorkspace(c.maxTokens, c.k, c.n, c.group);
        check(got == want,
            "Int4MatMul (act_bits=" + std::to_string(c.actBits) + ", group_size=" + std::to_string(c.group)
                + "): workspace for up to " + std::to_string(c.maxTokens) + " tokens, k " + std::to_string(c.k)
                + ", n " + std::to_string(c.n) + " is " + std::to_string(want) + " bytes (got " + std::to_string(got)
                + ")");
    }
}

void checkQuantizeWorkspace(SchemaOp const& op, IPluginCreatorV3One& creator)
{
    PluginPtr plugin = createDefault(op, creator);
    std::vector<DynamicPluginTensorDesc> in = {dynamicDesc({-1, 64}, DataType::kFLOAT), dynamicDesc({-1}, DataType::kINT32),
        dynamicDesc({64}, DataType::kFLOAT), dynamicDesc({8, 8}, DataType::kFLOAT), dynamicDesc({8, 8}, DataType::kFLOAT),
        dynamicDesc({2, 64}, DataType::kFLOAT), dynamicDesc({2}, DataType::kFLOAT)};
    std::vector<DynamicPluginTensorDesc> out = {dynamicDesc({-1, 32}, DataType::kINT8), dynamicDesc({-1, 1}, DataType::kFLOAT)};
    check(buildOf(*plugin)->getWorkspaceSize(in.data(), 7, out.data(), 2) == 0, "FreeActQuantize needs no workspace");
}

} // namespace

int32_t runChecks(std::string const& libraryPath, std::string const& schemaPath, std::string const& aotJsonPath)
{
    Schema const schema = loadSchema(schemaPath);
    CapturingLogger logger;
    logger.verbose(std::getenv("FREEACT_HOST_TEST_VERBOSE") != nullptr);
    TestLoggerFinder finder(&logger);
    Library lib = openLibrary(libraryPath, true);
    lib.setLoggerFinder(&finder);

    check(lib.creators.size() == schema.ops.size(), "one creator per schema op");
    for (SchemaOp const& op : schema.ops)
    {
        auto found = lib.creators.find(op.name);
        check(found != lib.creators.end(), "a creator for " + op.name);
        if (found == lib.creators.end())
        {
            continue;
        }
        IPluginCreatorV3One& creator = *found->second;
        std::cout << "  " << op.name << "\n";
        checkCreatorIdentity(schema, op, creator);
        checkValidSets(schema, op, creator, logger);
        checkInvalidSets(op, creator, logger);
        checkOutputTypes(op, creator);
        checkFormats(op, creator);
        if (op.name == "FreeActQuantize")
        {
            checkQuantizeShapes(op, creator);
            checkShapeCases(op, creator, quantizeShapeCases(), logger);
            checkQuantizeWorkspace(op, creator);
        }
        else if (op.name == "Int4MatMul")
        {
            checkMatMulShapes(op, creator);
            checkShapeCases(op, creator, matMulShapeCases(), logger);
            checkWorkspace(op, creator);
        }
        else
        {
            check(false, "the host test knows the shapes of " + op.name);
        }
    }
    // Without a logger finder the library must stay silent and still refuse bad fields.
    lib.setLoggerFinder(nullptr);
    if (!schema.ops.empty() && lib.creators.count(schema.ops.front().name) != 0)
    {
        int32_t const before = logger.errors();
        PluginPtr plugin(lib.creators[schema.ops.front().name]->createPlugin("layer", nullptr, TensorRTPhase::kBUILD));
        check(plugin == nullptr && logger.errors() == before, "with no logger finder: refused, nothing logged");
    }
    checkAotManifest(lib, aotJsonPath);
    std::cout << gChecks << " checks, " << gFailures << " failed\n";
    return gFailures == 0 ? 0 : 1;
}

} // namespace hostTest
