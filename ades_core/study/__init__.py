"""Studies: a grid of arms x seeds of ``ades run``, each evaluated with ``ades eval``, one table.

``spec``     the study file (TOML or JSON), checked at construction
``plan``     what each (arm, seed) still needs, decided from its run folder (skip, resume, new)
``execute``  the commands as subprocesses, ``parallel`` at a time, each with its log
``runs``     what a run folder holds and the numbers read from it
``stats``    mean and spread over seeds, paired differences with a Student-t interval
``table``    ``study.json`` and ``study.md``; ``plot``: ``study.png``

The command is ``ades study STUDY_FILE`` (:mod:`ades_cli.study`); docs/study.md
describes the file, the table and how an interrupted study continues.
"""

from ades_core.study.plan import RunJob, Step, plan_study, threads_per_run
from ades_core.study.spec import Arm, AutoAttackPlan, StudyFileError, StudySpec
from ades_core.study.stats import PairedDifference, StatisticsError, mean_std, paired_difference, t_cdf, t_quantile
from ades_core.study.table import study_results, write_table

__all__ = [
    "Arm",
    "AutoAttackPlan",
    "PairedDifference",
    "RunJob",
    "StatisticsError",
    "Step",
    "StudyFileError",
    "StudySpec",
    "mean_std",
    "paired_difference",
    "plan_study",
    "study_results",
    "t_cdf",
    "t_quantile",
    "threads_per_run",
    "write_table",
]
