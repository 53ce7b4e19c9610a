"""Train and evaluate several arms of a study, two at a time, each on one CPU thread.

Usage::

    python scripts/run_arms.py STUDY ARM [ARM ...] [--jobs 2] [--root runs/study]

``STUDY`` names a table in :data:`STUDIES`; every arm shares the study's common
flags (backbone, data, epochs, seed, budgets) and adds its own. Each arm runs
``ades run`` into ``ROOT/ARM`` and then ``ades eval`` (PGD-20 and CW with the
gradient-masking checks, on the whole test split or :data:`EVAL_N` images). An arm whose
``eval.json`` exists is skipped, so the script can be re-run after a failure.
Jobs run with one torch thread each (``OMP_NUM_THREADS=1``), so that the
seconds per epoch of arms trained side by side are comparable.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DATA = ["--dataset", "imagefolder", "--data-dir", str(Path("~/.cache/ades/cifar10-imagefolder").expanduser())]
COMMON = [
    "--backbone", "ades_cnn_small", *DATA, "--cue", "grad,entropy,mcdropout",
    "--train-subset", "4000", "--test-subset", "1000", "--epochs", "3", "--steps", "5",
    "--alpha", "2/255", "--eps", "8/255", "--eps-min", "4/255", "--lam", "8/255",
    "--eval-every", "3", "--seed", "0", "--quiet",
]

STUDIES: dict[str, dict[str, list[str]]] = {
    "defenses": {
        "pgd-at": ["--defense", "pgd-at"],
        "static-des": ["--defense", "static-des"],
        "trades": ["--defense", "trades"],
        "mart": ["--defense", "mart"],
        "mma": ["--defense", "mma"],
        # m = 6 replays for 18 "epochs" = 3 passes of 6 updates: the 18 forward/backward
        # passes per image that PGD-5 AT spends in 3 epochs (5 attack + 1 training each)
        "free-at": ["--defense", "free-at", "--replays", "6", "--epochs", "18"],
        "fast-at": ["--defense", "fast-at"],
        "iaat": ["--defense", "iaat", "--iaat-warmup", "1"],  # 10 warm-up epochs of 200 in the paper
        "cat": ["--defense", "cat"],
        "pgd-at-awp": ["--defense", "pgd-at", "--awp"],
        "ades-trades": ["--defense", "ades", "--loss", "trades"],
    },
    "scheduler": {
        "ades-paper": ["--defense", "ades", "--scheduler-objective", "paper"],
        "ades-allocate-max": ["--defense", "ades", "--scheduler-objective", "allocate-max"],
        "ades-allocate-min": ["--defense", "ades", "--scheduler-objective", "allocate-min"],
        "ades-loss-target": ["--defense", "ades", "--scheduler-objective", "loss-target"],
        "ades-penalty": ["--defense", "ades", "--scheduler-objective", "penalty"],
        "ades-saturating": ["--defense", "ades", "--scheduler-objective", "saturating"],
        "random-control": ["--defense", "static-des", "--scheduler", "random"],
    },
}


EVAL_N: dict[str, int | None] = {"scheduler": None, "defenses": 2000}
"""Test images ``ades eval`` uses per study (None: the whole test split, 10,000)."""


def run_arm(study: str, arm: str, root: Path) -> str:
    out = root / arm
    if (out / "eval.json").is_file():
        return f"{arm}: already evaluated"
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    ades = [sys.executable, "-m", "ades_cli"]
    log = root / f"{arm}.log"
    with log.open("w") as handle:
        if not (out / "model.safetensors").is_file():
            cmd = [*ades, "run", *COMMON, *STUDIES[study][arm], "--out", str(out), "--overwrite"]
            handle.write(" ".join(cmd) + "\n")
            handle.flush()
            code = subprocess.call(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env)
            if code:
                return f"{arm}: ades run failed ({code}), see {log}"
        cmd = [*ades, "eval", str(out), "--attack", "pgd20,cw", "--threads", "1", "--quiet"]
        if EVAL_N[study] is not None:
            cmd += ["--n", str(EVAL_N[study])]
        handle.write(" ".join(cmd) + "\n")
        handle.flush()
        code = subprocess.call(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env)
    return f"{arm}: {'done' if code == 0 else f'ades eval failed ({code})'}, log {log}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=sorted(STUDIES))
    parser.add_argument("arms", nargs="*", help="arms to run (default: all of the study)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("runs/study"))
    args = parser.parse_args()
    arms = args.arms or list(STUDIES[args.study])
    unknown = [a for a in arms if a not in STUDIES[args.study]]
    if unknown:
        parser.error(f"unknown arm(s) {', '.join(unknown)}; {args.study} has: {', '.join(STUDIES[args.study])}")
    args.root.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        for line in pool.map(lambda a: run_arm(args.study, a, args.root), arms):
            print(line, flush=True)


if __name__ == "__main__":
    main()
