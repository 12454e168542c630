#include "pluginFields.h"

#include "checks.h"

#include <cstring>
#include <sstream>

namespace freeact
{
namespace plugin
{
namespace
{
char const* fieldTypeName(nvinfer1::PluginFieldType type)
{
    using nvinfer1::PluginFieldType;
    switch (type)
    {
    case PluginFieldType::kFLOAT16: return "kFLOAT16";
    case PluginFieldType::kFLOAT32: return "kFLOAT32";
    case PluginFieldType::kFLOAT64: return "kFLOAT64";
    case PluginFieldType::kINT8: return "kINT8";
    case PluginFieldType::kINT16: return "kINT16";
    case PluginFieldType::kINT32: return "kINT32";
    case PluginFieldType::kCHAR: return "kCHAR";
    case PluginFieldType::kDIMS: return "kDIMS";
    case PluginFieldType::kUNKNOWN: return "kUNKNOWN";
    case PluginFieldType::kBF16: return "kBF16";
    case PluginFieldType::kINT64: return "kINT64";
    case PluginFieldType::kFP8: return "kFP8";
    case PluginFieldType::kINT4: return "kINT4";
    case PluginFieldType::kFP4: return "kFP4";
    }
    return "an unknown field type";
}
} // namespace

AttributeValues::AttributeValues(OpSpec const& spec, std::vector<int32_t> values)
    : mSpec(&spec)
    , mValues(std::move(values))
{
    bindFields();
}

AttributeValues::AttributeValues(AttributeValues const& other)
    : mSpec(other.mSpec)
    , mValues(other.mValues)
{
    bindFields();
}

AttributeValues& AttributeValues::operator=(AttributeValues const& other)
{
    mSpec = other.mSpec;
    mValues = other.mValues;
    bindFields();
    return *this;
}

AttributeValues AttributeValues::parse(OpSpec const& spec, nvinfer1::PluginFieldCollection const* fields)
{
    require(fields != nullptr, "no plugin fields given");
    require(fields->nbFields >= 0 && (fields->nbFields == 0 || fields->fields != nullptr), "malformed plugin fields");
    std::vector<int32_t> values(spec.attributes.size());
    std::vector<bool> seen(spec.attributes.size(), false);
    for (int32_t i = 0; i < fields->nbFields; ++i)
    {
        nvinfer1::PluginField const& field = fields->fields[i];
        require(field.name != nullptr, "plugin field " + std::to_string(i) + " has no name");
        int32_t const index = spec.indexOf(field.name);
        if (index < 0)
        {
            std::string known;
            for (auto const& attr : spec.attributes)
            {
                known += (known.empty() ? "" : ", ") + std::string(attr.name);
            }
            throw PluginError(std::string("unknown field ") + field.name + " (known: " + known + ")");
        }
        AttrSpec const& attr = spec.attributes[index];
        require(!seen[index], std::string("field ") + attr.name + " given twice");
        require(field.type == nvinfer1::PluginFieldType::kINT32,
            std::string("field ") + attr.name + " must be kINT32 (got " + fieldTypeName(field.type) + ")");
        require(field.length == 1 && field.data != nullptr,
            std::string("field ") + attr.name + " must hold one value (got " + std::to_string(field.length) + ")");
        int32_t value = 0;
        std::memcpy(&value, field.data, sizeof(value));
        std::string const problem = attr.problem(value);
        require(problem.empty(), problem);
        values[index] = value;
        seen[index] = true;
    }
    for (size_t i = 0; i < spec.attributes.size(); ++i)
    {
        // The rewrite writes every attribute and serialization writes them all back, so a missing
        // one means a node that did not come from this tool's schema: refuse rather than guess.
        require(seen[i], std::string("missing field ") + spec.attributes[i].name);
    }
    return AttributeValues(spec, std::move(values));
}

int32_t AttributeValues::get(char const* name) const
{
    int32_t const index = mSpec->indexOf(name);
    require(index >= 0, std::string("no attribute ") + name);
    return mValues[index];
}

void AttributeValues::bindFields()
{
    mFields.clear();
    mFields.reserve(mValues.size());
    for (size_t i = 0; i < mValues.size(); ++i)
    {
        mFields.emplace_back(mSpec->attributes[i].name, &mValues[i], nvinfer1::PluginFieldType::kINT32, 1);
    }
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
}

std::string AttributeValues::describe() const
{
    std::ostringstream out;
    for (size_t i = 0; i < mValues.size(); ++i)
    {
        out << (i ? ", " : "") << mSpec->attributes[i].name << "=" << mValues[i];
    }
    return out.str();
}

FieldNames::FieldNames(OpSpec const& spec)
{
    for (auto const& attr : spec.attributes)
    {
        mFields.emplace_back(attr.name, nullptr, nvinfer1::PluginFieldType::kINT32, 1);
    }
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
}

} // namespace plugin
} // namespace freeact
