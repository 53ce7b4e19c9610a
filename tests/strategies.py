"""Hypothesis strategies shared by the tests: images, budgets, cue batches."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

budgets = st.floats(min_value=0.0, max_value=1.0, allow_nan=False, width=32)
small_budgets = st.floats(min_value=0.0, max_value=32 / 255, allow_nan=False, width=32)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


@st.composite
def image_batches(draw, max_batch: int = 4, max_side: int = 6, channels=st.integers(1, 3)):
    """``(B, C, H, W)`` float32 images in [0, 1], including exact 0s and 1s."""
    batch = draw(st.integers(1, max_batch))
    shape = (batch, draw(channels), draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    generator = torch.Generator().manual_seed(draw(seeds))
    x = torch.rand(shape, generator=generator)
    corner = draw(st.sampled_from(["none", "zeros", "ones", "mixed"]))
    if corner == "zeros":
        x = torch.zeros(shape)
    elif corner == "ones":
        x = torch.ones(shape)
    elif corner == "mixed":
        x = torch.where(x > 0.5, torch.ones_like(x), torch.zeros_like(x))
    return x


@st.composite
def cue_batches(draw, max_batch: int = 16, max_cues: int = 4):
    """``(B, k)`` float32 cues in [0, 1] with k >= 1, constant columns included."""
    batch = draw(st.integers(1, max_batch))
    k = draw(st.integers(1, max_cues))
    generator = torch.Generator().manual_seed(draw(seeds))
    values = torch.rand(batch, k, generator=generator)
    if draw(st.booleans()):
        values[:, 0] = draw(st.floats(0.0, 1.0, width=32))
    return values
