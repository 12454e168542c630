// freeactAotManifest(): the compiled-in cubin table as JSON text, for introspection and the host test
// (which checks it against the build's aot_kernels.json). Per entry the table's fields, named as in
// aot_kernels.json, and what the cubin's own ELF says (kernels/cubinInfo.h): e_machine, the SM from
// e_flags, ptxas' target, the parameters' sizes, static shared memory, and the image's address in this
// process so that a caller in the same process can hash the bytes. Built once, on first call.
#include "../kernels/aotKernels.h"
#include "../kernels/aotLaunch.h"
#include "../kernels/cubinInfo.h"

#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>

#define FREEACT_EXPORT __attribute__((visibility("default")))

namespace
{

using freeact::aot::KernelKind;

char const* kernelName(KernelKind kind)
{
    switch (kind)
    {
    case KernelKind::kQUANTIZE_KRON: return "quantize_kron";
    case KernelKind::kQUANTIZE_PLAIN: return "quantize_plain";
    case KernelKind::kINT4_MATMUL: return "int4_matmul";
    case KernelKind::kSPLITK_REDUCE: return "splitk_reduce";
    }
    return "unknown";
}

//! A JSON string literal (the values are identifiers and messages: quotes, backslashes and controls escaped).
std::string quoted(std::string const& text)
{
    std::string out = "\"";
    for (char c : text)
    {
        if (c == '"' || c == '\\')
        {
            out += '\\';
            out += c;
        }
        else if (static_cast<unsigned char>(c) < 0x20)
        {
            char escaped[8];
            std::snprintf(escaped, sizeof(escaped), "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
            out += escaped;
        }
        else
        {
            out += c;
        }
    }
    return out + "\"";
}

std::string buildManifest()
{
    namespace aot = freeact::aot;
    std::ostringstream json;
    json << "{\n \"archs\": [";
    std::string archs;
    for (size_t i = 0, seen = 0; i < aot::kKernelCount; ++i)
    {
        int32_t const arch = aot::kKernels[i].arch;
        bool first = true;
        for (size_t j = 0; j < i; ++j)
        {
            first = first && aot::kKernels[j].arch != arch;
        }
        if (first)
        {
            json << (seen++ ? ", " : "") << arch;
        }
    }
    json << "],\n \"kron_tiles\": [";
    for (size_t i = 0; i < aot::kKronTileCount; ++i)
    {
        aot::KronTile const& t = aot::kKronTiles[i];
        json << (i ? ", " : "") << "{\"d1p\": " << t.d1p << ", \"d2p\": " << t.d2p << ", \"num_warps\": " << t.numWarps
             << "}";
    }
    json << "],\n \"matmul_tiles\": [";
    for (size_t i = 0; i < aot::kMatmulTileCount; ++i)
    {
        aot::MatmulTile const& t = aot::kMatmulTiles[i];
        json << (i ? ", " : "") << "{\"max_tokens\": " << t.maxTokens << ", \"bm\": " << t.bm << ", \"bn\": " << t.bn
             << ", \"bk\": " << t.bk << ", \"num_warps\": " << t.numWarps << ", \"split_k\": " << t.splitK << "}";
    }
    json << "],\n \"constants\": {\"REDUCE_BN\": " << aot::kReduceBn << ", \"SPLIT_TARGET_PER_SM\": "
         << aot::kSplitTargetPerSm << ", \"MIN_SPLIT_K\": " << aot::kMinSplitK << ", \"PLAIN_CHUNK\": "
         << aot::kPlainChunk << "},\n \"max_inner_dim\": " << freeact::kMaxInnerDim << ",\n \"kernels\": [";
    for (size_t i = 0; i < aot::kKernelCount; ++i)
    {
        aot::AotKernel const& k = aot::kKernels[i];
        aot::CubinInfo const elf = aot::inspectCubin(k.image, k.imageSize, k.entry);
        json << (i ? ",\n  " : "\n  ") << "{\"kernel\": \"" << kernelName(k.kernel) << "\", \"x_half\": " << k.xHalf
             << ", \"d1p\": " << k.d1p << ", \"d2p\": " << k.d2p << ", \"a_kind\": " << k.aKind << ", \"bm\": " << k.bm
             << ", \"bn\": " << k.bn << ", \"bk\": " << k.bk << ", \"partial\": " << k.partial
             << ", \"arch\": " << k.arch << ", \"entry\": " << quoted(k.entry) << ", \"num_warps\": " << k.numWarps
             << ", \"shared\": " << k.sharedBytes << ", \"params\": " << k.params << ", \"cubin_bytes\": "
             << k.imageSize << ", \"image_address\": " << reinterpret_cast<uintptr_t>(k.image)
             << ", \"elf_error\": " << quoted(elf.error) << ", \"elf_machine\": " << elf.machine
             << ", \"elf_abi_version\": " << elf.abiVersion << ", \"elf_flags\": " << elf.flags
             << ", \"elf_sm\": " << elf.sm << ", \"elf_target\": " << quoted(elf.target)
             << ", \"elf_has_entry\": " << (elf.hasEntry ? "true" : "false") << ", \"elf_param_sizes\": [";
        for (size_t p = 0; p < elf.paramSizes.size(); ++p)
        {
            json << (p ? ", " : "") << elf.paramSizes[p];
        }
        json << "], \"elf_static_shared\": " << elf.staticShared << "}";
    }
    json << "\n ]\n}\n";
    return json.str();
}

} // namespace

//! The cubin table compiled into this library, as JSON (see the file comment); valid for the library's lifetime.
extern "C" FREEACT_EXPORT char const* freeactAotManifest()
{
    try
    {
        static std::string const manifest = buildManifest();
        return manifest.c_str();
    }
    catch (...)
    {
        return "{\"error\": \"out of memory building the manifest\"}";
    }
}
