"""Run a notebook's visible tests, as a student would before submitting."""

from __future__ import annotations

import tempfile
from pathlib import Path

import nbformat

from mi_course.grading.config import nbgrader_config
from mi_course.grading.integrity import is_test_cell


def validate(notebook: Path) -> dict:
    """Execute ``notebook`` and check its test cells with nbgrader's validator.

    Returns nbgrader's result (keys among ``failed``, ``changed``,
    ``type_changed``, each a list of ``{"source": ..., "error": ...}``) plus
    ``tests``: the number of test cells in the notebook.
    """
    from nbgrader.validator import Validator

    nb = nbformat.read(notebook, as_version=4)
    tests = sum(1 for cell in nb.cells if is_test_cell(cell))
    with tempfile.TemporaryDirectory(prefix="mi-course-validate-") as work:
        config = nbgrader_config(Path(work), work=Path(work), release=Path(work))
        config.Validator.validate_all = True
        results = Validator(config=config).validate(str(Path(notebook).resolve()))
    return {**results, "tests": tests}


def report(results: dict) -> tuple[str, bool]:
    """A readable summary of ``validate``'s results, and whether everything passed."""
    lines = []
    for kind, title in (("type_changed", "cell type changed"), ("changed", "locked cell changed"),
                        ("failed", "FAILED")):
        for item in results.get(kind, []):
            first = item["source"].strip().splitlines()[0] if item["source"].strip() else "(empty cell)"
            lines.append(f"✘ {title}: {first}")
            if item.get("error"):
                lines.extend("    " + line for line in item["error"].strip().splitlines()[-6:])
    failed = len(results.get("failed", []))
    ok = not any(results.get(k) for k in ("type_changed", "changed", "failed"))
    if results.get("type_changed") or results.get("changed"):
        lines.append("The notebook's graded cells were modified: tests were not run.")
    else:
        lines.append(f"{results['tests'] - failed} of {results['tests']} test cell(s) passed.")
    return "\n".join(lines), ok
