"""`check` catches real rewriter defects on tiny models, whatever the CPU's float order does to ties.

The clean folder passes (replay absorbs the float-order ties: test_rewrite.py); each defect of
parity_defects.py, made in one group of the same plan, fails: the packing order by the weights
check before anything runs, the others by the replay (codes off by more than a tie, or logits
off once every code agrees).
"""

import pytest
from parity_defects import DEFECTS, defective_copy
from rewritten_tiny import rewritten_tiny

from freeact_export.errors import UserError
from freeact_export.parity.check import check
from freeact_export.plan import Plan


@pytest.fixture(scope="module")
def clean(tmp_path_factory, tiny_text_file):
    """freeact-general W4A4 on a tiny Llama: per-type factors in some groups, type rule sink=pos:3."""
    root = tmp_path_factory.mktemp("defects")
    folder = rewritten_tiny(root, tiny_text_file, "llama", "freeact-general", "w4a4")
    plan = Plan.load(folder / "plan")
    typed = [i for i, g in enumerate(plan.groups) if "type_kron_1" in g.tensors]
    assert typed, "the plan must have a group with per-type factors for the type-gate defect"
    return root, folder, typed[0]


# (defect, group it is made in: a plan group number, "typed" = the first with per-type factors, -1 = the last)
CASES = [("packing_order_swapped", 0), ("type_gate_dropped", "typed"), ("factor_transposed", 1),
         ("weight_scale_wrong", 1), ("weight_scale_wrong", -1)]


def test_every_defect_is_tried():
    assert {defect for defect, _ in CASES} == set(DEFECTS)


@pytest.mark.parametrize(("defect", "where"), CASES)
def test_check_catches_a_rewriter_defect(clean, tiny_text_file, defect, where):
    root, folder, typed_group = clean
    groups = Plan.load(folder / "plan").groups
    group = typed_group if where == "typed" else where % len(groups)
    graphs = ["plugin.onnx"] if defect == "packing_order_swapped" else ["plugin.onnx", "portable.onnx"]
    broken = defective_copy(folder, root / "llama-onnx", root / f"{defect}-{group}",
                            dict.fromkeys(graphs, (defect, group)))
    if defect == "packing_order_swapped":  # every plugin weight: refused before anything runs
        first = r"plugin\.onnx does not hold the plan's INT4 weights: the codes of model\.layers\.0\.self_attn\.q_proj"
        with pytest.raises(UserError, match=first):
            check(broken, corpus=str(tiny_text_file), eval_spec=None, progress=False)
        return
    record = check(broken, corpus=str(tiny_text_file), eval_spec=None, progress=False)
    assert not record["passed"]
    for comparison in record["comparisons"]:  # both graphs carry the defect
        assert not comparison["passed"]
        if defect == "weight_scale_wrong" and group == len(groups) - 1:  # no codes after it: the logits tell
            assert comparison["first_diverging"] is None and comparison["replayed_logits_sqnr_db"] < 60
            continue
        # The codes of the group it breaks (of the next one, for a weight) differ by more than ties.
        broken_group = groups[group + (defect == "weight_scale_wrong")].name
        assert comparison["first_diverging"].startswith(f"{broken_group} (")
        assert "steps from a rounding boundary" in comparison["first_diverging"]
