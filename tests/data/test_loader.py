"""DeviceLoader: a split on the device, cut into (x, y, idx) batches per (seed, epoch)."""

from __future__ import annotations

import pytest
import torch

from ades_core.data import DataError, DeviceLoader, ImageTensors


def split(n: int = 23, classes: int = 3) -> ImageTensors:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.arange(n) % classes
    return ImageTensors(images, labels, tuple(f"c{k}" for k in range(classes)))


def order(loader: DeviceLoader) -> list[int]:
    return torch.cat([idx for _, _, idx in loader]).tolist()


def test_one_epoch_yields_every_index_exactly_once():
    loader = DeviceLoader(split(), batch_size=5, device="cpu", shuffle=True, augment=True)
    seen = order(loader)
    assert sorted(seen) == list(range(23))
    assert seen != list(range(23))


def test_batches_hold_the_samples_their_indices_name():
    data = split()
    loader = DeviceLoader(data, batch_size=4, device="cpu", shuffle=True, augment=False)
    for x, y, idx in loader:
        assert torch.equal(x, data.images[idx].float() / 255)
        assert torch.equal(y, data.labels[idx])


def test_batches_are_float_pixels_in_unit_range_on_the_requested_device():
    device = torch.device("cpu")
    loader = DeviceLoader(split(), batch_size=8, device=device, shuffle=True, augment=True)
    for x, y, idx in loader:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 8, 8)
        assert 0 <= x.min() and x.max() <= 1
        assert y.dtype == torch.int64 and idx.dtype == torch.int64
        assert x.device.type == y.device.type == idx.device.type == "cpu"
        assert len(x) == len(y) == len(idx)


def test_same_seed_and_epoch_give_the_same_batches():
    a = DeviceLoader(split(), batch_size=5, device="cpu", shuffle=True, augment=True, seed=3)
    b = DeviceLoader(split(), batch_size=5, device="cpu", shuffle=True, augment=True, seed=3)
    a.set_epoch(4)
    b.set_epoch(4)
    for (xa, ya, ia), (xb, yb, ib) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)


def test_iterating_twice_in_one_epoch_repeats_the_epoch():
    loader = DeviceLoader(split(), batch_size=5, device="cpu", shuffle=True, augment=False)
    loader.set_epoch(2)
    assert order(loader) == order(loader)


def test_a_different_epoch_or_seed_gives_a_different_order():
    loader = DeviceLoader(split(), batch_size=5, device="cpu", shuffle=True, augment=False)
    loader.set_epoch(0)
    first = order(loader)
    loader.set_epoch(1)
    assert order(loader) != first
    other = DeviceLoader(split(), batch_size=5, device="cpu", shuffle=True, augment=False, seed=1)
    assert order(other) != first


def test_without_shuffle_the_stored_order_is_kept():
    loader = DeviceLoader(split(), batch_size=5, device="cpu", shuffle=False, augment=False)
    assert order(loader) == list(range(23))


def test_augmentation_changes_images_but_not_labels():
    data = split()
    loader = DeviceLoader(data, batch_size=23, device="cpu", shuffle=False, augment=True)
    x, y, idx = next(iter(loader))
    assert not torch.equal(x, data.images.float() / 255)
    assert torch.equal(y, data.labels)


def test_number_of_batches_with_and_without_drop_last():
    keep = DeviceLoader(split(23), batch_size=5, device="cpu", shuffle=True, augment=False)
    drop = DeviceLoader(
        split(23), batch_size=5, device="cpu", shuffle=True, augment=False, drop_last=True
    )
    assert len(keep) == 5 and [len(i) for _, _, i in keep] == [5, 5, 5, 5, 3]
    assert len(drop) == 4 and [len(i) for _, _, i in drop] == [5, 5, 5, 5]
    assert len(set(order(drop))) == 20


@pytest.mark.parametrize("batch_size", [0, -2, 2.5])
def test_batch_size_must_be_positive(batch_size):
    with pytest.raises(DataError, match="batch_size"):
        DeviceLoader(split(), batch_size=batch_size, device="cpu", shuffle=True, augment=False)
