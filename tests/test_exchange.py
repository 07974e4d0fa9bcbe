"""The whole instructor-student path through an nbgrader exchange, for real, on one machine:
an instructor and two students, each with a home folder (and Jupyter folders) of their own,
sharing only the exchange folder. Every step is the command its user runs. nbgrader takes a
student's id from the OS account (on JupyterHub's ``jovyan`` images from $JUPYTERHUB_USER);
with one OS account here the students name themselves with nbgrader's ``--student``.

release -> fetch -> submit -> collect -> autograde (two at a time) -> feedback -> fetch_feedback
"""

import csv
import os
import subprocess
import sys
import time

import nbformat
import pytest

from mi_course.models import cache_dir
from minicourse import LESSON, mini_course

COURSE = "mi-course"


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    with mini_course(tmp_path_factory.mktemp("course")) as root:
        yield root


def _run(home, *command):
    """Run ``command`` with ``home`` as $HOME and Jupyter folders; returns its output, fails loudly."""
    env = {**os.environ, "HOME": str(home), "MI_COURSE_CACHE": str(cache_dir()),  # the model, prepared once
           "JUPYTER_DATA_DIR": str(home / ".local/share/jupyter"), "JUPYTER_CONFIG_DIR": str(home / ".jupyter")}
    home.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, cwd=home, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _nbgrader(user, home, step, exchange):
    """A student's side: nbgrader's own commands (what the Assignments tab runs)."""
    return _run(home, sys.executable, "-m", "nbgrader", step, LESSON, "--course", COURSE, f"--student={user}",
                f"--Exchange.root={exchange}")


def _mi_course(home, *args):
    return _run(home, sys.executable, "-m", "mi_course.cli", *map(str, args))


def _solve(notebook, solution):
    """Fill in every answer cell of the fetched ``notebook`` from the instructor's solution."""
    answers = {c.metadata.nbgrader["grade_id"]: c.source for c in nbformat.read(solution, 4).cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    nb = nbformat.read(notebook, 4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = answers[cell.metadata.nbgrader["grade_id"]]
    nbformat.write(nb, notebook)


@pytest.fixture(scope="module")
def journey(course, tmp_path_factory):
    base = tmp_path_factory.mktemp("exchange")
    exchange, teacher = base / "exchange", base / "home" / "instructor"
    students = {name: base / "home" / name for name in ("alice", "bob")}
    timings = {}

    def timed(step, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        timings[step] = timings.get(step, 0.0) + time.perf_counter() - start
        return out

    timed("release", _mi_course, teacher, "release", LESSON, "--to", course / "lessons", "--exchange", exchange)
    for name, home in students.items():
        timed("fetch", _nbgrader, name, home, "fetch_assignment", exchange)
    _solve(students["alice"] / LESSON / f"{LESSON}.ipynb", course / "solutions" / LESSON / f"{LESSON}.ipynb")
    for name, home in students.items():  # bob submits the notebook as he fetched it
        timed("submit", _nbgrader, name, home, "submit", exchange)
    submitted, work = teacher / "submitted", teacher / "grading"
    timed("collect", _mi_course, teacher, "collect", LESSON, "--exchange", exchange, "--to", submitted)
    timed("autograde", _mi_course, teacher, "autograde", LESSON, submitted, "--work", work, "--csv",
          teacher / "grades.csv", "--jobs", "2", "--cell-timeout", "60", "--wall", "120")
    timed("feedback", _mi_course, teacher, "feedback", LESSON, "--work", work, "--exchange", exchange)
    timed("export", _mi_course, teacher, "export", "--work", work, "--to", teacher / "export.csv")
    for name, home in students.items():
        timed("fetch_feedback", _nbgrader, name, home, "fetch_feedback", exchange)
    print("exchange journey timings (s):", {k: round(v, 1) for k, v in timings.items()})
    return {"exchange": exchange, "teacher": teacher, "students": students, "submitted": submitted}


def _rows(path):
    with open(path, newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


def test_release_reaches_the_exchange_without_solutions(journey):
    released = journey["exchange"] / COURSE / "outbound" / LESSON / f"{LESSON}.ipynb"
    text = released.read_text()
    assert "raise NotImplementedError" in text and "HIDDEN TESTS" not in text and "return 2 * x" not in text


def test_every_submission_is_collected_with_its_timestamp(journey):
    for name in journey["students"]:
        folder = journey["submitted"] / name / LESSON
        assert (folder / f"{LESSON}.ipynb").is_file() and (folder / "timestamp.txt").is_file(), name


@pytest.mark.parametrize("csv_name", ["grades.csv", "export.csv"])
def test_grades_follow_the_work(journey, csv_name):
    rows = _rows(journey["teacher"] / csv_name)
    assert sorted(rows) == ["Points Possible", "alice", "bob"]
    assert (float(rows["alice"]["ex1_double_test"]), float(rows["alice"]["ex2_answer_test"])) == (1.0, 2.0)
    assert (float(rows["bob"]["ex1_double_test"]), float(rows["bob"]["ex2_answer_test"])) == (0.0, 0.0)
    assert rows["alice"]["q3_written"] == "" and rows["bob"]["q3_written"] == "0.0"  # answered vs. stub
    assert (rows["alice"]["status"], rows["bob"]["status"]) == ("needs manual grading", "graded")


def test_each_student_fetches_their_own_feedback(journey):
    pages = {}
    for name, home in journey["students"].items():
        found = list((home / LESSON / "feedback").glob(f"*/{LESSON}.html"))
        assert len(found) == 1, f"{name} fetched {found}"
        pages[name] = found[0].read_text()
    # nbgrader's feedback page shows "Score: <got> / <max>" for the notebook.
    assert "3.0 / 4.0" in pages["alice"] and "0.0 / 4.0" in pages["bob"]
    assert "3.0 / 4.0" not in pages["bob"]
