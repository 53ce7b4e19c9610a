"""Loading the test split alone: no training data is read, and ``first`` takes indices 0..N-1."""

from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torchvision.datasets import CIFAR10

from ades_core.data import DataError, DataRequest, DatasetSplits, ImageTensors, load_datasets, load_test_split
from ades_core.evaluation import RunInfo, load_test_data
from ades_core.registries import DATASETS
from tests.cli.tiny_runs import write_images

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
)

LAYOUT = {"train": {"cat": 3, "dog": 3}, "test": {"cat": 6, "dog": 6}}


@pytest.fixture
def folder(tmp_path) -> Path:
    return write_images(tmp_path / "data", LAYOUT, size=8)


def same(a: ImageTensors, b: ImageTensors) -> bool:
    return torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.classes == b.classes


# ------------------------------------------------------------------ image folder


def test_the_test_split_alone_equals_the_full_loaders_test_split(folder):
    for subset in (None, 5):
        request = DataRequest(root=folder, test_subset=subset, seed=3)
        assert same(load_test_split("imagefolder", request), load_datasets("imagefolder", request).test)


def test_a_corrupt_training_image_does_not_stop_an_evaluation(folder):
    (folder / "train" / "cat" / "0.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="could not decode"):
        load_datasets("imagefolder", DataRequest(root=folder))  # the full loader reads train/
    test = load_test_split("imagefolder", DataRequest(root=folder))
    assert len(test) == 12 and test.classes == ("cat", "dog")


def test_an_image_folder_without_train_evaluates(folder):
    shutil.rmtree(folder / "train")
    with pytest.raises(DataError, match="train is missing"):
        load_datasets("imagefolder", DataRequest(root=folder))
    info = RunInfo(model_file=folder / "w.pt", run_dir=None, config={}, num_classes=2)
    data = load_test_data(info, dataset="imagefolder", data_dir=folder, n=4)
    assert data.n == 4 and data.data.classes == ("cat", "dog")


def test_order_first_takes_the_first_n_test_images_in_dataset_order(folder):
    whole = load_test_split("imagefolder", DataRequest(root=folder))
    info = RunInfo(model_file=folder / "w.pt", run_dir=None, config={}, num_classes=2)
    first = load_test_data(info, dataset="imagefolder", data_dir=folder, n=5, order="first")
    assert torch.equal(first.data.images, whole.images[:5]) and torch.equal(first.data.labels, whole.labels[:5])
    random = load_test_data(info, dataset="imagefolder", data_dir=folder, n=5, seed=1)
    assert not torch.equal(random.data.images, whole.images[:5])  # a draw, not the first five


def test_the_evaluated_data_records_its_order_and_seed(folder):
    info = RunInfo(model_file=folder / "w.pt", run_dir=None, config={}, num_classes=2)
    load = lambda **kw: load_test_data(info, dataset="imagefolder", data_dir=folder, **kw).describe()  # noqa: E731
    assert load(n=5, order="first") | {"data_dir": None} == {
        "name": "imagefolder", "data_dir": None, "split": "test", "n": 5, "subset": 5, "order": "first",
        "subset_seed": None, "classes_present": 1,
    }  # fmt: skip
    assert (load(n=5, seed=7)["order"], load(n=5, seed=7)["subset_seed"]) == ("random", 7)
    assert (load()["order"], load()["subset_seed"], load()["n"]) == ("all", None, 12)


def test_an_unknown_order_is_one_line(folder):
    info = RunInfo(model_file=folder / "w.pt", run_dir=None, config={}, num_classes=2)
    with pytest.raises(ValueError, match="order must be one of random, first, got 'last'"):
        load_test_data(info, dataset="imagefolder", data_dir=folder, n=5, order="last")
    with pytest.raises(DataError, match="subset_order must be one of random, first"):
        DataRequest(root=folder, subset_order="last")


# ------------------------------------------------------------------ CIFAR


class SpyCifar:
    """Stands in for torchvision's CIFAR10 and records every split it is asked for."""

    classes = ["zero", "one"]
    calls: list[bool] = []

    def __init__(self, root: str, train: bool, download: bool) -> None:
        SpyCifar.calls.append(train)
        n = 10 if train else 6
        self.data = np.arange(n * 32 * 32 * 3, dtype=np.int64).reshape(n, 32, 32, 3).astype(np.uint8)
        self.targets = [k % 2 for k in range(n)]


def test_cifar10_test_split_asks_torchvision_for_the_test_split_only(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", SpyCifar)
    monkeypatch.setattr(SpyCifar, "calls", [])
    info = RunInfo(model_file=tmp_path / "w.pt", run_dir=None, config={}, num_classes=2)
    data = load_test_data(info, dataset="cifar10", data_dir=tmp_path, n=4, order="first")
    assert SpyCifar.calls == [False]
    whole = torch.from_numpy(SpyCifar(str(tmp_path), train=False, download=False).data).permute(0, 3, 1, 2)
    assert torch.equal(data.data.images, whole[:4])


def _write_cifar_test_files(root: Path) -> dict[str, str]:
    """A CIFAR-10 python folder with the test batch and meta file only; their md5 sums."""
    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batch = {"data": rng.integers(0, 256, (5, 3072), dtype=np.uint8), "labels": [0, 1, 2, 1, 0]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": ["a", "b", "c"]}))
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in ("test_batch", "batches.meta")}


def test_cifar10_loads_with_no_training_batches_on_disk(tmp_path, monkeypatch):
    md5 = _write_cifar_test_files(tmp_path)

    class LocalCIFAR10(CIFAR10):  # torchvision's class, with checksums of the files written above
        test_list = [["test_batch", md5["test_batch"]]]
        meta = {"filename": "batches.meta", "key": "label_names", "md5": md5["batches.meta"]}

    with pytest.raises(RuntimeError, match="not found or corrupted"):
        LocalCIFAR10(str(tmp_path), train=False)  # torchvision alone checks the training batches too
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", LocalCIFAR10)
    test = load_test_split("cifar10", DataRequest(root=tmp_path, download=False))
    assert test.images.shape == (5, 3, 32, 32) and test.labels.tolist() == [0, 1, 2, 1, 0]
    assert test.classes == ("a", "b", "c")


# ------------------------------------------------------------------ datasets without a test-split loader


def test_a_dataset_without_a_test_loader_falls_back_to_its_factory(tmp_path):
    images = torch.arange(8 * 3 * 2 * 2, dtype=torch.uint8).reshape(8, 3, 2, 2)
    split = ImageTensors(images, torch.arange(8) % 2, ("a", "b"))
    asked: list[DataRequest] = []

    def whole(request: DataRequest) -> DatasetSplits:
        asked.append(request)
        test = split
        if request.test_subset is not None:
            test = ImageTensors(images[: request.test_subset], split.labels[: request.test_subset], split.classes)
        return DatasetSplits("plugin", split, test, (0.5,) * 3, (0.25,) * 3)

    DATASETS.register("test-split-plugin", whole)
    try:
        first = load_test_split("test-split-plugin", DataRequest(root=tmp_path, test_subset=3, subset_order="first"))
        assert torch.equal(first.images, images[:3])
        assert asked[-1].test_subset is None  # loaded whole, then the first three taken
        load_test_split("test-split-plugin", DataRequest(root=tmp_path, test_subset=3))
        assert asked[-1].test_subset == 3 and asked[-1].subset_order == "random"  # the plugin draws
    finally:
        DATASETS.unregister("test-split-plugin")
