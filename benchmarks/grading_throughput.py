"""Grading throughput: one lesson, N submissions, graded with --jobs 1 and with --jobs J, side by side.

    python benchmarks/grading_throughput.py [--lesson 01] [--submissions 20] [--jobs 2]

Half the submissions are the solution, half the untouched student notebook (each copy
differs by one harmless cell, so nothing is served from a cache). Prints wall time,
seconds per submission, submissions per hour and the speed-up, checks that both runs give
the same grades, and writes the table to benchmarks/grading_throughput.md. No thresholds.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nbformat  # noqa: E402

from mi_course.course import course_root, lesson_name  # noqa: E402
from mi_course.grading.autograde import autograde  # noqa: E402


def make_submissions(lesson: str, n: int, folder: Path) -> None:
    root = course_root()
    for i in range(n):
        kind = "solutions" if i % 2 == 0 else "lessons"
        nb = nbformat.read(root / kind / lesson / f"{lesson}.ipynb", as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(f"_submission = {i}"))
        (folder / f"student{i:03d}").mkdir(parents=True)
        nbformat.write(nb, folder / f"student{i:03d}" / f"{lesson}.ipynb")


def grade(lesson: str, submissions: Path, out: Path, jobs: int) -> tuple[float, dict]:
    start = time.perf_counter()
    autograde(lesson, submissions, out / "grades.csv", work_dir=out / "work", jobs=jobs)
    seconds = time.perf_counter() - start
    with open(out / "grades.csv", newline="") as f:
        rows = {r["student"]: (r["total"], r["status"]) for r in csv.DictReader(f)}
    return seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lesson", default="01")
    parser.add_argument("--submissions", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    lesson = lesson_name(args.lesson)
    with tempfile.TemporaryDirectory(prefix="mi-course-throughput-") as tmp:
        tmp = Path(tmp)
        make_submissions(lesson, args.submissions, tmp / "submissions")
        figures = {}
        for jobs in (1, args.jobs):
            seconds, rows = grade(lesson, tmp / "submissions", tmp / f"jobs{jobs}", jobs)
            figures[jobs] = (seconds, rows)
            print(f"--jobs {jobs}: {seconds:.0f} s for {args.submissions} submissions "
                  f"({seconds / args.submissions:.1f} s each, {3600 * args.submissions / seconds:.0f} per hour)")
            shutil.rmtree(tmp / f"jobs{jobs}" / "work")
    same = figures[1][1] == figures[args.jobs][1]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    base = figures[1][0]
    lines = [
        f"# Grading throughput: {lesson}, {args.submissions} submissions",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}. "
        f"Largest single process (a kernel with the model): {peak:.2f} GiB. "
        f"Same grades with every --jobs: {'yes' if same else 'NO'}.",
        "",
        "| --jobs | wall (s) | s per submission | submissions per hour | speed-up |",
        "|---:|---:|---:|---:|---:|",
    ]
    for jobs, (seconds, _) in figures.items():
        lines.append(f"| {jobs} | {seconds:.0f} | {seconds / args.submissions:.1f} | "
                     f"{3600 * args.submissions / seconds:.0f} | {base / seconds:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    (Path(__file__).parent / "grading_throughput.md").write_text(text)
    if not same:
        raise SystemExit("the runs disagree: see the grades above")


if __name__ == "__main__":
    main()
