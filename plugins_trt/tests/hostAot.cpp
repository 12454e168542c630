// Host test, check mode, the cubin table: the library's freeactAotManifest() against the build's
// aot_kernels.json (written by `python -m freeact_export.kernels.aot` with the cubins' sha256).
//
// - the same architectures, tile tables and constants as the JSON;
// - every JSON kernel row (variant × architecture) in the library once, with the same entry name,
//   warps, shared memory, parameter count and cubin size, and bytes whose sha256 is the JSON's
//   (hashed where the library holds them, in this process);
// - every variant the launchers can ask for (from the tile tables) present for every architecture,
//   unless the JSON's left_out says why not (more shared memory than the architecture has);
// - each cubin consistent with itself: ELF e_machine EM_CUDA (190), the SM of its e_flags equal to
//   `arch`, its kernel present, its parameters the kernel body's non-constexpr ones (pointers 8 bytes,
//   i32 4) plus Triton's two scratch pointers = `params`, shared memory (dynamic + static) within the
//   architecture's limit, 16-byte aligned in the library.
#include "hostLibrary.h"

#include <array>
#include <iomanip>
#include <set>

namespace hostTest
{
namespace
{

//! SHA-256 (FIPS 180-4).
class Sha256
{
public:
    static std::string hex(unsigned char const* data, size_t size)
    {
        std::array<uint32_t, 8> h = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c,
            0x1f83d9ab, 0x5be0cd19};
        size_t const whole = size / 64;
        for (size_t i = 0; i < whole; ++i)
        {
            block(h, data + 64 * i);
        }
        unsigned char tail[128] = {};
        size_t const rest = size - 64 * whole;
        std::memcpy(tail, data + 64 * whole, rest);
        tail[rest] = 0x80;
        size_t const tailBlocks = rest + 9 <= 64 ? 1 : 2;
        uint64_t const bits = static_cast<uint64_t>(size) * 8;
        for (int32_t i = 0; i < 8; ++i)
        {
            tail[tailBlocks * 64 - 1 - i] = static_cast<unsigned char>(bits >> (8 * i));
        }
        for (size_t i = 0; i < tailBlocks; ++i)
        {
            block(h, tail + 64 * i);
        }
        std::ostringstream out;
        for (uint32_t word : h)
        {
            out << std::hex << std::setw(8) << std::setfill('0') << word;
        }
        return out.str();
    }

private:
    static uint32_t rotr(uint32_t x, int32_t n)
    {
        return (x >> n) | (x << (32 - n));
    }
    static void block(std::array<uint32_t, 8>& h, unsigned char const* p)
    {
        static constexpr uint32_t k[64] = {0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
            0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7,
            0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
            0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85,
            0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
            0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c,
            0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
            0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
        uint32_t w[64];
        for (int32_t i = 0; i < 16; ++i)
        {
            w[i] = (uint32_t{p[4 * i]} << 24) | (uint32_t{p[4 * i + 1]} << 16) | (uint32_t{p[4 * i + 2]} << 8)
                | uint32_t{p[4 * i + 3]};
        }
        for (int32_t i = 16; i < 64; ++i)
        {
            uint32_t const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        std::array<uint32_t, 8> v = h;
        for (int32_t i = 0; i < 64; ++i)
        {
            uint32_t const s1 = rotr(v[4], 6) ^ rotr(v[4], 11) ^ rotr(v[4], 25);
            uint32_t const ch = (v[4] & v[5]) ^ (~v[4] & v[6]);
            uint32_t const t1 = v[7] + s1 + ch + k[i] + w[i];
            uint32_t const s0 = rotr(v[0], 2) ^ rotr(v[0], 13) ^ rotr(v[0], 22);
            uint32_t const maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            uint32_t const t2 = s0 + maj;
            v = {t1 + t2, v[0], v[1], v[2], v[3] + t1, v[4], v[5], v[6]};
        }
        for (size_t i = 0; i < 8; ++i)
        {
            h[i] += v[i];
        }
    }
};

//! The kernel bodies' non-constexpr parameters (freeact_export/kernels/quantize_kernels.py,
//! matmul_kernels.py): pointers first, then i32 values; Triton appends two scratch pointers.
struct Signature
{
    int32_t pointers;
    int32_t ints;
};
std::map<std::string, Signature> const kSignatures = {
    {"quantize_kron", {9, 7}},  // x, types, smooth, k1, k2, masks, clip, codes, scale; d, d1, d2, 2 strides, bits, K
    {"quantize_plain", {7, 3}}, // x, types, smooth, masks, clip, codes, scale; d, bits, K
    {"int4_matmul", {6, 9}},    // a, scale, w, ws, bias, out; M, N, K, seg_len, segs, segs_per_split, ws_seg_div, groups, has_bias
    {"splitk_reduce", {4, 4}},  // part, scale, bias, out; M, N, splits, has_bias
};
constexpr int32_t kScratchPointers = 2;

//! Dynamic + static shared memory a block may use, opt-in included (CUDA C Programming Guide, "Features
//! and Technical Specifications"; aot.py's SHARED_LIMIT has the same numbers).
std::map<int64_t, int64_t> const kSharedLimit = {{80, 166912}, {86, 101376}, {87, 166912}, {89, 101376},
    {90, 232448}, {100, 232448}, {103, 232448}, {110, 232448}, {120, 101376}, {121, 101376}};

char const* const kVariantFields[] = {"kernel", "x_half", "d1p", "d2p", "a_kind", "bm", "bn", "bk", "partial"};

//! "kernel x_half d1p d2p a_kind bm bn bk partial": a variant, without its architecture.
std::string variantOf(Json const& row)
{
    std::string key;
    for (char const* field : kVariantFields)
    {
        Json const& v = row.at(field);
        key += (key.empty() ? "" : " ") + (v.is_string() ? v.get<std::string>() : std::to_string(v.get<int64_t>()));
    }
    return key;
}

std::string keyOf(Json const& row)
{
    return variantOf(row) + " sm_" + std::to_string(row.at("arch").get<int64_t>());
}

std::string variantKey(std::string const& kernel, int64_t xHalf, int64_t d1p, int64_t d2p, int64_t aKind, int64_t bm,
    int64_t bn, int64_t bk, int64_t partial)
{
    std::string key = kernel;
    for (int64_t v : {xHalf, d1p, d2p, aKind, bm, bn, bk, partial})
    {
        key += " " + std::to_string(v);
    }
    return key;
}

Json loadJson(std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        throw std::runtime_error("cannot read " + path);
    }
    return Json::parse(in);
}

void checkTables(Json const& manifest, Json const& built)
{
    std::set<int64_t> const libArchs(manifest.at("archs").begin(), manifest.at("archs").end());
    std::set<int64_t> const jsonArchs(built.at("archs").begin(), built.at("archs").end());
    check(libArchs == jsonArchs, "the library holds the architectures of aot_kernels.json");

    Json const& kron = manifest.at("kron_tiles");
    Json const& jsonKron = built.at("kron_tiles");
    check(kron.size() == jsonKron.size(), "as many Kronecker tiles as aot_kernels.json");
    for (size_t i = 0; i < std::min(kron.size(), jsonKron.size()); ++i)
    {
        check(kron[i].at("d1p") == jsonKron[i][0] && kron[i].at("d2p") == jsonKron[i][1],
            "Kronecker tile " + std::to_string(i) + " as in aot_kernels.json");
    }
    Json const& tiles = manifest.at("matmul_tiles");
    Json const& jsonTiles = built.at("matmul_tiles");
    check(tiles.size() == jsonTiles.size(), "as many Int4MatMul tiles as aot_kernels.json");
    for (size_t i = 0; i < std::min(tiles.size(), jsonTiles.size()); ++i)
    {
        Json const& t = tiles[i];
        Json const& j = jsonTiles[i];
        int64_t const maxTokens = j.at("max_tokens").is_null() ? 0 : j.at("max_tokens").get<int64_t>();
        check(t.at("max_tokens") == maxTokens && t.at("bm") == j.at("bm") && t.at("bn") == j.at("bn")
                && t.at("bk") == j.at("bk") && t.at("num_warps") == j.at("num_warps")
                && t.at("split_k").get<int64_t>() == (j.at("split_k").get<bool>() ? 1 : 0),
            "Int4MatMul tile " + std::to_string(i) + " (" + j.at("name").get<std::string>() + ") as in aot_kernels.json");
    }
    check(manifest.at("constants") == built.at("constants"),
        "REDUCE_BN, SPLIT_TARGET_PER_SM, MIN_SPLIT_K, PLAIN_CHUNK as in aot_kernels.json");
}

//! Every variant a launcher may look up, from the library's own tile tables (aotLaunch.cpp's findKernel calls).
std::set<std::string> launchedVariants(Json const& manifest)
{
    std::set<std::string> out;
    for (int64_t xHalf : {0, 1})
    {
        for (Json const& t : manifest.at("kron_tiles"))
        {
            out.insert(variantKey("quantize_kron", xHalf, t.at("d1p"), t.at("d2p"), 0, 0, 0, 0, 0));
        }
        out.insert(variantKey("quantize_plain", xHalf, 0, 0, 0, 0, 0, 0, 0));
    }
    for (Json const& t : manifest.at("matmul_tiles"))
    {
        for (int64_t aKind : {0, 1})
        {
            for (int64_t partial : {0, 1})
            {
                if (partial == 0 || t.at("split_k").get<int64_t>() != 0)
                {
                    out.insert(variantKey("int4_matmul", 0, 0, 0, aKind, t.at("bm"), t.at("bn"), t.at("bk"), partial));
                }
            }
        }
    }
    out.insert(variantKey("splitk_reduce", 0, 0, 0, 0, 0, manifest.at("constants").at("REDUCE_BN"), 0, 0));
    return out;
}

void checkEntry(Json const& entry, Json const& manifest)
{
    std::string const where = "cubin " + keyOf(entry);
    int64_t const arch = entry.at("arch");
    std::string const kernel = entry.at("kernel");
    check(entry.at("elf_error").get<std::string>().empty(),
        where + ": its ELF reads (" + entry.at("elf_error").get<std::string>() + ")");
    check(entry.at("elf_machine") == 190, where + ": ELF e_machine is EM_CUDA (190)");
    check(entry.at("elf_sm") == arch, where + ": the SM in ELF e_flags is " + std::to_string(arch) + " (got "
            + std::to_string(entry.at("elf_sm").get<int64_t>()) + ", ABI version "
            + std::to_string(entry.at("elf_abi_version").get<int64_t>()) + ", e_flags "
            + std::to_string(entry.at("elf_flags").get<int64_t>()) + ")");
    std::string const target = entry.at("elf_target");
    check(target.empty() || target.rfind("sm_" + std::to_string(arch), 0) == 0,
        where + ": ptxas' target " + target + " is sm_" + std::to_string(arch));
    check(entry.at("elf_has_entry").get<bool>(), where + ": the cubin defines " + entry.at("entry").get<std::string>());
    check(entry.at("image_address").get<uint64_t>() % 16 == 0, where + ": 16-byte aligned in the library");

    auto signature = kSignatures.find(kernel);
    check(signature != kSignatures.end(), where + ": a known kernel");
    if (signature != kSignatures.end())
    {
        std::vector<int64_t> expected(signature->second.pointers, 8);
        expected.insert(expected.end(), signature->second.ints, 4);
        expected.insert(expected.end(), kScratchPointers, 8);
        check(entry.at("params") == static_cast<int64_t>(expected.size()),
            where + ": params = " + std::to_string(expected.size()) + " (the non-constexpr parameters + 2)");
        check(entry.at("elf_param_sizes").get<std::vector<int64_t>>() == expected,
            where + ": the cubin's parameters are the kernel's (pointers 8 bytes, i32 4) and two scratch pointers");
    }
    auto limit = kSharedLimit.find(arch);
    check(limit != kSharedLimit.end(), where + ": an architecture with a known shared-memory limit");
    if (limit != kSharedLimit.end())
    {
        int64_t const shared = entry.at("shared").get<int64_t>() + entry.at("elf_static_shared").get<int64_t>();
        check(shared <= limit->second, where + ": " + std::to_string(shared) + " bytes of shared memory fit sm_"
                + std::to_string(arch) + "'s " + std::to_string(limit->second));
    }
    if (kernel == "quantize_kron")
    {
        bool found = false;
        for (Json const& t : manifest.at("kron_tiles"))
        {
            if (t.at("d1p") == entry.at("d1p") && t.at("d2p") == entry.at("d2p"))
            {
                found = true;
                check(t.at("num_warps") == entry.at("num_warps"), where + ": the tile table's warps");
            }
        }
        check(found, where + ": its tile is in the tile table");
    }
    else if (kernel == "int4_matmul")
    {
        bool found = false;
        for (Json const& t : manifest.at("matmul_tiles"))
        {
            if (t.at("bm") == entry.at("bm") && t.at("bn") == entry.at("bn") && t.at("bk") == entry.at("bk"))
            {
                found = true;
                check(t.at("num_warps") == entry.at("num_warps"), where + ": the tile table's warps");
            }
        }
        check(found, where + ": its tile is in the tile table");
    }
}

} // namespace

void checkAotManifest(Library const& lib, std::string const& aotJsonPath)
{
    auto manifestFn = reinterpret_cast<char const* (*) ()>(dlsym(lib.handle, "freeactAotManifest"));
    if (manifestFn == nullptr)
    {
        check(false, "freeactAotManifest is exported");
        return;
    }
    Json const manifest = Json::parse(manifestFn());
    Json const built = loadJson(aotJsonPath);
    int32_t const failuresBefore = gFailures;
    checkTables(manifest, built);

    std::map<std::string, Json const*> library;
    for (Json const& entry : manifest.at("kernels"))
    {
        check(library.emplace(keyOf(entry), &entry).second, "the library holds cubin " + keyOf(entry) + " once");
        checkEntry(entry, manifest);
    }
    Json const& rows = built.at("kernels");
    check(manifest.at("kernels").size() == rows.size(),
        "the library holds the " + std::to_string(rows.size()) + " cubins of aot_kernels.json (got "
            + std::to_string(manifest.at("kernels").size()) + ")");
    size_t hashed = 0;
    for (Json const& row : rows)
    {
        std::string const key = keyOf(row);
        auto found = library.find(key);
        check(found != library.end(), "aot_kernels.json's cubin " + key + " is in the library");
        if (found == library.end())
        {
            continue;
        }
        Json const& entry = *found->second;
        for (char const* field : {"entry", "num_warps", "shared", "params", "cubin_bytes"})
        {
            check(entry.at(field) == row.at(field), "cubin " + key + ": " + field + " as in aot_kernels.json");
        }
        if (entry.at("cubin_bytes") == row.at("cubin_bytes"))
        {
            auto const* bytes = reinterpret_cast<unsigned char const*>(entry.at("image_address").get<uintptr_t>());
            std::string const digest = Sha256::hex(bytes, entry.at("cubin_bytes").get<size_t>());
            check(digest == row.at("sha256").get<std::string>(),
                "cubin " + key + ": the library's bytes have aot_kernels.json's sha256");
            ++hashed;
        }
    }

    // Completeness: every variant the launchers look up, for every architecture, or a reason in left_out.
    std::set<std::string> leftOut;
    for (Json const& row : built.at("left_out"))
    {
        leftOut.insert(keyOf(row));
        int64_t const arch = row.at("arch");
        auto limit = kSharedLimit.find(arch);
        check(limit != kSharedLimit.end() && row.at("shared").get<int64_t>() > limit->second,
            "left out " + keyOf(row) + " needs more shared memory than sm_" + std::to_string(arch) + " has");
        std::cout << "    note: " << keyOf(row) << " left out: " << row.at("why").get<std::string>() << "\n";
    }
    std::set<std::string> const variants = launchedVariants(manifest);
    for (Json const& archValue : built.at("archs"))
    {
        std::string const arch = " sm_" + std::to_string(archValue.get<int64_t>());
        for (std::string const& variant : variants)
        {
            std::string const key = variant + arch;
            check(library.count(key) != 0 || leftOut.count(key) != 0,
                "the launchers' variant " + key + " is in the library (or left out with a reason)");
        }
    }
    for (auto const& kv : library)
    {
        check(variants.count(variantOf(*kv.second)) != 0, "cubin " + kv.first + " is a variant the launchers use");
    }
    std::cout << "  cubin table: " << manifest.at("kernels").size() << " cubins (" << variants.size()
              << " variants) for " << built.at("archs").size() << " architectures, " << hashed << " hashed, "
              << (gFailures - failuresBefore) << " failed\n";
}

} // namespace hostTest
