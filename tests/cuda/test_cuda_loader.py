"""The device-side loader on CUDA: the CPU's batches, drawn without a host-device sync per batch."""

from __future__ import annotations

import torch

from ades_core.data import DataRequest, load_datasets
from ades_core.data.loader import DeviceLoader
from tests.cuda.gpu import CUDA_TESTS, image_folder, sync_is_an_error

pytestmark = CUDA_TESTS


def _train_split(tmp_path):
    return load_datasets("imagefolder", DataRequest(root=image_folder(tmp_path), seed=0)).train


def test_without_augmentation_the_cuda_batches_are_the_cpu_batches(tmp_path):
    data = _train_split(tmp_path)
    loaders = [DeviceLoader(data, batch_size=8, device=d, shuffle=True, augment=False, seed=5) for d in ("cpu", "cuda")]
    for loader in loaders:
        loader.set_epoch(3)
    for (x_cpu, y_cpu, i_cpu), (x, y, i) in zip(*loaders, strict=True):
        assert x.is_cuda and x.dtype == torch.float32 and x.shape == (8, 3, 32, 32)
        assert torch.equal(x.cpu(), x_cpu) and torch.equal(y.cpu(), y_cpu) and torch.equal(i.cpu(), i_cpu)


def test_augmented_batches_are_drawn_without_a_sync_and_stay_in_the_pixel_range(tmp_path):
    loader = DeviceLoader(_train_split(tmp_path), batch_size=8, device="cuda", shuffle=True, augment=True, seed=5)
    batches = iter(loader)
    first = next(batches)  # the epoch's order is copied to the device once, here
    with sync_is_an_error():
        rest = list(batches)
    assert len(rest) == len(loader) - 1
    for x, _, _ in (first, *rest):
        assert ((x >= 0) & (x <= 1)).all().item()
