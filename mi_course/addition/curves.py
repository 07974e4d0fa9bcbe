"""Reading the training logs (``model.load_log``): per-digit and per-sub-task loss curves, when
each is learnt, where its "bump" (its fastest drop) is, and how noisy it is.

A curve is a 1-D tensor of per-step losses ``[steps]`` (NaN on steps whose batch had no case,
as the US9 curve of a column often does); step ``i`` of a log is training step ``i + 1``.
"""

from __future__ import annotations

import torch


def smooth(curve: torch.Tensor, window: int = 50) -> torch.Tensor:
    """Centred moving mean over ``window`` steps, NaN steps left out: ``[steps]`` -> ``[steps]``
    (NaN only where a whole window is NaN)."""
    ok = ~curve.isnan()
    values = torch.where(ok, curve, torch.zeros(()))
    kernel = torch.ones(1, 1, window)
    pad = (window // 2, window - 1 - window // 2)
    total = torch.nn.functional.conv1d(torch.nn.functional.pad(values[None, None], pad), kernel)[0, 0]
    count = torch.nn.functional.conv1d(torch.nn.functional.pad(ok.float()[None, None], pad), kernel)[0, 0]
    return total / count


def learnt_step(curve: torch.Tensor, level: float = 0.1, window: int = 50) -> int | None:
    """The first step (1-based) at which the smoothed loss is below ``level``; None if never."""
    below = (smooth(curve, window) < level).nonzero()
    return int(below[0]) + 1 if len(below) else None


def drop_step(curve: torch.Tensor, window: int = 50) -> int:
    """The step (1-based) where the smoothed loss falls fastest: the curve's main "bump" (the
    seed's inflection point, where a digit or sub-task is suddenly learnt)."""
    smoothed = smooth(curve, window)
    slope = smoothed[window:] - smoothed[:-window]  # change over ``window`` steps, centred at i + window / 2
    return int(torch.nan_to_num(slope, nan=0.0).argmin()) + window // 2 + 1


def noise(curve: torch.Tensor, start: int, window: int = 50) -> float:
    """How far single steps scatter around the smoothed curve from step ``start`` on: the standard
    deviation of ``log(loss) - log(smoothed loss)`` over the steps that have a value."""
    tail = curve[start - 1 :]
    residual = tail.log() - smooth(curve, window)[start - 1 :].log()
    return float(residual[~residual.isnan() & ~residual.isinf()].std())
