"""The course's layout: where the repository lives online, which lessons exist,
and the header every lesson starts with (Colab badge and Colab-only install)."""

from __future__ import annotations

import os
from pathlib import Path

# The one place for the repository URL: badges and the Colab install cell derive from it.
REPOSITORY = "https://github.com/mi-course/mi-course"
BRANCH = "main"

HEADER_TAG = "mi-course-header"


def course_root() -> Path:
    """The checkout holding ``solutions/`` and ``lessons/``: ``$MI_COURSE_ROOT``, else
    the first parent of the working directory (or of this package) that has ``solutions/``."""
    if os.environ.get("MI_COURSE_ROOT"):
        return Path(os.environ["MI_COURSE_ROOT"]).resolve()
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if (folder / "solutions").is_dir() and (folder / "autograder").is_dir():
                return folder
    raise FileNotFoundError(
        "No course checkout found (a folder with solutions/ and autograder/). "
        "Run from inside the repository or set MI_COURSE_ROOT."
    )


def lesson_names(root: Path | None = None) -> list[str]:
    """Lessons in order: the folders ``solutions/NN_topic`` holding ``NN_topic.ipynb``."""
    source = (root or course_root()) / "solutions"
    return sorted(p.name for p in source.iterdir() if (p / f"{p.name}.ipynb").is_file())


def solution_notebook(lesson: str, root: Path | None = None) -> Path:
    """The instructor's source notebook of ``lesson`` (a lesson's folder name): ``solutions/<lesson>/<lesson>.ipynb``."""
    return (root or course_root()) / "solutions" / lesson / f"{lesson}.ipynb"


def lesson_name(lesson: str, root: Path | None = None) -> str:
    """Resolve ``"1"``, ``"01"`` or ``"01_tokens_and_logits"`` to the lesson's folder name."""
    names = lesson_names(root)
    matches = [n for n in names if n == lesson or n.split("_")[0].lstrip("0") == lesson.lstrip("0")]
    if len(matches) != 1:
        raise ValueError(f"Unknown lesson {lesson!r}; the lessons are: {', '.join(names)}")
    return matches[0]


def colab_url(lesson: str) -> str:
    path = REPOSITORY.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{path}/blob/{BRANCH}/lessons/{lesson}/{lesson}.ipynb"


def header_cells(lesson: str) -> list[dict]:
    """The two cells every lesson starts with: the Colab badge, and an install cell
    that does something only in Colab (locally the setup script installed everything)."""
    badge = (
        f'<a href="{colab_url(lesson)}" target="_parent">'
        '<img src="https://colab.research.google.com/assets/colab-badge.svg" alt="Open In Colab"/></a>'
    )
    install = (
        "# In Colab, install the course package (locally, the setup script already did).\n"
        "import sys\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install --quiet "mi-course @ git+{REPOSITORY}@{BRANCH}"'
    )
    meta = {"tags": [HEADER_TAG]}
    return [
        {"cell_type": "markdown", "metadata": dict(meta), "source": badge},
        {"cell_type": "code", "metadata": dict(meta), "source": install, "outputs": [], "execution_count": None},
    ]
