"""The two custom ops' GPU kernels, written once in Triton.

`quantize_kernels.py` (FreeActQuantize) and `matmul_kernels.py` (Int4MatMul, its split-K reduce,
the W4A16 product) hold the kernel bodies as plain functions; `variants.py` turns them into
Triton kernels (JIT on a GPU, Triton's interpreter on the CPU) and holds the tile configurations
per shape bucket; `launch.py` is the torch entry (checks, buckets, grids); `aot.py` compiles
the same kernels ahead of time into cubins for the TensorRT plugins (plugins_trt/).
"""
