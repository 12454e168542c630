"""The README's commands stay true: the two set-up commands exist and every CLI line parses."""

import json
import re
import shlex
from pathlib import Path

import pytest

from freeact_export.cli import parse_args

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S)


def _commands(text: str) -> list[str]:
    lines = [line.split("#")[0].strip() for block in _code_blocks(text) for line in block.splitlines()]
    return [line for line in lines if line]


def test_quick_start_has_exactly_the_two_commands():
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert _commands(quick) == ["bash tools/run_default.sh", "bash tools/test.sh"]
    for script in ("tools/run_default.sh", "tools/test.sh", "tools/setup.sh"):
        assert (ROOT / script).is_file()
    assert "bash tools/test.sh" in (ROOT / ".ci" / "run").read_text()


SCRIPT_LINES = [line.strip() for line in (ROOT / "tools" / "run_default.sh").read_text().splitlines()]
CLI_LINES = [line for line in _commands(README) + SCRIPT_LINES if line.startswith("freeact-export ")]


@pytest.mark.parametrize("line", CLI_LINES)
def test_documented_cli_lines_parse(line):
    args = parse_args(shlex.split(line)[1:])
    assert callable(args.run)


def test_readme_figures_match_the_recorded_results():
    import json

    records = {name: json.loads((ROOT / "results" / "smollm2-135m" / f"{name}.json").read_text())
               for name in ("ppl-torch", "ppl-onnx")}
    for record in records.values():
        assert f"**{record['perplexity']:.3f}**" in README
        assert (record["windows"], record["seqlen"], record["corpus"]) == (32, 1024, "wiki")


def test_readme_gpu_preset_figures_match_their_record():
    import json

    cells = json.loads((ROOT / "results" / "smollm2-135m" / "gpu-preset" / "bench_accuracy.json").read_text())
    for name in ("freeact-general/w4a4", "freeact-general+gptq/w4a4"):
        cell = cells[name]
        assert (cell["preset"], cell["calibration"]["windows"], cell["calibration"]["seqlen"]) == ("gpu", 128, 1024)
        assert (cell["eval"]["windows"], cell["eval"]["seqlen"], cell["eval"]["corpus"]) == (32, 1024, "wiki")
        assert f"**{cell['eval']['perplexity']:.2f}**" in README


def test_readme_check_figures_match_their_record():
    import json

    folder = ROOT / "results" / "smollm2-135m" / "onnx-in-freeact-general-w4a4"
    record = json.loads((folder / "check.json").read_text())
    assert record["passed"]
    ppl = record["perplexity"]
    assert f"**{ppl['portable']:.3f}**" in README and f"{ppl['simulation']:.3f}, {ppl['floor']:.3f}" in README
    assert f"limit {100 * ppl['tolerance_relative']:.2f} %" in README
    replayed = " / ".join(f"{c['replayed_logits_sqnr_db']:.1f}" for c in record["comparisons"])
    assert f"**{replayed} dB**" in README


def test_readme_rounding_table_matches_its_record():
    """The table measured with the weight rounding options: every cell's perplexity, as recorded."""
    import json

    cells = json.loads((ROOT / "results" / "smollm2-135m" / "rounding" / "bench_accuracy.json").read_text())
    section = README.split("### Accuracy with the weight rounding options", 1)[1].split("\n### ", 1)[0]
    for key, cell in cells.items():
        if key == "fp" or "(" in key:  # a record kept beside the table (see the section's text)
            continue
        method, column = key.split("/")
        row = next(line for line in section.splitlines() if line.startswith(f"| {method} |"))
        assert f" {cell['eval']['perplexity']:.2f} " in row, key
        assert cell["weights"]["clip_search"] and cell["weights"]["code_range"] == "full"
        assert cell["weights"]["act_order"] == method.endswith("+gptq")
        assert (cell["eval"]["windows"], cell["eval"]["seqlen"], cell["seed"]) == (32, 1024, 0)


def test_readme_cpu_preset_figures_match_their_record():
    """The converged cpu preset's cells: learned with today's cpu preset, figures as recorded."""
    import dataclasses
    import json

    from freeact_export.config import CALIB_PRESETS, FREEACT_PRESETS

    cells = json.loads((ROOT / "results" / "smollm2-135m" / "fast-preset" / "bench_accuracy.json").read_text())
    section = README.split("### The CPU preset, converged", 1)[1].split("\n### ", 1)[0]
    for name in ("freeact-general/w4a4", "freeact-general+gptq/w4a4", "freeact-general/w4a8",
                 "freeact-general+gptq/w4a8"):
        cell = cells[name]
        assert cell["preset"] == "cpu" and cell["learning_spec"] == FREEACT_PRESETS["cpu"].to_dict()
        assert cell["calibration"] == CALIB_PRESETS["cpu"].to_dict()
        assert (cell["eval"]["windows"], cell["eval"]["seqlen"], cell["eval"]["corpus"]) == (32, 1024, "wiki")
        assert f"**{cell['eval']['perplexity']:.2f}**" in section
    assert f"({cells['freeact-general/w4a4']['quantize_s']:.0f} s" in section
    # the halves column: the same preset but for the schedule (100 shared steps, 100 on the branch)
    halves = json.loads((ROOT / "results" / "smollm2-135m" / "fast-preset" / "halves" /
                         "bench_accuracy.json").read_text())
    schedule = dataclasses.replace(FREEACT_PRESETS["cpu"], branch_steps=0, continue_shared=False).to_dict()
    del schedule["branch_steps"]  # the field came later
    table = section.split("| freeact-general | W4A4 |", 1)[1]
    for name in ("freeact-general/w4a4", "freeact-general+gptq/w4a4", "freeact-general/w4a8",
                 "freeact-general+gptq/w4a8"):
        assert halves[name]["learning_spec"] == schedule
        assert f"| {halves[name]['eval']['perplexity']:.2f}" in "| freeact-general | W4A4 |" + table
    for name in ("quarot+gptq/w4a4", "smoothrot+gptq/w4a4", "quarot/w4a4", "smoothrot/w4a4", "rtn/w4a4",
                 "flatquant/w4a4", "flatquant+gptq/w4a4"):
        method = {"quarot": "QuaRot", "smoothrot": "SmoothRot", "rtn": "RTN",
                  "flatquant": "FlatQuant-style"}[name.split("+")[0].split("/")[0]]
        label = method + ("+GPTQ" if "+gptq" in name else "")
        assert f"{label} {cells[name]['eval']['perplexity']:.2f}" in section, name


def test_readme_propagation_figures_match_their_records():
    section = README.split("### Models bigger than memory: one decoder layer at a time", 1)[1].split("\n### ", 1)[0]
    for propagate in ("fp", "quantized"):
        record = json.loads((ROOT / "results" / "smollm2-135m" / "layerwise" /
                             f"quarot-gptq-w4a4-{propagate}.json").read_text())
        assert record["layer_by_layer"] == {"propagate": propagate} and record["method"] == "quarot+gptq"
        assert (record["eval"]["windows"], record["eval"]["seqlen"]) == (32, 1024)
        row = next(line for line in section.splitlines() if line.startswith(f"| `{propagate}`"))
        assert f"{record['eval']['perplexity']:.2f}" in row and f"{record['quantize_s']:.0f} s" in row


def test_readme_layer_errors_match_their_record():
    """The W4A8 layer-by-layer count: groups where freeact-general+gptq's output error is below QuaRot+GPTQ's."""
    record = json.loads((ROOT / "results" / "smollm2-135m" / "layer-errors" / "w4a8.json").read_text())
    errors = record["errors"]
    below = sum(errors["freeact-general+gptq"][g]["all"] < errors["quarot+gptq"][g]["all"]
                for g in errors["quarot+gptq"])
    assert f"QuaRot+GPTQ's in\n  {below} of the {len(errors['quarot+gptq'])} groups" in README


def test_readme_seed_1_cells_match_their_record():
    from freeact_export.config import FREEACT_PRESETS

    folder = ROOT / "results" / "smollm2-135m" / "fast-preset" / "seed1"
    cells = json.loads((folder / "bench_accuracy.json").read_text())
    section = README.split("### The CPU preset, converged", 1)[1].split("\n### ", 1)[0]
    for name in ("freeact-general/w4a4", "freeact-general+gptq/w4a4"):
        assert cells[name]["seed"] == 1 and cells[name]["learning_spec"] == FREEACT_PRESETS["cpu"].to_dict()
        assert f"**{cells[name]['eval']['perplexity']:.2f}**" in section
    assert f"run alone: {cells['freeact-general/w4a4']['quantize_s']:.0f} s)" in section
