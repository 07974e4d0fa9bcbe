"""A Gradescope autograder for one lesson: the zip Gradescope builds its image from, and what
runs for each submission.

Gradescope (https://gradescope-autograders.readthedocs.io/en/latest/specs/) unpacks the zip
into ``/autograder/source``, runs ``setup.sh`` there once as root, then for every submission
runs ``/autograder/run_autograder`` with the student's files in ``/autograder/submission`` and
reads ``/autograder/results/results.json``. Here ``setup.sh`` installs the course (``course.sh
setup``: pinned dependencies and the embedded model) and ``run_autograder`` grades the notebook
with ``autograde`` itself (hidden tests, tamper repair, limits) and writes one test per graded
cell: its name, score, max_score and failure message, never the hidden tests' code.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path

from mi_course.course import course_root
from mi_course.grading.autograde import GRADED, StudentResult, autograde, autograded_cells, printable
from mi_course.grading.report import failure_lines, read_notebook

SETUP = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image: the course's own setup
# (pinned dependencies in /autograder/venv, the embedded model prepared in the image).
set -euo pipefail
if command -v apt-get >/dev/null; then apt-get install -y python3-venv python3-pip; fi
cd /autograder/source/course
MI_COURSE_VENV=/autograder/venv ./course.sh setup
"""

RUN = """#!/usr/bin/env bash
# Gradescope runs this for every submission (/autograder/submission/*.ipynb).
set -euo pipefail
root="${{AUTOGRADER_ROOT:-/autograder}}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MI_COURSE_ROOT="$root/source/course"
exec "${{MI_COURSE_PYTHON:-$root/venv/bin/python}}" -m mi_course.grading.gradescope {lesson} "$root"
"""

# What the course copy in the bundle holds, relative to the checkout (besides the lesson's folders).
PACKAGE_FILES = ("pyproject.toml", "course.sh", "README.md")


def _ignore(folder, names):
    return [n for n in names if n in ("__pycache__", ".ipynb_checkpoints") or n.endswith(".pyc")]


def build_bundle(lesson: str, to: Path) -> Path:
    """Write ``to/`` (``setup.sh``, ``run_autograder``, ``course/``) and ``to/<lesson>_gradescope.zip``
    holding them at its root, the file to upload; returns the zip. The bundle holds the lesson's
    hidden tests: give it to Gradescope only."""
    to = Path(to)
    if to.exists() and any(to.iterdir()):
        raise FileExistsError(f"{to} is not empty: choose a new folder for the bundle")
    checkout, package = course_root(), Path(__file__).resolve().parents[2]
    course = to / "course"
    shutil.copytree(package / "mi_course", course / "mi_course", ignore=_ignore)
    for name in PACKAGE_FILES:
        shutil.copy(package / name, course / name)
    shutil.copytree(checkout / "autograder", course / "autograder", ignore=_ignore)
    for part in ("solutions", "lessons"):
        shutil.copytree(checkout / part / lesson, course / part / lesson, ignore=_ignore)
    for name, text in (("setup.sh", SETUP), ("run_autograder", RUN.format(lesson=lesson))):
        (to / name).write_text(text)
        (to / name).chmod(0o755)
    bundle = to / f"{lesson}_gradescope.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in to.rglob("*") if p.is_file() and p != bundle):
            info = zipfile.ZipInfo.from_file(path, path.relative_to(to).as_posix())
            with open(path, "rb") as f:
                zf.writestr(info, f.read(), zipfile.ZIP_DEFLATED)
    return bundle


def _results(lesson: str, result, notebook: dict | None, submitted: list[str]) -> dict:
    """Gradescope's results.json: one test per graded cell, the status as the overall output."""
    failures = failure_lines(notebook)
    tests = []
    for number, (name, points) in enumerate(autograded_cells(lesson).items(), 1):
        score = float(result.scores.get(name, 0.0))
        tests.append({"name": name, "number": str(number), "score": score, "max_score": points,
                      "status": "passed" if score >= points else "failed",
                      "output": printable(failures.get(name, "")) if score < points else "",
                      "visibility": "visible"})
    output = f"{lesson}: {printable(result.status)}"
    if result.status == GRADED or result.status.startswith(GRADED + " ("):
        output += ". Written answers are graded by hand and are not part of this score."
    return {"score": sum(t["score"] for t in tests), "output": output, "tests": tests,
            "extra_data": {"submitted": submitted}}


def run(lesson: str, root: Path) -> dict:
    """Grade ``root/submission``'s notebook (``<lesson>.ipynb``, else its only .ipynb) and write
    ``root/results/results.json``; returns what was written."""
    root = Path(root)
    (root / "results").mkdir(parents=True, exist_ok=True)
    found = sorted(p for p in (root / "submission").rglob("*.ipynb")
                   if p.is_file() and not p.is_symlink() and ".ipynb_checkpoints" not in p.parts)
    named = [p for p in found if p.name == f"{lesson}.ipynb"]
    chosen = named if len(named) == 1 else found
    with tempfile.TemporaryDirectory(prefix="mi-course-gradescope-") as tmp:
        subs, work = Path(tmp) / "submissions", Path(tmp) / "work"
        if len(chosen) == 1:
            (subs / "student").mkdir(parents=True)
            shutil.copy(chosen[0], subs / "student" / f"{lesson}.ipynb")
            result = autograde(lesson, subs, work_dir=work)[0]
        else:
            result = StudentResult("student", f"error: submit exactly one notebook, {lesson}.ipynb (found "
                                   f"{len(found)}: {', '.join(p.name for p in found) or 'none'})")
        notebook = read_notebook(work / "autograded" / "student" / lesson / f"{lesson}.ipynb")
        results = _results(lesson, result, notebook, [p.relative_to(root / "submission").as_posix() for p in found])
    (root / "results" / "results.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    import sys

    lesson, root = sys.argv[1:3]
    print(json.dumps(run(lesson, Path(root)), indent=1))
