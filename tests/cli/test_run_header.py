"""`ades run`'s first line names the training attack the defense really runs."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ades_cli.main import cli


@pytest.mark.parametrize(
    ("defense", "attack"),
    [
        ("pgd-at", "PGD-10 alpha 2/255"),
        ("fast-at", "FGSM from a uniform start, step 1.25 * eps = 10/255"),
        ("free-at", "FGSM sign steps of eps carried over 8 replays per batch"),
        ("mma", "AN-PGD-10 + 10-step bisection"),
    ],
)
def test_header_names_the_training_attack(tmp_path, defense, attack):
    result = CliRunner().invoke(
        cli,
        ["run", "--defense", defense, "--backbone", "ades_cnn_small", "--dataset", "imagefolder",
         "--data-dir", str(tmp_path / "missing"), "--epochs", "1", "--out", str(tmp_path / "run")],
    )
    header = result.output.splitlines()[0]
    assert attack in header
    if defense in ("fast-at", "free-at"):
        assert "PGD" not in header
