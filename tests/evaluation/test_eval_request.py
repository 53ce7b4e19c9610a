"""``EvalRequest``: ``ades eval``'s options as one typed value, checked when it is built.

The command builds one request and the library consumes it; a request out of
range is refused at construction, naming the field, what it got and what it
accepts; the budgets are checked against the norm once it is known.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner

import ades_core.evaluation.pipeline as pipeline
from ades_cli.main import cli
from ades_core.errors import AdesError
from ades_core.evaluation.request import DEFAULT_ATTACKS, EvalRequest, EvalRequestError, ExternalModel


def test_a_request_names_a_run_or_a_model_from_elsewhere_and_defaults_like_the_command():
    request = EvalRequest(model="runs/x")
    assert request.model == Path("runs/x") and request.external is None
    assert request.attacks == DEFAULT_ATTACKS == ("pgd20", "cw", "autoattack")
    assert (request.n, request.order, request.seed, request.batch_size) == (None, "random", 0, 256)
    assert (request.checks, request.check_n, request.precision, request.resume) == (True, 200, "fp32", False)
    external = ExternalModel(arch="resnet18", weights="w.pt", num_classes=10)
    assert EvalRequest(external=external).external.weights == Path("w.pt")


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"model": None}, "model", "give exactly one of a run"),
        ({"external": ExternalModel(arch="resnet18", weights="w.pt", num_classes=10)}, "model", "exactly one"),
        ({"attacks": ()}, "attacks", "must name at least one attack"),
        ({"attacks": ("pgd20", "")}, "attacks", "each non-empty"),
        ({"norm": "l1"}, "norm", "'l1' is not one of: linf, l2"),
        ({"eps": -0.1}, "eps", "must be a finite budget >= 0 or unset, got -0.1"),
        ({"eps_sweep": (4 / 255, float("nan"))}, "eps_sweep", "must hold finite budgets >= 0"),
        ({"n": 0}, "n", "must be an integer >= 1 or unset, got 0"),
        ({"order": "last"}, "order", "'last' is not one of: random, first"),
        ({"seed": -1}, "seed", "must be an integer >= 0, got -1"),
        ({"batch_size": 0}, "batch_size", "must be an integer >= 1, got 0"),
        ({"check_n": True}, "check_n", "must be an integer >= 1, got True"),
        ({"precision": "fp8"}, "precision", "'fp8' is not one of: fp32, bf16, fp16"),
        ({"weights": "first"}, "weights", "'first' is not one of: last, best, ema"),
        ({"image_size": 0}, "image_size", "must be an integer >= 1 or unset, got 0"),
    ],
)
def test_a_field_out_of_range_is_refused_at_construction(changes, field, reason):
    with pytest.raises(EvalRequestError) as raised:
        EvalRequest(**({"model": "runs/x"} | changes))
    assert raised.value.field == field and reason in raised.value.reason
    assert isinstance(raised.value, AdesError) and isinstance(raised.value, ValueError)


def test_the_budgets_are_checked_in_the_norm_the_evaluation_runs_in():
    assert EvalRequest(model="x").budgets("linf") == (pytest.approx(8 / 255), ())
    assert EvalRequest(model="x").budgets("l2") == (0.5, ())
    assert EvalRequest(model="x", eps=2.0, eps_sweep=(1.0, 3.0)).budgets("l2") == (2.0, (1.0, 3.0))
    with pytest.raises(EvalRequestError, match="for --norm linf") as raised:
        EvalRequest(model="x", eps=2.0).budgets("linf")
    assert raised.value.field == "eps"
    with pytest.raises(EvalRequestError) as raised:
        EvalRequest(model="x", eps_sweep=(4 / 255, 2.0)).budgets("linf")
    assert raised.value.field == "eps_sweep"


class _Stop(AdesError):
    pass


def _request_of(args: list[str], monkeypatch) -> EvalRequest:
    """The request ``ades eval ARGS`` hands to the library (it stops there)."""
    seen = []

    def prepare(request, *, dist=None):
        seen.append(request)
        raise _Stop("stopped before loading anything")

    monkeypatch.setattr(pipeline, "prepare_evaluation", prepare)
    result = CliRunner().invoke(cli, ["eval", *args])
    assert result.exit_code == 1 and "stopped before loading anything" in result.output, result.output
    (request,) = seen
    return request


def test_the_command_hands_its_options_to_the_library_as_one_request(tmp_path, monkeypatch):
    request = _request_of(
        [str(tmp_path), "--attack", "pgd20,fgsm", "--norm", "l2", "--eps", "0.5", "--eps-sweep", "0.25,1",
         "--n", "12", "--order", "first", "--batch-size", "8", "--seed", "3", "--no-checks", "--check-n", "5",
         "--out", str(tmp_path / "e.json"), "--precision", "bf16", "--resume", "--weights", "ema",
         "--image-size", "16", "--device", "cpu"],
        monkeypatch,
    )
    assert request == EvalRequest(
        model=tmp_path, weights="ema", attacks=("pgd20", "fgsm"), norm="l2", eps=0.5, eps_sweep=(0.25, 1.0), n=12,
        order="first", batch_size=8, seed=3, checks=False, check_n=5, out=tmp_path / "e.json",
        precision="bf16", resume=True, image_size=16, device="cpu",
    )


def test_a_model_from_elsewhere_travels_in_the_request(tmp_path, monkeypatch):
    request = _request_of(
        ["--arch", "resnet18", "--weights", str(tmp_path / "w.pt"), "--num-classes", "10", "--mean", "0.5,0.5,0.5",
         "--std", "0.25,0.25,0.25", "--dataset", "cifar10", "--data-dir", str(tmp_path)],
        monkeypatch,
    )
    assert request.model is None and request.dataset == "cifar10" and request.data_dir == tmp_path
    assert request.external == ExternalModel(
        arch="resnet18", weights=tmp_path / "w.pt", num_classes=10, mean=("0.5",) * 3, std=("0.25",) * 3
    )
    assert attrs.evolve(request, external=None, model=tmp_path).external is None
