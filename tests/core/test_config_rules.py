"""Every rule across config sections fails when the ``RunConfig`` is built, before any data or model,
for built-in and plugin defenses alike (regressions: they used to fail inside the builder)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ades_cli.main import cli
from ades_core.config import ConfigError, RunConfig
from ades_core.registries import DEFENSES


@pytest.fixture
def plugin_defense():
    """A defense registered as a plugin would be, declaring no metadata: no awp, no loss."""

    def factory(parts):
        raise AssertionError("a refused config never reaches the factory")

    DEFENSES.register("plugin-at", factory, source="ades-fake==1.0", uses_cues=False, scheduler="fixed")
    yield "plugin-at"
    DEFENSES.unregister("plugin-at")


def test_awp_with_a_defense_that_does_not_combine_with_it_fails_at_construction():
    with pytest.raises(ConfigError, match="^defense_options.awp: AWP does not combine with defense 'static-des'; "):
        RunConfig(defense="static-des", defense_options={"awp": True})


def test_a_plugin_defense_gets_the_same_rules_without_calling_them(plugin_defense):
    with pytest.raises(ConfigError, match="AWP does not combine with defense 'plugin-at'; it combines with: ades, "):
        RunConfig(defense=plugin_defense, defense_options={"awp": True})
    with pytest.raises(ConfigError, match="loss 'trades' does not apply to defense 'plugin-at'"):
        RunConfig(defense=plugin_defense, defense_options={"loss": "trades"})
    RunConfig(defense=plugin_defense)  # its own default settings are fine


def test_a_defense_that_trains_its_scheduler_refuses_a_fixed_one_at_construction():
    with pytest.raises(ConfigError, match=r"^scheduler.name: defense 'ades' needs a learnable scheduler, got 'static'"):
        RunConfig(defense="ades", scheduler={"name": "static"})
    with pytest.raises(ConfigError, match="--scheduler-reverse controls a learned allocation; scheduler 'fixed'"):
        RunConfig(defense="pgd-at", scheduler={"reverse": True})


def test_a_defense_rule_of_its_own_runs_at_construction():
    with pytest.raises(ConfigError, match="^budget.eps: fast-at needs a positive eps"):
        RunConfig(defense="fast-at", budget={"eps": 0})


def test_a_plugin_defense_can_declare_a_rule_of_its_own():
    def needs_two_steps(config: RunConfig) -> None:
        if config.attack.steps < 2:
            raise ConfigError("attack.steps", "plugin-steps needs 2 or more PGD steps")

    DEFENSES.register("plugin-steps", lambda parts: None, check=needs_two_steps)
    try:
        with pytest.raises(ConfigError, match="^attack.steps: plugin-steps needs 2 or more"):
            RunConfig(defense="plugin-steps", attack={"steps": 1})
        assert RunConfig(defense="plugin-steps").attack.steps == 10
        with pytest.raises(ConfigError, match="plugin-steps needs 2"):  # evolve re-checks the rules
            RunConfig(defense="plugin-steps").evolve(attack={"steps": 1})
    finally:
        DEFENSES.unregister("plugin-steps")


def test_the_cli_refuses_awp_with_static_des_before_any_data_is_read(tmp_path, monkeypatch):
    import ades_core.builder

    def no_data(*args, **kwargs):
        raise AssertionError("data were loaded for a config that should have been refused")

    monkeypatch.setattr(ades_core.builder, "load_datasets", no_data)
    missing = tmp_path / "no-such-data"
    args = ["run", "--defense", "static-des", "--awp", "--dataset", "imagefolder", "--data-dir", str(missing),
            "--no-download", "--out", str(tmp_path / "run")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert errors == [
        "Error: --awp: AWP does not combine with defense 'static-des'; it combines with: ades, mart, pgd-at, trades"
    ], result.output
    assert not missing.exists() and not (tmp_path / "run").exists()


# regressions: these two used to fail only inside the builder (with_grad_norm, TRADES's inner attack)
GRAD_NORM_REFUSAL = (
    "scheduler.grad_norm: rescales the envelope gradient dL/d eps; the target objective learns from its own "
    "fit loss, not from it (leave --scheduler-grad-norm at none)"
)


@pytest.mark.parametrize("objective", ["target", "target-quantile"])
def test_grad_norm_rms_with_a_target_objective_fails_at_construction(objective):
    with pytest.raises(ConfigError) as error:
        RunConfig(defense="ades", scheduler={"objective": objective, "grad_norm": "rms"})
    assert str(error.value) == GRAD_NORM_REFUSAL
    RunConfig(defense="ades", scheduler={"objective": "allocate-min", "grad_norm": "rms"})  # envelope: fine
    RunConfig(defense="pgd-at", scheduler={"objective": objective, "grad_norm": "rms"})  # nothing learned


def test_a_plugin_objective_that_fits_a_target_declares_it_and_gets_the_rule():
    from ades_core.registries import SCHEDULER_OBJECTIVES

    SCHEDULER_OBJECTIVES.register("plugin-fit", object, source="ades-fake==1.0", fits_target=True)
    try:
        with pytest.raises(ConfigError, match="^scheduler.grad_norm: "):
            RunConfig(defense="ades", scheduler={"objective": "plugin-fit", "grad_norm": "rms"})
    finally:
        SCHEDULER_OBJECTIVES.unregister("plugin-fit")


@pytest.mark.parametrize(
    ("defense", "options"), [("trades", {}), ("pgd-at", {"loss": "trades"}), ("ades", {"loss": "trades"})]
)
def test_an_attack_loss_the_trades_kl_inner_attack_ignores_fails_at_construction(defense, options):
    with pytest.raises(ConfigError) as error:
        RunConfig(defense=defense, defense_options=options, attack={"loss": "cw"})
    assert str(error.value) == (
        "attack.loss: the trades inner attack maximises KL(p(x) || p(x')), so the attack loss does not apply; "
        "leave it at ce, got 'cw'"
    )
    RunConfig(defense="mart", attack={"loss": "cw"})  # MART's inner attack is the configured PGD


def test_the_cli_refuses_grad_norm_with_the_target_objective_before_any_data_is_read(tmp_path, monkeypatch):
    import ades_core.builder

    def no_data(*args, **kwargs):
        raise AssertionError("data were loaded for a config that should have been refused")

    monkeypatch.setattr(ades_core.builder, "load_datasets", no_data)
    args = ["run", "--defense", "ades", "--scheduler-objective", "target", "--scheduler-grad-norm", "rms",
            "--dataset", "imagefolder", "--data-dir", str(tmp_path / "none"), "--no-download",
            "--out", str(tmp_path / "run")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0 and "rescales the envelope gradient" in result.output, result.output
    assert not (tmp_path / "run").exists()
