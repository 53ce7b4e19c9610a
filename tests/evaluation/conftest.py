"""One torch thread for the evaluation tests: their tensors are tiny, and two threads on a
shared 2-core machine spend more time waiting for each other than computing."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
