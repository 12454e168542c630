"""Ahead-of-time build: every kernel variant of variants.py compiled to a cubin per GPU architecture, no GPU needed.

    python -m freeact_export.kernels.aot --out plugins_trt/build/aot [--archs 80,86,87,89,90,100,110,120]

`triton.compile` with an explicit `GPUTarget` needs no driver (`python -m triton.tools.compile`
does). Writes, each atomically:

- aot_cubins.bin: every cubin, at 16-byte aligned offsets;
- aotKernels.cpp: the blob (assembled in with .incbin) and the table plugins_trt/kernels/aotKernels.h
  declares (kernel, variant fields, architecture, entry name, warps, shared memory, parameter
  count), and the tile tables of variants.py, so the plugins choose tiles from the same numbers
  as the torch runtime;
- aot_kernels.json: the same table without the bytes (sha256 of each cubin instead), with the
  Triton version; the host test and tests/unit/test_aot.py check it.

Triton's calling convention appends two pointers to the kernel's own parameters (a global and a
profile scratch buffer); both are null here, because the build refuses a kernel that needs either.
Pointers are compiled as 16-byte aligned (`tt.divisibility`), which the launcher checks.
Compiled cubins are cached by a key of the Triton version, the kernel sources, this file, the variant
and the architecture ($FREEACT_AOT_CACHE, default ~/.cache/freeact-export/aot), so a rebuild
compiles only what changed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import inspect
import json
import os
import sys
from pathlib import Path

from freeact_export.kernels import matmul_kernels, quantize_kernels, variants

# Triton compiles sm_90 and later arch-specifically (sm_90a, sm_100a, ...): such a cubin runs only on
# its own compute capability, so 103 (B300) and 121 (GB10) need their own.
ARCHS = (80, 86, 87, 89, 90, 100, 103, 110, 120, 121)
# The largest dynamic shared memory per block (bytes) on each architecture, opt-in included
# (CUDA C Programming Guide, "Features and Technical Specifications"); a variant that needs more
# is left out of that architecture's table, and the plugin names the shape it cannot run.
SHARED_LIMIT = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 103: 232448,
                110: 232448, 120: 101376, 121: 101376}
EXTRA_PARAMS = 2  # Triton's global and profile scratch pointers

_POINTERS = {
    "quantize_kron": ("x_ptr", "types_ptr", "smooth_ptr", "k1_ptr", "k2_ptr", "masks_ptr", "clip_ptr", "codes_ptr",
                      "scale_ptr"),
    "quantize_plain": ("x_ptr", "types_ptr", "smooth_ptr", "masks_ptr", "clip_ptr", "codes_ptr", "scale_ptr"),
    "int4_matmul": ("a_ptr", "scale_ptr", "w_ptr", "ws_ptr", "bias_ptr", "out_ptr"),
    "splitk_reduce": ("part_ptr", "scale_ptr", "bias_ptr", "out_ptr"),
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One kernel with its compile-time values: what the table is keyed by."""

    kernel: str
    x_half: int = 0  # quantize: x is float16 (else float32)
    d1p: int = 0
    d2p: int = 0
    a_kind: int = 0
    bm: int = 0
    bn: int = 0
    bk: int = 0
    partial: int = 0
    num_warps: int = 4
    num_stages: int = 3

    def constexprs(self) -> dict[str, int]:
        return {
            "quantize_kron": {"D1P": self.d1p, "D2P": self.d2p},
            "quantize_plain": {"CHUNK": variants.PLAIN_CHUNK},
            "int4_matmul": {"A_KIND": self.a_kind, "BM": self.bm, "BN": self.bn, "BK": self.bk,
                            "PARTIAL": self.partial},
            "splitk_reduce": {"A_KIND": self.a_kind, "BN": self.bn},
        }[self.kernel]

    def signature(self) -> dict[str, str]:
        """Triton's signature: every parameter's type, constexpr for the compile-time ones."""
        params = list(inspect.signature(variants.BODIES[self.kernel]).parameters)
        types = {"x_ptr": "*fp16" if self.x_half else "*fp32", "types_ptr": "*i32", "codes_ptr": "*i8",
                 "a_ptr": "*i8", "w_ptr": "*i8"}
        constexprs = self.constexprs()
        return {p: "constexpr" if p in constexprs else types.get(p, "*fp32" if p.endswith("_ptr") else "i32")
                for p in params}


def all_variants() -> list[Variant]:
    """Every variant the plugins launch (their inputs are float32 or float16 x, float32 y)."""
    out = []
    for x_half in (0, 1):
        for tile in variants.KRON_TILES:
            out.append(Variant("quantize_kron", x_half=x_half, d1p=tile[0], d2p=tile[1],
                               num_warps=variants.kron_warps(tile), num_stages=1))
        out.append(Variant("quantize_plain", x_half=x_half, num_warps=4, num_stages=1))
    for tile in variants.MATMUL_TILES:
        for a_kind in (0, 1):
            for partial in (0, 1) if tile.split_k else (0,):
                out.append(Variant("int4_matmul", a_kind=a_kind, bm=tile.bm, bn=tile.bn, bk=tile.bk, partial=partial,
                                   num_warps=tile.num_warps, num_stages=tile.num_stages))
    out.append(Variant("splitk_reduce", bn=variants.REDUCE_BN, num_warps=variants.REDUCE_WARPS, num_stages=1))
    return out


def _source_key() -> str:
    import triton

    digest = hashlib.sha256(triton.__version__.encode())
    for module in (quantize_kernels, matmul_kernels, sys.modules[__name__]):  # the build's own settings too
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()


def compile_variant(variant: Variant, arch: int) -> dict:
    """Compile one variant for sm_<arch>: {"cubin": bytes, "entry", "num_warps", "shared", ...}."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.runtime.jit import JITFunction

    signature = variant.signature()
    names = list(signature)
    constexprs = {(names.index(k),): v for k, v in variant.constexprs().items()}
    attrs = {(names.index(p),): [["tt.divisibility", 16]] for p in _POINTERS[variant.kernel]}
    source = triton.compiler.ASTSource(fn=JITFunction(variants.BODIES[variant.kernel]), signature=signature,
                                       constexprs=constexprs, attrs=attrs)
    # No line info: it would keep the PTX text in every cubin, half the library's size.
    os.environ["TRITON_DISABLE_LINE_INFO"] = "1"
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": variant.num_warps, "num_stages": variant.num_stages,
                                       **variants.COMPILE_OPTIONS})
    meta = compiled.metadata
    for field in ("global_scratch_size", "profile_scratch_size"):
        if getattr(meta, field, 0):
            raise RuntimeError(f"{variant} on sm_{arch} needs a {field} of {getattr(meta, field)} bytes, "
                               "which the plugin launcher does not provide")
    return {"cubin": compiled.asm["cubin"], "entry": meta.name, "num_warps": meta.num_warps, "shared": meta.shared,
            "params": sum(t != "constexpr" for t in signature.values()) + EXTRA_PARAMS}


def _cache_dir() -> Path:
    return Path(os.environ.get("FREEACT_AOT_CACHE", Path.home() / ".cache" / "freeact-export" / "aot"))


def _cached_compile(variant: Variant, arch: int, source_key: str) -> dict:
    key = hashlib.sha256(f"{source_key}|{variant}|{arch}".encode()).hexdigest()[:32]
    folder = _cache_dir()
    meta_path, cubin_path = folder / f"{key}.json", folder / f"{key}.cubin"
    if meta_path.is_file() and cubin_path.is_file():
        meta = json.loads(meta_path.read_text())
        cubin = cubin_path.read_bytes()
        if hashlib.sha256(cubin).hexdigest() == meta.get("sha256"):  # a damaged cache entry is compiled again
            return {**meta, "cubin": cubin}
    result = compile_variant(variant, arch)
    meta = {k: v for k, v in result.items() if k != "cubin"} | {"sha256": hashlib.sha256(result["cubin"]).hexdigest()}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(cubin_path, result["cubin"])
        _write_atomic(meta_path, json.dumps(meta).encode())
    except OSError:  # a read-only home: the cache is only a speed-up
        pass
    return {**meta, "cubin": result["cubin"]}


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def build(out: Path, archs: tuple[int, ...] = ARCHS, jobs: int = 2, progress: bool = True) -> dict:
    """Compile every variant for every arch into `out` (aotKernels.cpp, aot_kernels.json); returns the manifest."""
    import triton

    source_key = _source_key()
    jobs_list = [(v, a) for a in archs for v in all_variants()]
    results: dict[tuple[Variant, int], dict] = {}
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(_cached_compile, v, a, source_key): (v, a) for v, a in jobs_list}
        done = concurrent.futures.as_completed(futures)
        if progress:
            from tqdm import tqdm

            done = tqdm(done, total=len(futures), desc="compiling kernels", unit="cubin", file=sys.stderr)
        for future in done:
            results[futures[future]] = future.result()
    entries, skipped = [], []
    for variant, arch in jobs_list:
        result = results[(variant, arch)]
        row = {**dataclasses.asdict(variant), "arch": arch,
               **{k: result[k] for k in ("entry", "num_warps", "shared", "params", "sha256")},
               "cubin_bytes": len(result["cubin"])}
        if result["shared"] > SHARED_LIMIT[arch]:
            skipped.append({**row, "why": f"needs {result['shared']} bytes of shared memory, sm_{arch} has "
                                          f"{SHARED_LIMIT[arch]}"})
            continue
        entries.append((row, result["cubin"]))
    manifest = {
        "triton_version": triton.__version__,
        "archs": list(archs),
        "kron_tiles": [list(t) for t in variants.KRON_TILES],
        "matmul_tiles": [dataclasses.asdict(t) for t in variants.MATMUL_TILES],
        "constants": _constants(),
        "kernels": [row for row, _ in entries],
        "left_out": skipped,
    }
    out.mkdir(parents=True, exist_ok=True)
    source, blob = _cpp(entries, out / "aot_cubins.bin")
    _write_atomic(out / "aot_cubins.bin", blob)
    _write_atomic(out / "aotKernels.cpp", source.encode())
    _write_atomic(out / "aot_kernels.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


def _constants() -> dict[str, int]:
    return {"REDUCE_BN": variants.REDUCE_BN, "SPLIT_TARGET_PER_SM": variants.SPLIT_TARGET_PER_SM,
            "MIN_SPLIT_K": variants.MIN_SPLIT_K, "PLAIN_CHUNK": variants.PLAIN_CHUNK}


_KERNEL_ENUM = {"quantize_kron": "kQUANTIZE_KRON", "quantize_plain": "kQUANTIZE_PLAIN",
                "int4_matmul": "kINT4_MATMUL", "splitk_reduce": "kSPLITK_REDUCE"}


def _cpp(entries: list[tuple[dict, bytes]], blob_path: Path) -> tuple[str, bytes]:
    """(aotKernels.cpp, aot_cubins.bin): the table in C++, and every cubin in one blob at 16-byte offsets.

    The blob enters the library through the assembler's .incbin (a byte array in C++ source would
    be some hundred MB for the compiler to parse).
    """
    blob = bytearray()
    offsets = []
    for _, cubin in entries:
        blob += b"\0" * (-len(blob) % 16)
        offsets.append(len(blob))
        blob += cubin
    path = str(blob_path.resolve()).replace("\\", "\\\\").replace('"', '\\"')
    lines = ["// Generated by `python -m freeact_export.kernels.aot`: do not edit.",
             '#include "kernels/aotKernels.h"', "",
             "// The cubins, one blob (aot_cubins.bin next to this file), in the library's read-only data.",
             '__asm__(".section .rodata\\n.balign 16\\nfreeact_aot_cubins:\\n"',
             f'        ".incbin \\"{path}\\"\\n.previous\\n");',
             'extern "C" unsigned char const freeact_aot_cubins[];', "",
             "namespace freeact", "{", "namespace aot", "{", "",
             "AotKernel const kKernels[] = {"]
    for (row, cubin), offset in zip(entries, offsets, strict=True):
        lines.append(
            f"    {{KernelKind::{_KERNEL_ENUM[row['kernel']]}, {row['x_half']}, {row['d1p']}, {row['d2p']}, "
            f"{row['a_kind']}, {row['bm']}, {row['bn']}, {row['bk']}, {row['partial']}, {row['arch']}, "
            f"freeact_aot_cubins + {offset}, {len(cubin)}, \"{row['entry']}\", {row['num_warps']}, {row['shared']}, "
            f"{row['params']}}},")
    lines += ["};", "size_t const kKernelCount = sizeof(kKernels) / sizeof(kKernels[0]);", ""]
    lines.append("KronTile const kKronTiles[] = {" + ", ".join(
        f"{{{a}, {b}, {variants.kron_warps((a, b))}}}" for a, b in variants.KRON_TILES) + "};")
    lines.append("size_t const kKronTileCount = sizeof(kKronTiles) / sizeof(kKronTiles[0]);")
    lines.append("MatmulTile const kMatmulTiles[] = {" + ", ".join(
        f"{{{t.max_tokens or 0}, {t.bm}, {t.bn}, {t.bk}, {t.num_warps}, {int(t.split_k)}}}"
        for t in variants.MATMUL_TILES) + "};")
    lines.append("size_t const kMatmulTileCount = sizeof(kMatmulTiles) / sizeof(kMatmulTiles[0]);")
    for name, value in _constants().items():
        camel = "k" + "".join(part.capitalize() for part in name.lower().split("_"))
        lines.append(f"int32_t const {camel} = {value};")
    lines += ["", "} // namespace aot", "} // namespace freeact", ""]
    return "\n".join(lines), bytes(blob)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freeact_export.kernels.aot", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for aotKernels.cpp and aot_kernels.json")
    parser.add_argument("--archs", default=",".join(map(str, ARCHS)),
                        help="compute capabilities, comma-separated (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile processes (default: %(default)s)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") not in (None, "", "0"):
        print("error: unset TRITON_INTERPRET: the ahead-of-time build compiles the kernels, the interpreter "
              "cannot", file=sys.stderr)
        return 2
    try:
        archs = tuple(int(a) for a in args.archs.split(","))
    except ValueError:
        print(f"error: --archs must be compute capabilities like 80,90 (got {args.archs!r})", file=sys.stderr)
        return 2
    unknown = [a for a in archs if a not in SHARED_LIMIT]
    if unknown:
        print(f"error: unknown architecture(s) {unknown}; known: {sorted(SHARED_LIMIT)}", file=sys.stderr)
        return 2
    manifest = build(args.out, archs, args.jobs)
    print(f"{len(manifest['kernels'])} cubins for sm_{', sm_'.join(map(str, archs))} "
          f"({len(manifest['left_out'])} left out) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
