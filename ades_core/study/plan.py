"""What each (arm, seed) of a study still needs: the ``ades`` commands, decided from its folder.

For one run folder, in order:

* training: nothing when it has finished (:func:`~ades_core.study.runs.training_finished`);
  ``ades run --resume FOLDER`` (with the arm's options, which must agree with
  the folder's ``config.json``) when a training state was saved; otherwise a
  new ``ades run ... --seed k --out FOLDER`` (``--overwrite`` when a run was
  started there but never saved a state);
* evaluation: nothing when ``eval.json`` is current and training needs
  nothing; ``ades eval FOLDER ... --resume`` when ``eval.resume.json`` holds
  an interrupted evaluation of the same model; otherwise a new ``ades eval``;
* AutoAttack (runs in ``[autoattack]`` only): the same, with ``eval-autoattack.json``.

Each command's argument list follows ``python -m ades_cli``; it runs with
``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` set to the study's threads per
run, and ``ades eval`` also gets ``--threads``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from ades_core.engine.runfolder import CONFIG_FILE
from ades_core.study.runs import (
    AUTOATTACK_REPORT,
    EVAL_REPORT,
    LOGS,
    has_training_state,
    report_current,
    resume_state_file,
    training_finished,
)
from ades_core.study.spec import OptionValue, StudySpec

AUTOATTACK_DROPS = ("attack", "n", "checks", "check-n", "eps-sweep")
"""Main-evaluation options the AutoAttack evaluation does not take over (it sets its own)."""


def option_args(options: Mapping[str, OptionValue]) -> list[str]:
    """``{"epochs": 5, "awp": False, "cue": ("grad", "entropy")}`` -> ``["--epochs", "5", "--no-awp", "--cue", "grad,entropy"]``."""
    args: list[str] = []
    for name, value in options.items():
        if value is True:
            args.append(f"--{name}")
        elif value is False:
            args.append(f"--no-{name}")
        elif isinstance(value, tuple):
            args += [f"--{name}", ",".join(value)]
        else:
            args += [f"--{name}", str(value)]
    return args


def threads_per_run(parallel: int, cores: int | None = None) -> int:
    """CPU threads each of ``parallel`` side-by-side runs gets: ``max(1, cores // parallel)``."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, parallel))


@attrs.frozen(kw_only=True)
class Step:
    """One command of a run: ``kind`` (train, eval, autoattack), how (new, resume), its arguments and log."""

    kind: str
    how: str
    args: tuple[str, ...] = attrs.field(converter=tuple)
    log: Path


@attrs.frozen(kw_only=True)
class RunJob:
    """One (arm, seed) run: its folder and the steps it still needs (none: finished, skipped)."""

    arm: str
    seed: int
    folder: Path
    steps: tuple[Step, ...] = attrs.field(converter=tuple)
    after: str | None = None
    """The label of a job that must end before this one starts (None: none)."""

    @property
    def label(self) -> str:
        kinds = {step.kind for step in self.steps}
        return f"{self.arm}/seed{self.seed}" + (" autoattack" if kinds == {"autoattack"} else "")


def train_args(spec: StudySpec, arm: str, seed: int, *, resume: bool, overwrite: bool = False) -> list[str]:
    """``run`` arguments of one (arm, seed); on resume the arm's options are repeated (not ``preset``)
    so that ``ades run`` refuses a folder trained with other settings."""
    folder = spec.run_folder(arm, seed)
    options = spec.arm_options(arm)
    if resume:
        options.pop("preset", None)
        return ["run", "--resume", str(folder), *option_args(options), "--seed", str(seed)]
    return ["run", *option_args(options), "--seed", str(seed), "--out", str(folder),
            *(["--overwrite"] if overwrite else [])]


def eval_args(spec: StudySpec, arm: str, seed: int, *, threads: int, resume: bool) -> list[str]:
    """``eval`` arguments of the main evaluation of one run (report ``eval.json``)."""
    folder = spec.run_folder(arm, seed)
    options = dict(spec.eval_options)
    options["attack"] = ",".join(spec.attacks)
    return ["eval", str(folder), *option_args(options), "--threads", str(threads),
            "--out", str(folder / EVAL_REPORT), "--quiet", *(["--resume"] if resume else [])]


def autoattack_args(spec: StudySpec, arm: str, seed: int, *, threads: int, resume: bool) -> list[str]:
    """``eval`` arguments of the AutoAttack evaluation (report ``eval-autoattack.json``, no masking checks)."""
    folder = spec.run_folder(arm, seed)
    options = {k: v for k, v in spec.eval_options.items() if k not in AUTOATTACK_DROPS}
    n = spec.autoattack.n if spec.autoattack is not None else None
    return ["eval", str(folder), "--attack", "autoattack", *(["--n", str(n)] if n is not None else []),
            *option_args(options), "--no-checks", "--threads", str(threads),
            "--out", str(folder / AUTOATTACK_REPORT), "--quiet", *(["--resume"] if resume else [])]


def plan_job(spec: StudySpec, arm: str, seed: int, *, threads: int) -> RunJob:
    """The steps one (arm, seed) still needs, read from its folder (see the module docstring)."""
    folder = spec.run_folder(arm, seed)
    steps: list[Step] = []
    trained = training_finished(folder)
    if not trained:
        if has_training_state(folder):
            args, how = train_args(spec, arm, seed, resume=True), "resume"
        else:
            started = (folder / CONFIG_FILE).is_file()
            args, how = train_args(spec, arm, seed, resume=False, overwrite=started), "new"
        steps.append(Step(kind="train", how=how, args=args, log=folder / LOGS["train"]))
    evaluations = [("eval", EVAL_REPORT, eval_args)]
    if spec.autoattack is not None and spec.autoattack.covers(arm, seed):
        evaluations.append(("autoattack", AUTOATTACK_REPORT, autoattack_args))
    for kind, report, make_args in evaluations:
        if trained and report_current(folder, report):
            continue
        resume = trained and resume_state_file(folder / report).is_file()
        steps.append(Step(kind=kind, how="resume" if resume else "new",
                          args=make_args(spec, arm, seed, threads=threads, resume=resume), log=folder / LOGS[kind]))
    return RunJob(arm=arm, seed=seed, folder=folder, steps=steps)


def plan_study(spec: StudySpec, *, arms: tuple[str, ...] | None = None, parallel: int | None = None) -> list[RunJob]:
    """Every (arm, seed) of ``spec`` (or of ``arms`` only), seed by seed: all arms of the first seed
    first, so that paired comparisons fill in as the study goes.

    AutoAttack steps (hours each on a CPU) are split off into jobs of their
    own after every training job, each waiting (``after``) for its run's
    training and main evaluation to end, so that they do not hold up the grid.
    """
    threads = threads_per_run(parallel or spec.parallel)
    chosen = spec.arm_names if arms is None else tuple(a for a in spec.arm_names if a in arms)
    jobs = [plan_job(spec, arm, seed, threads=threads) for seed in spec.seeds for arm in chosen]
    main, trailing = [], []
    for job in jobs:
        first = [step for step in job.steps if step.kind != "autoattack"]
        late = [step for step in job.steps if step.kind == "autoattack"]
        main.append(attrs.evolve(job, steps=first))
        if late:
            trailing.append(attrs.evolve(job, steps=late, after=main[-1].label if first else None))
    return main + trailing
