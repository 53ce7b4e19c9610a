#!/usr/bin/env python
"""One command for a GPU machine that is lent for minutes: does ades's CUDA path work, and how fast is it?

    python scripts/gpu_check.py                 # from the repository root
    python scripts/gpu_check.py --out gpu.json --install never

It runs, one after the other, each in its own process and with its own time limit:

1. **install**: ``pip install -e ".[test]"`` when something the checks need
   cannot be imported (``--install auto``, the default; torch==2.14.1 first
   when torch itself is missing); ``always`` installs anyway, ``never`` only
   reports what is missing;
2. **environment**: torch, CUDA, the GPUs (``nvidia-smi`` too, when present);
3. **tests**: ``pytest -m cuda`` on tests/cuda (every defense on CUDA in
   fp32 and bf16, CPU-equal attacks, no host-device sync in the loops,
   channels_last and torch.compile, torchrun with nccl, resume);
4. **bench**: ``ades bench --paper-scale`` (WRN-34-10, batch 128, PGD-10
   training of pgd-at, trades and ades in bf16 and fp32; PGD-20 and the
   official AutoAttack).

and writes one JSON report (``--out``, default ``gpu-check.json``) holding
every phase's result: the pytest summary line, counts, failures with their
one-line reasons and skip reasons, the bench's whole JSON and a summary of
the key figures. With the default limits, phases 2-4 take at most 8 minutes.

On a machine without CUDA (or with ``--device cpu``) it runs end to end all
the same: the CUDA tests are collected and skipped (the report gives their
reason), the bench runs on the CPU at small sizes (a small CNN, batch 4,
PGD-1, fp32, a shortened AutoAttack, one torch thread: see ``CPU_SIZES``;
the size flags change them), and the report says that no CUDA part ran. CI runs it that way
(tests/scripts/test_gpu_check.py).

Exit status: 0 when every phase ran and no test failed, 1 otherwise (the
report is written either way).

This script needs only the Python standard library, so it runs before torch
is installed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TORCH_PIN = "torch==2.14.1"
TORCHVISION_PIN = "torchvision==0.29.1"

NEEDED = ("torch", "torchvision", "timm", "attrs", "click", "rich", "safetensors", "numpy", "PIL", "pyautoattack",
          "pytest", "hypothesis")  # fmt: skip
"""Modules the checks import (``pip install -e ".[test]"`` brings them all)."""

TEST_FILES = (
    "tests/cuda/test_cuda_defenses.py",
    "tests/cuda/test_cuda_sync_free.py",
    "tests/cuda/test_cuda_loader.py",
    "tests/cuda/test_cuda_attacks.py",
    "tests/cuda/test_cuda_resume.py",
    "tests/cuda/test_cuda_nccl.py",
    "tests/cuda/test_cuda_formats.py",
)
"""The CUDA test files in the order they run: torch.compile (slowest, cold compiler) last."""

PAPER_SIZES = {"backbone": "ades_wrn34_10", "batch_size": 128, "train_steps": 10, "eval_steps": 20, "warmup": 1,
               "repeats": 3, "precisions": "bf16,fp32", "autoattack_iterations": None,
               "autoattack_queries": None, "threads": None}  # fmt: skip
"""The bench on CUDA: the paper's setting and the official AutoAttack."""

CPU_SIZES = {"backbone": "ades_cnn_small", "batch_size": 4, "train_steps": 1, "eval_steps": 1, "warmup": 0,
             "repeats": 1, "precisions": "fp32", "autoattack_iterations": 1, "autoattack_queries": 5,
             "threads": 1}  # fmt: skip
"""The bench on a CPU: the same code at sizes that take seconds (the figures mean little). One torch
thread: on a CI machine shared with other jobs, two threads took 46 s where one took 10 s."""

ENVIRONMENT = r"""
import json, torch
info = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
if info["cuda_available"]:
    info["device_count"] = torch.cuda.device_count()
    info["devices"] = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        info["devices"].append({"name": p.name, "capability": f"{p.major}.{p.minor}",
                                "memory_gb": round(p.total_memory / 2**30, 1),
                                "multiprocessors": p.multi_processor_count})
    info["cudnn"] = torch.backends.cudnn.version()
    info["nccl"] = ".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else None
print(json.dumps(info))
"""


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(command: list[str], *, timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``command`` in the repository root; its return code, seconds and output, even after a timeout."""
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        timed_out = True
    return {"command": " ".join(command), "returncode": process.returncode, "timed_out": timed_out,
            "timeout_s": timeout, "seconds": round(time.monotonic() - start, 1), "output": output or ""}  # fmt: skip


def missing_modules() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def install(mode: str, timeout: float) -> dict[str, Any]:
    """Phase 1: install what is missing (``auto``), everything (``always``) or nothing (``never``)."""
    missing = missing_modules()
    result: dict[str, Any] = {"mode": mode, "missing_before": missing, "commands": []}
    if mode == "never" or (mode == "auto" and not missing):
        result["note"] = "nothing installed" + (f"; missing: {', '.join(missing)}" if missing else "")
        return result
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    commands = []
    if importlib.util.find_spec("torch") is None:
        commands.append([*pip, TORCH_PIN, TORCHVISION_PIN])
    commands.append([*pip, "-e", ".[test]"])
    for command in commands:
        step = run(command, timeout=timeout)
        step["output"] = _tail(step["output"], 15)
        result["commands"].append(step)
    importlib.invalidate_caches()
    result["missing_after"] = missing_modules()
    return result


def environment(env: dict[str, str]) -> dict[str, Any]:
    """Phase 2: what torch sees (in a child process: this one never imports torch), and nvidia-smi."""
    probe = run([sys.executable, "-c", ENVIRONMENT], timeout=120, env=env)
    info: dict[str, Any] = {}
    try:
        info = json.loads(probe["output"].strip().splitlines()[-1])
    except (ValueError, IndexError):
        info = {"error": _tail(probe["output"], 10) or f"exit {probe['returncode']}"}
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,power.limit", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        info["nvidia_smi"] = smi.stdout.strip().splitlines() if smi.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        info["nvidia_smi"] = None
    return info


_OUTCOME = re.compile(r"^(tests/\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)")
_SUMMARY = re.compile(r"^=* ?(.*\b(passed|failed|skipped|error|errors|deselected|no tests ran)\b.*?) ?=*$")
_SHORT = re.compile(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$")
_SKIP = re.compile(r"^SKIPPED \[(\d+)\] [^:]+:\d+: (.*)$")


def tests(timeout: float, env: dict[str, str]) -> dict[str, Any]:
    """Phase 3: ``pytest -m cuda`` on tests/cuda; outcomes parsed from its verbose output (kept on a timeout)."""
    command = [sys.executable, "-m", "pytest", "-m", "cuda", *TEST_FILES, "-v", "-ra", "--tb=line",
               "-p", "no:cacheprovider", "--durations=5"]  # fmt: skip
    step = run(command, timeout=timeout, env=env)
    lines = step["output"].splitlines()
    outcomes: dict[str, str] = {}
    failures: list[dict[str, str]] = []
    skips: dict[str, int] = {}
    summary = None
    for line in lines:
        if match := _OUTCOME.match(line):
            outcomes[match.group(1)] = match.group(2).lower()
        elif match := _SHORT.match(line):
            failures.append({"test": match.group(2), "reason": (match.group(3) or "").strip()})
        elif match := _SKIP.match(line):
            skips[match.group(2)] = skips.get(match.group(2), 0) + int(match.group(1))
        elif line.startswith("=") and (match := _SUMMARY.match(line)):
            summary = match.group(1).strip()
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    if step["timed_out"]:
        finished = ", ".join(f"{n} {k}" for k, n in counts.items())
        summary = f"timed out after {timeout:.0f} s; finished before: {finished}"
    return {
        "command": step["command"], "returncode": step["returncode"], "timed_out": step["timed_out"],
        "seconds": step["seconds"], "summary": summary, "counts": counts, "failures": failures,
        "skip_reasons": skips, "outcomes": outcomes, "output_tail": _tail(step["output"], 40),
    }  # fmt: skip


def bench(device: str, sizes: dict[str, Any], autoattack: bool, timeout: float, env: dict[str, str]) -> dict[str, Any]:
    """Phase 4: ``ades bench --paper-scale`` on ``device``; its JSON, or why there is none."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "bench.json"
        command = [sys.executable, "-m", "ades_cli", "bench", "--paper-scale", "--device", device,
                   "--backbone", sizes["backbone"], "--batch-size", str(sizes["batch_size"]),
                   "--steps", str(sizes["train_steps"]), "--eval-steps", str(sizes["eval_steps"]),
                   "--warmup", str(sizes["warmup"]), "--repeats", str(sizes["repeats"]),
                   "--precisions", sizes["precisions"], "--out", str(out)]  # fmt: skip
        if not autoattack:
            command.append("--no-autoattack")
        for option in ("autoattack_iterations", "autoattack_queries"):
            if sizes[option] is not None and autoattack:
                command += ["--" + option.replace("_", "-"), str(sizes[option])]
        if sizes["threads"] is not None:
            command += ["--threads", str(sizes["threads"])]
        step = run(command, timeout=timeout, env=env)
        try:  # rewritten after each section: a timed-out bench keeps what it measured ("complete": false)
            report = json.loads(out.read_text())
        except (OSError, ValueError):
            report = None
    return {"command": step["command"], "returncode": step["returncode"], "timed_out": step["timed_out"],
            "seconds": step["seconds"], "report": report, "output_tail": _tail(step["output"], 40)}  # fmt: skip


def key_figures(bench_result: dict[str, Any]) -> dict[str, Any]:
    """The figures to read first: seconds per epoch, fraction of peak, memory, throughput of the attacks."""
    report = bench_result.get("report")
    if not report:
        return {}
    reference = report["reference"]
    wanted = ("training_step", "pgd", "autoattack") if report["settings"]["autoattack"] else ("training_step", "pgd")
    missing = [name for name in wanted if name not in report]
    figures: dict[str, Any] = {
        "complete": report.get("complete", False), "sections_missing": missing,
        "device_name": report["machine"].get("device_name"), "backbone": report["settings"]["backbone"],
        "reference": f"{reference['s_per_epoch']:g} s per epoch on {reference['device']}", "training": {},
    }  # fmt: skip
    for precision, rows in report.get("training_step", {}).items():
        for name, row in rows.items():
            figures["training"][f"{precision} {name}"] = row if "failed" in row else {
                "s_per_epoch": round(row["s_per_epoch"], 2), "images_per_s": round(row["images_per_s"], 1),
                "fraction_of_peak": row["fraction_of_peak"], "floor_s_per_epoch": row["floor_s_per_epoch"],
                "peak": row["peak"]["name"], "peak_memory_mb": row["peak_memory_mb"],
                "speedup_vs_reference": row["speedup_vs_reference"],
            }  # fmt: skip
    figures["pgd_images_per_s"] = {
        p: r.get("images_per_s", r.get("failed")) for p, r in report.get("pgd", {}).items() if isinstance(r, dict)
    }
    aa = report.get("autoattack")
    if aa:
        figures["autoattack"] = aa if "failed" in aa else {
            "images_per_s": aa["images_per_s"], "standard": aa["settings"]["standard"],
            "robust_fraction": aa["robust_fraction"], "projected_s_per_10k": aa["projection"]["s_per_10k"],
        }  # fmt: skip
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"), help="the report file (JSON)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="auto: CUDA when torch sees a GPU; cpu: the CPU run even on a GPU machine")
    parser.add_argument("--install", choices=("auto", "always", "never"), default="auto")
    parser.add_argument("--install-timeout-s", type=float, default=900)
    parser.add_argument("--tests-timeout-s", type=float, default=300, help="limit of the pytest phase")
    parser.add_argument("--bench-timeout-s", type=float, default=150, help="limit of the bench phase")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--skip-bench", action="store_true")
    sizes = parser.add_argument_group("bench sizes (default: the paper's on CUDA, CPU_SIZES on a CPU)")
    sizes.add_argument("--backbone")
    sizes.add_argument("--batch-size", type=int)
    sizes.add_argument("--train-steps", type=int, help="PGD steps of the training attack")
    sizes.add_argument("--eval-steps", type=int, help="PGD steps of the evaluation attack")
    sizes.add_argument("--warmup", type=int)
    sizes.add_argument("--repeats", type=int)
    sizes.add_argument("--precisions", help="comma list of bf16, fp32")
    sizes.add_argument("--autoattack-iterations", type=int, help="fewer than the authors' 100: quick checks only")
    sizes.add_argument("--autoattack-queries", type=int, help="fewer than the authors' 5000: quick checks only")
    sizes.add_argument("--no-autoattack", action="store_true")
    sizes.add_argument("--threads", type=int, help="CPU threads of torch in the bench (default: 1 on a CPU)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    report: dict[str, Any] = {
        "what": "scripts/gpu_check.py: ades's CUDA test set and the paper-scale bench",
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "commit": _commit(),
    }

    def phase(name: str) -> None:
        print(f"[gpu_check {time.monotonic() - started:6.0f}s] {name}", file=sys.stderr, flush=True)

    phase("install")
    report["install"] = install(args.install, args.install_timeout_s)
    env = dict(os.environ)
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # torch sees no GPU: the CUDA tests skip, the bench runs on the CPU
    phase("environment")
    report["environment"] = environment(env)
    cuda = bool(report["environment"].get("cuda_available")) and args.device != "cpu"
    if args.device == "cuda" and not cuda:
        report["cuda"] = {"available": False, "note": "--device cuda asked for, but torch sees no GPU: nothing run"}
        return _finish(args.out, report, started, ok=False)
    report["cuda"] = {"available": cuda, "note": (
        "the CUDA tests and the bench ran on the GPU" if cuda else
        "CUDA parts not run: torch sees no GPU" + (" (--device cpu)" if args.device == "cpu" else "")
        + "; the CUDA tests were collected and skipped, the bench ran on the CPU at small sizes, so no figure "
        "here says anything about a GPU"
    )}  # fmt: skip
    ok = not report["install"].get("missing_after", [])
    if args.skip_tests:
        report["tests"] = {"skipped": "--skip-tests"}
    else:
        phase("tests (pytest -m cuda)")
        report["tests"] = tests(args.tests_timeout_s, env)
        ok = ok and report["tests"]["returncode"] == 0 and not report["tests"]["timed_out"]
    if args.skip_bench:
        report["bench"] = {"skipped": "--skip-bench"}
    else:
        chosen = dict(PAPER_SIZES if cuda else CPU_SIZES)
        for key in chosen:
            if getattr(args, key) is not None:
                chosen[key] = getattr(args, key)
        phase(f"bench (ades bench --paper-scale, {chosen['backbone']}, batch {chosen['batch_size']})")
        report["bench"] = bench("cuda" if cuda else "cpu", chosen, not args.no_autoattack, args.bench_timeout_s, env)
        report["bench"]["sizes"] = chosen
        report["key_figures"] = key_figures(report["bench"])
        inner = report["bench"]["report"]
        ok = ok and inner is not None and inner.get("complete", False) and report["bench"]["returncode"] == 0
    return _finish(args.out, report, started, ok=ok)


def _commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() or None


def _finish(out: Path, report: dict[str, Any], started: float, *, ok: bool) -> int:
    report["seconds"] = round(time.monotonic() - started, 1)
    report["ok"] = ok
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(report, indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8")
    partial.replace(out)
    tests_line = report.get("tests", {}).get("summary") or report.get("tests", {}).get("skipped")
    print(f"cuda: {report['cuda']['note']}", file=sys.stderr)
    if tests_line:
        print(f"tests: {tests_line}", file=sys.stderr)
    for name, row in report.get("key_figures", {}).get("training", {}).items():
        if "failed" in row:
            print(f"bench {name}: failed: {row['failed']}", file=sys.stderr)
        else:
            print(f"bench {name}: {row['s_per_epoch']} s/epoch, {row['images_per_s']} img/s", file=sys.stderr)
    print(f"report: {out} ({'ok' if ok else 'FAILURES'}, {report['seconds']} s)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
