"""The study file: every mistake is one line naming the key and what is accepted; nothing trains."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from ades_cli.main import cli
from ades_cli.study import load_study
from ades_core.study import StudyFileError, StudySpec
from ades_core.study.plan import option_args, plan_job, plan_study, threads_per_run
from tests.study.fake_runs import write_finished_run, write_started_run, write_study_file

REPO = Path(__file__).resolve().parents[2]


def _raw(**changes) -> dict:
    raw = {
        "name": "toy",
        "out": "runs/toy",
        "reference": "pgd-at",
        "seeds": [0, 1],
        "run": {"backbone": "ades_cnn_small", "epochs": 1},
        "eval": {"attack": "fgsm", "n": 8, "checks": False},
        "arms": [{"name": "pgd-at", "defense": "pgd-at"}, {"name": "ades", "defense": "ades"}],
    }
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not None}


def _error(tmp_path: Path, raw: dict | str, suffix: str = ".json") -> str:
    path = tmp_path / f"study{suffix}"
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    with pytest.raises(StudyFileError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"outdir": "x"}, "unknown key 'outdir'; accepted: name, out, reference, seeds"),
        ({"reference": "pgd"}, "reference: no arm named 'pgd'; arms: pgd-at, ades"),
        ({"seeds": [0]}, "seeds: a paired 95% interval needs at least 2 seeds, got [0]"),
        ({"seeds": [0, 0]}, "seeds: seeds must be distinct"),
        ({"name": None}, "missing key 'name'; required: name, out, reference, seeds, arms"),
        ({"parallel": 0}, "parallel must be an integer >= 1, got 0"),
        ({"arms": [{"name": "a b", "defense": "ades"}]}, "arm name 'a b' must start with a letter or digit"),
        ({"arms": [{"name": "x", "seed": 3}]}, "arm 'x'.seed: the study sets it for every run"),
        ({"eval": {"threads": 2}}, "eval.threads: the study sets it for every run"),
        ({"autoattack": {"arms": ["ades-x"], "n": 100}}, "autoattack.arms: no arm named 'ades-x'; arms: pgd-at, ades"),
        ({"autoattack": {"seeds": [5]}}, "autoattack.seeds: seed 5 is not one of the study's seeds [0, 1]"),
        ({"autoattack": {"n": 10, "every": 1}}, "autoattack: unknown key 'every'; accepted: arms, seeds, n"),
        ({"eval": {"attack": "pgd20,autoattack"}, "autoattack": {"n": 10}}, "eval.attack includes autoattack"),
        ({"comparisons": "ades"}, "comparisons must be a list of [arm, against] pairs, got 'ades'"),
        ({"comparisons": [["ades"]]}, "comparisons: each entry is a pair of arm names [arm, against], got ['ades']"),
        ({"comparisons": [["ades", "control"]]}, "comparisons: no arm named 'control'; arms: pgd-at, ades"),
        ({"comparisons": [["ades", "ades"]]}, "comparisons: ['ades', 'ades'] compares an arm with itself"),
        ({"comparisons": [["ades", "pgd-at"], ["ades", "pgd-at"]]}, "comparisons: ['ades', 'pgd-at'] is given twice"),
    ],
)
def test_a_malformed_study_file_is_one_line_naming_the_key(tmp_path, changes, expected):
    assert expected in _error(tmp_path, _raw(**changes))


def test_an_arm_option_ades_run_does_not_have_is_refused_with_a_suggestion(tmp_path):
    arms = [{"name": "pgd-at", "defense": "pgd-at"}, {"name": "ades", "scheduler-objectiv": "saturating"}]
    message = _error(tmp_path, _raw(arms=arms))
    assert "arm 'ades': No such option" in message and "--scheduler-objectiv'" in message
    assert "--scheduler-objective" in message  # click's suggestion


@pytest.mark.parametrize(
    ("arm", "expected"),
    [
        ({"epochs": "five"}, "arm 'ades': Invalid value for '--epochs': 'five' is not a valid integer"),
        ({"defense": "adez"}, "arm 'ades': "),
        ({"scheduler-grad-norm": "l2"}, "arm 'ades': Invalid value for '--scheduler-grad-norm'"),
    ],
)
def test_an_arm_value_ades_run_rejects_fails_before_anything_runs(tmp_path, arm, expected):
    message = _error(tmp_path, _raw(arms=[{"name": "pgd-at", "defense": "pgd-at"}, {"name": "ades", **arm}]))
    assert expected in message
    assert not (tmp_path / "runs").exists()


def test_an_unknown_defense_names_what_is_registered(tmp_path):
    message = _error(tmp_path, _raw(arms=[{"name": "pgd-at", "defense": "pgd-at"}, {"name": "x", "defense": "adez"}]))
    assert "adez" in message and "pgd-at" in message.split("adez", 1)[1]


def test_an_eval_option_or_attack_ades_eval_rejects_is_one_line(tmp_path):
    message = _error(tmp_path, _raw(eval={"checkz": False}))
    assert "eval: No such option" in message and "--no-checkz" in message
    assert "eval.attack: unknown attack 'pgd-twenty'" in _error(tmp_path, _raw(eval={"attack": "pgd-twenty"}))


def test_bad_toml_and_bad_json_name_the_file_and_the_place(tmp_path):
    assert "not valid TOML" in _error(tmp_path, 'name = "toy\nseeds = [0, 1]\n', suffix=".toml")
    assert "not valid JSON (Expecting" in _error(tmp_path, '{"name": "toy",}', suffix=".json")
    assert "ends in .toml or .json" in _error(tmp_path, "name = 1", suffix=".yaml")


def test_option_keys_take_dashes_or_underscores_and_values_become_arguments():
    spec = StudySpec.from_dict(_raw(run={"train_subset": 16, "--epochs": 1, "awp": False, "cue": ["grad", "entropy"],
                                         "augment": True}))
    assert spec.run_options == {"train-subset": 16, "epochs": 1, "awp": False, "cue": ("grad", "entropy"),
                                "augment": True}
    assert option_args(spec.run_options) == [
        "--train-subset", "16", "--epochs", "1", "--no-awp", "--cue", "grad,entropy", "--augment"]
    assert spec.arm_options("pgd-at")["defense"] == "pgd-at"  # an arm's options override the common ones


def test_the_shipped_adaptive_budget_protocol_is_a_valid_study():
    spec = load_study(REPO / "studies" / "adaptive-budget.toml")
    assert spec.seeds == (0, 1, 2) and spec.parallel == 2 and spec.reference == "pgd-at"
    assert spec.attacks == ("pgd20", "cw")
    assert spec.eval_options["n"] == 10000
    assert spec.autoattack is not None and spec.autoattack.n == 1000 and spec.autoattack.seeds == (0,)
    assert set(spec.autoattack.arms) == {"pgd-at", "ades"}
    assert spec.arm_options("shuffled-control")["scheduler-shuffle"] is True
    assert spec.arm_options("reversed-control")["scheduler-reverse"] is True


def test_threads_per_run_divide_the_cores():
    assert threads_per_run(2, cores=16) == 8
    assert threads_per_run(3, cores=2) == 1


# ---------------------------------------------------------------- what a run folder still needs


def _spec(tmp_path: Path, **changes) -> StudySpec:
    return StudySpec.from_dict(_raw(out=str(tmp_path / "study"), **changes))


def test_a_new_run_trains_then_evaluates(tmp_path):
    spec = _spec(tmp_path, autoattack={"arms": ["ades"], "seeds": [1], "n": 4})
    job = plan_job(spec, "ades", 1, threads=3)
    assert [(s.kind, s.how) for s in job.steps] == [("train", "new"), ("eval", "new"), ("autoattack", "new")]
    train, evaluate, autoattack = job.steps
    folder = tmp_path / "study" / "ades" / "seed1"
    assert train.args[:1] == ("run",) and train.args[-4:] == ("--seed", "1", "--out", str(folder))
    assert "--overwrite" not in train.args
    assert evaluate.args[:2] == ("eval", str(folder)) and "--resume" not in evaluate.args
    assert evaluate.args[evaluate.args.index("--threads") + 1] == "3"
    assert autoattack.args[autoattack.args.index("--attack") + 1] == "autoattack"
    assert autoattack.args[autoattack.args.index("--n") + 1] == "4"
    assert "--no-checks" in autoattack.args
    assert [s.log.name for s in job.steps] == ["train.log", "eval.log", "autoattack.log"]
    assert plan_job(spec, "pgd-at", 1, threads=3).steps[-1].kind == "eval"  # not in [autoattack]


def test_a_killed_run_resumes_from_its_state_and_one_killed_before_any_state_starts_over(tmp_path):
    spec = _spec(tmp_path)
    write_started_run(spec.run_folder("ades", 0), saved_state=True)
    write_started_run(spec.run_folder("ades", 1), saved_state=False)
    resumed = plan_job(spec, "ades", 0, threads=1).steps[0]
    assert resumed.how == "resume"
    assert resumed.args[:3] == ("run", "--resume", str(spec.run_folder("ades", 0)))
    assert "--defense" in resumed.args  # the arm's options, so that ades run refuses other settings
    again = plan_job(spec, "ades", 1, threads=1).steps[0]
    assert again.how == "new" and again.args[-1] == "--overwrite"


def test_a_finished_run_is_skipped_and_a_killed_evaluation_resumes(tmp_path):
    spec = _spec(tmp_path)
    write_finished_run(spec.run_folder("ades", 0), clean=0.8, robust={"fgsm": 0.4}, worst=0.4)
    assert plan_job(spec, "ades", 0, threads=1).steps == ()
    folder = write_finished_run(spec.run_folder("ades", 1), clean=0.8, robust={"fgsm": 0.4}, worst=0.4,
                                evaluated=False)
    (folder / "eval.resume.json").write_text("{}")
    (step,) = plan_job(spec, "ades", 1, threads=1).steps
    assert (step.kind, step.how) == ("eval", "resume") and step.args[-1] == "--resume"


# ---------------------------------------------------------------- the command


def test_dry_run_prints_the_commands_and_writes_nothing(tmp_path):
    study = write_study_file(tmp_path / "toy.toml", tmp_path / "study")
    write_finished_run(tmp_path / "study" / "pgd-at" / "seed0", clean=0.5, robust={"fgsm": 0.3}, worst=0.3)
    result = CliRunner().invoke(cli, ["study", str(study), "--dry-run", "--parallel", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("study toy: 4 runs, 1 finished, 3 to run; 2 side by side")
    assert any(line.startswith("# skip pgd-at/seed0: finished") for line in lines)
    commands = [line for line in lines if "-m ades_cli" in line]
    assert len(commands) == 6  # 3 runs x (train, eval)
    assert all(line.startswith("OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ") for line in commands)
    assert sorted(p.name for p in (tmp_path / "study").iterdir()) == ["pgd-at"]


def test_only_names_arms_of_the_study(tmp_path):
    study = write_study_file(tmp_path / "toy.toml", tmp_path / "study")
    result = CliRunner().invoke(cli, ["study", str(study), "--only", "ades,pgd", "--dry-run"])
    assert result.exit_code == 2
    assert "no arm named 'pgd'; arms: pgd-at, ades" in result.output


def test_a_bad_study_file_is_one_error_line_and_exit_1(tmp_path):
    study = tmp_path / "bad.toml"
    study.write_text('name = "x"\nout = "o"\nreference = "a"\nseeds = [0]\n[[arms]]\nname = "a"\n')
    result = CliRunner().invoke(cli, ["study", str(study)])
    assert result.exit_code == 1
    assert result.output == f"Error: {study}: seeds: a paired 95% interval needs at least 2 seeds, got [0]\n"


def test_table_only_rebuilds_the_table_from_the_run_folders(tmp_path):
    study = write_study_file(tmp_path / "toy.toml", tmp_path / "study")
    runs = tmp_path / "study"
    write_finished_run(runs / "pgd-at" / "seed0", clean=0.60, robust={"fgsm": 0.30}, worst=0.30, seconds=(10.0,))
    write_finished_run(runs / "pgd-at" / "seed1", clean=0.62, robust={"fgsm": 0.34}, worst=0.33, seconds=(12.0,))
    write_finished_run(runs / "ades" / "seed0", clean=0.64, robust={"fgsm": 0.33}, worst=0.32,
                       eps_mean=7 / 255, eps_std=1 / 255, seconds=(20.0,))
    write_finished_run(runs / "ades" / "seed1", clean=0.63, robust={"fgsm": 0.38}, worst=0.36,
                       eps_mean=9 / 255, eps_std=2 / 255, seconds=(22.0,))
    result = CliRunner().invoke(cli, ["study", str(study), "--table-only"])
    assert result.exit_code == 0, result.output
    table = json.loads((runs / "study.json").read_text())
    ades = table["arms"]["ades"]
    assert [m["name"] for m in table["metrics"]] == [
        "clean", "fgsm", "worst-case", "eps_mean", "eps_std", "seconds_per_epoch"]
    assert ades["metrics"]["clean"]["values"] == [0.64, 0.63]
    assert ades["metrics"]["eps_mean"]["mean"] == pytest.approx(8 / 255)
    assert ades["metrics"]["seconds_per_epoch"]["mean"] == pytest.approx(21.0)
    diff = ades["vs_reference"]["fgsm"]
    assert diff["n"] == 2 and diff["differences"] == pytest.approx([0.03, 0.04])
    assert diff["mean"] == pytest.approx(0.035)
    half = 12.706205 * 0.01 / 2 ** 0.5 / 2 ** 0.5  # t_{0.975,1} * sd / sqrt(2); sd of (0.03, 0.04) = 0.01/sqrt(2)
    assert diff["high"] - diff["mean"] == pytest.approx(half, rel=1e-6)
    assert ades["runs"][0]["folder"] == str(runs / "ades" / "seed0")
    assert ades["runs"][0]["sources"]["fgsm"] == str(runs / "ades" / "seed0" / "eval.json")
    assert table["arms"]["pgd-at"]["vs_reference"] is None
    markdown = (runs / "study.md").read_text()
    assert "| ades | 2 | 63.50 ± 0.71 | 35.50 ± 3.54 |" in markdown
    assert "| ades | 2 | +2.50 [" in markdown  # clean: 64 - 60, 63 - 62
    assert "`ades/seed1`" in markdown
    assert (runs / "study.png").stat().st_size > 1000


def test_a_comparison_between_arms_is_paired_by_seed_like_the_reference(tmp_path):
    # pgd-at against ades: the reference table's differences with the sign turned
    study = write_study_file(tmp_path / "toy.toml", tmp_path / "study", comparisons=[["pgd-at", "ades"]])
    runs = tmp_path / "study"
    for arm, seed, clean, fgsm in [("pgd-at", 0, 0.60, 0.30), ("pgd-at", 1, 0.62, 0.34),
                                   ("ades", 0, 0.64, 0.33), ("ades", 1, 0.63, 0.38)]:
        write_finished_run(runs / arm / f"seed{seed}", clean=clean, robust={"fgsm": fgsm}, worst=fgsm)
    assert CliRunner().invoke(cli, ["study", str(study), "--table-only"]).exit_code == 0
    table = json.loads((runs / "study.json").read_text())
    [comparison] = table["comparisons"]
    assert (comparison["arm"], comparison["against"]) == ("pgd-at", "ades")
    diff = comparison["differences"]["fgsm"]
    assert diff["differences"] == pytest.approx([-0.03, -0.04]) and diff["mean"] == pytest.approx(-0.035)
    half = 12.706205 * 0.01 / 2 ** 0.5 / 2 ** 0.5  # t_{0.975,1} * sd / sqrt(2), as for the reference
    assert (diff["low"], diff["high"]) == pytest.approx((-0.035 - half, -0.035 + half), rel=1e-6)
    markdown = (runs / "study.md").read_text()
    assert "## Paired differences between arms" in markdown
    assert "| pgd-at − ades | 2 | -2.50 [" in markdown  # clean: 60 - 64, 62 - 63
    from PIL import Image

    assert Image.open(runs / "study.png").size == (1980, 495)  # three panels of 6 x 4.5 inches at 110 dpi


def test_a_study_without_comparisons_writes_no_comparison_section(tmp_path):
    study = write_study_file(tmp_path / "toy.toml", tmp_path / "study")
    assert CliRunner().invoke(cli, ["study", str(study), "--table-only"]).exit_code == 0
    assert json.loads((tmp_path / "study" / "study.json").read_text())["comparisons"] == []
    assert "between arms" not in (tmp_path / "study" / "study.md").read_text()
    from PIL import Image

    assert Image.open(tmp_path / "study" / "study.png").size == (1320, 495)  # two panels, no third


def test_a_run_without_a_current_evaluation_leaves_its_accuracies_out(tmp_path):
    study = write_study_file(tmp_path / "toy.toml", tmp_path / "study")
    runs = tmp_path / "study"
    write_finished_run(runs / "pgd-at" / "seed0", clean=0.6, robust={"fgsm": 0.3}, worst=0.3)
    write_finished_run(runs / "ades" / "seed0", clean=0.6, robust={"fgsm": 0.3}, worst=0.3, evaluated=False)
    write_started_run(runs / "ades" / "seed1", saved_state=True)
    assert CliRunner().invoke(cli, ["study", str(study), "--table-only"]).exit_code == 0
    ades = json.loads((runs / "study.json").read_text())["arms"]["ades"]
    assert [r["status"] for r in ades["runs"]] == ["trained", "started"]
    assert ades["metrics"]["clean"]["n"] == 0 and ades["metrics"]["eps_mean"]["n"] == 1
    assert ades["vs_reference"]["clean"] == pytest.approx(
        {"n": 0, "seeds": [], "differences": [], "mean": None, "std": None, "t": None, "low": None, "high": None,
         "confidence": 0.95})
    assert "— (n=0)" in (runs / "study.md").read_text()


def test_a_run_killed_after_its_last_metrics_but_before_its_final_state_is_resumed(tmp_path):
    spec = _spec(tmp_path)
    folder = write_finished_run(spec.run_folder("ades", 0), clean=0.8, robust={"fgsm": 0.4}, worst=0.4)
    state = folder / "checkpoint" / "state.json"
    state.write_text(json.dumps({"state": {"position": {"epoch": 0, "step": 1}}}))  # the state still mid-epoch
    assert [(s.kind, s.how) for s in plan_job(spec, "ades", 0, threads=1).steps] == [("train", "resume"), ("eval", "new")]


def test_study_help_names_its_options():
    result = CliRunner().invoke(cli, ["study", "--help"])
    assert result.exit_code == 0
    for option in ("--parallel", "--dry-run", "--only", "--table-only"):
        assert option in result.output


def test_autoattack_steps_run_last_after_their_own_run(tmp_path):
    spec = _spec(tmp_path, autoattack={"arms": ["ades"], "seeds": [0], "n": 4})
    jobs = plan_study(spec)
    kinds = [[step.kind for step in job.steps] for job in jobs]
    assert kinds[-1] == ["autoattack"] and all("autoattack" not in k for k in kinds[:-1])
    assert jobs[-1].after == "ades/seed0" and jobs[-1].label == "ades/seed0 autoattack"
    assert [job.label for job in jobs[:-1]] == [f"{arm}/seed{seed}" for seed in spec.seeds for arm in spec.arm_names]


def test_a_job_waiting_for_a_failed_run_is_not_started(tmp_path, monkeypatch):
    import sys

    from ades_core.study import execute
    from ades_core.study.execute import StudyRunner
    from ades_core.study.plan import RunJob, Step

    # each step runs a bare interpreter that exits with the step's status (no torch import):
    # what is under test is the waiting, not the run
    def exit_command(step: Step) -> list[str]:
        return [sys.executable, "-c", f"raise SystemExit({2 if '--no-such-option' in step.args else 0})"]

    monkeypatch.setattr(execute, "step_command", exit_command)
    broken = Step(kind="train", how="new", args=["run", "--no-such-option"], log=tmp_path / "train.log")
    late = Step(kind="autoattack", how="new", args=["list"], log=tmp_path / "autoattack.log")
    first = RunJob(arm="a", seed=0, folder=tmp_path, steps=[broken])
    second = RunJob(arm="a", seed=0, folder=tmp_path, steps=[late], after=first.label)
    events: list[str] = []
    runner = StudyRunner(parallel=2, threads=1, on_event=events.append)
    outcomes = runner.run([first, second])
    assert {o.job.label: o.failed for o in outcomes} == {"a/seed0": "train", "a/seed0 autoattack": "a/seed0"}
    assert len(runner.launched) == 1 and not (tmp_path / "autoattack.log").exists()
    assert "NOT RUN a/seed0 autoattack: a/seed0 failed" in events


def test_sigterm_and_sigint_become_keyboard_interrupts_while_a_study_runs():
    import signal

    from ades_cli.study import stop_on_signals

    before = signal.getsignal(signal.SIGTERM)
    for sig in (signal.SIGTERM, signal.SIGINT):
        with pytest.raises(KeyboardInterrupt), stop_on_signals():
            os.kill(os.getpid(), sig)
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_autoattack_column_says_it_is_fewer_runs_on_fewer_images_and_stays_out_of_the_worst_case(tmp_path):
    study = write_study_file(tmp_path / "toy.toml", tmp_path / "study")
    with study.open("a", encoding="utf-8") as handle:
        handle.write('\n[autoattack]\narms = ["ades"]\nseeds = [0]\nn = 4\n')
    runs = tmp_path / "study"
    for arm, seed, clean, fgsm in [("pgd-at", 0, 0.60, 0.30), ("pgd-at", 1, 0.62, 0.34),
                                   ("ades", 0, 0.64, 0.33), ("ades", 1, 0.63, 0.38)]:
        aa = 0.25 if (arm, seed) == ("ades", 0) else None
        write_finished_run(runs / arm / f"seed{seed}", clean=clean, robust={"fgsm": fgsm}, worst=fgsm, autoattack=aa)
    assert CliRunner().invoke(cli, ["study", str(study), "--table-only"]).exit_code == 0
    ades = json.loads((runs / "study.json").read_text())["arms"]["ades"]
    assert ades["metrics"]["autoattack"]["values"] == [0.25]
    assert ades["metrics"]["worst-case"]["values"] == [0.33, 0.38]  # AutoAttack's 0.25 is not folded in
    markdown = (runs / "study.md").read_text()
    assert "| ades | 2 | 63.50 ± 0.71 | 35.50 ± 3.54 | 25.00 (n=1) | 35.50 ± 3.54 |" in markdown
    assert "ran only for arms ades, seeds [0], on 4 test images" in markdown
    assert "the other attacks ran on 8 test images" in markdown
