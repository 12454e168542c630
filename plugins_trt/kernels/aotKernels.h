// The kernels compiled ahead of time: what `python -m freeact_export.kernels.aot` generates into
// <build>/aot/aotKernels.cpp (the CMake build runs it). One row per kernel variant × GPU
// architecture, the cubin itself in the library's read-only data (aot_cubins.bin, assembled in
// with .incbin), and the tile tables and constants of freeact_export/kernels/variants.py, so the
// launchers (aotLaunch.cpp) choose tiles from the same numbers as the torch runtime (launch.py).
//
// The member order is the generator's initializer order (aot.py `_cpp`): keep both in step.
#pragma once

#include <cstddef>
#include <cstdint>

namespace freeact
{
namespace aot
{

//! The four Triton kernels (freeact_export/kernels/quantize_kernels.py, matmul_kernels.py).
enum class KernelKind : int32_t
{
    kQUANTIZE_KRON = 0,  //!< quantize_kron_body: FreeActQuantize with a Kronecker transform
    kQUANTIZE_PLAIN = 1, //!< quantize_plain_body: FreeActQuantize without one (kronecker = 0)
    kINT4_MATMUL = 2,    //!< int4_matmul_body: Int4MatMul, y or split-K partial sums
    kSPLITK_REDUCE = 3,  //!< splitk_reduce_body: the partial sums added in split order, then the epilogue
};

//! One compiled variant: its compile-time values (0 where the kernel has no such value), the
//! architecture, the cubin and what launching it takes. Calling convention: the kernel's
//! non-constexpr parameters in order (pointers 64-bit, i32 32-bit), then Triton's global and
//! profile scratch pointers, both null (the generator refuses a kernel that needs either);
//! `params` counts all of them. Block = numWarps * 32 threads, dynamic shared memory = sharedBytes.
struct AotKernel
{
    KernelKind kernel;
    int32_t xHalf;  //!< quantize: x is float16 (else float32)
    int32_t d1p;    //!< quantize_kron: the tile [D1P, D2P]
    int32_t d2p;
    int32_t aKind;  //!< int4_matmul / splitk_reduce: A_KIND (0 packed INT4, 1 INT8 activations)
    int32_t bm;     //!< int4_matmul: BM, BN, BK; splitk_reduce: BN
    int32_t bn;
    int32_t bk;
    int32_t partial; //!< int4_matmul: 1 writes split-K partial sums
    int32_t arch;    //!< compute capability, major * 10 + minor (80, 86, 90, ...)
    unsigned char const* image; //!< the cubin (16-byte aligned)
    size_t imageSize;
    char const* entry; //!< the kernel's symbol in the cubin
    int32_t numWarps;
    int32_t sharedBytes; //!< dynamic shared memory per block
    int32_t params;      //!< kernel parameters, the two scratch pointers included
};

extern AotKernel const kKernels[];
extern size_t const kKernelCount;

//! variants.KRON_TILES with kron_warps of each: FreeActQuantize's tile is the first holding [d1, d2].
struct KronTile
{
    int32_t d1p;
    int32_t d2p;
    int32_t numWarps;
};
extern KronTile const kKronTiles[];
extern size_t const kKronTileCount;

//! variants.MATMUL_TILES: Int4MatMul's tile is the first whose maxTokens holds the token count.
struct MatmulTile
{
    int32_t maxTokens; //!< 0 = any
    int32_t bm;
    int32_t bn;
    int32_t bk;
    int32_t numWarps;
    int32_t splitK; //!< 1: decode, K is split so that enough programs fill the GPU
};
extern MatmulTile const kMatmulTiles[];
extern size_t const kMatmulTileCount;

extern int32_t const kReduceBn;         //!< variants.REDUCE_BN: splitk_reduce's columns per program
extern int32_t const kSplitTargetPerSm; //!< variants.SPLIT_TARGET_PER_SM
extern int32_t const kMinSplitK;        //!< variants.MIN_SPLIT_K
extern int32_t const kPlainChunk;       //!< variants.PLAIN_CHUNK

} // namespace aot
} // namespace freeact
