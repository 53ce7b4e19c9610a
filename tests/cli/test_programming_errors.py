"""A user's mistake is one ``Error:`` line; a mistake in the code keeps its traceback.

Every command catches :class:`~ades_core.errors.AdesError` and nothing else.
Each case patches one function a command calls on its way (inside the run,
the evaluation, the comparison, ...) to raise, once a ``TypeError`` or
``KeyError`` (a bug: the command must fail with that exception, not a
misleading line) and once a user error (the same command: one line, exit 1).
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner

import ades_core
import ades_core.benchmark
import ades_core.evaluation
import ades_core.evaluation.pipeline
import ades_core.evaluation.robustbench
import ades_core.evaluation.training_plots
import ades_core.study
from ades_cli.main import cli
from ades_core.errors import AdesError, InputError
from tests.cli.tiny_runs import GOOD, TINY_RUN, write_images


@attrs.frozen
class Case:
    id: str
    args: list[str]
    """The command line; ``{tmp}`` is an empty temporary folder, ``{data}`` a small image folder."""
    target: object
    name: str
    """``target.name`` is replaced by a function that raises."""


CASES = [
    Case("run: building the run", ["run", *TINY_RUN, "--data-dir", "{data}", "--out", "{tmp}/run"], ades_core, "build"),
    Case("eval: resolving the attacks", ["eval", "{tmp}", "--attack", "fgsm"], ades_core.evaluation.pipeline, "resolve_attacks"),
    Case("eval: reading the run", ["eval", "{tmp}", "--attack", "fgsm"], ades_core.evaluation.pipeline, "describe_run"),
    Case("compare", ["compare", "{tmp}"], ades_core.evaluation, "compare_rows"),
    Case("plot sweep", ["plot", "sweep", "{tmp}", "--out", "{tmp}/p.png"], ades_core.evaluation, "read_report"),
    Case("plot training", ["plot", "training", "{tmp}"], ades_core.evaluation.training_plots, "plot_training_run"),
    Case("export", ["export", "{tmp}", "--robustbench", "{tmp}/out"], ades_core.evaluation.robustbench, "export_robustbench"),
    Case("study", ["study", "{tmp}/study.toml"], ades_core.study.StudySpec, "from_file"),
    Case("bench", ["bench", "--repeats", "1"], ades_core.benchmark, "run_benchmarks"),
]


def _invoke(case: Case, tmp_path: Path, monkeypatch, error: BaseException):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(case.target, case.name, fail)
    data = write_images(tmp_path / "data", GOOD)
    args = [arg.replace("{tmp}", str(tmp_path)).replace("{data}", str(data)) for arg in case.args]
    return CliRunner().invoke(cli, args)


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
@pytest.mark.parametrize("bug", [TypeError("an argument of the wrong type"), KeyError("missing_key")],
                         ids=["TypeError", "KeyError"])
def test_a_programming_error_keeps_its_traceback(case, bug, tmp_path, monkeypatch):
    result = _invoke(case, tmp_path, monkeypatch, bug)
    assert result.exit_code == 1, result.output
    assert result.exception is bug  # raised through the command, not turned into a message
    assert _error_lines(result.output) == [], result.output


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_a_user_error_is_one_line(case, tmp_path, monkeypatch):
    result = _invoke(case, tmp_path, monkeypatch, InputError("the value given cannot be used; give another\nmore"))
    assert result.exit_code == 1, result.output
    assert _error_lines(result.output) == ["Error: the value given cannot be used; give another"]
    assert isinstance(result.exception, SystemExit)  # click's exit after the message, no traceback


def test_a_programming_error_propagates_with_its_traceback(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise TypeError("a bug inside the evaluation")

    monkeypatch.setattr(ades_core.evaluation.pipeline, "resolve_attacks", fail)
    with pytest.raises(TypeError, match="a bug inside the evaluation") as raised:
        CliRunner().invoke(cli, ["eval", str(tmp_path), "--attack", "fgsm"], catch_exceptions=False)
    assert raised.traceback[-1].name == "fail"  # the traceback reaches the line that raised


def test_every_error_class_of_the_package_is_an_ades_error():
    """The package defines exceptions for user errors only; each keeps its builtin base too."""
    import importlib
    import inspect
    import pkgutil

    import ades_cli

    found = {}
    for package in (ades_core, ades_cli):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if module.name.endswith("__main__"):
                continue  # runs the command
            for name, obj in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__ == module.name:
                    found[f"{module.name}.{name}"] = obj
    assert len(found) >= 25, sorted(found)
    assert [name for name, cls in found.items() if not issubclass(cls, AdesError)] == []
    from ades_core.config import ConfigError
    from ades_core.registry import RegistryError

    assert issubclass(RegistryError, KeyError) and issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--defense", "ades", "--scheduler-objective", "penalty", "--lam", "0"],
         "Error: the penalty objective needs lam > 0"),
        (["--defense", "ades", "--cue", "mcdropout", "--mc-mode", "modules"],
         "Error: mcdropout mode 'modules' needs a model with nn.Dropout layers of rate p > 0"),
    ],
    ids=["found while building", "found while training"],
)
def test_a_user_mistake_found_after_the_config_is_still_one_line(options, message, tmp_path):
    data = write_images(tmp_path / "data", GOOD)
    args = ["run", *TINY_RUN, "--data-dir", str(data), "--out", str(tmp_path / "run"), *options]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    (line,) = _error_lines(result.output)
    assert line.startswith(message), result.output
