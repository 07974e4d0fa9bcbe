"""Run a notebook's visible tests, as a student would before submitting."""

from __future__ import annotations

import tempfile
from pathlib import Path

from mi_course.grading.config import nbgrader_config


def validate(notebook: Path) -> dict:
    """Execute ``notebook`` and check its test cells with nbgrader's validator.

    Returns nbgrader's result: keys among ``passed``, ``failed``, ``changed``,
    ``type_changed``, each a list of ``{"source": ..., "error": ...}``.
    """
    from nbgrader.validator import Validator

    with tempfile.TemporaryDirectory(prefix="mi-course-validate-") as work:
        config = nbgrader_config(Path(work), work=Path(work), release=Path(work))
        config.Validator.validate_all = True
        return Validator(config=config).validate(str(Path(notebook).resolve()))


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
    passed = len(results.get("passed", []))
    ok = not any(results.get(k) for k in ("type_changed", "changed", "failed"))
    lines.append(f"{passed} test cell(s) passed" + ("." if ok else f", {len(results.get('failed', []))} failed."))
    return "\n".join(lines), ok
