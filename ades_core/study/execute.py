"""Run a study's jobs: ``parallel`` at a time, each step a subprocess with its own log.

Each step is ``python -m ades_cli <args>`` with ``OMP_NUM_THREADS`` and
``MKL_NUM_THREADS`` set to the threads per run (torch reads its default
intra-op thread count from them), stdout and stderr appended to the step's
log file after a header line naming the command. A step that exits non-zero
ends its job (the later steps of that run are not started) and the job is
reported as failed with its log; the other jobs go on. Ctrl-C terminates
the running subprocesses (an interrupted ``ades run`` or ``ades eval`` is
resumed by the next ``ades study``) and is raised again.
"""

from __future__ import annotations

import datetime
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import attrs

from ades_core.study.plan import RunJob, Step


@attrs.frozen(kw_only=True)
class JobOutcome:
    """How one job ended: ``failed`` names the step kind that exited non-zero (None: all went well)."""

    job: RunJob
    failed: str | None = None
    returncode: int = 0
    log: Path | None = None

    @property
    def ok(self) -> bool:
        return self.failed is None


def step_command(step: Step) -> list[str]:
    """The full command line of a step: this Python, ``-m ades_cli``, its arguments."""
    return [sys.executable, "-m", "ades_cli", *step.args]


def step_env(threads: int) -> dict[str, str]:
    """This process's environment with the thread counts of one run."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def shell_line(step: Step, threads: int) -> str:
    """The step as one shell line (what ``--dry-run`` prints)."""
    return (f"OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {shlex.join(step_command(step))} "
            f">> {shlex.quote(str(step.log))} 2>&1")


class StudyRunner:
    """Runs jobs ``parallel`` at a time, in order; ``on_event`` gets one line per start, end and failure.

    A job with ``after`` set waits for that job to end first (and fails
    without running when it failed); jobs are started in list order, so a
    job must come after the one it waits for.

    ``on_job_done`` is called in the calling thread after every job, in the
    order they finish (the study rewrites its table there).
    """

    def __init__(
        self,
        *,
        parallel: int,
        threads: int,
        on_event: Callable[[str], None] = lambda line: None,
        on_job_done: Callable[[JobOutcome], None] = lambda outcome: None,
    ) -> None:
        self.parallel, self.threads = max(1, parallel), threads
        self.on_event, self.on_job_done = on_event, on_job_done
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ended: dict[str, threading.Event] = {}
        self._failed: set[str] = set()
        self.launched: list[list[str]] = []

    def _run_step(self, job: RunJob, step: Step) -> int:
        command = step_command(step)
        step.log.parent.mkdir(parents=True, exist_ok=True)
        with open(step.log, "a", encoding="utf-8") as log:
            stamp = datetime.datetime.now().isoformat(timespec="seconds")
            # the header names the interpreter as `python`: logs are committed, machine paths are not
            shown = shlex.join(["python", *command[1:]])
            log.write(f"# {stamp} {step.kind} ({step.how}), {self.threads} threads: {shown}\n")
            log.flush()
            with self._lock:
                if self._stopping.is_set():
                    return 130
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=step_env(self.threads))
                self._running.add(process)
                self.launched.append(command)
            self.on_event(f"start {job.label}: {step.kind} ({step.how})  log {step.log}")
            try:
                return process.wait()
            finally:
                with self._lock:
                    self._running.discard(process)

    def _run_job(self, job: RunJob) -> JobOutcome:
        if job.after is not None and job.after in self._ended:
            self._ended[job.after].wait()
            if job.after in self._failed:
                return JobOutcome(job=job, failed=job.after, returncode=1)
        try:
            return self._run_steps(job)
        finally:
            self._ended[job.label].set()

    def _run_steps(self, job: RunJob) -> JobOutcome:
        for step in job.steps:
            code = self._run_step(job, step)
            if code != 0:
                self._failed.add(job.label)
                return JobOutcome(job=job, failed=step.kind, returncode=code, log=step.log)
        return JobOutcome(job=job)

    def run(self, jobs: Sequence[RunJob]) -> list[JobOutcome]:
        """Run every job with steps; jobs without steps are reported as skipped. Returns the outcomes."""
        outcomes: list[JobOutcome] = []
        todo = [job for job in jobs if job.steps]
        self._ended = {job.label: threading.Event() for job in todo}
        for job in jobs:
            if not job.steps:
                self.on_event(f"skip {job.label}: finished ({job.folder})")
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            pending = {pool.submit(self._run_job, job) for job in todo}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        outcome = future.result()
                        outcomes.append(outcome)
                        if outcome.ok:
                            self.on_event(f"done {outcome.job.label}")
                        else:
                            self.on_event(
                                f"FAILED {outcome.job.label}: {outcome.failed} exited with {outcome.returncode}; "
                                f"see {outcome.log}" if outcome.log is not None else
                                f"NOT RUN {outcome.job.label}: {outcome.failed} failed"
                            )
                        self.on_job_done(outcome)
            except BaseException:
                self.stop()
                for future in pending:
                    future.cancel()
                raise
        return outcomes

    def stop(self) -> None:
        """Terminate the running subprocesses and start no more."""
        with self._lock:
            self._stopping.set()
            for process in self._running:
                process.terminate()
