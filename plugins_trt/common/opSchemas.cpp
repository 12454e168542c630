#include "opSchemas.h"

#include <algorithm>
#include <cstring>
#include <sstream>

namespace freeact
{
namespace plugin
{

std::string AttrSpec::problem(int32_t value) const
{
    std::ostringstream out;
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), value) == allowed.end())
    {
        out << "attribute " << name << " must be one of [";
        for (size_t i = 0; i < allowed.size(); ++i)
        {
            out << (i ? ", " : "") << allowed[i];
        }
        out << "] (got " << value << ")";
    }
    else if (minimum && value < *minimum)
    {
        out << "attribute " << name << " must be >= " << *minimum << " (got " << value << ")";
    }
    else if (multipleOf != 0 && value % multipleOf != 0)
    {
        out << "attribute " << name << " must be a multiple of " << multipleOf << " (got " << value << ")";
    }
    return out.str();
}

int32_t OpSpec::indexOf(char const* attrName) const noexcept
{
    for (size_t i = 0; i < attributes.size(); ++i)
    {
        if (std::strcmp(attributes[i].name, attrName) == 0)
        {
            return static_cast<int32_t>(i);
        }
    }
    return -1;
}

OpSpec const& freeActQuantizeSpec()
{
    // Inputs x, types, smooth, kron_1, kron_2, masks, clip; outputs codes, scale.
    static OpSpec const kSPEC{"FreeActQuantize", 7, 2,
        {
            {"bits", 4, {4, 8}, std::nullopt, 0},
            {"kronecker", 1, {0, 1}, std::nullopt, 0},
        }};
    return kSPEC;
}

OpSpec const& int4MatMulSpec()
{
    // Inputs codes, scale, weight, weight_scale, bias; output y.
    static OpSpec const kSPEC{"Int4MatMul", 5, 1,
        {
            {"act_bits", 4, {4, 8}, std::nullopt, 0},
            {"group_size", 0, {}, 0, 2},
        }};
    return kSPEC;
}

} // namespace plugin
} // namespace freeact
