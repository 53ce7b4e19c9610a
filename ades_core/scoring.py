"""When a prediction counts as correct: the true logit strictly above every other."""

from __future__ import annotations

from torch import Tensor


def strictly_correct(logits: Tensor, y: Tensor) -> Tensor:
    """bool ``(B,)``: ``z_y > max_{j != y} z_j`` for ``logits`` ``(B, K)`` and labels ``y`` ``(B,)``.

    ``argmax(logits) == y`` would count a tie between the true class and
    another as correct when the true class has the lower index; here a tie
    is an error. Compared in float32 whatever the logits' dtype.
    """
    logits = logits.float()
    true = logits.gather(1, y.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, y.view(-1, 1), float("-inf"))
    return true > others.amax(dim=1)
