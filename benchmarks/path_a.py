"""The instructor guide's Path A, timed: a class's LMS download graded end to end with the CLI.

    python benchmarks/path_a.py [--lesson 01] [--students 20] [--jobs 2]

Builds a Canvas-style download (``<name>_<user id>_<file id>_<file>.ipynb`` in a .zip; half
the students hand in the solution, half the untouched release, one student twice), then runs
each step of autograder/README.md's Path A as its own ``mi-course`` process, as an instructor
would: collect, autograde --csv, grade-written (every written answer marked from a file),
feedback --to, export --format canvas, report --html. Prints the wall time of each step and
writes the table to benchmarks/path_a.md. No thresholds.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nbformat  # noqa: E402

from mi_course.course import course_root, lesson_name  # noqa: E402

OUT = Path(__file__).resolve().parent / "path_a.md"


def _download(lesson: str, students: int, folder: Path) -> Path:
    """A Canvas zip: student i hands in the solution (even i) or the release (odd i); student 0 twice."""
    root = course_root()
    solution = nbformat.read(root / "solutions" / lesson / f"{lesson}.ipynb", 4)
    released = nbformat.read(root / "lessons" / lesson / f"{lesson}.ipynb", 4)
    archive = folder / "lms-download.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(students):
            nb = nbformat.from_dict(solution if i % 2 == 0 else released)
            nb.cells.append(nbformat.v4.new_code_cell(f"# student {i}"))  # every copy differs
            zf.writestr(f"student{i:03d}_{10000 + i}_{900 + i}_{lesson}.ipynb", nbformat.writes(nb))
        zf.writestr(f"student000_10000_{900 + students}_{lesson}-1.ipynb", nbformat.writes(solution))
    return archive


def _marks(lesson: str, students: int, path: Path) -> Path:
    """Every written answer of every student marked 1 point."""
    nb = nbformat.read(course_root() / "solutions" / lesson / f"{lesson}.ipynb", 4)
    written = [c.metadata.nbgrader["grade_id"] for c in nb.cells
               if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("grade")]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "cell", "score", "comment"])
        for i in range(students):
            writer.writerows([f"student{i:03d}", cell, 1, "benchmark"] for cell in written)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lesson", default="01")
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", default=None, metavar="DIR", help="run in DIR (new) and keep what the steps wrote")
    args = parser.parse_args()
    lesson = lesson_name(args.lesson)
    cli = [sys.executable, "-m", "mi_course.cli"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mi-course-path-a-") as scratch:
        tmp = Path(args.keep).resolve() if args.keep else Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        os.chdir(tmp)  # the guide runs outside the checkout
        archive = _download(lesson, args.students, tmp)
        marks = _marks(lesson, args.students, tmp / "marks.csv")
        steps = [
            ("collect", ["collect", lesson, str(archive), "--to", "submissions"]),
            (f"autograde --jobs {args.jobs} --csv", ["autograde", lesson, "submissions", "--work", "grading",
                                                      "--csv", "grades.csv", "--jobs", str(args.jobs)]),
            ("grade-written (marks file)", ["grade-written", lesson, "--work", "grading", "--from", str(marks)]),
            ("feedback --to", ["feedback", lesson, "--work", "grading", "--to", "feedback"]),
            ("export --format canvas", ["export", lesson, "--work", "grading", "--submissions", "submissions",
                                        "--format", "canvas", "--to", "canvas.csv"]),
            ("report --html", ["report", lesson, "--work", "grading", "--html", "report.html"]),
        ]
        for name, command in steps:
            start = time.perf_counter()
            done = subprocess.run(cli + command, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            status = "ok" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-200:]}"
            rows.append((name, seconds, status))
            print(f"{name:<32} {seconds:8.1f} s  {status}", flush=True)
    load = os.getloadavg()[0]
    table = "\n".join(f"| {name} | {seconds:.1f} s | {status} |" for name, seconds, status in rows)
    OUT.write_text(
        f"# Path A, timed\n\n`python benchmarks/path_a.py --lesson {args.lesson} --students {args.students} "
        f"--jobs {args.jobs}` on {platform.platform()}, {os.cpu_count()} cores, load average {load:.1f} at the "
        f"end. Each step is its own `mi-course` process (start-up included); {args.students} students, half "
        f"the solution, half the untouched release, one of them submitted twice.\n\n"
        f"| step | wall | result |\n|---|---:|---|\n{table}\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
