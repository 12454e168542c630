"""`check` on smollm2-135m: the real model's rewritten folder passes, and each rewriter defect fails it.

On the real model one rounding tie decided the other way moves the W4A4 logits by whole units
(float32 vs float64 simulation: about 12 dB SQNR), so only the replay can tell a correct graph
from a broken one here. A short freeact-general plan (few learning steps, a small calibration) has
per-type factors in some groups, for the type-gate defect.
"""

import pytest
from parity_defects import defective_copy

from freeact_export.api import rewrite_onnx
from freeact_export.config import CalibSpec, EvalSpec, FreeActSpec
from freeact_export.errors import UserError
from freeact_export.parity.check import check
from freeact_export.plan import Plan

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def smollm2_rewritten(smollm2_onnx, tmp_path_factory):
    folder = tmp_path_factory.mktemp("real-parity") / "freeact-general-w4a4"
    rewrite_onnx(str(smollm2_onnx[0]), folder, method="freeact-general", bits="w4a4", types="sink=pos:1",
                 calib=CalibSpec(windows=8, seqlen=128, samples_per_type=256, min_tokens=8),
                 # unclipped start: 4 steps from it leave per-type factors in some groups, which the
                 # type-gate defect below needs (from the searched start the shared branch wins them all)
                 freeact=FreeActSpec(steps=4, clip_start="none"), progress=False)
    return folder


def test_the_real_model_passes_check_on_this_cpu(smollm2_rewritten):
    record = check(smollm2_rewritten, corpus="wiki", eval_spec=EvalSpec(seqlen=256, windows=4), progress=False)
    assert record["passed"]
    for comparison in record["comparisons"]:
        assert comparison["first_diverging"] is None and comparison["replayed_logits_sqnr_db"] > 60
        assert all(t["max_tie_room"] < 1e-3 for t in comparison["replayed"])
    assert record["perplexity"]["passed"]


def test_check_catches_a_wrong_packing_order_on_the_real_model(smollm2_rewritten, smollm2_onnx, tmp_path):
    broken = defective_copy(smollm2_rewritten, smollm2_onnx[0], tmp_path / "packing",
                            {"plugin.onnx": ("packing_order_swapped", 0)})
    with pytest.raises(UserError, match=r"plugin\.onnx does not hold the plan's INT4 weights: the codes of "
                                        r"model\.layers\.0\.self_attn\.q_proj"):
        check(broken, corpus="wiki", eval_spec=None, progress=False)


# Two defects per folder, one in each graph, each judged on its own against the simulation (one slow
# check run serves two cases): (plugin graph's defect, portable graph's defect), each (name, group).
PAIRS = [(("type_gate_dropped", "typed"), ("factor_transposed", 1)),
         (("weight_scale_wrong", 1), ("weight_scale_wrong", -1))]


@pytest.mark.parametrize("pair", PAIRS, ids=["type-gate+factor", "weight-scales"])
def test_check_catches_rewriter_defects_on_the_real_model(smollm2_rewritten, smollm2_onnx, tmp_path, pair):
    groups = Plan.load(smollm2_rewritten / "plan").groups
    typed = [i for i, g in enumerate(groups) if "type_kron_1" in g.tensors]
    assert typed, "the short plan kept no per-type factors: the type gate cannot be broken"
    placed = {graph: (defect, typed[0] if where == "typed" else where % len(groups))
              for graph, (defect, where) in zip(("plugin.onnx", "portable.onnx"), pair, strict=True)}
    broken = defective_copy(smollm2_rewritten, smollm2_onnx[0], tmp_path / "broken", placed)
    record = check(broken, corpus="wiki", eval_spec=None, progress=False)
    assert not record["passed"]
    for comparison, (defect, group) in zip(record["comparisons"], placed.values(), strict=True):
        assert not comparison["passed"]
        if defect == "weight_scale_wrong" and group == len(groups) - 1:  # no codes after it: the logits tell
            assert comparison["first_diverging"] is None and comparison["replayed_logits_sqnr_db"] < 60
        else:  # the codes of the group it breaks (the next one, for a weight) are off by more than ties
            broken_group = groups[group + (defect == "weight_scale_wrong")].name
            assert comparison["first_diverging"].startswith(f"{broken_group} (")
