"""Datasets held as uint8 tensors; the ``cifar10`` and ``cifar100`` factories (``imagefolder``: its own module).

A dataset factory (registered in :data:`ades_core.registries.DATASETS`) takes a
:class:`DataRequest` and returns :class:`DatasetSplits`: the train and test
splits as uint8 image tensors ``(N, C, H, W)`` on the CPU with int64 labels
``(N,)``, plus the per-channel mean and std in ``[0, 1]`` pixel scale that the
model's input normalisation uses. Small CIFAR-style datasets fit in memory, so
the whole split is decoded once and batches are cut from it on the device
(see :mod:`ades_core.data.loader`).

Subsets (``train_subset``, ``test_subset``) are drawn uniformly at random
without replacement from ``seed``, as sorted indices, *before* any image is
decoded, so a 200-image subset of a 50,000-image folder loads in a blink
(``subset_order="first"`` takes the first N in dataset order instead).

An evaluation needs the test split alone: :func:`load_test_split` loads just
that (CIFAR's test batch; an image folder's ``test/``, without listing or
decoding ``train/``) through the ``test_split`` loader a dataset registers
beside its factory, and falls back to the full factory for datasets that
register none.

Example::

    splits = load_datasets("imagefolder", DataRequest(root="~/data/cifar10", train_subset=1000))
    splits.train.images.shape  # torch.Size([1000, 3, 32, 32]), uint8
    splits.num_classes, splits.mean  # 10, (0.49..., 0.48..., 0.44...)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from ades_core.errors import AdesError
from ades_core.registries import DATASETS

__all__ = [
    "DataError",
    "ImageTensors",
    "DatasetSplits",
    "DataRequest",
    "load_datasets",
    "load_test_split",
    "subset_indices",
    "SUBSET_ORDERS",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


class DataError(AdesError, ValueError):
    """A dataset that cannot be found, read or assembled; the message is one line."""


def _tensor_repr(t: Tensor) -> str:
    return f"Tensor(shape={tuple(t.shape)}, dtype={t.dtype})"


# --------------------------------------------------------------------------- values


@attrs.frozen(eq=False)
class ImageTensors:
    """One split held in memory.

    Attributes:
        images: uint8 ``(N, C, H, W)`` on the CPU, pixel values 0..255.
        labels: int64 ``(N,)`` on the CPU, each in ``[0, len(classes))``.
        classes: the class names; ``labels`` index into them.
    """

    images: Tensor = attrs.field(repr=_tensor_repr)
    labels: Tensor = attrs.field(repr=_tensor_repr)
    classes: tuple[str, ...] = attrs.field(converter=tuple)

    def __attrs_post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, Tensor) or images.ndim != 4 or images.dtype != torch.uint8:
            raise DataError(f"images must be a uint8 (N, C, H, W) tensor, got {_describe(images)}")
        if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.dtype != torch.int64:
            raise DataError(f"labels must be an int64 (N,) tensor, got {_describe(labels)}")
        if images.device.type != "cpu" or labels.device.type != "cpu":
            raise DataError(
                f"images and labels must be on the CPU, got {images.device} and {labels.device}"
            )
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels; they must match")
        if not self.classes or not all(isinstance(c, str) for c in self.classes):
            raise DataError(f"classes must be a non-empty sequence of names, got {self.classes!r}")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(self.classes)):
            raise DataError(
                f"labels must lie in [0, {len(self.classes)}) for {len(self.classes)} classes, "
                f"got [{int(labels.min())}, {int(labels.max())}]"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _float_tuple(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@attrs.frozen(eq=False)
class DatasetSplits:
    """A dataset's train and test splits and its per-channel statistics.

    Attributes:
        name: the registered dataset name ("cifar10", "imagefolder", ...).
        train, test: the splits; same classes, same ``(C, H, W)``.
        mean, std: per-channel mean and standard deviation of the train pixels,
            in ``[0, 1]`` pixel scale, one value per channel.
    """

    name: str
    train: ImageTensors
    test: ImageTensors
    mean: tuple[float, ...] = attrs.field(converter=_float_tuple)
    std: tuple[float, ...] = attrs.field(converter=_float_tuple)

    def __attrs_post_init__(self) -> None:
        if self.train.classes != self.test.classes:
            raise DataError(f"{self.name}: train and test classes differ; they must be the same")
        if self.train.image_shape != self.test.image_shape:
            raise DataError(
                f"{self.name}: train images are {self.train.image_shape} but test images are "
                f"{self.test.image_shape} (C, H, W); they must match"
            )
        channels = self.train.image_shape[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise DataError(
                f"{self.name}: mean and std need {channels} values (one per channel), "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if not all(s > 0 for s in self.std):
            raise DataError(f"{self.name}: std must be positive per channel, got {self.std}")

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)


def _optional_positive(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DataError(f"{attribute.name} must be a positive integer or None (all), got {value!r}")


def _integer(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{attribute.name} must be an integer, got {value!r}")


def _boolean(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, bool):
        raise DataError(f"{attribute.name} must be True or False, got {value!r}")


def _expand_path(value: str | Path) -> Path:
    return Path(value).expanduser()


SUBSET_ORDERS: tuple[str, ...] = ("random", "first")
"""How a subset of N samples is chosen: a seeded uniform draw, or the first N in dataset order."""


def _subset_order(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if value not in SUBSET_ORDERS:
        raise DataError(f"{attribute.name} must be one of {', '.join(SUBSET_ORDERS)}, got {value!r}")


@attrs.frozen(kw_only=True)
class DataRequest:
    """What a dataset factory is asked to load.

    Attributes:
        root: the folder holding the dataset (``~`` is expanded).
        train_subset, test_subset: load this many samples of the split, drawn
            uniformly at random without replacement from ``seed``; None loads all.
        seed: the seed of the subset draws.
        subset_order: ``"random"`` (the seeded draw above) or ``"first"`` (the
            first N samples in dataset order, indices ``0..N-1``, as RobustBench
            evaluates); no effect on a split loaded whole.
        download: whether a downloadable dataset (CIFAR) may be fetched into ``root``.
        image_size: resize every image to ``(image_size, image_size)`` pixels
            (antialiased); None keeps the stored size, which must then be uniform.
    """

    root: Path = attrs.field(converter=_expand_path)
    train_subset: int | None = attrs.field(default=None, validator=_optional_positive)
    test_subset: int | None = attrs.field(default=None, validator=_optional_positive)
    seed: int = attrs.field(default=0, validator=_integer)
    subset_order: str = attrs.field(default="random", validator=_subset_order)
    download: bool = attrs.field(default=True, validator=_boolean)
    image_size: int | None = attrs.field(default=None, validator=_optional_positive)


def load_datasets(name: str, request: DataRequest) -> DatasetSplits:
    """Load the dataset registered as ``name``.

    Unknown names raise :class:`~ades_core.registry.RegistryError` listing the registered ones.
    """
    return DATASETS.build(name, request)


def load_test_split(name: str, request: DataRequest) -> ImageTensors:
    """The test split of the dataset registered as ``name``, reading no training data if it can.

    Uses the ``test_split`` loader registered beside the dataset's factory
    (``factory(request) -> ImageTensors``, honouring ``test_subset``, ``seed``
    and ``subset_order``); a dataset that registers none is loaded whole by its
    factory (with a one-sample training subset) and its test split returned,
    with the first-N order applied here if asked. ``request.train_subset`` is
    ignored. Unknown names raise :class:`~ades_core.registry.RegistryError`.
    """
    loader = DATASETS.entry(name).info.test_split
    if loader is not None:
        return loader(request)
    if request.subset_order == "random" or request.test_subset is None:
        return DATASETS.build(name, attrs.evolve(request, train_subset=1)).test
    test = DATASETS.build(name, attrs.evolve(request, train_subset=1, test_subset=None)).test
    chosen = subset_indices(len(test), request.test_subset, request.seed, "test", order="first")
    return ImageTensors(test.images[chosen], test.labels[chosen], test.classes)


# --------------------------------------------------------------------------- helpers


def subset_indices(
    size: int, subset: int | None, seed: int, split: str, *, order: str = "random"
) -> Tensor | None:
    """Sorted int64 indices of ``subset`` of ``size`` samples, or None for all of them.

    With ``order="random"`` the draw is uniform without replacement and depends
    only on ``(size, subset, seed)``; with ``order="first"`` it is ``0..subset-1``.
    """
    if subset is None:
        return None
    if subset > size:
        raise DataError(
            f"{split} subset of {subset} asked, but the {split} split holds {size} samples"
        )
    if order == "first":
        return torch.arange(subset)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(size, generator=generator)[:subset].sort().values


def _resize(images: Tensor, image_size: int | None) -> Tensor:
    """Resize uint8 ``(..., C, H, W)`` to ``(image_size, image_size)`` if it is not already."""
    if image_size is None or tuple(images.shape[-2:]) == (image_size, image_size):
        return images
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(images, [image_size, image_size], antialias=True)


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of uint8 ``(N, C, H, W)``, in ``[0, 1]`` scale."""
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = counts.sum()
        mean = (counts * values).sum() / total
        var = (counts * (values - mean) ** 2).sum() / total
        means.append(float(mean))
        stds.append(float(var.sqrt()))
    return tuple(means), tuple(stds)


# --------------------------------------------------------------------------- CIFAR


def _load_cifar_split(dataset_cls: Any, label: str, request: DataRequest, split: str) -> ImageTensors:
    """One CIFAR split (``"train"`` or ``"test"``) through torchvision, subset and resized."""
    subset = request.train_subset if split == "train" else request.test_subset
    try:
        ds = dataset_cls(str(request.root), train=split == "train", download=request.download)
    except Exception as exc:  # noqa: BLE001 - RuntimeError (missing), URLError (offline)
        reason = "downloading is off" if not request.download else _short_reason(exc)
        raise DataError(
            f"{label} is not in {request.root} and could not be downloaded ({reason}); "
            "pass --data-dir to a folder holding it, or use --dataset imagefolder "
            "with a train/ and test/ image folder"
        ) from exc
    data = torch.from_numpy(ds.data)  # (N, 32, 32, 3) uint8
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    chosen = subset_indices(len(labels), subset, request.seed, split, order=request.subset_order)
    if chosen is not None:
        data, labels = data[chosen], labels[chosen]
    images = _resize(data.permute(0, 3, 1, 2).contiguous(), request.image_size)
    return ImageTensors(images, labels, tuple(ds.classes))


def _load_cifar(
    dataset_cls: Any, label: str, name: str, request: DataRequest, mean: tuple, std: tuple
) -> DatasetSplits:
    train = _load_cifar_split(dataset_cls, label, request, "train")
    test = _load_cifar_split(dataset_cls, label, request, "test")
    return DatasetSplits(name, train, test, mean, std)


def _short_reason(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _test_files_only(dataset_cls: Any) -> Any:
    """``dataset_cls`` (torchvision's CIFAR10/100) checking only its test files before loading.

    torchvision verifies the checksums of *every* file, the 150 MB of training
    batches included, even for ``train=False``; this subclass verifies the test
    batch alone (and downloads only when it is missing), so the training data
    is never read and need not be present.
    """
    from torchvision.datasets.utils import check_integrity

    class TestFilesOnly(dataset_cls):  # type: ignore[misc, valid-type]
        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            return all(check_integrity(str(folder / name), md5) for name, md5 in self.test_list)

    TestFilesOnly.__name__ = TestFilesOnly.__qualname__ = f"{dataset_cls.__name__}TestOnly"
    return TestFilesOnly


def cifar10_test(request: DataRequest) -> ImageTensors:
    """The CIFAR-10 test split alone (10,000 images); the training batches are not read."""
    from torchvision.datasets import CIFAR10

    return _load_cifar_split(_test_files_only(CIFAR10), "CIFAR-10", request, "test")


def cifar100_test(request: DataRequest) -> ImageTensors:
    """The CIFAR-100 test split alone (10,000 images); the training file is not read."""
    from torchvision.datasets import CIFAR100

    return _load_cifar_split(_test_files_only(CIFAR100), "CIFAR-100", request, "test")


@DATASETS.register(
    "cifar10",
    description="CIFAR-10 (torchvision layout; downloaded if allowed)",
    paper="",
    test_split=cifar10_test,
)
def cifar10(request: DataRequest) -> DatasetSplits:
    """CIFAR-10: 50,000 train and 10,000 test 32x32 RGB images of 10 classes."""
    from torchvision.datasets import CIFAR10

    return _load_cifar(CIFAR10, "CIFAR-10", "cifar10", request, CIFAR10_MEAN, CIFAR10_STD)


@DATASETS.register(
    "cifar100",
    description="CIFAR-100 (torchvision layout; downloaded if allowed)",
    paper="",
    test_split=cifar100_test,
)
def cifar100(request: DataRequest) -> DatasetSplits:
    """CIFAR-100: 50,000 train and 10,000 test 32x32 RGB images of 100 classes."""
    from torchvision.datasets import CIFAR100

    return _load_cifar(CIFAR100, "CIFAR-100", "cifar100", request, CIFAR100_MEAN, CIFAR100_STD)
