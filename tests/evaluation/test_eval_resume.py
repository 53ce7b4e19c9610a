"""A killed evaluation resumes where it stopped and gives the uninterrupted run's per-sample result.

The kill is an exception raised by the attack at a chosen batch (what Ctrl-C
or a SIGTERM becomes in ``ades eval``); the state kept beside the report
holds the batches finished before it.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from ades_cli.main import cli
from ades_core.attacks import AutoAttack
from ades_core.config import AttackOptions
from ades_core.evaluation import AttackSpec, evaluate
from ades_core.evaluation.resume import ResumeMismatchError, ResumeStore, state_path
from ades_core.registries import ATTACKS
from tests.evaluation.models import Linear, linear_data

CPU = torch.device("cpu")
EPS = 8 / 255
BATCH = 8


class Killed(Exception):
    """Stands for the kill: raised by :class:`KilledAt` at its batch."""


class KilledAt:
    """Delegates to ``attack``; raises :class:`Killed` on call number ``kill_at`` (0-based), counts calls."""

    name = "killed-at"

    def __init__(self, attack, kill_at: int | None) -> None:
        self.attack = attack
        self.kill_at = kill_at
        self.calls = 0

    def __call__(self, model, x, y, eps):
        if self.calls == self.kill_at:
            raise Killed(f"killed at batch {self.calls}")
        self.calls += 1
        return self.attack(model, x, y, eps)

    def settings(self):
        return self.attack.settings()


@pytest.fixture(scope="module")
def problem():
    """A 10-class linear model and 40 samples it classifies right; AutoAttack breaks some, not all."""
    model = Linear(48, 10, seed=5).eval()
    data = linear_data(model, 40, (3, 4, 4), seed=6)
    return model, data


def _spec(attack) -> AttackSpec:
    name = f"test-resume-{id(attack)}"
    if name not in ATTACKS:
        ATTACKS.register(name, lambda options, **kwargs: attack)
    return AttackSpec(label="autoattack", attack=name, options=AttackOptions(name="pgd"), white_box=False)


def _evaluate(model, data, attack, store=None):
    spec = _spec(attack)
    try:
        return evaluate(model, data, [spec], EPS, device=CPU, batch_size=BATCH, seed=1, checks=None, resume=store)
    finally:
        ATTACKS.unregister(spec.attack)


def test_a_killed_autoattack_resumes_to_the_uninterrupted_per_sample_result(problem, tmp_path):
    model, data = problem
    official = lambda: AutoAttack(iterations=5, square_queries=30)  # noqa: E731  (seed drawn per batch)
    whole = _evaluate(model, data, KilledAt(official(), None)).per_sample["autoattack"]
    assert 0 < int(whole.sum()) < len(whole), "the comparison needs robust and broken samples"

    path = tmp_path / "eval.resume.json"
    fingerprint = {"model": "m", "eps": EPS}
    killed = KilledAt(official(), kill_at=2)
    with pytest.raises(Killed):
        _evaluate(model, data, killed, ResumeStore(path, fingerprint, resume=False, save_every=0))
    stored = json.loads(path.read_text())["rows"]
    assert [len(batches) for batches in stored.values()] == [2]  # two batches finished before the kill

    resumed_attack = KilledAt(official(), None)
    store = ResumeStore(path, fingerprint, resume=True, save_every=0)
    assert store.resumed_batches == 2
    resumed = _evaluate(model, data, resumed_attack, store).per_sample["autoattack"]
    attacked_batches = -(-int(_evaluate(model, data, KilledAt(official(), None)).per_sample["clean"].sum()) // BATCH)
    assert resumed_attack.calls == attacked_batches - 2  # only the batches not stored were attacked
    assert torch.equal(resumed, whole)


def test_a_state_of_other_settings_or_another_model_is_refused(tmp_path):
    path = tmp_path / "eval.resume.json"
    ResumeStore(path, {"model_sha256": "aa", "eps": 0.03}, resume=False)
    with pytest.raises(ResumeMismatchError, match=r"another eps \(0\.03 there, 0\.02 now\); run without --resume"):
        ResumeStore(path, {"model_sha256": "aa", "eps": 0.02}, resume=True)
    with pytest.raises(ResumeMismatchError, match="another model file"):
        ResumeStore(path, {"model_sha256": "bb", "eps": 0.03}, resume=True)
    fresh = ResumeStore(path, {"model_sha256": "bb", "eps": 0.03}, resume=False)  # without --resume: start over
    assert fresh.resumed_batches == 0


def test_each_rank_keeps_its_own_state_beside_the_report(tmp_path):
    report = tmp_path / "eval.json"
    assert state_path(report) == tmp_path / "eval.resume.json"
    assert state_path(report, 1, 2) == tmp_path / "eval.resume.rank1-of-2.json"
    assert state_path(tmp_path / "best.eval.json") == tmp_path / "best.eval.resume.json"


# ------------------------------------------------------------------ the command line
KILLING = "test-killing-pgd"


@pytest.fixture
def killing_attack():
    """PGD-3 registered as an attack that raises :class:`Killed` on its third batch of the process."""
    from ades_core.evaluation import resolve_attack

    state = {"calls": 0, "kill_at": 2}

    def make(options, **kwargs):
        pgd = resolve_attack("pgd3").build()

        def attack(model, x, y, eps):
            if state["calls"] == state["kill_at"]:
                raise Killed("killed")
            state["calls"] += 1
            return pgd(model, x, y, eps)

        return attack

    ATTACKS.register(KILLING, make)
    yield state
    ATTACKS.unregister(KILLING)


@pytest.mark.slow
def test_ades_eval_resume_continues_a_killed_run_and_refuses_other_settings(tiny_run, tmp_path, killing_attack):
    runner = CliRunner()
    base = ["eval", str(tiny_run), "--attack", KILLING, "--n", "64", "--batch-size", "2", "--no-checks", "--quiet"]
    killing_attack.update(calls=0, kill_at=None)
    complete = runner.invoke(cli, [*base, "--out", str(tmp_path / "whole.json")])
    assert complete.exit_code == 0, complete.output
    batches = killing_attack["calls"]
    assert batches >= 3, "the test needs at least three attacked batches"

    out = tmp_path / "eval.json"
    killing_attack.update(calls=0, kill_at=2)
    killed = runner.invoke(cli, [*base, "--out", str(out)])
    assert isinstance(killed.exception, Killed) and not out.exists()
    assert state_path(out).is_file()  # the two finished batches are kept

    other = runner.invoke(cli, [*base, "--out", str(out), "--resume", "--eps", "4/255"])
    assert other.exit_code != 0
    assert "was made with another eps" in other.output and other.output.count("\n") == 1

    killing_attack.update(calls=0, kill_at=None)
    resumed = runner.invoke(cli, [*base, "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert killing_attack["calls"] == batches - 2  # the stored batches were not attacked again
    first, second = json.loads((tmp_path / "whole.json").read_text()), json.loads(out.read_text())
    assert second["attacks"][0]["robust_count"] == first["attacks"][0]["robust_count"]
    assert not state_path(out).exists()  # removed once the report is written


@pytest.mark.slow
def test_ades_eval_resume_refuses_another_model_file(tiny_run, tmp_path, killing_attack):
    import shutil

    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    runner = CliRunner()
    base = ["eval", str(run), "--attack", KILLING, "--n", "64", "--batch-size", "2", "--no-checks", "--quiet"]
    assert isinstance(runner.invoke(cli, base).exception, Killed)
    model_file = run / "model.safetensors"
    with safe_open(str(model_file), "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(model_file))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, str(model_file), metadata=metadata)
    result = runner.invoke(cli, [*base, "--resume"])
    assert result.exit_code != 0
    assert "was made with another model file (its SHA-256 differs)" in result.output
