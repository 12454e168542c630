// A small JSON reader for the host test: enough for the op schema JSON that pytest writes
// (freeact_export.ops.schema.schema_json()), so the test needs no third-party library.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace minijson
{

struct Value
{
    enum class Kind
    {
        kNULL,
        kBOOL,
        kNUMBER,
        kSTRING,
        kARRAY,
        kOBJECT
    };

    Kind kind{Kind::kNULL};
    bool boolean{false};
    double number{0.0};
    std::string string;
    std::vector<Value> array;
    std::vector<std::pair<std::string, Value>> object;

    bool isNull() const
    {
        return kind == Kind::kNULL;
    }
    bool has(std::string const& key) const;
    //! The member `key` of an object; throws std::runtime_error if absent or not an object.
    Value const& operator[](std::string const& key) const;
    int64_t asInt() const;
    std::string const& asString() const;
    std::vector<Value> const& asArray() const;
};

//! Throws std::runtime_error on malformed text.
Value parse(std::string const& text);
Value parseFile(std::string const& path);

} // namespace minijson
