"""The nbgrader configuration of one run: the course's ``autograder/nbgrader_config.py``
plus the paths of this run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from mi_course.course import course_root


def _ensure_tools_on_path() -> None:
    """nbgrader shells out to ``alembic`` for the gradebook: it must find the venv's one."""
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def nbgrader_config(root: Path, work: Path | None = None, release: Path | None = None) -> Config:
    """The course config with nbgrader's course root at ``root``.

    ``solutions/`` always comes from the checkout. ``work`` (default
    ``root/.nbgrader``) holds submissions, autograded copies, feedback and the
    gradebook; ``release`` (default the checkout's ``lessons/``) receives
    generated student notebooks.
    """
    _ensure_tools_on_path()
    checkout = course_root()
    config = PyFileConfigLoader("nbgrader_config.py", path=str(checkout / "autograder")).load_config()
    work = Path(work or root / ".nbgrader").resolve()
    work.mkdir(parents=True, exist_ok=True)
    course = config.CourseDirectory
    course.root = str(Path(root).resolve())
    course.source_directory = str(checkout / "solutions")
    course.release_directory = str(Path(release or checkout / "lessons").resolve())
    course.submitted_directory = str(work / "submitted")
    course.autograded_directory = str(work / "autograded")
    course.feedback_directory = str(work / "feedback")
    course.db_url = f"sqlite:///{work / 'gradebook.db'}"
    return config


def graded_work(work: Path) -> Path:
    """``work`` (resolved) if ``mi-course autograde`` left a gradebook there; else a FileNotFoundError
    that says which folder to pass."""
    work = Path(work).resolve()
    if not (work / "gradebook.db").is_file():
        raise FileNotFoundError(f"no gradebook in {work}: pass the --work folder that `mi-course autograde` used")
    return work
