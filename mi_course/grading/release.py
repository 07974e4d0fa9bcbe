"""Generate the student notebooks (``lessons/``) from the instructor's (``solutions/``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import nbformat

from mi_course.course import HEADER_TAG, header_cells, solution_notebook
from mi_course.grading.config import nbgrader_config


def refresh_header(notebook: Path) -> bool:
    """Make the notebook start with the current header cells; True if it changed."""
    nb = nbformat.read(notebook, as_version=4)
    body = [c for c in nb.cells if HEADER_TAG not in c.get("metadata", {}).get("tags", [])]
    header = [nbformat.from_dict(c) for c in header_cells(notebook.stem)]
    current = [c for c in nb.cells if c not in body]
    if [(c.cell_type, c.source) for c in current] == [(c.cell_type, c.source) for c in header]:
        return False
    for cell in header:
        cell.id = f"{HEADER_TAG}-{cell.cell_type}"
    nb.cells = header + body
    nbformat.write(nb, notebook)
    return True


def generate(lesson: str, release_dir: Path | None = None, update_header: bool = True) -> Path:
    """Run nbgrader's ``generate_assignment`` for ``lesson`` into ``release_dir``
    (default: the checkout's ``lessons/``); return the generated notebook.
    ``update_header`` first brings the source's header cells up to date."""
    from nbgrader.apps import NbGraderAPI

    if update_header:
        refresh_header(solution_notebook(lesson))
    with tempfile.TemporaryDirectory(prefix="mi-course-release-") as work:
        config = nbgrader_config(Path(work), work=Path(work), release=release_dir)
        result = NbGraderAPI(config=config).generate_assignment(lesson, force=True, create=True)
    if not result["success"]:
        raise RuntimeError(f"nbgrader generate_assignment failed for {lesson}:\n{result['log']}")
    target = Path(config.CourseDirectory.release_directory) / lesson / f"{lesson}.ipynb"
    if not target.is_file():
        raise RuntimeError(f"nbgrader reported success but wrote no {target}:\n{result['log']}")
    return target
