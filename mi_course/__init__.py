"""mi-course: helpers for a hands-on course in mechanistic interpretability.

Lessons start with ``model = load_model()``: the embedded offline model, or any
Hugging Face model by name, or with ``remote=True`` one too large for this machine,
traced on NDIF.
"""

from mi_course.models import CourseModel, ModelNotAvailableError, load_model

__all__ = ["CourseModel", "ModelNotAvailableError", "load_model"]
