"""What an evaluation reads: the model file, its run's config, and the test split it was trained for.

A run folder holds ``config.json`` (with ``resolved``: classes, sizes) and
``model.safetensors`` (whose metadata repeats the run config). A bare model
file is enough too: the dataset and data folder recorded in its metadata are
used unless overridden. A model ades did not train is described by
:func:`ades_core.evaluation.external.load_external_model` instead.

Only the test split is loaded (:func:`ades_core.data.load_test_split`): an
evaluation reads no training data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from ades_core.data import DataRequest, ImageTensors, load_test_split
from ades_core.data.datasets import SUBSET_ORDERS
from ades_core.engine.runfolder.model_files import MODEL_FILE, WEIGHT_FILES, read_run_config, read_spec, resolve_model_file
from ades_core.engine.runfolder import CONFIG_FILE
from ades_core.errors import AdesError

EVAL_FILE = "eval.json"


class EvalSourceError(AdesError, ValueError):
    """The model or its test data cannot be found or do not fit; one line."""


@attrs.frozen(kw_only=True)
class RunInfo:
    """A model file and what its run recorded.

    Attributes:
        model_file: the ``.safetensors`` file.
        run_dir: the folder holding ``config.json`` beside the model, or ``None``.
        config: the run config (``config.json`` with ``resolved``, else the
            model file's metadata), or an empty dict when neither exists.
        num_classes: the classifier's number of outputs.
        external: for a model ades did not train, what it was loaded from
            (architecture, weights file, classes, normalisation; written into
            ``eval.json`` as ``external_model``), else ``None``.
        weights: which of a run's weights the file holds (``last``, ``best``,
            ``ema``; :data:`~ades_core.engine.runfolder.model_files.WEIGHT_FILES`), or
            ``None`` for a file of another name.
    """

    model_file: Path
    run_dir: Path | None
    config: dict[str, Any]
    num_classes: int
    external: dict[str, Any] | None = None
    weights: str | None = None

    @property
    def defense(self) -> str | None:
        """The run's defense; ``"external"`` for a model ades did not train."""
        return self.config.get("defense") or ("external" if self.external is not None else None)

    @property
    def backbone(self) -> str | None:
        return self.config.get("model", {}).get("backbone")

    @property
    def classes(self) -> tuple[str, ...] | None:
        classes = self.config.get("resolved", {}).get("classes")
        return tuple(classes) if classes else None

    @property
    def default_eval_file(self) -> Path:
        """``eval.json`` beside ``model.safetensors``; ``<stem>.eval.json`` beside any other file name."""
        if self.model_file.name == MODEL_FILE:
            return self.model_file.parent / EVAL_FILE
        return self.model_file.with_name(f"{self.model_file.stem}.{EVAL_FILE}")


def describe_run(path: str | Path, weights: str = "last") -> RunInfo:
    """The model file behind ``path`` (a run folder's ``weights``, or a ``.safetensors`` file) and its recorded config."""
    model_file = resolve_model_file(path, weights)
    spec = read_spec(model_file)
    config_file = model_file.parent / CONFIG_FILE
    config: dict[str, Any] | None = None
    run_dir = None
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
            run_dir = model_file.parent
        except json.JSONDecodeError as exc:
            raise EvalSourceError(f"{config_file} is not valid JSON: {exc}") from None
    if config is None:
        config = read_run_config(model_file) or {}
    which = next((name for name, file in WEIGHT_FILES.items() if file == model_file.name), None)
    return RunInfo(
        model_file=model_file, run_dir=run_dir, config=config, num_classes=spec.num_classes, weights=which
    )


EVAL_ORDERS: tuple[str, ...] = SUBSET_ORDERS
"""How ``n`` test images are chosen: ``random`` (a seeded draw) or ``first`` (indices ``0..n-1``)."""


@attrs.frozen(kw_only=True)
class EvalData:
    """The evaluation split and where it came from (written into ``eval.json``).

    Attributes:
        subset: the ``n`` asked for, or ``None`` for the whole test split.
        order: ``"random"`` (a uniform draw of ``subset`` images from
            ``subset_seed``), ``"first"`` (the first ``subset`` in dataset
            order) or ``"all"`` (the whole split, in dataset order).
        subset_seed: the seed of a random subset; ``None`` otherwise.
    """

    data: ImageTensors
    dataset: str
    data_dir: str
    n: int
    subset: int | None
    subset_seed: int | None
    order: str = "random"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.dataset,
            "data_dir": self.data_dir,
            "split": "test",
            "n": self.n,
            "subset": self.subset,
            "order": self.order,
            "subset_seed": self.subset_seed,
            "classes_present": self.classes_present,
        }

    @property
    def classes_present(self) -> int:
        """How many classes the evaluated images hold (``first`` N of a class-sorted folder: few)."""
        return int(self.data.labels.unique().numel())

    def coverage_warning(self) -> str | None:
        """A warning when the evaluated images miss classes of the split, else ``None``."""
        total = len(self.data.classes)
        if self.classes_present == total:
            return None
        hint = (
            " (an image folder lists its test images class by class, so its first N are of few classes; "
            "RobustBench's first N come from CIFAR's shuffled test batch); --order random draws from every class"
            if self.order == "first" else ""
        )
        return f"the {self.n} evaluated test images hold {self.classes_present} of the {total} classes{hint}"


def load_test_data(
    info: RunInfo,
    *,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    n: int | None = None,
    seed: int = 0,
    order: str = "random",
    image_size: int | None = None,
    download: bool = False,
) -> EvalData:
    """The test split for ``info``'s model: the run's dataset and folder unless overridden.

    Only the test split is read (:func:`~ades_core.data.load_test_split`).
    ``n`` takes that many test images: with ``order="random"`` a uniform random
    subset drawn from ``seed`` (the same draw as a run's ``test_subset`` with
    the same seed), with ``order="first"`` the first ``n`` in dataset order
    (indices ``0..n-1``, as RobustBench evaluates); ``None`` takes the whole split.

    Raises:
        EvalSourceError: no dataset recorded and none given, an unknown order,
            or classes that do not match the model.
    """
    if order not in EVAL_ORDERS:
        raise EvalSourceError(f"order must be one of {', '.join(EVAL_ORDERS)}, got {order!r}")
    recorded = info.config.get("data", {})
    dataset = dataset or recorded.get("dataset")
    data_dir = data_dir or recorded.get("data_dir")
    if image_size is None:
        image_size = recorded.get("image_size")
    if not dataset or not data_dir:
        raise EvalSourceError(
            f"{info.model_file} records no dataset; pass --dataset and --data-dir"
        )
    request = DataRequest(
        root=data_dir, test_subset=n, seed=seed, subset_order=order, download=download, image_size=image_size
    )
    test = load_test_split(dataset, request)
    if len(test.classes) != info.num_classes:
        raise EvalSourceError(
            f"the model has {info.num_classes} outputs but {dataset} at {data_dir} has "
            f"{len(test.classes)} classes"
        )
    if info.classes is not None and tuple(test.classes) != info.classes:
        raise EvalSourceError(
            f"the classes of {dataset} at {data_dir} ({', '.join(test.classes[:4])}, ...) are not the "
            f"ones the model was trained on ({', '.join(info.classes[:4])}, ...)"
        )
    return EvalData(
        data=test,
        dataset=dataset,
        data_dir=str(data_dir),
        n=len(test),
        subset=n,
        subset_seed=seed if n is not None and order == "random" else None,
        order=order if n is not None else "all",
    )
