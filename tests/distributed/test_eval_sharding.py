"""Two CPU ranks (gloo, launched with torchrun) evaluate exactly what one process evaluates.

The sharded evaluation cuts every pass into whole batches of the single-process
run and seeds each batch from the global index of its first sample, so on the
CPU the per-sample results (clean, each attack, worst case) and therefore every
accuracy, the masking checks and ``eval.json`` are *equal*, not merely close.

The model is a randomly initialised small CNN whose test images are labelled
with its own predictions (every fourth label moved to another class), so a
quarter of the split is misclassified clean and, at eps 0.5/255, the attacks
break some of the others but not all (asserted: the comparison has both kinds).
PGD-20 from a random start ends in the same place whatever the start on this
model, so the suite also holds a test attack whose outcome is decided by
random draws (PGD-20 on a random half of each batch): a batch seeded by its
rank or by its position in the rank's share would change its flags.

This file is also the torchrun worker: ``python -m torch.distributed.run
--nproc-per-node 2 tests/distributed/test_eval_sharding.py RUN OUT [ades eval
options]`` runs :func:`worker` on every rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ades_core.attacks import AutoAttack
from ades_core.config import AttackOptions
from ades_core.engine.runfolder.model_files import ModelSpec, load_model, save_model
from ades_core.evaluation import (
    AttackSpec,
    MaskingCheckConfig,
    describe_run,
    evaluate,
    load_test_data,
    resolve_attacks,
)
from ades_core.registries import ATTACKS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"),
]

REPO = Path(__file__).resolve().parents[2]
EPS_TEXT = "1/510"  # 0.5/255
EPS = 1 / 510
BATCH = 4  # 24 images, 18 clean-correct: attacked batches of 4, 4, 4, 4, 2 split 2 / 3 over the ranks
SEED = 3
CLASSES = ("a", "b", "c", "d")
CHEAP_AUTOATTACK = "test-cheap-autoattack"
COIN_PGD = "test-coin-pgd"
CHECKS = MaskingCheckConfig(n=8, steps=5, more_steps=10, square_queries=20)
CLI_OPTIONS = ["--attack", "pgd5,cw5", "--eps", EPS_TEXT, "--batch-size", str(BATCH), "--seed", str(SEED),
               "--no-checks", "--device", "cpu", "--quiet"]  # fmt: skip


def _cheap_autoattack(options: AttackOptions, **kwargs) -> AutoAttack:
    """AutoAttack with 2 iterations and 20 Square queries; its seed drawn from the torch generator."""
    return AutoAttack(iterations=2, square_queries=20)


class CoinPGD:
    """PGD-20 on the samples a fair coin picks (drawn from torch's generator), the clean input on the others."""

    def __init__(self) -> None:
        self.pgd = resolve_attacks(["pgd20"])[0].build()

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps) -> torch.Tensor:
        coin = torch.rand(x.shape[0], device=x.device) < 0.5
        return torch.where(coin[:, None, None, None], self.pgd(model, x, y, eps), x)


def register_test_attacks() -> None:
    ATTACKS.register(COIN_PGD, lambda options, **kwargs: CoinPGD())
    ATTACKS.register(CHEAP_AUTOATTACK, _cheap_autoattack)


def suite_specs() -> list[AttackSpec]:
    """PGD-20, the coin PGD and a cheap official AutoAttack (registered by the caller).

    (CW is the same PGD loop with another loss; the CLI comparison runs it.)
    """
    options = AttackOptions(name="pgd")
    specs = [*resolve_attacks(["pgd20"]), AttackSpec(label=COIN_PGD, attack=COIN_PGD, options=options)]
    specs.append(AttackSpec(label=CHEAP_AUTOATTACK, attack=CHEAP_AUTOATTACK, options=options, white_box=False))
    return specs


def run_suite(run_dir: Path, distributed=None):
    """The suite (with the masking checks) on the run's test split, sharded when ``distributed`` is given."""
    info = describe_run(run_dir)
    model = load_model(info.model_file)
    return evaluate(
        model, load_test_data(info).data, suite_specs(), EPS, device=torch.device("cpu"), batch_size=BATCH,
        seed=SEED, checks=CHECKS, distributed=distributed,
    )  # fmt: skip


def worker(run_dir: str, out_dir: str, *eval_options: str) -> None:
    """One rank: the suite (rank 0 saves its per-sample results), then ``ades eval`` through the CLI."""
    from ades_cli.main import cli
    from ades_core.distributed import init_from_env

    torch.set_num_threads(1)
    ctx = init_from_env("cpu")
    if ctx is None:
        raise SystemExit("launch with torchrun --nproc-per-node N (N > 1)")
    register_test_attacks()
    result = run_suite(Path(run_dir), ctx)
    if ctx.is_main:
        torch.save({"per_sample": result.per_sample, "report": result.to_dict()}, Path(out_dir) / "sharded.pt")
    cli.main(["eval", run_dir, *eval_options], prog_name="ades", standalone_mode=False)


# ------------------------------------------------------------------ fixtures
def _write_png(path: Path, image: torch.Tensor) -> None:
    from torchvision.io import write_png

    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(image, str(path))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A model file (random small CNN, 4 classes) and an image folder labelled by its own predictions."""
    root = tmp_path_factory.mktemp("shard-eval")
    torch.manual_seed(0)
    spec = ModelSpec(backbone="ades_cnn_small", num_classes=len(CLASSES), mean=(0.5,) * 3, std=(0.25,) * 3)
    model = spec.build().eval()
    generator = torch.Generator().manual_seed(1)
    coarse = torch.randint(0, 256, (24, 3, 8, 8), generator=generator).float()
    images = torch.nn.functional.interpolate(coarse, size=32, mode="bilinear").round().clamp(0, 255).byte()
    with torch.no_grad():
        model.get_classifier().bias -= model(images.float() / 255).mean(dim=0)  # spread the predictions
        predicted = model(images.float() / 255).argmax(dim=1)
    labels = predicted.clone()
    labels[::4] = (predicted[::4] + 1) % len(CLASSES)  # a quarter misclassified clean
    assert set(labels.tolist()) == set(range(len(CLASSES))), "every class needs a test image"
    data = root / "data"
    for i, (image, label) in enumerate(zip(images, labels.tolist())):
        _write_png(data / "test" / CLASSES[label] / f"{i:02d}.png", image)
    for k, name in enumerate(CLASSES):
        _write_png(data / "train" / name / "0.png", images[k])
    run = root / "run"
    run.mkdir()
    config = {
        "defense": "none",
        "model": {"backbone": spec.backbone},
        "data": {"dataset": "imagefolder", "data_dir": str(data)},
    }
    save_model(run / "model.safetensors", model, spec, run_config=config)
    return run


@pytest.fixture
def test_attacks():
    register_test_attacks()
    yield
    ATTACKS.unregister(COIN_PGD)
    ATTACKS.unregister(CHEAP_AUTOATTACK)


@pytest.fixture(scope="module")
def sharded(tiny_run) -> tuple[dict, dict, str]:
    """Two gloo ranks: the suite's per-sample results, the CLI's eval.json and its stdout."""
    out = tiny_run.parent / "sharded"
    out.mkdir()
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        __file__, str(tiny_run), str(out), *CLI_OPTIONS, "--out", str(out / "eval.json"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    saved = torch.load(out / "sharded.pt", weights_only=True)
    return saved, json.loads((out / "eval.json").read_text()), result.stdout


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _without_times(value):
    """``value`` with every ``seconds`` key removed, recursively."""
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


# ------------------------------------------------------------------ tests
def test_two_ranks_give_the_per_sample_results_of_one_process(sharded, tiny_run, test_attacks, one_thread):
    saved, _, _ = sharded
    single = run_suite(tiny_run)
    assert list(saved["per_sample"]) == list(single.per_sample) == [
        "clean", *(s.label for s in suite_specs()), "worst-case",
    ]  # fmt: skip
    for name, want in single.per_sample.items():
        assert torch.equal(saved["per_sample"][name], want), name
    clean, coin = single.per_sample["clean"], single.per_sample[COIN_PGD]
    assert 0 < int(single.per_sample["worst-case"].sum()) < int(clean.sum()) < len(clean)  # both kinds
    assert int((coin & ~single.per_sample["pgd20"]).sum()) >= 3  # the coin spared several PGD-20 breaks
    assert _without_times(saved["report"]) == _without_times(single.to_dict())  # accuracies and checks


def test_sharded_ades_eval_writes_the_single_process_report_once(sharded, tiny_run, tmp_path, one_thread):
    from click.testing import CliRunner

    from ades_cli.main import cli

    _, report, stdout = sharded
    result = CliRunner().invoke(cli, ["eval", str(tiny_run), *CLI_OPTIONS, "--out", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    single = json.loads((tmp_path / "eval.json").read_text())
    assert report["world_size"] == 2 and single["world_size"] == 1
    assert stdout.count("report:") == 1  # rank 0 alone prints and writes
    ignore = {"world_size", "torch_threads", "seconds"}
    assert _without_times({k: v for k, v in report.items() if k not in ignore}) == _without_times(
        {k: v for k, v in single.items() if k not in ignore}
    )
    assert [row["name"] for row in report["attacks"]] == ["pgd5", "cw5"]


WORKER_OPTIONS = ["--batch-size", "2", "--seed", str(SEED), "--eps", EPS_TEXT, "--no-checks", "--device", "cpu",
                  "--quiet"]  # fmt: skip


def _start_ranks(run_dir: Path, out: Path, env: dict[str, str], *options: str) -> list[tuple[int, str]]:
    """Start two ranks directly (as a batch scheduler does, no torchrun agent); their exit codes and stderr."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker_file = Path(__file__).with_name("eval_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "WORLD_SIZE": "2", **env}  # fmt: skip
    ranks = [
        subprocess.Popen(
            [sys.executable, str(worker_file), str(run_dir), str(out), *WORKER_OPTIONS, *options], cwd=REPO,
            env=env | {"RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for r in range(2)
    ]  # fmt: skip
    try:
        outputs = [rank.communicate(timeout=180) for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
    return [(rank.returncode, err) for rank, (_, err) in zip(ranks, outputs)]


def test_an_error_on_one_rank_ends_every_rank(tiny_run, tmp_path):
    """Rank 1 fails inside the evaluation while rank 0 waits for it in the all-reduce of the flags:
    the failing rank says what went wrong in one line and exits, and no rank is left waiting."""
    ranks = _start_ranks(tiny_run, tmp_path / "eval.json", {"ADES_TEST_FAIL_RANK": "1"})
    assert [code != 0 for code, _ in ranks] == [True, True]
    assert "Error (rank 1 of 2): rank 1 cannot attack this batch" in ranks[1][1], ranks[1][1][-2000:]
    assert not (tmp_path / "eval.json").exists()


def test_a_stopped_sharded_evaluation_resumes_each_shard(tiny_run, tmp_path, one_thread):
    from click.testing import CliRunner

    from ades_cli.main import cli
    from ades_core.evaluation.resume import state_path

    out = tmp_path / "eval.json"
    stopped = _start_ranks(tiny_run, out, {"ADES_TEST_STOP_AT": "1", "ADES_TEST_CALLS": str(tmp_path / "first")})
    assert [code != 0 for code, _ in stopped] == [True, True]
    assert [state_path(out, r, 2).is_file() for r in range(2)] == [True, True]  # one state per shard
    first = [int((tmp_path / "first" / f"rank{r}").read_text()) for r in range(2)]
    assert first == [1, 1]  # each rank finished one batch before it stopped

    resumed = _start_ranks(tiny_run, out, {"ADES_TEST_CALLS": str(tmp_path / "second")}, "--resume")
    assert [code for code, _ in resumed] == [0, 0], resumed[0][1][-2000:]
    second = [int((tmp_path / "second" / f"rank{r}").read_text()) for r in range(2)]
    # 18 clean-correct in batches of 2: 9 batches, 4 and 5 per rank; the stored one is not attacked again
    assert second == [4 - 1, 5 - 1]
    assert not any(state_path(out, r, 2).exists() for r in range(2))

    from tests.distributed.eval_worker import ATTACK, _make

    ATTACKS.register(ATTACK, _make)
    try:
        single = CliRunner().invoke(cli, ["eval", str(tiny_run), "--attack", ATTACK, *WORKER_OPTIONS,
                                          "--out", str(tmp_path / "single.json")])  # fmt: skip
    finally:
        ATTACKS.unregister(ATTACK)
    assert single.exit_code == 0, single.output
    sharded, alone = json.loads(out.read_text()), json.loads((tmp_path / "single.json").read_text())
    assert sharded["attacks"][0]["robust_count"] == alone["attacks"][0]["robust_count"]
    assert sharded["clean_acc"] == alone["clean_acc"]


if __name__ == "__main__":
    worker(*sys.argv[1:])
