"""mi-course: helpers for a hands-on course in mechanistic interpretability.

Lessons start with ``model = load_model()``: the embedded offline model, or any
Hugging Face model by name, or with ``remote=True`` one too large for this machine,
traced on NDIF.

The names below are imported on first use, so ``mi-course --help`` and the grading
commands do not pay for importing torch and transformers.
"""

__all__ = ["CourseModel", "ModelNotAvailableError", "load_model"]


def __getattr__(name: str):
    if name in __all__:
        from mi_course import models

        return getattr(models, name)
    raise AttributeError(f"module 'mi_course' has no attribute {name!r}")
