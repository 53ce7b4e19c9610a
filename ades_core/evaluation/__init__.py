"""Evaluation that cannot flatter: attack suites with a per-sample worst case, eps sweeps,
gradient-masking checks, ``eval.json`` reports, sweep plots and comparison tables.

Where things live:
    request.py  EvalRequest: what one evaluation is asked to do (``ades eval``'s options), checked
                when built
    pipeline.py a request carried out: model, data and attacks prepared, the suite run with its
                resume state, eval.json written
    specs.py    evaluation attack names (pgd20, cw, fgsm, autoattack, square, ...) -> AttackSpec
    runner.py   per-sample clean / attacked correctness over a split (only clean-correct attacked,
                strict margins, attacks that touch the model refused)
    resume.py   per-batch results kept beside eval.json, so a killed evaluation resumes
    sharding.py under torchrun: whole batches per rank, per-batch seeds from global indices, merged flags
    suite.py    evaluate(): the attacks, the worst-case row, the sweep, the checks -> EvalResult
    masking.py  the five gradient-masking checks: the attacks that measure them
    masking_verdicts.py  what each check concludes from its numbers, and their tolerances
    sources.py  model file, run config and the test split it was trained for
    external.py a model ades did not train: timm name or module:factory, normalisation
    weights_file.py  its weights file: read with weights_only, unwrapped, checked key by key
    robustbench.py  an evaluated run as a RobustBench entry (model_info JSON, state_dict)
    report.py   eval.json (write / read)
    plots.py    robust accuracy vs eps (PNG, Agg)
    compare.py  the paper-style table across runs (text and Markdown)
"""

from ades_core.evaluation.external import ExternalModelError, load_external_model
from ades_core.evaluation.robustbench import ExportError, export_robustbench
from ades_core.evaluation.compare import CompareRow, compare_rows, to_markdown
from ades_core.evaluation.masking import CheckResult, MaskingCheckConfig, run_masking_checks
from ades_core.evaluation.plots import SweepSeries, plot_sweeps, series_from_report
from ades_core.evaluation.report import EvalReportError, build_report, read_report, write_report
from ades_core.evaluation.runner import Outcome, attack_outcome, clean_correct, select
from ades_core.evaluation.sources import EvalData, EvalSourceError, RunInfo, describe_run, load_test_data
from ades_core.evaluation.specs import AttackSpec, known_attack_names, pgd_spec, resolve_attack, resolve_attacks
from ades_core.evaluation.suite import AttackRow, EvalResult, evaluate

__all__ = [
    "AttackRow",
    "AttackSpec",
    "CheckResult",
    "CompareRow",
    "EvalData",
    "EvalReportError",
    "EvalResult",
    "EvalSourceError",
    "ExportError",
    "ExternalModelError",
    "MaskingCheckConfig",
    "Outcome",
    "RunInfo",
    "SweepSeries",
    "attack_outcome",
    "build_report",
    "clean_correct",
    "compare_rows",
    "describe_run",
    "evaluate",
    "export_robustbench",
    "known_attack_names",
    "load_external_model",
    "load_test_data",
    "pgd_spec",
    "plot_sweeps",
    "read_report",
    "resolve_attack",
    "resolve_attacks",
    "run_masking_checks",
    "select",
    "series_from_report",
    "to_markdown",
    "write_report",
]
