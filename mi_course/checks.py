"""What exercise checks share: turn a student's answer into a plain value of the
expected type, compare numbers as numbers, and fail with a message that teaches.

Checks never call a student object's own ``__eq__``: every answer is first
converted to a plain ``int``/``float``/``str``/``list``/``torch.Tensor``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import numbers
import os
import sys
import threading

import numpy as np
import torch


class ExerciseError(AssertionError):
    """A failed check: the message says what is wrong and, where it can, what to try."""


def fail(message: str) -> None:
    raise ExerciseError(message)


def require(condition: bool, message: str) -> None:
    """Fail with ``message`` unless ``condition`` (a plain or numpy/torch boolean computed by the check) holds."""
    __tracebackhide__ = True  # IPython: a failed check shows its message, not this frame
    if not bool(condition):
        fail(message)


def _describe(value) -> str:
    return f"{type(value).__name__}"


def as_int(value, name: str = "answer") -> int:
    """A plain ``int`` (bools and non-integral floats are refused)."""
    __tracebackhide__ = True  # IPython: a failed check shows its message, not this frame
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        fail(f"`{name}` should be an int, got {_describe(value)}: {value!r:.80}")
    return int(value)


def as_float(value, name: str = "answer") -> float:
    """A plain finite ``float`` from a number or a one-element tensor/array."""
    __tracebackhide__ = True  # IPython: a failed check shows its message, not this frame
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
    __tracebackhide__ = True  # IPython: a failed check shows its message, not this frame
    if not isinstance(value, str):
        fail(f"`{name}` should be a str, got {_describe(value)}: {value!r:.80}")
    return str.__str__(value)


def as_list(value, name: str = "answer", item=None) -> list:
    """A plain ``list``, each item converted by ``item`` (e.g. ``as_int``) when given."""
    __tracebackhide__ = True  # IPython: a failed check shows its message, not this frame
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        fail(f"`{name}` should be a list, got {_describe(value)}: {value!r:.80}")
    items = list(value)
    return [item(v, f"{name}[{i}]") for i, v in enumerate(items)] if item else items


def as_tensor(value, name: str = "answer", shape: tuple | None = None, dtype=torch.float32) -> torch.Tensor:
    """A plain CPU ``torch.Tensor`` of ``dtype``, detached, optionally of an exact ``shape``."""
    __tracebackhide__ = True  # IPython: a failed check shows its message, not this frame
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
    __tracebackhide__ = True  # IPython: a failed check shows its message, not this frame
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
    __tracebackhide__ = True  # IPython: a failed check shows its message, not this frame
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


# --- Claims about the embedded model ------------------------------------------------------------


def lesson_model_note(model) -> None:
    """Say once, at the top of a lesson, when it runs on another model than the embedded one."""
    if not model.is_embedded:
        from mi_course.models import EMBEDDED_NAME

        print(f"⚠ This lesson runs on {model.name}, not on the embedded {EMBEDDED_NAME}. Its prose and the cells "
              "that assert its numbers describe the embedded model: those cells say 'skipped' here. Every "
              "exercise check computes its expectation on the model you loaded.")


def about_embedded(model, claim: str) -> bool:
    """``True`` on the embedded model, where a cell's assertions about it run; elsewhere print that
    ``claim`` is skipped (it is a fact about the embedded model, not about ``model``) and return ``False``."""
    if model.is_embedded:
        return True
    print(f"⚠ skipped on {model.name}: {claim} (a claim about the embedded model)")
    return False


# --- Own work: an answer must not be a call to the course's reference -------------------------

TOOLS = {
    "nnsight": "an nnsight trace (`with lm.trace(...)`)",
    "hooks": "a PyTorch hook (`module.register_forward_hook(...)`)",
    "pyvene": "a pyvene IntervenableModel",
    "bridge": "TransformerLens' TransformerBridge (`run_with_cache` / `run_with_hooks`)",
}
_TOOL_PACKAGES = {"nnsight": "nnsight", "pyvene": "pyvene", "bridge": "transformer_lens"}
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _codes(obj) -> set:
    """Every code object of a function, method, class or module (nested code included)."""
    if isinstance(obj, property):
        return set().union(*(_codes(f) for f in (obj.fget, obj.fset, obj.fdel) if f))
    obj = inspect.unwrap(getattr(obj, "__func__", getattr(obj, "func", obj)))
    if inspect.ismodule(obj) or inspect.isclass(obj):
        members = [m for _, m in inspect.getmembers(obj) if inspect.isfunction(m) or inspect.ismethod(m)]
        if inspect.ismodule(obj):
            members = [m for m in members if getattr(m, "__module__", None) == obj.__name__]
        else:
            members += [p.fget for _, p in inspect.getmembers(obj) if isinstance(p, property) and p.fget]
        return set().union(*(_codes(m) for m in members)) if members else set()
    code = getattr(obj, "__code__", None)
    if code is None:
        raise TypeError(f"grader bug: cannot watch {obj!r}")
    found, todo = set(), [code]
    while todo:
        c = todo.pop()
        found.add(c)
        todo += [k for k in c.co_consts if inspect.iscode(k)]
    return found


def _name(code) -> str:
    """``module.function`` of a watched code object (``mi_course.patching.patch_residual_loop``)."""
    path = os.path.abspath(code.co_filename)
    if path.startswith(_PACKAGE_DIR + os.sep):
        module = ".".join(["mi_course", *os.path.splitext(os.path.relpath(path, _PACKAGE_DIR))[0].split(os.sep)])
    else:
        module = inspect.getmodulename(path) or path
    return f"{module}.{getattr(code, 'co_qualname', code.co_name)}"


def supplied(reference):
    """``reference`` wrapped as the value a test supplies for a failed exercise: later exercises
    may call it without it counting as a call to the course's reference."""
    @functools.wraps(reference)
    def supplied_reference(*args, **kwargs):
        return reference(*args, **kwargs)
    return supplied_reference


_SUPPLIED = supplied(print).__code__


class Watch:
    """Which of the watched course references ran inside ``own_work``, and which tools the
    student's own code (not a course helper) used."""

    def __init__(self, references, tools):
        self.references = set().union(*(_codes(obj) for obj in references)) if references else set()
        self.tools = {t: None for t in tools}
        self.called: list = []
        self.used: set[str] = set()
        self._tool_dirs = {t: self._package_dir(_TOOL_PACKAGES[t]) for t in tools if t in _TOOL_PACKAGES}
        if "hooks" in self.tools:
            self._hook_codes = {f.__code__ for f in (torch.nn.Module.register_forward_hook,
                                                     torch.nn.Module.register_forward_pre_hook,
                                                     torch.nn.modules.module.register_module_forward_hook,
                                                     torch.nn.modules.module.register_module_forward_pre_hook)}

    @staticmethod
    def _package_dir(package: str) -> str:
        import importlib
        return os.path.dirname(os.path.abspath(importlib.import_module(package).__file__)) + os.sep

    @staticmethod
    def _course_frames(frame) -> tuple[bool, bool]:
        """(a supplied reference is running, a course helper is running) somewhere up the stack."""
        course = False
        while frame is not None:
            code = frame.f_code
            if code is _SUPPLIED:
                return True, course
            if code.co_filename.startswith(_PACKAGE_DIR) and not code.co_filename.endswith("checks.py"):
                course = True
            frame = frame.f_back
        return False, course

    def profile(self, frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        if code in self.references:
            if not self._course_frames(frame.f_back)[0]:
                self.called.append(code)
            return
        for tool, folder in self._tool_dirs.items():
            if tool not in self.used and code.co_filename.startswith(folder) and not self._course_frames(frame.f_back)[1]:
                self.used.add(tool)
        if "hooks" in self.tools and "hooks" not in self.used and code in self._hook_codes \
                and not self._course_frames(frame.f_back)[1]:
            self.used.add("hooks")


@contextlib.contextmanager
def own_work(answer: str, *references, uses: tuple[str, ...] | str = ()):
    """Run a student's answer (inside the ``with``) and fail if it called one of ``references``,
    the course functions (or classes, or whole modules) that *are* this exercise's answer, under
    any name; with ``uses`` (e.g. ``"nnsight"``, ``"hooks"``, ``"pyvene"``, ``"bridge"``), fail
    unless the student's own code used that tool. Functions from ``supplied`` are exempt.
    """
    __tracebackhide__ = True  # IPython: a failed check shows its message, not this frame
    tools = (uses,) if isinstance(uses, str) else tuple(uses)
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        raise ValueError(f"grader bug: unknown tools {unknown}; known: {sorted(TOOLS)}")
    watch = Watch(references, tools)
    previous, previous_threads = sys.getprofile(), threading.getprofile() if hasattr(threading, "getprofile") else None
    sys.setprofile(watch.profile)
    threading.setprofile(watch.profile)
    try:
        yield watch
    finally:
        sys.setprofile(previous)
        threading.setprofile(previous_threads)
    if watch.called:
        names = ", ".join(sorted({f"`{_name(r)}`" for r in watch.called}))
        fail(f"`{answer}` calls the course's own reference ({names}): this exercise asks you to write it "
             "yourself, so it earns no points that way (the course's helpers are there for later cells and lessons).")
    for tool in tools:
        if tool not in watch.used:
            fail(f"`{answer}` ran without {TOOLS[tool]}: this exercise is about using {tool}, so the answer "
                 "must use it (the course's helpers do not count).")


@contextlib.contextmanager
def exercise(namespace: dict, **fallbacks):
    """A test cell's checks. If they fail, every ``name=make`` in ``fallbacks`` is set in
    ``namespace`` to ``make()`` (the course's reference value) so that later exercises are graded
    on their own, and the output says so. One mistake costs one exercise."""
    __tracebackhide__ = True  # IPython: a failed check shows its message, not this frame
    try:
        yield
    except Exception:
        given = []
        for name, make in fallbacks.items():
            value = make()
            namespace[name] = supplied(value) if callable(value) and not isinstance(value, torch.nn.Module) else value
            given.append(f"`{name}`")
        if given:
            print(f"This exercise failed, so later cells use the course's reference value of {', '.join(given)} "
                  "instead of yours (later exercises are graded on their own).")
        raise
