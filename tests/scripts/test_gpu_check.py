"""scripts/gpu_check.py runs end to end on a machine without CUDA, and says that no CUDA part ran.

CI has no GPU: the script is run here as a CPU machine runs it (``--device
cpu`` hides any GPU), at its small CPU sizes, without installing anything.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory) -> tuple[dict, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("gpu-check") / "report.json"
    command = [sys.executable, "scripts/gpu_check.py", "--device", "cpu", "--install", "never", "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text()), done


@pytest.mark.slow
def test_the_report_says_the_cuda_parts_did_not_run(cpu_report):
    report, done = cpu_report
    assert report["ok"] is True
    assert report["cuda"]["available"] is False
    assert report["cuda"]["note"].startswith("CUDA parts not run: torch sees no GPU (--device cpu)")
    assert report["environment"]["cuda_available"] is False
    assert "cuda: CUDA parts not run" in done.stderr and "report: " in done.stderr


@pytest.mark.slow
def test_the_cuda_tests_are_collected_and_skipped_with_their_reason(cpu_report):
    tests = cpu_report[0]["tests"]
    assert tests["returncode"] == 0 and not tests["timed_out"] and tests["failures"] == []
    assert tests["counts"] == {"skipped": tests["counts"]["skipped"]} and tests["counts"]["skipped"] >= 50
    assert tests["summary"].startswith(f"{tests['counts']['skipped']} skipped")
    assert tests["skip_reasons"] == {
        "needs a CUDA GPU: torch.cuda.is_available() is False on this machine": tests["counts"]["skipped"]
    }
    files = {name.split("::")[0] for name in tests["outcomes"]}
    assert len(files) == 7  # every file of tests/cuda


@pytest.mark.slow
def test_the_bench_ran_on_the_cpu_at_small_sizes_and_its_report_is_inside(cpu_report):
    report = cpu_report[0]
    bench = report["bench"]
    assert bench["returncode"] == 0 and bench["sizes"]["backbone"] == "ades_cnn_small"
    inner = bench["report"]
    assert inner["machine"]["device"] == "cpu"
    assert set(inner["training_step"]["fp32"]) == {"pgd-at", "trades", "ades"}
    assert inner["autoattack"]["settings"]["standard"] is False  # shortened on the CPU, and it says so
    figures = report["key_figures"]
    assert figures["reference"] == "105 s per epoch on NVIDIA V100"
    assert all(row["s_per_epoch"] > 0 and row["fraction_of_peak"] is None for row in figures["training"].values())


def test_the_script_needs_only_the_standard_library_to_start():
    tree = ast.parse((REPO / "scripts" / "gpu_check.py").read_text())
    imports = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    imports |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert imports <= {"__future__", "argparse", "datetime", "importlib", "json", "os", "re", "subprocess", "sys",
                       "tempfile", "time", "pathlib", "typing"}  # fmt: skip
