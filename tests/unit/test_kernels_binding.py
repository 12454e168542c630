"""The parts of the kernel bindings and the kernels runtime that need no GPU.

Loading the plugin library and its C API version check run on any machine once the library is
built (it links the CUDA runtime, not a GPU); argument checks refuse bad tensors before anything
is launched; without CUDA, `eval --runtime kernels` is one clear line. The kernels themselves are
tested in tests/gpu.
"""

import ctypes

import pytest
import torch

from freeact_export.cli import main
from freeact_export.errors import UserError
from freeact_export.runtime import kernels, plugin_lib
from test_cli import assert_one_line_error, run_cli


def test_the_library_loads_and_reports_the_c_api_version_without_a_gpu(plugin_build):
    path = plugin_build / plugin_lib.LIBRARY_NAME
    lib = kernels.load_library(str(path))
    assert kernels.library_version(str(path)) == kernels.C_API_VERSION
    assert len(lib.freeactQuantize.argtypes) == 19 and lib.freeactQuantize.restype is ctypes.c_int32
    assert len(lib.freeactInt4MatMul.argtypes) == 13 and lib.freeactInt4MatMul.restype is ctypes.c_int32
    assert kernels.load_library(str(path)) is lib  # loaded once


def test_a_file_that_is_not_the_library_is_a_user_error(tmp_path):
    bogus = tmp_path / "libnot_a_library.so"
    bogus.write_bytes(b"not an ELF file")
    with pytest.raises(UserError, match="cannot load the kernel library"):
        kernels.load_library(str(bogus))


def _quantize_args(device="cpu"):
    d = 8
    return dict(x=torch.zeros(3, d, device=device), types=torch.zeros(3, dtype=torch.int32, device=device),
                smooth=torch.ones(d, device=device), kron_1=torch.eye(2, device=device),
                kron_2=torch.eye(4, device=device), masks=torch.ones(2, d, device=device),
                clip=torch.ones(2, device=device))


def test_cpu_tensors_are_refused_before_any_launch():
    with pytest.raises(ValueError, match="x must be on a CUDA device"):
        kernels.freeact_quantize(**_quantize_args())
    with pytest.raises(ValueError, match="codes must be on a CUDA device"):
        kernels.int4_matmul(torch.zeros(3, 4, dtype=torch.int8), torch.ones(3, 1), torch.zeros(5, 4, dtype=torch.int8),
                            torch.ones(5, 1), None)


def test_bad_attributes_are_refused_first():
    with pytest.raises(ValueError, match="bits must be 4 or 8"):
        kernels.freeact_quantize(**_quantize_args(), bits=2)
    with pytest.raises(ValueError, match="group_size"):
        kernels.int4_matmul(torch.zeros(3, 4, dtype=torch.int8), torch.ones(3, 1), torch.zeros(5, 4, dtype=torch.int8),
                            torch.ones(5, 1), None, group_size=3)
    with pytest.raises(ValueError, match="out_dtype"):
        kernels.int4_matmul(torch.zeros(3, 4, dtype=torch.int8), torch.ones(3, 1), torch.zeros(5, 4, dtype=torch.int8),
                            torch.ones(5, 1), None, out_dtype=torch.int32)


def test_a_launcher_error_names_the_cuda_error():
    err = kernels.KernelError("freeactInt4MatMul", 1, "tokens=3 k=8 n=5")
    assert str(err).startswith("freeactInt4MatMul failed with cudaErrorInvalidValue (1)")
    assert "tokens=3 k=8 n=5" in str(err)
    assert kernels.cuda_error_text(209).startswith("cudaErrorNoKernelImageForDevice (209)")
    assert kernels.cuda_error_text(12345).startswith("unknown cudaError_t (12345)")


def test_a_missing_build_for_this_gpu_is_a_user_error_with_the_fix():
    with pytest.raises(UserError, match="not built for this GPU.*CUDA_ARCHITECTURES"):
        kernels._raise_for("freeactQuantize", 209, "")
    kernels._raise_for("freeactQuantize", 0, "")  # success raises nothing


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("device", ["cpu", "cuda", "auto"])
def test_eval_with_the_kernels_and_no_cuda_is_one_line(capsys, tmp_path, device):
    code, _, err = run_cli(capsys, "eval", "--plan", str(tmp_path), "--runtime", "kernels", "--device", device)
    assert_one_line_error(code, err, "needs --device cuda with a usable CUDA GPU")


def test_eval_with_the_kernels_needs_a_plan(capsys):
    code, _, err = run_cli(capsys, "eval", "--model", "smollm2-135m", "--runtime", "kernels")
    assert_one_line_error(code, err, "give --plan DIR")


def test_eval_with_a_folder_without_a_plan_says_so(capsys, tmp_path):
    code, _, err = run_cli(capsys, "eval", "--plan", str(tmp_path), "--device", "cpu")
    assert_one_line_error(code, err, "holds no plan.json")


def test_eval_help_shows_the_kernels_runtime(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "--runtime {torch,kernels}" in out and "--plan DIR" in out


@pytest.mark.parametrize("per_type", [False, True])
def test_the_w4a16_input_path_computes_the_op_form_transform(per_type):
    """W4A16 groups run the transform in torch: it must equal the reference's FreeActQuantize before rounding."""
    import numpy as np

    from freeact_export.calibrate.stats import TypeContext
    from freeact_export.config import QuantSpec
    from freeact_export.ops import reference
    from freeact_export.plan import GroupPlan
    from freeact_export.rewrite.op_tensors import activation_tensors
    from freeact_export.runtime.kernel_model import FloatTransformInput

    gen = torch.Generator().manual_seed(0)
    d, num_types = 12, 2
    tensors = {"smooth": torch.rand(d, generator=gen) + 0.5, "kron_1": torch.randn(3, 3, generator=gen),
               "kron_2": torch.randn(4, 4, generator=gen), "masks": torch.ones(num_types, d),
               "clip": torch.ones(num_types)}
    tensors["masks"][1, :2] = 0
    if per_type:
        tensors["type_kron_1"] = torch.randn(num_types, 3, 3, generator=gen)
        tensors["type_kron_2"] = torch.randn(num_types, 4, 4, generator=gen)
    group = GroupPlan("g", d, "kronecker", tensors, [], QuantSpec(4, True, "group", 4))
    context = TypeContext(num_types)
    context.types = torch.tensor([1, 0, 0, 1, 0], dtype=torch.int32)
    x = torch.randn(5, d, generator=gen)
    got = FloatTransformInput(group, num_types, context, torch.device("cpu")).compute(x)
    ops = activation_tensors(group, num_types)
    expected = reference.freeact_transform(x.numpy(), context.types.numpy(), ops["smooth"], ops["kron_1"],
                                           ops["kron_2"], ops["masks"], ops["kronecker"])
    assert ops["kron_1"].ndim == (3 if per_type else 2)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


def _tiny_plan(method: str, bits: str):
    import numpy as np
    from transformers import AutoModelForCausalLM

    from freeact_export.calibrate.run import calibrate, calibration_windows
    from freeact_export.config import CalibSpec, FreeActSpec
    from freeact_export.quantize.planner import build_plan, torch_weights
    from freeact_export.token_types import TokenTypes
    from tiny_models import tiny_config

    spec = CalibSpec(windows=4, seqlen=48, samples_per_type=40, min_tokens=4)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama")).eval()
    windows = calibration_windows(np.random.default_rng(0).integers(4, 384, 4000).tolist(), spec, None)
    record = calibrate(model, windows, TokenTypes.parse("sink=pos:3"), spec, progress=False)
    plan = build_plan(torch_weights(model), record, method, bits, progress=False,
                      freeact=FreeActSpec(steps=2, batch_tokens=16))
    return model, plan


@pytest.mark.parametrize(("method", "per_type"), [("quarot", False), ("freeact", False), ("freeact", True)])
def test_a_w4a16_plan_runs_on_the_runtime_as_the_simulation_does(method, per_type):
    """W4A16 has no kernel (torch transform + dequantized weight), so the runtime's wiring is checkable on a CPU."""
    import copy

    import numpy as np

    from freeact_export.runtime.kernel_model import DequantizedLinear, FloatTransformInput, KernelLogits
    from freeact_export.simulate.fake_quant import SimulatedLogits

    model, plan = _tiny_plan(method, "w4a16")
    if per_type:  # factors per token type, as freeact-general stores them where they pay (both runtimes read them)
        gen = torch.Generator().manual_seed(2)
        for group in plan.groups:
            for i in (1, 2):
                shared = group.tensors[f"kron_{i}"]
                noise = 0.1 * torch.randn(2, *shared.shape, generator=gen)
                group.tensors[f"type_kron_{i}"] = (shared + noise).contiguous()
    runner = KernelLogits(copy.deepcopy(model), plan)
    modules = list(runner.model.modules())
    assert sum(isinstance(m, FloatTransformInput) for m in modules) == len(plan.groups)
    assert sum(isinstance(m, DequantizedLinear) for m in modules) == sum(len(g.linears) for g in plan.groups)
    ids = np.random.default_rng(1).integers(4, 384, (2, 40))
    got, expected = runner(ids), SimulatedLogits(model, plan)(ids)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4), (got - expected).abs().max()


def test_a_quantized_plan_needs_a_cuda_model():
    from freeact_export.calibrate.stats import TypeContext
    from freeact_export.runtime.kernel_model import install_kernels

    model, plan = _tiny_plan("rtn", "w4a4")
    with pytest.raises(UserError, match="the kernels run on a CUDA device"):
        install_kernels(model, plan, TypeContext(2))
