// An op's attribute values parsed from, and written back to, TensorRT plugin fields. The same
// fields serve the build phase (from the ONNX parser), serialization (getFieldsToSerialize) and
// the runtime phase (the creator rebuilds the plugin from the serialized fields).
#pragma once

#include "NvInferRuntime.h"
#include "opSchemas.h"

#include <cstdint>
#include <string>
#include <vector>

namespace freeact
{
namespace plugin
{

class AttributeValues
{
public:
    //! Checks every field: each attribute present exactly once as kINT32 of length 1 with a valid
    //! value, and no other field. Throws PluginError naming the first problem.
    static AttributeValues parse(OpSpec const& spec, nvinfer1::PluginFieldCollection const* fields);

    AttributeValues(AttributeValues const& other);
    AttributeValues& operator=(AttributeValues const& other);

    int32_t get(char const* name) const;
    OpSpec const& spec() const noexcept
    {
        return *mSpec;
    }

    //! The values as plugin fields (pointing into this object).
    nvinfer1::PluginFieldCollection const* fields() const noexcept
    {
        return &mCollection;
    }

    //! "bits=4, kronecker=1", for messages.
    std::string describe() const;

private:
    AttributeValues(OpSpec const& spec, std::vector<int32_t> values);
    void bindFields();

    OpSpec const* mSpec;
    std::vector<int32_t> mValues;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

//! The field list a creator advertises (names and kINT32, no data).
class FieldNames
{
public:
    explicit FieldNames(OpSpec const& spec);
    nvinfer1::PluginFieldCollection const* collection() const noexcept
    {
        return &mCollection;
    }

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

} // namespace plugin
} // namespace freeact
