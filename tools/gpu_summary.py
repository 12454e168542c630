"""gpu_check.sh's verdict: RESULTS/gpu.json from the JUnit file, the device and the exit codes; exit 0 only if all ran.

    python tools/gpu_summary.py RESULTS TESTS_RC TESTS_S BENCH_RC

A skipped GPU test counts as a failure (gpu_check.sh exists to run them): the summary names every
skipped, failed or erroring test with its reason, and the GPU (or that there was none).
"""

from __future__ import annotations

import json
import platform
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def _device() -> dict:
    info: dict = {"python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(gpu=props.name, capability=f"sm_{props.major}{props.minor}", cuda=torch.version.cuda)
        else:
            info["gpu"] = None
    except ImportError as err:
        info["torch"] = f"not importable: {err}"
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


def summarise(results: Path, tests_rc: int, tests_s: int, bench_rc: str) -> dict:
    counts = {"tests": 0, "tests_passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    problems = []
    junit = results / "gpu_tests.xml"
    if junit.is_file():
        for case in ET.parse(junit).getroot().iter("testcase"):
            counts["tests"] += 1
            name = f"{case.get('classname')}::{case.get('name')}"
            for kind, key in (("skipped", "skipped"), ("failure", "failed"), ("error", "errors")):
                element = case.find(kind)
                if element is not None:
                    counts[key] += 1
                    problems.append(f"{key}: {name}: {(element.get('message') or '').strip()[:300]}")
                    break
            else:
                counts["tests_passed"] += 1
    else:
        problems.append("no JUnit results: pytest did not finish (timeout or crash), see tests.log")
    passed = (junit.is_file() and tests_rc == 0 and counts["tests"] > 0 and counts["tests_passed"] == counts["tests"]
              and bench_rc == "0")
    return {"device": _device(), "tests_exit_code": tests_rc, "tests_s": tests_s, "bench_exit_code": bench_rc,
            **counts, "problems": problems, "passed": bool(passed)}


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    results = Path(argv[0])
    record = summarise(results, int(argv[1]), int(argv[2]), argv[3])
    (results / "gpu.json").write_text(json.dumps(record, indent=2) + "\n")
    gpu = record["device"].get("gpu") or "no CUDA GPU"
    print(f"gpu_check on {gpu}: {'PASSED' if record['passed'] else 'FAILED'}: {record['tests_passed']} of "
          f"{record['tests']} tests passed, {record['failed']} failed, {record['errors']} errors, "
          f"{record['skipped']} skipped (a skip counts as a failure); benchmark exit {record['bench_exit_code']}")
    for problem in record["problems"][:20]:
        print(f"  {problem}")
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
