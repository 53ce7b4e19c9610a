"""Per-sample random crop (zero padding) and horizontal flip of a batch, on its own device.

The standard CIFAR augmentation is ``RandomCrop(32, padding=4)`` followed by
``RandomHorizontalFlip(0.5)``. It is hand-written here rather than taken from
``torchvision.transforms.v2`` because a v2 transform draws *one* crop and one
flip per call: applied to a batch tensor it moves every image by the same
offset, which is not the augmentation the papers use. Calling it per image
means a Python loop (or CPU data-loader workers) per sample; with the whole
dataset already on the GPU that loop, not the model, becomes the bottleneck.
Here every sample gets its own offsets and flip, drawn on the batch's device
and applied with two ``gather`` calls: no Python loop over samples and no
host-device synchronisation.

Offsets are in padded coordinates: a crop at ``(offset_y, offset_x)`` takes
rows ``offset_y .. offset_y + H - 1`` and columns ``offset_x .. offset_x + W - 1``
of the image zero-padded by ``padding`` on every side, so offsets lie in
``[0, 2 * padding]`` and ``(padding, padding)`` is the un-shifted image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["random_crop_flip", "crop_flip_with"]


def _check_batch(x: object, padding: object) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a (B, C, H, W) tensor, got {shape}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative integer (pixels), got {padding!r}")


def crop_flip_with(
    x: Tensor, offsets_y: Tensor, offsets_x: Tensor, flip: Tensor, *, padding: int = 4
) -> Tensor:
    """Crop each zero-padded sample at its offsets, then mirror the flagged ones.

    Args:
        x: images ``(B, C, H, W)``, any dtype (float in ``[0, 1]`` in training).
        offsets_y, offsets_x: integer ``(B,)`` crop corners in padded coordinates,
            each in ``[0, 2 * padding]`` (not checked: that would need a device sync).
        flip: bool ``(B,)``; True mirrors the sample left-right after the crop.
        padding: zero padding in pixels on each side.

    Returns:
        ``(B, C, H, W)``, same dtype and device as ``x``:
        ``out[b, :, i, j] = padded[b, :, offsets_y[b] + i, offsets_x[b] + j']`` with
        ``j' = W - 1 - j`` where ``flip[b]`` and ``j' = j`` elsewhere.
    """
    _check_batch(x, padding)
    b, c, h, w = x.shape
    for name, t in (("offsets_y", offsets_y), ("offsets_x", offsets_x), ("flip", flip)):
        if not isinstance(t, Tensor) or t.shape != (b,):
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a ({b},) tensor (one per sample), got {shape}")
    device = x.device
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    rows = offsets_y.to(device=device, dtype=torch.long)[:, None] + torch.arange(h, device=device)
    cols_plain = torch.arange(w, device=device)
    flipped = flip.to(device=device, dtype=torch.bool)[:, None]
    cols = torch.where(flipped, cols_plain.flip(0), cols_plain)
    cols = offsets_x.to(device=device, dtype=torch.long)[:, None] + cols  # (B, W)
    picked_rows = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))
    return picked_rows.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def random_crop_flip(
    x: Tensor, *, padding: int = 4, generator: torch.Generator | None = None
) -> Tensor:
    """Random crop with zero padding and random horizontal flip (p = 0.5), per sample.

    Equivalent in distribution to ``RandomCrop((H, W), padding=padding, fill=0)``
    then ``RandomHorizontalFlip(0.5)`` applied to each image on its own.

    Args:
        x: images ``(B, C, H, W)``, float in ``[0, 1]`` pixel scale.
        padding: zero padding in pixels; offsets are drawn from ``[0, 2 * padding]``.
        generator: the random source, on ``x``'s device; None uses the global one.

    Returns:
        ``(B, C, H, W)`` on ``x``'s device, same dtype.
    """
    _check_batch(x, padding)
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(
            f"generator is on {generator.device} but x is on {x.device}; they must share a device"
        )
    b = x.shape[0]
    draw = dict(generator=generator, device=x.device)
    offsets_y = torch.randint(0, 2 * padding + 1, (b,), **draw)
    offsets_x = torch.randint(0, 2 * padding + 1, (b,), **draw)
    flip = torch.randint(0, 2, (b,), **draw).bool()
    return crop_flip_with(x, offsets_y, offsets_x, flip, padding=padding)
