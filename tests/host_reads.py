"""A CPU stand-in for ``torch.cuda.set_sync_debug_mode("error")``: record every operation that
would make the host wait for a CUDA device.

On the CPU nothing synchronises, so the real debug mode cannot be used here.
But the operations that synchronise on CUDA are known by name, and a
``TorchDispatchMode`` sees every one of them, whatever the device:

* a read of a tensor's value on the host: ``.item()``, ``float(t)``,
  ``bool(t)``, ``if t:`` (all ``aten._local_scalar_dense``), ``torch.equal``;
* an output whose size depends on the values: ``nonzero``, ``torch.where(c)``,
  ``masked_select``, boolean-mask indexing, ``unique``;
* ``torch.tensor(host data)`` (``aten.lift_fresh``), which on CUDA is a
  blocking host-to-device copy.

Not seen on the CPU: ``.to(device)`` / ``.cpu()`` copies between devices
(there is only one), and a value read inside a native kernel (the mode sees
the operations Python dispatches, not those a C++ kernel calls itself).
tests/cuda/test_cuda_sync_free.py runs the same loops under the real debug mode.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import attrs
import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

HOST_READS = {
    aten._local_scalar_dense.default: "a host read of a value (.item(), float(t), bool(t), if t:)",
    aten.equal.default: "torch.equal",
    aten.is_nonzero.default: "bool(t)",
    aten.nonzero.default: "nonzero (torch.where(c), boolean indexing)",
    aten.masked_select.default: "masked_select",
    aten._unique2.default: "unique",
    aten.unique_dim.default: "unique",
    aten.unique_consecutive.default: "unique_consecutive",
    aten.lift_fresh.default: "torch.tensor(host data), a host-to-device copy on CUDA",
}
"""Operations that make the host wait for a CUDA device, and what the Python code looked like."""

_INDEXING = (aten.index.Tensor, aten.index_put.default, aten.index_put_.default)


@attrs.frozen
class HostRead:
    """One synchronising operation and the innermost Python frames that caused it (``file:line``)."""

    what: str
    where: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.what} at {' <- '.join(reversed(self.where))}"


class HostReadProbe(TorchDispatchMode):
    """Records a :class:`HostRead` for each synchronising operation run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[HostRead] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        what = HOST_READS.get(func)
        if func in _INDEXING and any(
            i is not None and i.dtype in (torch.bool, torch.uint8) for i in args[1]
        ):
            what = "boolean-mask indexing"
        if what is not None:
            frames = [f for f in traceback.extract_stack()[:-1] if "torch/utils/_python_dispatch" not in f.filename]
            self.reads.append(HostRead(what, tuple(f"{_short(f.filename)}:{f.lineno}" for f in frames[-4:])))
        return func(*args, **(kwargs or {}))


def _short(filename: str) -> str:
    for marker in ("/ades_core/", "/torch/", "/tests/"):
        if marker in filename:
            return marker.strip("/") + "/" + filename.split(marker, 1)[1]
    return filename


@contextmanager
def no_host_reads(*, allow: tuple[str, ...] = ()) -> Iterator[HostReadProbe]:
    """Fail (listing them) when the block runs a synchronising operation.

    ``allow``: path fragments (``"torch/optim/"``); a read whose innermost
    frames pass through one of them is tolerated (the caller says why).
    """
    probe = HostReadProbe()
    with probe:
        yield probe
    found = [r for r in probe.reads if not any(a in w for a in allow for w in r.where)]
    if found:
        lines = "\n  ".join(sorted({str(r) for r in found}))
        raise AssertionError(f"{len(found)} host read(s) where none may be:\n  {lines}")
