"""One torch thread for the evaluation tests (their tensors are tiny, and two threads on a
shared 2-core machine spend more time waiting for each other than computing), and the one
small trained run the command-line tests evaluate."""

from __future__ import annotations

import pytest
import torch

from ades_core import RunConfig, build


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, cifar10_dir):
    """A pgd-at run of the small CNN: 128 training images, 64 test images, one epoch."""
    out = tmp_path_factory.mktemp("runs") / "pgd-at"
    config = RunConfig.from_dict({
        "defense": "pgd-at",
        "model": {"backbone": "ades_cnn_small"},
        "data": {"dataset": "imagefolder", "data_dir": str(cifar10_dir), "train_subset": 128,
                 "test_subset": 64, "batch_size": 64},
        "attack": {"steps": 2},
        "optim": {"epochs": 1},
        "eval": {"steps": 2},
        "device": "cpu",
    })
    build(config).fit(out, progress=False)
    return out
