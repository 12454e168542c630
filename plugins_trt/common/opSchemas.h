// The two ops' plugin identity and attribute constraints, in one C++ place. They mirror
// freeact_export/ops/schema.py (the contract): the host test checks every creator against that
// file's JSON, so a drift between the two fails a test rather than an engine build.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace freeact
{
namespace plugin
{

constexpr char kPLUGIN_VERSION[] = "1"; //!< schema.PLUGIN_VERSION
constexpr char kPLUGIN_NAMESPACE[] = ""; //!< schema.PLUGIN_NAMESPACE

//! One integer attribute of an op (the ONNX parser passes ONNX INT attributes as kINT32 fields).
struct AttrSpec
{
    char const* name;
    int32_t defaultValue;
    std::vector<int32_t> allowed;   //!< empty: any value
    std::optional<int32_t> minimum; //!< inclusive lower bound
    int32_t multipleOf{0};          //!< 0: no constraint

    //! Why `value` is not valid for this attribute, worded as schema.AttrSpec.problem; empty if valid.
    std::string problem(int32_t value) const;
};

//! One op: its plugin name, tensor counts and attributes in schema order.
struct OpSpec
{
    char const* name;
    int32_t nbInputs;
    int32_t nbOutputs;
    std::vector<AttrSpec> attributes;

    //! Index of the attribute `name` in `attributes`, or -1.
    int32_t indexOf(char const* attrName) const noexcept;
};

OpSpec const& freeActQuantizeSpec();
OpSpec const& int4MatMulSpec();

} // namespace plugin
} // namespace freeact
