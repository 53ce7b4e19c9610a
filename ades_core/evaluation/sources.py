"""What an evaluation reads: the model file, its run's config, and the test split it was trained for.

A run folder holds ``config.json`` (with ``resolved``: classes, sizes) and
``model.safetensors`` (whose metadata repeats the run config). A bare model
file is enough too: the dataset and data folder recorded in its metadata are
used unless overridden.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from ades_core.data import DataRequest, ImageTensors, load_datasets
from ades_core.engine.checkpoint import MODEL_FILE, read_run_config, read_spec, resolve_model_file
from ades_core.engine.run_folder import CONFIG_FILE, METRICS_FILE

EVAL_FILE = "eval.json"


class EvalSourceError(ValueError):
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
    """

    model_file: Path
    run_dir: Path | None
    config: dict[str, Any]
    num_classes: int

    @property
    def defense(self) -> str | None:
        return self.config.get("defense")

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


def describe_run(path: str | Path) -> RunInfo:
    """The model file behind ``path`` (a run folder or a ``.safetensors`` file) and its recorded config."""
    model_file = resolve_model_file(path)
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
    return RunInfo(model_file=model_file, run_dir=run_dir, config=config, num_classes=spec.num_classes)


@attrs.frozen(kw_only=True)
class EvalData:
    """The evaluation split and where it came from (written into ``eval.json``)."""

    data: ImageTensors
    dataset: str
    data_dir: str
    n: int
    subset: int | None
    subset_seed: int

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.dataset,
            "data_dir": self.data_dir,
            "split": "test",
            "n": self.n,
            "subset": self.subset,
            "subset_seed": self.subset_seed,
        }


def load_test_data(
    info: RunInfo,
    *,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    n: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
    download: bool = False,
) -> EvalData:
    """The test split for ``info``'s model: the run's dataset and folder unless overridden.

    ``n`` draws a uniform random subset of that many test images from ``seed``
    (the same draw as a run's ``test_subset`` with the same seed); ``None``
    takes the whole split.

    Raises:
        EvalSourceError: no dataset recorded and none given, or classes that do
            not match the model.
    """
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
        root=data_dir, train_subset=1, test_subset=n, seed=seed, download=download, image_size=image_size
    )
    splits = load_datasets(dataset, request)
    test = splits.test
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
        data=test, dataset=dataset, data_dir=str(data_dir), n=len(test), subset=n, subset_seed=seed
    )
