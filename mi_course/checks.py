"""What exercise checks share: turn a student's answer into a plain value of the
expected type, compare numbers as numbers, and fail with a message that teaches.

Checks never call a student object's own ``__eq__``: every answer is first
converted to a plain ``int``/``float``/``str``/``list``/``torch.Tensor``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch


class ExerciseError(AssertionError):
    """A failed check: the message says what is wrong and, where it can, what to try."""


def fail(message: str) -> None:
    raise ExerciseError(message)


def require(condition: bool, message: str) -> None:
    """Fail with ``message`` unless ``condition`` (a plain or numpy/torch boolean computed by the check) holds."""
    if not bool(condition):
        fail(message)


def _describe(value) -> str:
    return f"{type(value).__name__}"


def as_int(value, name: str = "answer") -> int:
    """A plain ``int`` (bools and non-integral floats are refused)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        fail(f"`{name}` should be an int, got {_describe(value)}: {value!r:.80}")
    return int(value)


def as_float(value, name: str = "answer") -> float:
    """A plain finite ``float`` from a number or a one-element tensor/array."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.size == 1 if isinstance(value, np.ndarray) else value.numel() == 1:
            value = value.item()
        else:
            fail(f"`{name}` should be a single number, got a {_describe(value)} of shape {tuple(value.shape)}.")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
        fail(f"`{name}` should be a number, got {_describe(value)}: {value!r:.80}")
    result = float(value)
    if not math.isfinite(result):
        fail(f"`{name}` is {result}: check for a division by zero or a log of 0.")
    return result


def as_str(value, name: str = "answer") -> str:
    """A plain ``str`` (a copy, so a ``str`` subclass cannot override comparisons)."""
    if not isinstance(value, str):
        fail(f"`{name}` should be a str, got {_describe(value)}: {value!r:.80}")
    return str.__str__(value)


def as_list(value, name: str = "answer", item=None) -> list:
    """A plain ``list``, each item converted by ``item`` (e.g. ``as_int``) when given."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        fail(f"`{name}` should be a list, got {_describe(value)}: {value!r:.80}")
    items = list(value)
    return [item(v, f"{name}[{i}]") for i, v in enumerate(items)] if item else items


def as_tensor(value, name: str = "answer", shape: tuple | None = None, dtype=torch.float32) -> torch.Tensor:
    """A plain CPU ``torch.Tensor`` of ``dtype``, detached, optionally of an exact ``shape``."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.array(value))
    if not isinstance(value, torch.Tensor):
        fail(f"`{name}` should be a torch.Tensor, got {_describe(value)}.")
    plain = torch.from_numpy(value.detach().to("cpu", dtype).numpy().copy())
    if shape is not None and tuple(plain.shape) != tuple(shape):
        fail(f"`{name}` has shape {tuple(plain.shape)}, expected {tuple(shape)}.")
    return plain


def assert_close(actual, expected, name: str = "answer", atol: float = 1e-4, rtol: float = 1e-4, hint: str = "") -> None:
    """Compare numbers or tensors as numbers; the message shows where and by how much they differ."""
    if isinstance(expected, torch.Tensor):
        actual = as_tensor(actual, name, shape=tuple(expected.shape), dtype=expected.dtype)
        expected = expected.detach().cpu()
        if not torch.allclose(actual, expected, atol=atol, rtol=rtol):
            diff = (actual - expected).abs()
            where = np.unravel_index(int(diff.argmax()), tuple(diff.shape))
            fail(
                f"`{name}` differs from the reference by up to {float(diff.max()):.4g} at index "
                f"{tuple(int(i) for i in where)} (got {float(actual[where]):.6g}, expected "
                f"{float(expected[where]):.6g}). {hint}".rstrip()
            )
    else:
        got, want = as_float(actual, name), float(expected)
        if not math.isclose(got, want, abs_tol=atol, rel_tol=rtol):
            fail(f"`{name}` is {got:.6g}, expected {want:.6g}. {hint}".rstrip())


def assert_probabilities(probs, name: str = "probs", dim: int = -1) -> torch.Tensor:
    """Check that ``probs`` is a probability distribution along ``dim``; return it as a plain tensor."""
    probs = as_tensor(probs, name)
    if bool((probs < 0).any()) or bool((probs > 1).any()):
        fail(
            f"`{name}` has values outside [0, 1] (min {float(probs.min()):.3g}, max {float(probs.max()):.3g}): "
            "these look like logits, not probabilities. Apply softmax."
        )
    total = probs.sum(dim)
    if not torch.allclose(total, torch.ones_like(total), atol=1e-3):
        fail(
            f"`{name}` sums to {float(total.flatten()[0]):.4g} along dim {dim}, not 1: softmax over the "
            "vocabulary dimension (the last one)."
        )
    return probs


def passed(message: str = "All visible checks passed.") -> None:
    """Print the success line that ends a test cell."""
    print(f"✔ {message}")
