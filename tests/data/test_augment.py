"""Per-sample random crop with zero padding and horizontal flip."""

from __future__ import annotations

import pytest
import torch

from ades_core.data import crop_flip_with, random_crop_flip


def batch(b: int = 3, c: int = 2, h: int = 5, w: int = 6) -> torch.Tensor:
    """Distinct positive pixel values, so zeros can only come from padding."""
    return torch.arange(1, b * c * h * w + 1, dtype=torch.float32).reshape(b, c, h, w)


def full(b: int, value) -> torch.Tensor:
    return torch.full((b,), value, dtype=torch.long)


def test_offsets_at_padding_without_flip_is_identity():
    x = batch()
    out = crop_flip_with(x, full(3, 4), full(3, 4), torch.zeros(3, dtype=torch.bool), padding=4)
    assert torch.equal(out, x)


def test_flip_alone_mirrors_left_right():
    x = batch()
    out = crop_flip_with(x, full(3, 4), full(3, 4), torch.ones(3, dtype=torch.bool), padding=4)
    assert torch.equal(out, x.flip(-1))


def test_output_shape_and_dtype_match_input():
    x = batch(4, 3, 8, 7)
    out = random_crop_flip(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device


def test_offset_zero_shifts_image_down_right_with_zeros_on_top_and_left():
    x = torch.arange(1, 17, dtype=torch.float32).reshape(1, 1, 4, 4)
    out = crop_flip_with(x, full(1, 0), full(1, 0), torch.zeros(1, dtype=torch.bool), padding=1)
    expected = torch.tensor(
        [[0, 0, 0, 0], [0, 1, 2, 3], [0, 5, 6, 7], [0, 9, 10, 11]], dtype=torch.float32
    )
    assert torch.equal(out[0, 0], expected)


def test_largest_offset_shifts_up_left_with_zeros_on_bottom_and_right_then_flip():
    x = torch.arange(1, 17, dtype=torch.float32).reshape(1, 1, 4, 4)
    out = crop_flip_with(x, full(1, 2), full(1, 2), torch.ones(1, dtype=torch.bool), padding=1)
    shifted = torch.tensor(
        [[6, 7, 8, 0], [10, 11, 12, 0], [14, 15, 16, 0], [0, 0, 0, 0]], dtype=torch.float32
    )
    assert torch.equal(out[0, 0], shifted.flip(-1))


def test_each_sample_gets_its_own_offsets_and_flip():
    x = batch(2, 1, 4, 4)
    out = crop_flip_with(
        x, torch.tensor([1, 2]), torch.tensor([2, 1]), torch.tensor([False, True]), padding=1
    )
    for b, (oy, ox, f) in enumerate([(1, 2, False), (2, 1, True)]):
        padded = torch.nn.functional.pad(x[b], (1, 1, 1, 1))
        crop = padded[:, oy : oy + 4, ox : ox + 4]
        assert torch.equal(out[b], crop.flip(-1) if f else crop)


def test_same_seed_same_augmentation_and_different_seeds_differ():
    x = batch(16, 3, 8, 8)
    a = random_crop_flip(x, generator=torch.Generator().manual_seed(7))
    b = random_crop_flip(x, generator=torch.Generator().manual_seed(7))
    c = random_crop_flip(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_every_output_pixel_is_padding_or_from_the_same_input_row_shifted():
    x = batch(32, 1, 6, 6)
    out = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(0))
    for b in range(32):
        for i in range(6):
            values = set(out[b, 0, i].tolist()) - {0.0}
            rows = [set(x[b, 0, r].tolist()) for r in range(6)]
            # all the non-zero values of an output row come from one input row
            assert values == set() or any(values <= row for row in rows)
    assert out.min() >= 0 and out.max() <= x.max()


def test_random_crops_vary_per_sample_and_flip_about_half():
    x = batch(1, 1, 8, 8).expand(400, 1, 8, 8).contiguous()
    out = random_crop_flip(x, padding=4, generator=torch.Generator().manual_seed(0))
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) > 50  # 9 x 9 offsets x 2 flips = 162 possible outcomes
    unflipped_identity = (out == x).flatten(1).all(1).float().mean()
    assert 0 < unflipped_identity < 0.05  # 1/162 expected


def test_padding_zero_only_flips():
    x = batch()
    out = random_crop_flip(x, padding=0, generator=torch.Generator().manual_seed(3))
    for o, xi in zip(out, x):
        assert torch.equal(o, xi) or torch.equal(o, xi.flip(-1))


@pytest.mark.parametrize("bad", [torch.zeros(3, 4, 4), torch.zeros(1, 1, 1, 4, 4)])
def test_input_must_be_a_batch(bad):
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        random_crop_flip(bad)


def test_offsets_must_have_one_entry_per_sample():
    with pytest.raises(ValueError, match="offsets_y"):
        crop_flip_with(batch(), full(2, 4), full(3, 4), torch.zeros(3, dtype=torch.bool))


def test_negative_padding_is_rejected():
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(batch(), padding=-1)
