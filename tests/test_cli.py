"""The `mi-course` command: exit codes a student or an instructor can rely on."""

import subprocess
import sys

from conftest import ROOT
from minicourse import LESSON as MINI, mini_course

LESSON = "01_tokens_and_logits"


def run(*args, **env):
    import os

    return subprocess.run([sys.executable, "-m", "mi_course.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **env}, timeout=900)


def test_validate_exit_code_follows_the_tests(tmp_path):
    """On the mini lesson (the real ones are executed by tests/test_lessons.py): its solution
    passes, its released notebook fails naming the stub's error."""
    with mini_course(tmp_path) as course:
        solution, released = (course / folder / MINI / f"{MINI}.ipynb" for folder in ("solutions", "lessons"))
        ok = run("validate", str(solution))
        bad = run("validate", str(released))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "2 test cell(s) passed" in ok.stdout, ok.stdout
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAILED" in bad.stdout and "NotImplementedError" in bad.stdout


def test_doctor_names_the_fix_when_the_model_is_not_prepared(tmp_path):
    result = run("doctor", MI_COURSE_CACHE=str(tmp_path))
    assert result.returncode == 1
    assert "mi-course prepare" in result.stdout


def test_doctor_passes_on_a_working_install():
    result = run("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "' Paris'" in result.stdout


def test_unknown_lesson_is_a_clear_error(tmp_path):
    result = run("autograde", "99", str(tmp_path))
    assert result.returncode == 2 and "Unknown lesson" in result.stderr


def test_instructor_commands_reject_incomplete_requests(tmp_path):
    """Each mistake is one line that says what to do, exit code 2, before any work is done."""
    cases = {
        ("collect", "01", "--to", str(tmp_path / "out")): "either SOURCE",
        ("collect", "01", str(tmp_path), "--exchange", str(tmp_path), "--to", str(tmp_path / "out")): "not both",
        ("feedback", "01", "--work", str(tmp_path)): "--exchange ROOT",
        ("feedback", "01", "--work", str(tmp_path), "--to", str(tmp_path / "fb")): "no gradebook",
        ("export", "--work", str(tmp_path), "--to", str(tmp_path / "g.csv")): "no gradebook",
        ("autograde", "01", str(tmp_path), "--jobs", "0"): "at least 1",
        ("autograde", "01", str(tmp_path / "missing")): "no submissions folder",
    }
    for args, words in cases.items():
        result = run(*args)
        assert result.returncode == 2 and words in result.stderr, (args, result.stderr[-500:])


def test_default_work_folder_is_where_nbgrader_looks():
    """`mi-course autograde` without --work grades into the checkout's .nbgrader/: the folders
    `nbgrader formgrader` uses when run from the checkout (root nbgrader_config.py)."""
    from traitlets.config.loader import PyFileConfigLoader

    from mi_course.cli import _work
    from mi_course.grading.config import nbgrader_config

    by_hand = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config().CourseDirectory
    ours = nbgrader_config(ROOT, work=_work(type("Args", (), {"work": None}))).CourseDirectory
    for name in ("submitted_directory", "autograded_directory", "feedback_directory"):
        assert (ROOT / getattr(by_hand, name)).resolve() == ROOT.joinpath(getattr(ours, name)).resolve(), name
    assert ours.db_url == f"sqlite:///{(ROOT / by_hand.db_url.removeprefix('sqlite:///')).resolve()}"
    assert by_hand.course_id == ours.course_id


def test_terminal_report_escapes_ids_and_statuses(monkeypatch, capsys):
    """Issue 15, item 6: an id with a newline cannot print a fake row; escape sequences are shown,
    not sent to the terminal; each record is one line."""
    from mi_course import cli
    from mi_course.grading import autograde

    results = [autograde.StudentResult("x\nmallory 9.0 graded", "error: student id refused", {"a": 0.0}),
               autograde.StudentResult("\x1b[2Jred", "graded (note \x1b[31m)", {"a": 1.0}),
               autograde.StudentResult("alice", "graded", {"a": 1.0})]
    monkeypatch.setattr(autograde, "autograde", lambda *a, **k: results)
    assert cli.main(["autograde", "01", "subs"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    table, summary = out.split("\n\n")
    lines = table.splitlines()
    assert len(lines) == 1 + len(results)
    assert lines[1].startswith("x\\nmallory 9.0 graded ") and lines[2].startswith("\\x1b[2Jred ")
    assert not any(line.startswith("mallory") for line in out.splitlines())
    assert "  student id refused: 1 (x\\nmallory 9.0 graded)" in summary.splitlines()


def test_student_ids_that_are_patterns_or_paths_are_refused():
    from mi_course.grading.autograde import refused_id

    for good in ("alice", "a.b-c+d@uni.edu", "s_123", "O'Brien"[:1]):
        assert refused_id(good) is None, good
    for bad in ("victi[m]", "a*", "x?y", "-rf", "a..b", "x\ny", "\x1b[2J", "=1+1", "a b", "~root", "{a,b}"):
        assert refused_id(bad) and refused_id(bad).startswith("student id refused"), bad
