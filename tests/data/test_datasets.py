"""Datasets: uint8 splits from an image folder or torchvision's CIFAR, with subsets and stats."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.io import write_png

from ades_core.data import DataError, DataRequest, DatasetSplits, ImageTensors, load_datasets
from ades_core.registries import DATASETS
from ades_core.registry import RegistryError

# write_png in the helpers below: torchvision 0.29 deprecates its image I/O in favour of TorchCodec
pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
)

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def write_folder(
    root: Path, layout: dict[str, dict[str, int]], size: tuple[int, int] = (4, 4), seed: int = 0
) -> dict[str, list[torch.Tensor]]:
    """Write ``layout[split][class]`` random RGB PNGs of ``size``; return them per split."""
    generator = torch.Generator().manual_seed(seed)
    written: dict[str, list[torch.Tensor]] = {}
    for split, classes in layout.items():
        written[split] = []
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for k in range(count):
                image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=generator)
                write_png(image, str(root / split / name / f"{k:03d}.png"))
                written[split].append(image)
    return written


TWO_CLASSES = {"train": {"cat": 3, "dog": 2}, "test": {"cat": 1, "dog": 2}}


def test_datasets_are_registered_with_a_description():
    for name in ("cifar10", "cifar100", "imagefolder"):
        entry = DATASETS.entry(name)
        assert entry.description and "\n" not in entry.description and entry.paper == ""


def test_an_unknown_dataset_lists_the_registered_ones(tmp_path):
    with pytest.raises(RegistryError, match="imagefolder"):
        load_datasets("mnist", DataRequest(root=tmp_path))


def test_imagefolder_loads_images_labels_classes_and_stats(tmp_path):
    written = write_folder(tmp_path, TWO_CLASSES)
    splits = load_datasets("imagefolder", DataRequest(root=tmp_path))
    assert isinstance(splits, DatasetSplits) and splits.name == "imagefolder"
    assert splits.num_classes == 2 and splits.train.classes == splits.test.classes == ("cat", "dog")
    assert splits.train.images.dtype == torch.uint8 and splits.train.images.shape == (5, 3, 4, 4)
    assert splits.train.labels.tolist() == [0, 0, 0, 1, 1]
    assert splits.test.labels.tolist() == [0, 1, 1]
    assert torch.equal(splits.train.images, torch.stack(written["train"]))
    assert torch.equal(splits.test.images, torch.stack(written["test"]))
    pixels = splits.train.images.double() / 255
    expected_mean = pixels.mean(dim=(0, 2, 3))
    expected_std = pixels.transpose(0, 1).reshape(3, -1).std(dim=1, unbiased=False)
    assert splits.mean == pytest.approx(expected_mean.tolist(), abs=1e-9)
    assert splits.std == pytest.approx(expected_std.tolist(), abs=1e-9)


def test_loading_does_not_repeat_torchvision_io_deprecation_per_file(tmp_path):
    write_folder(tmp_path, TWO_CLASSES)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_datasets("imagefolder", DataRequest(root=tmp_path))
    assert not [w for w in caught if "TorchVision are deprecated" in str(w.message)]


def test_imagefolder_resizes_to_image_size_mixed_sizes_included(tmp_path):
    write_folder(tmp_path, {"train": {"a": 2, "b": 1}, "test": {"a": 1, "b": 1}}, size=(6, 6))
    write_folder(tmp_path / "more", {"x": {"a": 1}})
    (tmp_path / "more" / "x" / "a" / "000.png").rename(tmp_path / "train" / "b" / "big.png")
    splits = load_datasets("imagefolder", DataRequest(root=tmp_path, image_size=3))
    assert splits.train.images.shape == (4, 3, 3, 3) and splits.test.images.shape == (2, 3, 3, 3)


def test_mixed_sizes_without_image_size_ask_for_one(tmp_path):
    write_folder(tmp_path, TWO_CLASSES)
    write_folder(tmp_path / "other", {"x": {"dog": 1}}, size=(5, 7))
    (tmp_path / "other" / "x" / "dog" / "000.png").rename(tmp_path / "train" / "dog" / "odd.png")
    with pytest.raises(DataError, match="different sizes.*5x7.*image size") as info:
        load_datasets("imagefolder", DataRequest(root=tmp_path))
    assert "\n" not in str(info.value)


def test_train_and_test_classes_must_match(tmp_path):
    write_folder(tmp_path, {"train": {"cat": 1, "dog": 1}, "test": {"cat": 1, "emu": 1}})
    with pytest.raises(DataError, match="only in train: dog; only in test: emu"):
        load_datasets("imagefolder", DataRequest(root=tmp_path))


def test_a_split_without_images_is_an_error(tmp_path):
    write_folder(tmp_path, {"train": {"cat": 2}, "test": {"cat": 0}})
    with pytest.raises(DataError, match=r"test split .* holds no images"):
        load_datasets("imagefolder", DataRequest(root=tmp_path))


def test_a_split_without_class_folders_is_an_error(tmp_path):
    write_folder(tmp_path, {"train": {"cat": 2}})
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match="test split .* holds no class folders"):
        load_datasets("imagefolder", DataRequest(root=tmp_path))


def test_a_missing_split_folder_is_an_error(tmp_path):
    write_folder(tmp_path, {"train": {"cat": 2}})
    with pytest.raises(DataError, match=r"test is missing.*train/ and test/"):
        load_datasets("imagefolder", DataRequest(root=tmp_path))


def test_a_missing_root_is_an_error(tmp_path):
    with pytest.raises(DataError, match="does not exist.*--data-dir"):
        load_datasets("imagefolder", DataRequest(root=tmp_path / "nowhere"))


def test_subsets_are_deterministic_sorted_and_of_the_asked_size(tmp_path):
    write_folder(tmp_path, {"train": {"a": 6, "b": 6}, "test": {"a": 4, "b": 4}})
    full = load_datasets("imagefolder", DataRequest(root=tmp_path))

    def pick(seed: int) -> DatasetSplits:
        request = DataRequest(root=tmp_path, train_subset=5, test_subset=3, seed=seed)
        return load_datasets("imagefolder", request)

    a, b, c = pick(0), pick(0), pick(1)
    assert len(a.train) == 5 and len(a.test) == 3
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.images, c.train.images)
    # each subset image is one of the full split's, taken in the stored order
    positions = [
        next(k for k in range(12) if torch.equal(full.train.images[k], image))
        for image in a.train.images
    ]
    assert positions == sorted(positions) and len(set(positions)) == 5
    assert a.train.labels.tolist() == full.train.labels[positions].tolist()


def test_a_subset_larger_than_the_split_names_its_size(tmp_path):
    write_folder(tmp_path, TWO_CLASSES)
    with pytest.raises(DataError, match="train split holds 5 samples"):
        load_datasets("imagefolder", DataRequest(root=tmp_path, train_subset=6))


@pytest.mark.parametrize(
    ("field", "value"), [("train_subset", 0), ("test_subset", -1), ("image_size", 0), ("seed", 1.5)]
)
def test_request_fields_are_validated(tmp_path, field, value):
    with pytest.raises(DataError, match=field):
        DataRequest(root=tmp_path, **{field: value})


def test_request_expands_the_home_folder():
    assert DataRequest(root="~/data").root == Path.home() / "data"


def test_image_tensors_check_shapes_and_dtypes():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    labels = torch.tensor([0, 1])
    assert len(ImageTensors(images, labels, ("a", "b"))) == 2
    with pytest.raises(DataError, match="uint8"):
        ImageTensors(images.float(), labels, ("a", "b"))
    with pytest.raises(DataError, match="int64"):
        ImageTensors(images, labels.int(), ("a", "b"))
    with pytest.raises(DataError, match="2 images but 3 labels"):
        ImageTensors(images, torch.tensor([0, 1, 1]), ("a", "b"))
    with pytest.raises(DataError, match="labels must lie in"):
        ImageTensors(images, torch.tensor([0, 2]), ("a", "b"))


def test_real_cifar10_image_folder_subset(cifar10_dir):
    request = DataRequest(root=cifar10_dir, train_subset=200, test_subset=100, seed=0)
    start = time.perf_counter()
    splits = load_datasets("imagefolder", request)
    elapsed = time.perf_counter() - start
    assert splits.train.images.shape == (200, 3, 32, 32)
    assert splits.test.images.shape == (100, 3, 32, 32)
    assert splits.train.images.dtype == torch.uint8
    assert splits.train.classes == CIFAR10_CLASSES and splits.num_classes == 10
    assert len(splits.train.labels.unique()) == 10  # 200 uniform draws cover all classes
    # 200 images: close to the published CIFAR-10 statistics
    assert splits.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=0.03)
    assert splits.std == pytest.approx((0.2470, 0.2435, 0.2616), abs=0.03)
    assert elapsed < 10, f"300 images took {elapsed:.1f} s; only chosen files should be decoded"


def test_cifar10_not_present_and_not_downloadable_points_to_data_dir(tmp_path):
    with pytest.raises(DataError, match="CIFAR-10 is not in .*--data-dir") as info:
        load_datasets("cifar10", DataRequest(root=tmp_path, download=False))
    assert "\n" not in str(info.value)


class FakeCifar:
    """Stands in for torchvision's CIFAR10: (N, 32, 32, 3) uint8 data and int targets."""

    classes = ["zero", "one"]

    def __init__(self, root: str, train: bool, download: bool) -> None:
        n = 10 if train else 4
        generator = torch.Generator().manual_seed(int(train))
        data = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=generator)
        self.data = data.numpy()
        self.targets = [k % 2 for k in range(n)]


def test_cifar10_converts_to_channels_first_with_published_stats(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCifar)
    splits = load_datasets("cifar10", DataRequest(root=tmp_path, train_subset=6))
    reference = FakeCifar("", train=True, download=False)
    assert splits.train.images.shape == (6, 3, 32, 32)
    assert splits.test.images.shape == (4, 3, 32, 32)
    assert splits.train.classes == ("zero", "one")
    again = load_datasets("cifar10", DataRequest(root=tmp_path, train_subset=6))  # same seed 0
    assert torch.equal(splits.train.images, again.train.images)
    first = splits.train.images[0].permute(1, 2, 0).numpy()
    assert any((first == image).all() for image in reference.data)
    assert splits.mean == (0.4914, 0.4822, 0.4465) and splits.std == (0.2470, 0.2435, 0.2616)
