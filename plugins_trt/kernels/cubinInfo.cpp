#include "cubinInfo.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace freeact
{
namespace aot
{
namespace
{

constexpr uint32_t kSHT_NOBITS = 8;
constexpr uint8_t kEIFMT_SVAL = 4;
constexpr uint8_t kEIATTR_KPARAM_INFO = 0x17;

//! Little-endian reads within [0, size); false when out of range.
class Bytes
{
public:
    Bytes(unsigned char const* data, size_t size)
        : mData(data)
        , mSize(size)
    {
    }
    template <typename T>
    bool read(uint64_t offset, T& out) const
    {
        if (offset > mSize || mSize - offset < sizeof(T))
        {
            return false;
        }
        std::memcpy(&out, mData + offset, sizeof(T));
        return true;
    }
    bool has(uint64_t offset, uint64_t length) const
    {
        return offset <= mSize && mSize - offset >= length;
    }
    unsigned char const* at(uint64_t offset) const
    {
        return mData + offset;
    }

private:
    unsigned char const* mData;
    size_t mSize;
};

struct Section
{
    std::string name;
    uint32_t type{0};
    uint64_t offset{0};
    uint64_t size{0};
};

std::string targetFromNote(Bytes const& bytes, Section const& note)
{
    if (!bytes.has(note.offset, note.size))
    {
        return "";
    }
    std::string const text(reinterpret_cast<char const*>(bytes.at(note.offset)), note.size);
    size_t const at = text.find("-arch ");
    if (at == std::string::npos)
    {
        return "";
    }
    size_t begin = at + 6;
    while (begin < text.size() && text[begin] == ' ')
    {
        ++begin;
    }
    size_t end = begin;
    while (end < text.size() && text[end] != ' ' && text[end] != '\0')
    {
        ++end;
    }
    return text.substr(begin, end - begin);
}

} // namespace

CubinInfo inspectCubin(unsigned char const* image, size_t size, char const* entry)
{
    CubinInfo info;
    Bytes const bytes(image, size);
    if (image == nullptr || size < 64 || std::memcmp(image, "\x7f" "ELF", 4) != 0)
    {
        info.error = "not an ELF file";
        return info;
    }
    if (image[4] != 2 || image[5] != 1)
    {
        info.error = "not a little-endian ELF64 file";
        return info;
    }
    info.abiVersion = image[8];
    uint16_t machine = 0;
    uint32_t flags = 0;
    uint64_t shoff = 0;
    uint16_t shentsize = 0;
    uint16_t shnum = 0;
    uint16_t shstrndx = 0;
    bytes.read(18, machine);
    bytes.read(48, flags);
    bytes.read(40, shoff);
    bytes.read(58, shentsize);
    bytes.read(60, shnum);
    bytes.read(62, shstrndx);
    info.machine = machine;
    info.flags = flags;
    if (info.abiVersion == 7)
    {
        info.sm = static_cast<int32_t>(flags & 0xffU);
    }
    else if (info.abiVersion == 8)
    {
        info.sm = static_cast<int32_t>((flags >> 8) & 0xffU);
    }
    else
    {
        info.error = "unknown CUDA ELF ABI version " + std::to_string(info.abiVersion);
        return info;
    }
    if (shentsize < 64 || shstrndx >= shnum || !bytes.has(shoff, static_cast<uint64_t>(shnum) * shentsize))
    {
        info.error = "malformed section header table";
        return info;
    }
    std::vector<Section> sections(shnum);
    std::vector<uint32_t> names(shnum);
    for (uint16_t i = 0; i < shnum; ++i)
    {
        uint64_t const base = shoff + static_cast<uint64_t>(i) * shentsize;
        bytes.read(base, names[i]);
        bytes.read(base + 4, sections[i].type);
        bytes.read(base + 24, sections[i].offset);
        bytes.read(base + 32, sections[i].size);
    }
    Section const& strings = sections[shstrndx];
    if (!bytes.has(strings.offset, strings.size))
    {
        info.error = "malformed section name table";
        return info;
    }
    for (uint16_t i = 0; i < shnum; ++i)
    {
        if (names[i] < strings.size)
        {
            char const* begin = reinterpret_cast<char const*>(bytes.at(strings.offset + names[i]));
            sections[i].name.assign(begin, strnlen(begin, strings.size - names[i]));
        }
    }
    std::string const name = entry != nullptr ? entry : "";
    std::vector<std::pair<int32_t, int32_t>> params; // (ordinal, bytes)
    bool sawInfo = false;
    for (Section const& s : sections)
    {
        if (s.name == ".note.nv.tkinfo")
        {
            info.target = targetFromNote(bytes, s);
        }
        else if (s.name == ".text." + name)
        {
            info.hasEntry = true;
        }
        else if (s.name == ".nv.shared." + name)
        {
            info.staticShared = static_cast<int64_t>(s.size);
        }
        else if (s.name == ".nv.info." + name && s.type != kSHT_NOBITS && bytes.has(s.offset, s.size))
        {
            sawInfo = true;
            // Records: format (1 byte), attribute (1), a 2-byte value, or with format EIFMT_SVAL the
            // size of the payload that follows.
            uint64_t at = s.offset;
            uint64_t const end = s.offset + s.size;
            while (at + 4 <= end)
            {
                uint8_t const format = *bytes.at(at);
                uint8_t const attribute = *bytes.at(at + 1);
                uint16_t value = 0;
                bytes.read(at + 2, value);
                at += 4;
                if (format != kEIFMT_SVAL)
                {
                    continue;
                }
                if (at + value > end)
                {
                    info.error = ".nv.info." + name + " has a record past its end";
                    return info;
                }
                if (attribute == kEIATTR_KPARAM_INFO && value >= 12)
                {
                    uint16_t ordinal = 0;
                    uint32_t paramFlags = 0;
                    bytes.read(at + 4, ordinal);
                    bytes.read(at + 8, paramFlags);
                    params.emplace_back(ordinal, static_cast<int32_t>((paramFlags >> 18) & 0x3fffU));
                }
                at += value;
            }
        }
    }
    std::sort(params.begin(), params.end());
    for (size_t i = 0; i < params.size(); ++i)
    {
        if (params[i].first != static_cast<int32_t>(i))
        {
            info.error = "the kernel's parameter ordinals are not 0.." + std::to_string(params.size() - 1);
            return info;
        }
        info.paramSizes.push_back(params[i].second);
    }
    size_t const suffix = info.target.size();
    info.archSpecific = suffix > 0 && info.target[suffix - 1] == 'a';
    if (!info.hasEntry)
    {
        info.error = "no kernel " + name + " (.text." + name + ")";
    }
    else if (!sawInfo)
    {
        info.error = "no .nv.info." + name + " section";
    }
    return info;
}

} // namespace aot
} // namespace freeact
