// What a cubin says about itself, read from its ELF: machine, architecture, ptxas target, the kernel's
// parameters and static shared memory. The launcher checks a cubin with it before its first launch
// (the parameters it passes are the ones the cubin takes), and freeactAotManifest() reports it for the
// host test.
//
// The SM architecture sits in e_flags, in one of two encodings chosen by EI_ABIVERSION (byte 8 of
// e_ident; LLVM's BinaryFormat/ELF.h names them ELFABIVERSION_CUDA_V1 / _V2):
//   ABI version 7 (OS/ABI 0x33): e_flags & 0xff, e.g. 0x00500550 for sm_80 (bits 16-23 repeat the
//     virtual architecture, 0x500 = 64-bit addressing | unified texture mode);
//   ABI version 8 (OS/ABI 0x41): (e_flags >> 8) & 0xff, e.g. 0x0a005a04 for sm_90, 0x0a006402 for sm_100.
// ptxas 13 (Triton 3.9) writes version 7 for sm_80..89 and version 8 for sm_90 on. Whether a cubin is
// arch-specific (sm_90a, sm_100a: it runs on that exact compute capability only) is not in e_flags;
// ptxas records its command line in the .note.nv.tkinfo note ("-arch sm_100a"), which is read here.
// The kernel's parameters are the EIATTR_KPARAM_INFO records (attribute 0x17) of .nv.info.<entry>:
// ordinal, offset and size (bits 18-31 of the record's flags) of each.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace freeact
{
namespace aot
{

constexpr int32_t kEM_CUDA = 190;

struct CubinInfo
{
    std::string error;       //!< empty when the ELF was read; else what is wrong with it
    int32_t machine{0};      //!< e_machine (EM_CUDA = 190)
    int32_t abiVersion{0};   //!< e_ident[EI_ABIVERSION]
    uint32_t flags{0};       //!< e_flags
    int32_t sm{0};           //!< the architecture from e_flags (major * 10 + minor)
    std::string target;      //!< ptxas' -arch ("sm_90a"), empty where the cubin has no tkinfo note
    bool archSpecific{false}; //!< target ends in 'a': runs on exactly that compute capability
    bool hasEntry{false};    //!< a .text.<entry> section exists
    std::vector<int32_t> paramSizes; //!< the kernel's parameters in order: bytes of each
    int64_t staticShared{0}; //!< static shared memory of the kernel (.nv.shared.<entry>)
};

//! Reads the ELF header and the sections of kernel `entry`; never throws (except out of memory).
CubinInfo inspectCubin(unsigned char const* image, size_t size, char const* entry);

} // namespace aot
} // namespace freeact
