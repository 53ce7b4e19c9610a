"""Training figures draw budgets in the run's norm: L-inf as x/255, L2 as the radius itself."""

from __future__ import annotations

import json

import pytest

from ades_core.evaluation import training_plots
from ades_core.evaluation.training_plots import TrainingPlotError, budget_axis, run_norm

METRICS = [
    {"epoch": e, "train_loss": 2.0, "train_clean_acc": 0.3, "train_adv_acc": 0.2,
     "eps_mean": 0.5, "eps_std": 0.1, "eps_min": 0.25, "eps_max": 0.75}
    for e in (1, 2)
]


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions would save, kept instead of written."""
    figures = []
    monkeypatch.setattr(training_plots, "_save", lambda figure, path: figures.append(figure) or path)
    return figures


def test_linf_budgets_are_drawn_in_255ths_and_l2_radii_as_they_are():
    assert budget_axis("linf") == (255.0, "eps (x/255)")
    scale, label = budget_axis("l2")
    assert scale == 1.0 and "l2 radius" in label


@pytest.mark.parametrize(("norm", "top"), [("linf", 0.75 * 255), ("l2", 0.75)])
def test_the_curves_budget_panel_uses_the_norms_units(drawn, tmp_path, norm, top):
    training_plots.plot_training_curves(METRICS, tmp_path / "c.png", norm=norm)
    budget = drawn[0].axes[3]
    assert budget.get_ylabel() == budget_axis(norm)[1]
    eps_max_line = [line for line in budget.get_lines() if line.get_label() == "eps max"][0]
    assert list(eps_max_line.get_ydata()) == pytest.approx([top, top])


def test_the_run_norm_is_read_from_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"attack": {"norm": "l2"}}))
    assert run_norm(tmp_path) == "l2"
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(TrainingPlotError, match="config.json"):
        run_norm(tmp_path)
