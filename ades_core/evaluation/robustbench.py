"""A RobustBench entry from an evaluated run: ``model_info`` JSON, a plain state_dict and a README.

RobustBench lists a model by a JSON file of its own field names (``name``,
``architecture``, ``eps``, ``clean_acc``, ``autoattack_acc`` as percent
strings, ``additional_data``, ``number_forward_passes``, ``dataset``, ...) and
runs the model on inputs in [0, 1]. :func:`export_robustbench` writes both
from a run and its ``eval.json``, and refuses evaluations a leaderboard cannot
take: no AutoAttack, an AutoAttack that is not the authors' implementation
(pyautoattack) with its standard settings, or fewer images than the whole
test split.

The state_dict holds the network *with* its normalisation, laid out as
``nn.Sequential(OrderedDict(normalize=<(x - mean) / std>, model=<timm backbone>))``:

    normalize.mean, normalize.std   float32 (1, C, 1, 1), [0, 1] pixel scale
    model.<key>                     the keys of timm.create_model(architecture, num_classes=K)

(RobustBench's own ``normalize_model(model, mean, std)`` has this layout.)
The README written beside it shows the dozen lines of plain PyTorch that
rebuild the model from it.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from ades_core.backbones import NormalizedClassifier
from ades_core.config import format_eps
from ades_core.engine.runfolder.model_files import MODEL_FILE, load_model
from ades_core.engine.runfolder.atomic_files import atomic_write
from ades_core.errors import AdesError
from ades_core.evaluation.report import read_report
from ades_core.evaluation.sources import describe_run
from ades_core.norms import NORMS

TEST_SPLIT_SIZES: dict[str, int] = {"cifar10": 10_000, "cifar100": 10_000}
"""The RobustBench datasets ades can evaluate on, with the size of their test split."""

OFFICIAL_AUTOATTACK = "pyautoattack"
"""The ``implementation`` an exportable AutoAttack row records (``pyautoattack==<version>``)."""

AUTOATTACK_ROW = "autoattack"
"""The name of the standard AutoAttack row in ``eval.json``."""

THREAT_MODEL = "Linf"
"""The threat model of a report without ``norm`` (written before L2); see :func:`threat_model`."""


def threat_model(report: dict[str, Any]) -> str:
    """RobustBench's threat model of an evaluation: ``Linf`` or ``L2``, from its ``norm``.

    Raises:
        ExportError: the AutoAttack row ran in another norm than the evaluation says.
    """
    norm = NORMS.get(report.get("norm", "linf"))
    ran = ((autoattack_row(report).get("settings") or {}).get("norm")) or THREAT_MODEL
    if ran != norm.official:
        raise ExportError(
            f"the AutoAttack of {report.get('_path', 'the evaluation')} ran in {ran}, but the evaluation "
            f"is {norm.official}; re-run ades eval --norm {norm.name} --attack autoattack"
        )
    return norm.official

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ExportError(AdesError, ValueError):
    """An evaluation or run that cannot be exported; one line naming why and what to do."""


@attrs.frozen(kw_only=True)
class ExportedFiles:
    """What :func:`export_robustbench` wrote: ``<name>.json``, ``<name>.pt`` and ``README.md``."""

    model_info: Path
    state_dict: Path
    readme: Path


def autoattack_row(report: dict[str, Any]) -> dict[str, Any]:
    """The official, standard AutoAttack row of an ``eval.json`` payload.

    Raises:
        ExportError: no attack named ``autoattack`` ran, its ``settings.implementation``
            is not pyautoattack's, or its settings are not the standard ones.
    """
    rows = [r for r in report.get("attacks") or [] if r.get("name") == AUTOATTACK_ROW]
    if not rows:
        ran = ", ".join(r.get("name", "?") for r in report.get("attacks") or []) or "none"
        raise ExportError(
            f"{report.get('_path', 'the evaluation')} has no AutoAttack row (attacks: {ran}); "
            "run ades eval with --attack autoattack on the whole test split"
        )
    row = rows[0]
    settings = row.get("settings") or {}
    implementation = str(settings.get("implementation") or "unrecorded")
    if not implementation.startswith(OFFICIAL_AUTOATTACK):
        raise ExportError(
            f"the AutoAttack of {report.get('_path', 'the evaluation')} is {implementation}, not the "
            f"official implementation ({OFFICIAL_AUTOATTACK}); re-run ades eval --attack autoattack "
            "with pyautoattack installed"
        )
    if settings.get("standard") is False or settings.get("version", "standard") != "standard":
        raise ExportError(
            f"the AutoAttack of {report.get('_path', 'the evaluation')} ran with non-standard settings "
            f"(version {settings.get('version')!r}); RobustBench needs the standard version"
        )
    return row


def robustbench_dataset(report: dict[str, Any], dataset: str | None = None) -> str:
    """The RobustBench dataset name of an evaluation, checked to cover the whole test split.

    Args:
        report: an ``eval.json`` payload.
        dataset: ``cifar10`` or ``cifar100`` to declare what an ``imagefolder``
            evaluation ran on; ``None`` takes the evaluated dataset's own name.

    Raises:
        ExportError: a dataset RobustBench does not list for ades, or an
            evaluation on fewer images than the whole test split.
    """
    recorded = report.get("dataset") or {}
    evaluated = recorded.get("name")
    name = dataset or evaluated
    if name not in TEST_SPLIT_SIZES:
        hint = (
            f"; if the image folder holds a RobustBench dataset's test split, name it with --dataset "
            f"({', '.join(TEST_SPLIT_SIZES)})" if evaluated == "imagefolder" and dataset is None else ""
        )
        raise ExportError(
            f"RobustBench exports cover {', '.join(TEST_SPLIT_SIZES)}, not {name!r}{hint}"
        )
    if dataset is not None and evaluated not in (dataset, "imagefolder"):
        raise ExportError(f"the evaluation ran on {evaluated!r}, not {dataset!r}")
    size = TEST_SPLIT_SIZES[name]
    n, subset = recorded.get("n", report.get("n")), recorded.get("subset")
    if n != size or (subset is not None and subset < size):
        raise ExportError(
            f"the evaluation covers {n} of the {size:,} {name} test images (--n {subset}); RobustBench "
            "needs the whole test split: re-run ades eval without --n"
        )
    return name


def _percent(fraction: float) -> str:
    return f"{100 * float(fraction):.2f}"


def model_info(
    report: dict[str, Any],
    *,
    architecture: str,
    dataset: str,
    title: str,
    authors: str = "",
    link: str = "",
    venue: str = "",
) -> dict[str, Any]:
    """RobustBench's ``model_info`` fields for an exportable ``eval.json`` payload.

    ``clean_acc``, ``autoattack_acc`` and ``reported`` are percent strings with
    two decimals (``reported`` is the AutoAttack accuracy ades measured);
    ``external`` is the per-sample worst case over every attack of the
    evaluation, given only when it is below AutoAttack's. The footnote says
    what was run. Call :func:`autoattack_row` and :func:`robustbench_dataset`
    first (they refuse what cannot be exported).
    """
    row = autoattack_row(report)
    recorded = report.get("dataset") or {}
    worst = report.get("worst_case") or {}
    threat = threat_model(report)
    eps_text = row.get("eps_text") or format_eps(float(row["eps"]), report.get("norm", "linf"))
    order = recorded.get("order", "random" if recorded.get("subset") else "all")
    source = "" if recorded.get("name") == dataset else f", read from an {recorded.get('name')} copy"
    footnote = (
        f"Evaluated with ades{_version_text(report, 'ades')}: "
        f"{row['settings'].get('implementation')} standard AutoAttack at eps {eps_text} ({threat}) on "
        f"n={recorded.get('n')} {dataset} test images (order {order}{source}), seed {report.get('seed')}."
    )
    info: dict[str, Any] = {
        "link": link,
        "name": title,
        "authors": authors,
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": dataset,
        "venue": venue,
        "architecture": architecture,
        "eps": eps_text,
        "clean_acc": _percent(report["clean_acc"]),
        "reported": _percent(row["robust_acc"]),
        "autoattack_acc": _percent(row["robust_acc"]),
    }
    if worst.get("robust_acc") is not None and worst["robust_acc"] < row["robust_acc"]:
        attacks = ", ".join((worst.get("settings") or {}).get("attacks") or [])
        info["external"] = _percent(worst["robust_acc"])
        footnote += f" The per-sample worst case over {attacks} is {info['external']}%."
    if report.get("warnings"):
        names = ", ".join(str(w).split(":")[0] for w in report["warnings"])
        footnote += f" Gradient-masking checks warned: {names}."
    info["footnote"] = footnote
    info["threat_model"] = threat
    return info


def _version_text(report: dict[str, Any], dist: str) -> str:
    version = (report.get("versions") or {}).get(dist)
    return f" {version}" if version else ""


def export_state_dict(model: nn.Module) -> OrderedDict[str, Tensor]:
    """``model``'s weights as ``normalize.mean``, ``normalize.std`` and ``model.<backbone key>``.

    Args:
        model: a :class:`~ades_core.backbones.NormalizedClassifier` (what
            :func:`~ades_core.load_model` returns).

    Returns:
        CPU tensors that load into
        ``nn.Sequential(OrderedDict(normalize=..., model=timm.create_model(arch, num_classes=K)))``.
    """
    if not isinstance(model, NormalizedClassifier):
        raise TypeError(f"expected a NormalizedClassifier, got {type(model).__name__}")
    out: OrderedDict[str, Tensor] = OrderedDict()
    out["normalize.mean"] = model.mean.detach().to("cpu", torch.float32).clone()
    out["normalize.std"] = model.std.detach().to("cpu", torch.float32).clone()
    for key, value in model.backbone.state_dict().items():
        out[f"model.{key}"] = value.detach().to("cpu").clone()
    return out


def readme_text(name: str, info: dict[str, Any], *, num_classes: int, in_chans: int) -> str:
    """The README of an export: what the files are and how to rebuild the model with plain PyTorch."""
    arch = info["architecture"]
    register = (
        "import ades_core  # registers the ades_* architectures in timm's registry\n"
        if arch.startswith("ades_") else ""
    )
    return f"""# {name}

RobustBench entry exported by `ades export --robustbench`.

- `{name}.json`: RobustBench model_info ({info['dataset']}, {info['threat_model']}, eps {info['eps']}):
  clean {info['clean_acc']}%, AutoAttack {info['autoattack_acc']}%.
- `{name}.pt`: a plain PyTorch state_dict (read it with `torch.load(..., weights_only=True)`)
  of the model *with its input normalisation*: it takes images in [0, 1],
  shape (B, {in_chans}, H, W), and returns {num_classes} logits.

Keys: `normalize.mean` and `normalize.std` (float32, shape (1, {in_chans}, 1, 1), in [0, 1]
pixel scale) and `model.*`, the state_dict of `timm.create_model("{arch}", num_classes={num_classes})`.

```python
from collections import OrderedDict

import timm
import torch
{register}

class Normalize(torch.nn.Module):
    def __init__(self, channels: int = {in_chans}):
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


model = torch.nn.Sequential(OrderedDict(
    normalize=Normalize(),
    model=timm.create_model("{arch}", num_classes={num_classes}),
))
model.load_state_dict(torch.load("{name}.pt", weights_only=True))
model.eval()  # inputs in [0, 1]
```

With RobustBench installed, `normalize_model(timm.create_model("{arch}", num_classes={num_classes}),
mean, std)` from `robustbench.model_zoo.architectures.utils_architectures` has the same layout.
"""


def export_robustbench(
    run: str | Path,
    out: str | Path,
    *,
    eval_file: str | Path | None = None,
    name: str | None = None,
    dataset: str | None = None,
    title: str | None = None,
    authors: str = "",
    link: str = "",
    venue: str = "",
    overwrite: bool = False,
) -> ExportedFiles:
    """Write ``out/<name>.json``, ``out/<name>.pt`` and ``out/README.md`` for an evaluated run.

    Args:
        run: an ades run folder or model file.
        out: the folder to write into (created if missing).
        eval_file: the evaluation to export; default the run's ``eval.json``.
        name: the entry's file name (RobustBench: ``<Author><Year><Word>``);
            default the run folder's name (or the model file's stem).
        dataset: ``cifar10`` / ``cifar100``, to declare what an ``imagefolder``
            evaluation ran on (see :func:`robustbench_dataset`).
        title, authors, link, venue: RobustBench's ``name`` (a paper title),
            ``authors``, ``link`` and ``venue``; the title defaults to the
            defense and architecture.
        overwrite: replace files already in ``out``.

    Raises:
        ExportError: an evaluation that cannot be exported (see the module
            docstring), an evaluation of another model file, a bad name, or
            files already there without ``overwrite``.
        EvalReportError, CheckpointError: a missing evaluation or model.
    """
    info = describe_run(run)
    report = read_report(eval_file if eval_file is not None else info.default_eval_file)
    recorded_model = Path(str(report.get("model") or ""))
    if recorded_model.is_file() and recorded_model.resolve() != info.model_file.resolve():
        raise ExportError(
            f"{report['_path']} evaluated {recorded_model}, not {info.model_file}; "
            "export the run that was evaluated"
        )
    autoattack_row(report)
    rb_dataset = robustbench_dataset(report, dataset)
    name = name or (info.model_file.parent.name if info.model_file.name == MODEL_FILE else info.model_file.stem)
    if not _NAME.match(name):
        raise ExportError(
            f"--name {name!r} is not a file name; use letters, digits, '_', '-' and '.' "
            "(RobustBench: <Author><Year><FirstWord>)"
        )
    out = Path(out).expanduser()
    files = ExportedFiles(model_info=out / f"{name}.json", state_dict=out / f"{name}.pt", readme=out / "README.md")
    existing = [str(p) for p in attrs.astuple(files) if p.exists()]
    if existing and not overwrite:
        raise ExportError(f"{', '.join(existing)} already exist; pass --overwrite to replace them")
    model = load_model(info.model_file)
    entry = model_info(
        report,
        architecture=info.backbone or "?",
        dataset=rb_dataset,
        title=title or f"{info.defense or 'model'} ({info.backbone}), trained and evaluated with ades",
        authors=authors,
        link=link,
        venue=venue,
    )
    state = export_state_dict(model)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(files.state_dict, lambda tmp: torch.save(state, tmp))
    atomic_write(files.model_info, lambda tmp: tmp.write_text(json.dumps(entry, indent=2) + "\n"))
    readme = readme_text(name, entry, num_classes=info.num_classes, in_chans=int(state["normalize.mean"].shape[1]))
    atomic_write(files.readme, lambda tmp: tmp.write_text(readme))
    return files
