#include "miniJson.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace minijson
{
namespace
{

class Parser
{
public:
    explicit Parser(std::string const& text)
        : mText(text)
    {
    }

    Value document()
    {
        Value value = parseValue();
        skipSpace();
        if (mPos != mText.size())
        {
            error("trailing characters");
        }
        return value;
    }

private:
    [[noreturn]] void error(char const* what) const
    {
        throw std::runtime_error(std::string("JSON: ") + what + " at offset " + std::to_string(mPos));
    }

    void skipSpace()
    {
        while (mPos < mText.size() && (mText[mPos] == ' ' || mText[mPos] == '\n' || mText[mPos] == '\r' || mText[mPos] == '\t'))
        {
            ++mPos;
        }
    }

    bool consume(char const* word)
    {
        std::string const w(word);
        if (mText.compare(mPos, w.size(), w) == 0)
        {
            mPos += w.size();
            return true;
        }
        return false;
    }

    Value parseValue()
    {
        skipSpace();
        if (mPos >= mText.size())
        {
            error("unexpected end");
        }
        Value value;
        char const c = mText[mPos];
        if (c == '{')
        {
            value.kind = Value::Kind::kOBJECT;
            ++mPos;
            skipSpace();
            if (mPos < mText.size() && mText[mPos] == '}')
            {
                ++mPos;
                return value;
            }
            while (true)
            {
                skipSpace();
                std::string key = parseString();
                skipSpace();
                if (mPos >= mText.size() || mText[mPos++] != ':')
                {
                    error("expected ':'");
                }
                value.object.emplace_back(std::move(key), parseValue());
                skipSpace();
                if (mPos < mText.size() && mText[mPos] == ',')
                {
                    ++mPos;
                    continue;
                }
                if (mPos < mText.size() && mText[mPos] == '}')
                {
                    ++mPos;
                    return value;
                }
                error("expected ',' or '}'");
            }
        }
        if (c == '[')
        {
            value.kind = Value::Kind::kARRAY;
            ++mPos;
            skipSpace();
            if (mPos < mText.size() && mText[mPos] == ']')
            {
                ++mPos;
                return value;
            }
            while (true)
            {
                value.array.push_back(parseValue());
                skipSpace();
                if (mPos < mText.size() && mText[mPos] == ',')
                {
                    ++mPos;
                    continue;
                }
                if (mPos < mText.size() && mText[mPos] == ']')
                {
                    ++mPos;
                    return value;
                }
                error("expected ',' or ']'");
            }
        }
        if (c == '"')
        {
            value.kind = Value::Kind::kSTRING;
            value.string = parseString();
            return value;
        }
        if (consume("true"))
        {
            value.kind = Value::Kind::kBOOL;
            value.boolean = true;
            return value;
        }
        if (consume("false"))
        {
            value.kind = Value::Kind::kBOOL;
            return value;
        }
        if (consume("null"))
        {
            return value;
        }
        char* end = nullptr;
        value.number = std::strtod(mText.c_str() + mPos, &end);
        if (end == mText.c_str() + mPos)
        {
            error("unexpected character");
        }
        mPos = static_cast<size_t>(end - mText.c_str());
        value.kind = Value::Kind::kNUMBER;
        return value;
    }

    void appendUtf8(std::string& out, uint32_t code)
    {
        if (code < 0x80)
        {
            out += static_cast<char>(code);
        }
        else if (code < 0x800)
        {
            out += static_cast<char>(0xC0 | (code >> 6));
            out += static_cast<char>(0x80 | (code & 0x3F));
        }
        else if (code < 0x10000)
        {
            out += static_cast<char>(0xE0 | (code >> 12));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
        }
        else
        {
            out += static_cast<char>(0xF0 | (code >> 18));
            out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
        }
    }

    uint32_t hex4()
    {
        if (mPos + 4 > mText.size())
        {
            error("short \\u escape");
        }
        uint32_t const code = static_cast<uint32_t>(std::stoul(mText.substr(mPos, 4), nullptr, 16));
        mPos += 4;
        return code;
    }

    std::string parseString()
    {
        if (mPos >= mText.size() || mText[mPos] != '"')
        {
            error("expected a string");
        }
        ++mPos;
        std::string out;
        while (mPos < mText.size() && mText[mPos] != '"')
        {
            char const c = mText[mPos++];
            if (c != '\\')
            {
                out += c;
                continue;
            }
            if (mPos >= mText.size())
            {
                error("unterminated escape");
            }
            char const e = mText[mPos++];
            switch (e)
            {
            case '"': out += '"'; break;
            case '\\': out += '\\'; break;
            case '/': out += '/'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 't': out += '\t'; break;
            case 'u':
            {
                uint32_t code = hex4();
                if (code >= 0xD800 && code < 0xDC00 && consume("\\u"))
                {
                    code = 0x10000 + ((code - 0xD800) << 10) + (hex4() - 0xDC00);
                }
                appendUtf8(out, code);
                break;
            }
            default: error("bad escape");
            }
        }
        if (mPos >= mText.size())
        {
            error("unterminated string");
        }
        ++mPos;
        return out;
    }

    std::string const& mText;
    size_t mPos{0};
};

} // namespace

bool Value::has(std::string const& key) const
{
    for (auto const& member : object)
    {
        if (member.first == key)
        {
            return true;
        }
    }
    return false;
}

Value const& Value::operator[](std::string const& key) const
{
    if (kind != Kind::kOBJECT)
    {
        throw std::runtime_error("JSON: not an object (looking up '" + key + "')");
    }
    for (auto const& member : object)
    {
        if (member.first == key)
        {
            return member.second;
        }
    }
    throw std::runtime_error("JSON: no member '" + key + "'");
}

int64_t Value::asInt() const
{
    if (kind != Kind::kNUMBER || std::floor(number) != number)
    {
        throw std::runtime_error("JSON: not an integer");
    }
    return static_cast<int64_t>(number);
}

std::string const& Value::asString() const
{
    if (kind != Kind::kSTRING)
    {
        throw std::runtime_error("JSON: not a string");
    }
    return string;
}

std::vector<Value> const& Value::asArray() const
{
    if (kind != Kind::kARRAY)
    {
        throw std::runtime_error("JSON: not an array");
    }
    return array;
}

Value parse(std::string const& text)
{
    return Parser(text).document();
}

Value parseFile(std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        throw std::runtime_error("cannot read " + path);
    }
    std::ostringstream buffer;
    buffer << in.rdbuf();
    return parse(buffer.str());
}

} // namespace minijson
