"""The custom ops' NumPy reference against independent torch / float64 formulations, their ORT registration, schema."""

import itertools
import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from freeact_export.config import QuantSpec
from freeact_export.ops import reference, schema
from freeact_export.quantize import packing
from freeact_export.quantize.quantizers import quantize

D1, D2 = 4, 8
D = D1 * D2


def _inputs(rng: np.random.Generator, lead: tuple[int, ...], k: int, d1: int = D1, d2: int = D2,
            exact: bool = False) -> dict[str, np.ndarray]:
    """FreeActQuantize inputs. exact: integer data and power-of-two smoothing, so every float op is exact."""
    d = d1 * d2
    if exact:
        x = rng.integers(-8, 9, (*lead, d)).astype(np.float32)
        smooth = (rng.choice([-1, 1], d) * 2.0 ** rng.integers(-2, 2, d)).astype(np.float32)
        kron_1 = rng.integers(-2, 3, (d1, d1)).astype(np.float32)
        kron_2 = rng.integers(-2, 3, (d2, d2)).astype(np.float32)
    else:
        x = (rng.standard_normal((*lead, d)) * 3).astype(np.float32)
        smooth = (rng.choice([-1, 1], d) * rng.uniform(0.5, 2, d)).astype(np.float32)
        kron_1 = (np.eye(d1) + 0.3 * rng.standard_normal((d1, d1))).astype(np.float32)
        kron_2 = (np.eye(d2) + 0.3 * rng.standard_normal((d2, d2))).astype(np.float32)
    masks = (rng.random((k, d)) > 0.3).astype(np.float32)
    masks[0] = 1.0  # a type without a mask
    x.reshape(-1, d)[1] = 0.0  # an all-zero token row
    return {
        "x": x,
        "types": rng.integers(0, k, lead).astype(np.int32),
        "smooth": smooth,
        "kron_1": kron_1,
        "kron_2": kron_2,
        "masks": masks,
        "clip": np.array([1.0, 0.9, 0.55, 0.75][:k], dtype=np.float32),
    }


def _transform_fp64(inp: dict[str, np.ndarray], kronecker: int) -> torch.Tensor:
    """y with the dense Kronecker matrix, in float64 torch: independent of the reference's reshapes."""
    x = torch.from_numpy(inp["x"]).double() / torch.from_numpy(inp["smooth"]).double()
    if kronecker:
        x = x @ torch.kron(torch.from_numpy(inp["kron_1"]).double(), torch.from_numpy(inp["kron_2"]).double())
    return x * torch.from_numpy(inp["masks"]).double()[torch.from_numpy(inp["types"]).long()]


def _expected_codes(y: torch.Tensor, inp: dict[str, np.ndarray], bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes and scales from the package's torch quantizer, packed with the torch packing reference."""
    clip = torch.from_numpy(inp["clip"])[torch.from_numpy(inp["types"]).long()].unsqueeze(-1)
    q = quantize(y.float(), QuantSpec(bits, True, "token"), clip)
    codes = packing.pack_int4(q.codes).view(torch.int8) if bits == 4 else q.codes
    return codes.numpy(), q.scale.numpy()


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("k", [1, 3, 4])
@pytest.mark.parametrize("kronecker", [0, 1])
def test_freeact_quantize_matches_torch_quantizer_exactly(bits, k, kronecker):
    inp = _inputs(np.random.default_rng(10 * k + bits + kronecker), (3, 7), k, exact=True)
    if not kronecker:
        inp["kron_1"] = inp["kron_2"] = np.ones((1, 1), np.float32)
    y = _transform_fp64(inp, kronecker)
    assert torch.equal(y.float().double(), y)  # the premise: float32 arithmetic is exact on this data
    codes, scale = reference.freeact_quantize(**inp, bits=bits, kronecker=kronecker)
    want_codes, want_scale = _expected_codes(y, inp, bits)
    assert codes.dtype == np.int8 and codes.shape == (3, 7, D // 2 if bits == 4 else D)
    assert scale.dtype == np.float32 and scale.shape == (3, 7, 1)
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(scale, want_scale)
    assert scale.reshape(-1, 1)[1] == 1.0 and not codes.reshape(21, -1)[1].any()  # the all-zero token


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("kronecker", [0, 1])
def test_freeact_quantize_random_data(bits, kronecker):
    inp = _inputs(np.random.default_rng(bits + kronecker), (5, 6), 3)
    y = reference.freeact_transform(*(inp[n] for n in ("x", "types", "smooth", "kron_1", "kron_2", "masks")),
                                    kronecker=kronecker)
    np.testing.assert_allclose(y, _transform_fp64(inp, kronecker).numpy(), rtol=1e-5, atol=1e-5)
    codes, scale = reference.freeact_quantize(**inp, bits=bits, kronecker=kronecker)
    want_codes, want_scale = _expected_codes(torch.from_numpy(y), inp, bits)
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(scale, want_scale)
    half = reference.freeact_quantize(**{**inp, "x": inp["x"].astype(np.float16)}, bits=bits, kronecker=kronecker)
    again = reference.freeact_quantize(**{**inp, "x": inp["x"].astype(np.float16).astype(np.float32)},
                                       bits=bits, kronecker=kronecker)
    np.testing.assert_array_equal(half[0], again[0])  # float16 x is cast to float32 first


def test_freeact_transform_per_type_factors_match_each_tokens_dense_kronecker():
    rng = np.random.default_rng(7)
    inp = _inputs(rng, (3, 5), 3)
    inp["kron_1"] = (np.eye(D1) + 0.3 * rng.standard_normal((3, D1, D1))).astype(np.float32)
    inp["kron_2"] = (np.eye(D2) + 0.3 * rng.standard_normal((3, D2, D2))).astype(np.float32)
    y = reference.freeact_transform(*(inp[n] for n in ("x", "types", "smooth", "kron_1", "kron_2", "masks")))
    x = inp["x"].astype(np.float64) / inp["smooth"]
    for index in np.ndindex(inp["types"].shape):  # token by token, with its type's dense A ⊗ B in float64
        t = inp["types"][index]
        want = x[index] @ np.kron(inp["kron_1"][t].astype(np.float64), inp["kron_2"][t]) * inp["masks"][t]
        np.testing.assert_allclose(y[index], want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one pair per type"):
        reference.freeact_transform(*(inp[n] for n in ("x", "types", "smooth")), inp["kron_1"][:2],
                                    inp["kron_2"][:2], inp["masks"])


def _tie_rows(bits: int, d: int) -> np.ndarray:
    """Token rows [amax, v, v, ...] where float32 v / scale is exactly k + 1/2: only the same division and the
    same rounding as the quantizer give the same codes (v · (1 / scale) or round-half-up differ on some)."""
    qmax = 7 if bits == 4 else 127
    rows = []
    for amax in np.float32([1.3, 0.7, 3.1, 11.9, 0.037]):
        scale = amax / np.float32(qmax)
        ties = []
        for k in range(-qmax, qmax):
            v = np.float32((k + 0.5) * np.float64(scale))
            for _ in range(3):
                if abs(v) < amax and v / scale == np.float32(k + 0.5):
                    ties.append(v)
                v = np.nextafter(v, np.float32(np.inf))
        for start in range(0, len(ties), d - 1):
            chunk = ties[start:start + d - 1]
            rows.append(np.concatenate([[amax], chunk, np.zeros(d - 1 - len(chunk))]))
    return np.array(rows, dtype=np.float32)


@pytest.mark.parametrize("bits", [4, 8])
def test_freeact_quantize_ties_match_torch_quantizer(bits):
    x = _tie_rows(bits, D)
    inp = {"x": x, "types": np.zeros(len(x), np.int32), "smooth": np.ones(D, np.float32),
           "kron_1": np.ones((1, 1), np.float32), "kron_2": np.ones((1, 1), np.float32),
           "masks": np.ones((1, D), np.float32), "clip": np.ones(1, np.float32)}
    codes, scale = reference.freeact_quantize(**inp, bits=bits, kronecker=0)
    want_codes, want_scale = _expected_codes(torch.from_numpy(x), inp, bits)
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(scale, want_scale)


def _onnx_int4_bytes(codes: np.ndarray, signed: bool = True) -> np.ndarray:
    """ONNX's own INT4 / UINT4 packing: the bytes helper.make_tensor stores for these values (row-major)."""
    tensor = helper.make_tensor("c", TensorProto.INT4 if signed else TensorProto.UINT4, codes.shape,
                                codes.flatten().tolist())
    return np.array(tensor.int32_data, dtype=np.uint8).reshape(*codes.shape[:-1], codes.shape[-1] // 2)


def _onnx_int4_values(packed: np.ndarray, signed: bool = True) -> np.ndarray:
    """ONNX's own INT4 / UINT4 unpacking: numpy_helper.to_array of a tensor holding these bytes as raw_data."""
    tensor = TensorProto(data_type=TensorProto.INT4 if signed else TensorProto.UINT4,
                         dims=[*packed.shape[:-1], 2 * packed.shape[-1]], raw_data=packed.tobytes())
    return numpy_helper.to_array(tensor).astype(np.int16)


def test_int4_packing_is_onnx_int4_layout():
    """Both packers (NumPy reference, torch) and the unpacker against ONNX's INT4/UINT4 tensors, every pair."""
    every_signed = np.array(list(itertools.product(range(-8, 8), repeat=2)), np.int8)  # [256, 2]: all nibble pairs
    every_unsigned = np.array(list(itertools.product(range(16), repeat=2)), np.uint8)
    rows = np.random.default_rng(0).integers(-8, 8, (3, 5, 64)).astype(np.int8)  # a layout over several dims
    for codes, signed in ((every_signed, True), (rows, True), (every_unsigned, False)):
        want = _onnx_int4_bytes(codes, signed)
        packed = reference.pack_int4(codes)
        assert packed.dtype == np.uint8 and packed.shape == want.shape
        np.testing.assert_array_equal(packed, want)
        # torch's packer takes int8 codes (its docstring), unsigned 0..15 included
        np.testing.assert_array_equal(packing.pack_int4(torch.from_numpy(codes.astype(np.int8))).numpy(), want)
        np.testing.assert_array_equal(_onnx_int4_values(want, signed), codes)  # the reference itself round-trips
        np.testing.assert_array_equal(reference.unpack_int4(want.view(np.int8), signed=signed), codes)
        np.testing.assert_array_equal(reference.unpack_int4(want, signed=signed), codes)  # uint8 bytes alike
        np.testing.assert_array_equal(packing.unpack_int4(torch.from_numpy(want), signed=signed).numpy(), codes)
    # The documented layout written out bit by bit: low nibble = even element, 4-bit two's complement.
    by_hand = [((lo % 16) | (hi % 16) << 4) for lo, hi in every_signed.tolist()]
    np.testing.assert_array_equal(reference.pack_int4(every_signed)[:, 0], by_hand)
    np.testing.assert_array_equal(reference.pack_int4(np.array([-8, 7, 1, -1, 0, 3], np.int8)), [0x78, 0xF1, 0x30])
    with pytest.raises(ValueError, match="even last dimension"):
        reference.pack_int4(np.zeros((2, 3), np.int8))
    with pytest.raises(ValueError, match="must lie in"):
        reference.pack_int4(np.array([-9, 0], np.int8))


def _weights(rng: np.random.Generator, n: int, d: int, group_size: int) -> dict[str, np.ndarray]:
    groups = 1 if group_size == 0 else d // group_size
    wcodes = rng.integers(-8, 8, (n, d)).astype(np.int8)
    return {
        "wcodes": wcodes,
        "weight": packing.pack_int4(torch.from_numpy(wcodes)).view(torch.int8).numpy(),
        "weight_scale": rng.uniform(0.01, 0.1, (n, groups)).astype(np.float32),
        "bias": rng.standard_normal(n).astype(np.float32),
    }


@pytest.mark.parametrize("act_bits", [4, 8])
@pytest.mark.parametrize("group_size", [0, 32])
def test_int4_matmul_matches_fp64_dequantized_matmul(act_bits, group_size):
    rng = np.random.default_rng(act_bits + group_size)
    n, d, lead = 24, 128, (3, 4)
    qmax = 7 if act_bits == 4 else 127
    acodes = rng.integers(-qmax - 1, qmax + 1, (*lead, d)).astype(np.int8)
    codes = packing.pack_int4(torch.from_numpy(acodes)).view(torch.int8).numpy() if act_bits == 4 else acodes
    scale = rng.uniform(0.01, 0.5, (*lead, 1)).astype(np.float32)
    w = _weights(rng, n, d, group_size)
    y = reference.int4_matmul(codes, scale, w["weight"], w["weight_scale"], w["bias"], act_bits, group_size)
    wdeq = w["wcodes"] * np.repeat(w["weight_scale"].astype(np.float64), d // w["weight_scale"].shape[1], axis=1)
    want = (acodes * scale.astype(np.float64)) @ wdeq.T + w["bias"]
    assert y.dtype == np.float32 and y.shape == (*lead, n)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def _tiny_model(inp: dict[str, np.ndarray], w1: dict[str, np.ndarray], w2: dict[str, np.ndarray]) -> onnx.ModelProto:
    """x, types → FreeActQuantize → two Int4MatMul (per channel, and groups of 32); constants as initializers."""
    lead, d = inp["x"].shape[:-1], inp["x"].shape[-1]
    consts = {n: inp[n] for n in ("smooth", "kron_1", "kron_2", "masks", "clip")}
    for tag, w in (("1", w1), ("2", w2)):
        consts.update({f"{key}{tag}": w[key] for key in ("weight", "weight_scale", "bias")})
    nodes = [
        schema.make_node("FreeActQuantize", ["x", "types", "smooth", "kron_1", "kron_2", "masks", "clip"],
                         ["codes", "scale"], "quant"),
        schema.make_node("Int4MatMul", ["codes", "scale", "weight1", "weight_scale1", "bias1"], ["y1"], "mm1"),
        schema.make_node("Int4MatMul", ["codes", "scale", "weight2", "weight_scale2", "bias2"], ["y2"], "mm2",
                         group_size=32),
    ]
    graph = helper.make_graph(
        nodes, "tiny_ops",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*lead, d]),
         helper.make_tensor_value_info("types", TensorProto.INT32, list(lead))],
        [helper.make_tensor_value_info("codes", TensorProto.INT8, [*lead, d // 2]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [*lead, 1]),
         helper.make_tensor_value_info("y1", TensorProto.FLOAT, [*lead, w1["bias"].shape[0]]),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, [*lead, w2["bias"].shape[0]])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), schema.opset_import()])


def test_onnx_runtime_runs_the_tiny_graph_like_the_reference():
    rng = np.random.default_rng(7)
    inp = _inputs(rng, (2, 5), 3, d1=8, d2=8)
    w1, w2 = _weights(rng, 16, 64, 0), _weights(rng, 24, 64, 32)
    model = _tiny_model(inp, w1, w2)
    onnx.checker.check_model(model)
    types = schema.graph_value_types(model.graph)
    for node in model.graph.node:
        schema.check_node(node, types)

    session = onnxruntime.InferenceSession(model.SerializeToString(), reference.session_options(),
                                           providers=["CPUExecutionProvider"])
    codes, scale, y1, y2 = session.run(None, {"x": inp["x"], "types": inp["types"]})

    want_codes, want_scale = reference.freeact_quantize(**inp)
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(scale, want_scale)
    want_y1 = reference.int4_matmul(want_codes, want_scale, w1["weight"], w1["weight_scale"], w1["bias"])
    want_y2 = reference.int4_matmul(want_codes, want_scale, w2["weight"], w2["weight_scale"], w2["bias"],
                                    group_size=32)
    assert y1.shape == (2, 5, 16) and y2.shape == (2, 5, 24)
    np.testing.assert_allclose(y1, want_y1, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y2, want_y2, rtol=1e-6, atol=1e-6)


def test_register_declares_each_op_once_with_its_ort_types(monkeypatch):
    """register() twice: each op handed to onnxruntime-extensions once, with the types ORT must check."""
    import onnxruntime_extensions
    from onnxruntime_extensions import PyCustomOpDef as T

    declared = []

    def recording_onnx_op(**kwargs):  # stands in for the global registry: nothing real is registered here
        def decorate(body):
            declared.append((kwargs["op_type"], list(kwargs["inputs"]), list(kwargs["outputs"]),
                             dict(kwargs["attrs"])))
            return body
        return decorate

    monkeypatch.setattr(onnxruntime_extensions, "onnx_op", recording_onnx_op)
    monkeypatch.setattr(reference, "_registered", False)
    reference.register()
    reference.register()
    assert declared == [
        ("FreeActQuantize", [T.dt_float, T.dt_int32, T.dt_float, T.dt_float, T.dt_float, T.dt_float, T.dt_float],
         [T.dt_int8, T.dt_float], {"bits": T.dt_int64, "kronecker": T.dt_int64}),
        ("Int4MatMul", [T.dt_int8, T.dt_float, T.dt_int8, T.dt_float, T.dt_float], [T.dt_float],
         {"act_bits": T.dt_int64, "group_size": T.dt_int64}),
    ]


def test_ort_runs_int4_matmul_after_repeated_registration():
    """After register() more than once, ORT computes Int4MatMul like an fp64 dequantized matmul."""
    reference.register()
    reference.register()
    rng = np.random.default_rng(3)
    acodes, wcodes = rng.integers(-8, 8, (2, 3, 16)).astype(np.int8), rng.integers(-8, 8, (5, 16)).astype(np.int8)
    scale = rng.uniform(0.01, 0.5, (2, 3, 1)).astype(np.float32)
    w_scale = rng.uniform(0.01, 0.1, (5, 1)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    consts = {"weight": _onnx_int4_bytes(wcodes).view(np.int8), "weight_scale": w_scale, "bias": bias}
    graph = helper.make_graph(
        [schema.make_node("Int4MatMul", ["codes", "scale", "weight", "weight_scale", "bias"], ["y"], "mm")], "mm",
        [helper.make_tensor_value_info("codes", TensorProto.INT8, [2, 3, 8]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [2, 3, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 5])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), schema.opset_import()])
    session = onnxruntime.InferenceSession(model.SerializeToString(), reference.session_options(),
                                           providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"codes": _onnx_int4_bytes(acodes).view(np.int8), "scale": scale})
    want = (acodes * scale.astype(np.float64)) @ (wcodes * w_scale.astype(np.float64)).T + bias
    assert y.dtype == np.float32 and y.shape == (2, 3, 5)
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def test_make_node_fills_defaults_and_checks_values():
    node = schema.make_node("FreeActQuantize", list("abcdefg"), ["c", "s"], "q")
    assert node.domain == schema.DOMAIN
    assert _attrs(node) == {"bits": 4, "kronecker": 1, "plugin_version": b"1", "plugin_namespace": b""}
    with pytest.raises(ValueError, match="'q'.*bits must be one of"):
        schema.make_node("FreeActQuantize", list("abcdefg"), ["c", "s"], "q", bits=3)
    with pytest.raises(ValueError, match="unknown attribute"):
        schema.make_node("Int4MatMul", list("abcde"), ["y"], "mm", group=32)
    with pytest.raises(ValueError, match="group_size must be a multiple of 2"):
        schema.make_node("Int4MatMul", list("abcde"), ["y"], "mm", group_size=33)


def _raw(op: str, inputs: list[str], outputs: list[str], **attrs) -> onnx.NodeProto:
    """A node built without make_node's checks, as a hand-written or foreign graph would hold it."""
    full = {"plugin_version": "1", "plugin_namespace": "", **attrs}
    return helper.make_node(op, inputs, outputs, name="bad", domain=schema.DOMAIN, **full)


def test_check_node_rejects_broken_nodes():
    good = dict(bits=4, kronecker=1)
    schema.check_node(_raw("FreeActQuantize", list("abcdefg"), ["c", "s"], **good))
    cases = [
        (_raw("FreeActQuantize", list("abcdefg"), ["c", "s"], bits=3, kronecker=1), "bits must be one of"),
        (_raw("FreeActQuantize", list("abcdef"), ["c", "s"], **good), "expects 7 inputs"),
        (_raw("FreeActQuantize", list("abcdefg"), ["c"], **good), "expects 2 outputs"),
        (_raw("FreeActQuantize", list("abcdefg"), ["c", "s"], bits=4), r"missing attribute\(s\) \['kronecker'\]"),
        (_raw("FreeActQuantize", list("abcdefg"), ["c", "s"], **good, mode=1), "unknown attribute"),
        (_raw("FreeActQuantize", list("abcdefg"), ["c", "s"], bits="4", kronecker=1), "bits must be of type int"),
        (_raw("Int4MatMul", ["a", "", "c", "d", "e"], ["y"], act_bits=4, group_size=0), "scale is empty"),
    ]
    for node, message in cases:
        with pytest.raises(ValueError, match=f"'bad'.*{message}"):
            schema.check_node(node)
    node = _raw("FreeActQuantize", list("abcdefg"), ["c", "s"], **good)
    schema.check_node(node, {"a": TensorProto.FLOAT16, "b": TensorProto.INT32})
    with pytest.raises(ValueError, match="'bad'.*input types \\('b'\\) has dtype INT64, expected int32"):
        schema.check_node(node, {"a": TensorProto.FLOAT, "b": TensorProto.INT64})
    other_domain = helper.make_node("Int4MatMul", list("abcde"), ["y"], name="bad", act_bits=4, group_size=0)
    with pytest.raises(ValueError, match="domain"):
        schema.check_node(other_domain)


def test_schema_json_round_trips_and_lists_both_ops():
    data = schema.schema_json()
    assert json.loads(json.dumps(data)) == data
    ops = {op["name"]: op for op in data["ops"]}
    assert list(ops) == ["FreeActQuantize", "Int4MatMul"]
    assert [t["name"] for t in ops["FreeActQuantize"]["inputs"]] == [
        "x", "types", "smooth", "kron_1", "kron_2", "masks", "clip"]
    assert [t["name"] for t in ops["Int4MatMul"]["inputs"]] == ["codes", "scale", "weight", "weight_scale", "bias"]
    assert [a["name"] for a in ops["Int4MatMul"]["attributes"]] == ["act_bits", "group_size"]
    assert data["domain"] == "ai.onnx.contrib"
    printed = subprocess.run([sys.executable, "-m", "freeact_export.ops.schema"], capture_output=True, text=True,
                             check=True).stdout
    assert json.loads(printed) == data
