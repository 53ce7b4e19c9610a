"""Every bad input to ``ades run``: one clear ``Error:`` line, a non-zero exit, no run folder touched.

Each case is the command line (``{data}`` a small valid image folder, ``{run}``
a finished, resumable run made from it, ``{tmp}`` an empty temporary folder),
an optional way to spoil the inputs first, and the message expected.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import torch
from click.testing import CliRunner

from ades_cli.main import cli
from ades_core.engine.runfolder.state_files import state_folder
from tests.cli.tiny_runs import GOOD, TINY_RUN, write_images

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
)


@pytest.fixture(scope="module")
def good_data(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("data"), GOOD)


@pytest.fixture(scope="module")
def finished_run(good_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    result = CliRunner().invoke(cli, ["run", *TINY_RUN, "--data-dir", str(good_data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


# ---------------------------------------------------------------- ways to spoil an input


def _empty_class_folders(tmp: Path) -> None:
    write_images(tmp / "d", {"test": {"cat": 1}})
    (tmp / "d" / "train" / "cat").mkdir(parents=True)


def _no_class_folders(tmp: Path) -> None:
    write_images(tmp / "d", {"train": {"cat": 1}})
    (tmp / "d" / "test").mkdir()


def _class_mismatch(tmp: Path) -> None:
    write_images(tmp / "d", {"train": {"cat": 1, "dog": 1}, "test": {"cat": 1, "emu": 1}})


def _mixed_sizes(tmp: Path) -> None:
    write_images(tmp / "d", {"train": {"cat": 1}, "test": {"cat": 1}})
    write_images(tmp / "d", {"train": {"dog": 1}, "test": {"dog": 1}}, size=16)


def _corrupt_image(tmp: Path) -> None:
    write_images(tmp / "d", {"train": {"cat": 1}, "test": {"cat": 1}})
    (tmp / "d" / "train" / "cat" / "broken.png").write_bytes(b"not a png")


def _a_file(tmp: Path) -> None:
    (tmp / "file").write_text("x")


def _flip_state_byte(run: Path) -> None:
    (tensors,) = state_folder(run).glob("tensors-*.safetensors")
    data = bytearray(tensors.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tensors.write_bytes(bytes(data))


def _truncate_state_json(run: Path) -> None:
    pointer = state_folder(run) / "state.json"
    pointer.write_text(pointer.read_text()[:200])


def _delete_state(run: Path) -> None:
    shutil.rmtree(state_folder(run))


def _config_not_json(run: Path) -> None:
    (run / "config.json").write_text("{ nope")


def _config_unknown_field(run: Path) -> None:
    raw = json.loads((run / "config.json").read_text())
    raw["optim"]["bogus"] = 1
    (run / "config.json").write_text(json.dumps(raw))


def _other_classes(tmp: Path) -> None:
    write_images(tmp / "d", {"train": {"cat": 4, "emu": 4}, "test": {"cat": 2, "emu": 2}})


@attrs.frozen
class Case:
    id: str
    args: list[str]
    message: str
    spoil_tmp: Callable[[Path], None] | None = None
    spoil_run: Callable[[Path], None] | None = None
    needs_no_cuda: bool = False
    """The error exists only on a machine without CUDA: skipped where CUDA is available."""


CASES = [
    # ---- names, each listing the known ones
    Case("unknown defense", ["--defense", "madry"], "--defense: unknown defense 'madry'; registered: ades, "),
    Case("unknown cue", ["--cue", "grad,bogus"], "--cue: unknown cue 'bogus'; registered: "),
    Case("unknown backbone", ["--backbone", "nonexistent_net"], "--backbone: unknown backbone 'nonexistent_net'; ades backbones: ades_cnn_small"),
    Case("unknown dataset", ["--dataset", "mnist"], "--dataset: unknown dataset 'mnist'; registered: cifar10, cifar100, imagefolder"),
    Case("unknown scheduler", ["--scheduler", "bogus"], "--scheduler: unknown scheduler 'bogus'; registered: fixed, mlp, random, static"),
    Case("unknown objective", ["--scheduler-objective", "bogus"], "--scheduler-objective: unknown scheduler objective 'bogus'; registered: "),
    Case("unknown attack loss", ["--attack-loss", "bogus"], "--attack-loss: unknown attack loss 'bogus'; registered: "),
    Case("unknown preset", ["--preset", "fast"], "Invalid value for '--preset': 'fast' is not one of 'paper', 'quick'"),
    Case("unknown option", ["--bogus", "1"], "No such option '--bogus'"),
    Case("repeated cue", ["--cue", "grad,grad"], "--cue: cues are repeated: grad,grad"),
    # ---- budgets
    Case("eps above 1", ["--eps", "300/255"], "--eps: budget '300/255' is outside [0, 1] (L-inf pixel scale: 8/255 = 0.0314) for --norm linf"),
    Case("eps negative", ["--eps", "-0.1"], "Invalid value for '--eps': budget '-0.1' is outside [0, 1]"),
    Case("eps not a number", ["--eps", "abc"], "Invalid value for '--eps': budget 'abc' is not a number or a fraction like 8/255"),
    Case("eps zero denominator", ["--eps", "8/0"], "budget '8/0' is not a number or a fraction like 8/255"),
    Case("eval eps above 1", ["--eval-eps", "2"], "--eval-eps: budget '510/255' is outside [0, 1] (L-inf pixel scale: 8/255 = 0.0314) for --norm linf"),
    Case("l2 eps for a defense without l2", ["--norm", "l2", "--eps", "0.5", "--defense", "fast-at"], "--norm: defense 'fast-at' trains in linf only, not l2: "),
    Case("l2 eps beyond the image diameter", [*TINY_RUN, "--data-dir", "{data}", "--out", "{tmp}/new-run", "--norm", "l2", "--eps", "60", "--eval-eps", "0.5"], "budget.eps = 60 exceeds the L2 diameter 55.43 of [0, 1]^3072"),
    Case("lam negative (eps_min > eps_min + lam)", ["--lam", "-2/255"], "Invalid value for '--lam': lam '-2/255' is negative: eps_min + lam would lie below eps_min"),
    Case("eps_min + lam above 1", ["--eps-min", "8/255", "--lam", "250/255"], "--lam: eps_min + lam = 258/255 exceeds 1 (pixel scale)"),
    Case("alpha zero", ["--alpha", "0"], "--alpha: the PGD step size must be positive, got 0"),
    # ---- counts
    Case("steps zero", ["--steps", "0"], "--steps: must be an integer >= 1, got 0"),
    Case("steps negative", ["--steps", "-3"], "--steps: must be an integer >= 1, got -3"),
    Case("steps not an integer", ["--steps", "ten"], "Invalid value for '--steps': 'ten' is not a valid integer"),
    Case("epochs zero", ["--epochs", "0"], "--epochs: must be an integer >= 1, got 0"),
    Case("batch size zero", ["--batch-size", "0"], "--batch-size: must be an integer >= 1, got 0"),
    Case("eval steps zero", ["--eval-steps", "0"], "--eval-steps: must be an integer >= 1, got 0"),
    Case("eval every zero", ["--eval-every", "0"], "--eval-every: must be an integer >= 1, got 0"),
    Case("eval batch size zero", ["--eval-batch-size", "0"], "--eval-batch-size: must be an integer >= 1, got 0"),
    Case("mc samples one", ["--mc-samples", "1"], "--mc-samples: must be an integer >= 2, got 1"),
    Case("scheduler hidden zero", ["--scheduler-hidden", "0"], "--scheduler-hidden: must be an integer >= 1, got 0"),
    Case("train subset zero", ["--train-subset", "0"], "--train-subset: must be a positive integer or unset, got 0"),
    Case("test subset negative", ["--test-subset", "-5"], "--test-subset: must be a positive integer or unset, got -5"),
    Case("image size zero", ["--image-size", "0"], "--image-size: must be a positive integer or unset, got 0"),
    Case("seed negative", ["--seed", "-1"], "--seed: must be an integer >= 0, got -1"),
    Case("log every zero", ["--log-every", "0"], "--log-every: must be an integer >= 1, got 0"),
    Case("checkpoint every zero", ["--checkpoint-every", "0"], "Invalid value for '--checkpoint-every': 0 is not in the range x>=1"),
    # ---- rates
    Case("lr zero", ["--lr", "0"], "--lr: must be a number in (0, inf), got 0.0"),
    Case("lr negative", ["--lr", "-0.1"], "--lr: must be a number in (0, inf), got -0.1"),
    Case("momentum one", ["--momentum", "1"], "--momentum: must be a number in [0, 1), got 1.0"),
    Case("weight decay negative", ["--weight-decay", "-1"], "--weight-decay: must be a number in [0, inf), got -1.0"),
    Case("drop rate one", ["--drop-rate", "1"], "--drop-rate: must be a number in [0, 1), got 1.0"),
    Case("mc dropout p zero", ["--mc-dropout-p", "0"], "--mc-dropout-p: must be a number in (0, 1), got 0.0"),
    Case("scheduler lr zero", ["--scheduler-lr", "0"], "--scheduler-lr: must be a number in (0, inf), got 0.0"),
    Case("lr not a number", ["--lr", "fast"], "Invalid value for '--lr': 'fast' is not a valid float"),
    # ---- choices and combinations
    Case("device unknown", ["--device", "tpu"], "--device: 'tpu' is not one of: auto, cpu, cuda, cuda:N, mps"),
    Case("amp unknown", ["--amp", "int8"], "Invalid value for '--amp': 'int8' is not one of 'auto', 'off', 'bf16', 'fp16'"),
    Case("on-nonfinite unknown", ["--on-nonfinite", "ignore"], "Invalid value for '--on-nonfinite': 'ignore' is not one of 'stop', 'skip'"),
    Case("static weights count", ["--static-weights", "1,1"], "--static-weights: 2 scheduler weights for 3 cues (grad,entropy,mcdropout); give one weight per cue"),
    Case("static weights negative", ["--static-weights", "1,-1,1"], "--static-weights: scheduler weights must be >= 0 with a positive sum"),
    Case("static weights not numbers", ["--static-weights", "a,b"], "--static-weights: expected comma-separated numbers, got 'a,b'"),
    Case("learnable defense, fixed scheduler", ["--scheduler", "static", *TINY_RUN[2:], "--defense", "ades", "--data-dir", "{data}"], "defense 'ades' needs a learnable scheduler, got 'static'; learnable: mlp"),
    # ---- data
    Case("missing dataset folder", ["--dataset", "imagefolder", "--data-dir", "/nonexistent/ades"], "image folder /nonexistent/ades does not exist; pass --data-dir"),
    Case("empty dataset folder", [*TINY_RUN, "--data-dir", "{tmp}"], "train is missing; an image folder needs train/ and test/ subfolders"),
    Case("no images in class folders", [*TINY_RUN, "--data-dir", "{tmp}/d"], "the train split", _empty_class_folders),
    Case("no class folders", [*TINY_RUN, "--data-dir", "{tmp}/d"], "holds no class folders; put its images in", _no_class_folders),
    Case("train/test classes differ", [*TINY_RUN, "--data-dir", "{tmp}/d"], "train and test classes of {tmp}/d differ: only in train: dog; only in test: emu", _class_mismatch),
    Case("images of different sizes", [*TINY_RUN, "--data-dir", "{tmp}/d"], "have different sizes (32x32 in", _mixed_sizes),
    Case("undecodable image", [*TINY_RUN, "--data-dir", "{tmp}/d"], "could not decode {tmp}/d/train/cat/broken.png: Unsupported image file; remove or replace the file", _corrupt_image),
    Case("subset larger than the data", [*TINY_RUN, "--data-dir", "{data}", "--train-subset", "100"], "train subset of 100 asked, but the train split holds 8 samples"),
    Case("cifar missing, no download", ["--dataset", "cifar10", "--no-download", "--data-dir", "{tmp}", "--device", "cpu"], "CIFAR-10 is not in {tmp} and could not be downloaded (downloading is off)"),
    Case("cuda without cuda", ["--device", "cuda", "--data-dir", "{data}", "--dataset", "imagefolder"], "device 'cuda' asked for but CUDA is not available", needs_no_cuda=True),
    # ---- the run folder
    Case("out holds a different run", [*TINY_RUN, "--data-dir", "{data}", "--out", "{run}", "--lr", "0.01"], "already holds a different run (optim.lr 0.1 != 0.01); choose another --out, or pass --overwrite"),
    Case("out holds this run", [*TINY_RUN, "--data-dir", "{data}", "--out", "{run}"], "already holds this run (same config); pass --resume {run} to continue it"),
    Case("out is a file", ["--out", "{tmp}/file"], "the run folder {tmp}/file is a file; choose a folder for --out", _a_file),
    Case("overwrite with a bad data folder", [*TINY_RUN, "--data-dir", "/nonexistent/ades", "--out", "{run}", "--overwrite"], "image folder /nonexistent/ades does not exist"),
    Case("resume nothing", ["--resume", "{tmp}/none"], "{tmp}/none holds no run to resume (no config.json)"),
    Case("resume with a changed option", ["--resume", "{run}", "--lr", "0.5"], "--lr 0.5 conflicts with 0.1 in {run}/config.json, the run being resumed; on --resume only --device, --log-every"),
    Case("resume and overwrite", ["--resume", "{run}", "--overwrite"], "--resume and --overwrite exclude each other"),
    Case("resume and preset", ["--resume", "{run}", "--preset", "quick"], "--preset cannot be combined with --resume"),
    Case("resume into another out", ["--resume", "{run}", "--out", "{tmp}/x"], "differs from --resume"),
    Case("resume, tampered state", ["--resume", "{run}"], "does not match the hash in {run}/checkpoint/state.json; it was modified or corrupted", spoil_run=_flip_state_byte),
    Case("resume, truncated state.json", ["--resume", "{run}"], "{run}/checkpoint/state.json is truncated or not JSON", spoil_run=_truncate_state_json),
    Case("resume, no state but finished epochs", ["--resume", "{run}"], "holds finished epochs but no training state (checkpoint/ is missing)", spoil_run=_delete_state),
    Case("resume, config.json not JSON", ["--resume", "{run}"], "{run}/config.json is not readable JSON", spoil_run=_config_not_json),
    Case("resume, config.json unknown field", ["--resume", "{run}"], "{run}/config.json: optim.bogus: unknown OptimConfig field(s); known: ", spoil_run=_config_unknown_field),
    Case("resume on other data", ["--resume", "{run}", "--data-dir", "{tmp}/d"], "the data differs from the run being resumed: classes was ['cat', 'dog'], now ['cat', 'emu']", _other_classes),
]  # fmt: skip


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_case(case: Case, data: Path, run: Path, tmp: Path) -> tuple[str, int, str]:
    """Invoke ``ades run`` for ``case``; return (command line, exit code, output)."""
    if case.spoil_tmp is not None:
        case.spoil_tmp(tmp)
    if case.spoil_run is not None:
        case.spoil_run(run)
    args = [a.format(data=data, run=run, tmp=tmp) for a in case.args]
    if "--out" not in args and "--resume" not in args:
        args += ["--out", str(tmp / "new-run")]
    result = CliRunner().invoke(cli, ["run", "--quiet", *args], terminal_width=400)
    return " ".join(["ades run", *args]), result.exit_code, result.output


def _params(cases: list[Case]) -> list:
    no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="the error needs a machine without CUDA")
    return [pytest.param(c, id=c.id, marks=[no_cuda] if c.needs_no_cuda else []) for c in cases]


@pytest.mark.parametrize("case", _params(CASES))
def test_bad_input_is_one_clear_line_and_touches_nothing(case, good_data, finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    if case.spoil_run is not None:
        case.spoil_run(run)
        case = attrs.evolve(case, spoil_run=None)
    before = _files(run)
    _, code, output = run_case(case, good_data, run, tmp_path)
    assert code != 0, output
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, output
    assert case.message.format(data=good_data, run=run, tmp=tmp_path) in errors[0], output
    assert "Traceback" not in output
    assert _files(run) == before  # the existing run is untouched
    assert not (tmp_path / "new-run" / "config.json").exists()
