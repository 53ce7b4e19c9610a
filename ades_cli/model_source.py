"""Which model ``ades eval`` evaluates: a run (folder or model file) or a model ades did not train.

The options ``--arch``, ``--weights``, ``--num-classes``, ``--mean`` and
``--std`` describe a model from elsewhere (see
:mod:`ades_core.evaluation.external`); their combinations with the
``RUN_DIR_OR_MODEL`` argument and the data options are checked here, each
wrong combination with one usage line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ades_cli.options import COMMA_LIST

if TYPE_CHECKING:
    from ades_core.evaluation.request import ExternalModel

EXTERNAL_OPTIONS = ("--arch", "--weights", "--num-classes", "--mean", "--std")

RUN_WEIGHTS = ("last", "best", "ema")
"""``--weights`` with a run folder: which of its model files (``ades_core.engine.runfolder.model_files.WEIGHT_FILES``)."""


def external_model_options(fn):
    """The options of a model ades did not train, for ``ades eval``."""
    options = [
        click.option("--arch", default=None,
                     help="Evaluate a model ades did not train: a timm model name (resnet18, ades_wrn34_10, ...) "
                          "or package.module:factory, called as factory(num_classes=K). Needs --weights, "
                          "--num-classes, --dataset and --data-dir."),
        click.option("--weights", default=None,
                     help="With RUN_DIR: which of the run's weights, last (model.safetensors, default), best "
                          "(model-best.safetensors, --val-split) or ema (model-ema.safetensors, --ema). With --arch: "
                          "the model's weights, .safetensors or a .pt/.pth state_dict (read with weights_only=True)."),
        click.option("--num-classes", type=click.IntRange(min=1), default=None,
                     help="Its number of classes (must match the classifier in --weights)."),
        click.option("--mean", type=COMMA_LIST, default=None,
                     help="Per-channel input mean it was trained with, in [0, 1] pixel scale, e.g. "
                          "0.4914,0.4822,0.4465 (with --std; default: none, [0, 1] images go in as they are)."),
        click.option("--std", type=COMMA_LIST, default=None,
                     help="Per-channel input standard deviation, e.g. 0.2470,0.2435,0.2616 (with --mean)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def external_request(
    model_path: Path | None,
    *,
    arch: str | None,
    weights: str | Path | None,
    num_classes: int | None,
    mean: tuple[str, ...] | None,
    std: tuple[str, ...] | None,
    dataset: str | None,
    data_dir: Path | None,
) -> ExternalModel | None:
    """The model ades did not train that the options describe, or ``None`` for a run.

    Raises:
        click.UsageError: a run and ``--arch`` together, neither, ``--weights``
            without ``--arch`` (and the other way round), external options with a
            run, or a model from elsewhere without ``--num-classes``,
            ``--dataset`` or ``--data-dir``.
    """
    if model_path is not None and weights is not None and str(weights) not in RUN_WEIGHTS and arch is None:
        raise click.UsageError(
            f"--weights {weights} with RUN_DIR_OR_MODEL must be one of {', '.join(RUN_WEIGHTS)} "
            "(which of the run's weights); a weights file of a model ades did not train needs --arch"
        )
    if model_path is not None and str(weights) in RUN_WEIGHTS:
        weights = None  # a choice among the run's files, not a model from elsewhere
    given = [name for name, value in zip(EXTERNAL_OPTIONS, (arch, weights, num_classes, mean, std)) if value is not None]
    if model_path is not None:
        if given:
            raise click.UsageError(
                f"RUN_DIR_OR_MODEL and {', '.join(given)} exclude each other: give an ades run "
                "(folder or model file), or --arch and --weights for a model ades did not train"
            )
        return None
    if arch is None and weights is None:
        raise click.UsageError(
            "give RUN_DIR_OR_MODEL (an ades run folder or model file), "
            "or --arch and --weights for a model ades did not train"
        )
    if arch is None:
        raise click.UsageError("--weights needs --arch (a timm model name or package.module:factory)")
    if weights is None:
        raise click.UsageError("--arch needs --weights (a .safetensors, .pt or .pth state_dict)")
    missing = [name for name, value in (("--num-classes", num_classes), ("--dataset", dataset),
                                        ("--data-dir", data_dir)) if value is None]
    if missing:
        raise click.UsageError(
            f"a model ades did not train records no data: --arch needs {', '.join(missing)}"
        )
    from ades_core.evaluation.request import ExternalModel

    return ExternalModel(arch=arch, weights=Path(weights), num_classes=num_classes, mean=mean, std=std)
