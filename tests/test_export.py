"""Grades a gradebook can import: collected from a Canvas-style zip, graded on the mini lesson, exported."""

import csv
import zipfile

import nbformat
import pytest

from mi_course.grading.autograde import autograde
from mi_course.grading.collect import collect
from mi_course.grading.export import export_csv

from minicourse import LESSON, mini_course

TRANSFORMER = "get_ipython().input_transformers_post.append(lambda lines: lines)"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """alice: right, her written answer waits for a human; bob: the released stubs; carol: an empty
    file; dave: right, written answer marked 0.5 by hand; erin: held for review; frank: no LMS id."""
    from nbgrader.api import Gradebook

    with mini_course(tmp_path_factory.mktemp("course")) as course:
        solution = (course / "solutions" / LESSON / f"{LESSON}.ipynb").read_text()
        released = (course / "lessons" / LESSON / f"{LESSON}.ipynb").read_text()
        held = nbformat.reads(solution, 4)
        held.cells.append(nbformat.v4.new_code_cell(TRANSFORMER))
        files = {"alice_12345_901_mini.ipynb": solution, "bob_22222_902_mini.ipynb": released,
                 "carol_33333_903_mini.ipynb": "", "dave_44444_904_mini.ipynb": solution,
                 "erin_55555_905_mini.ipynb": nbformat.writes(held), "frank_mini.ipynb": released}
        with zipfile.ZipFile(course / "canvas.zip", "w") as archive:
            for name, text in files.items():
                archive.writestr(name, text)
        subs, work = course / "subs", course / "work"
        assert not collect(LESSON, course / "canvas.zip", subs).refused
        autograde(LESSON, subs, course / "autograde.csv", work_dir=work, jobs=2)
        with Gradebook(f"sqlite:///{work / 'gradebook.db'}") as gradebook:
            grade = gradebook.find_grade("q3_written", LESSON, LESSON, "dave")
            grade.manual_score, grade.needs_manual_grade = 0.5, False
            gradebook.db.commit()
        yield {"work": work, "subs": subs, "autograde_csv": course / "autograde.csv"}


def _read(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_plain_csv_blanks_what_was_not_graded(graded, tmp_path):
    rows = _read(export_csv(graded["work"], tmp_path / "g.csv", [LESSON], submissions=[graded["subs"]]))
    assert rows[0] == ["student", "lms_id", "lesson", "ex1_double_test", "ex2_answer_test", "q3_written", "total",
                       "pending_manual", "status"]
    assert rows[1] == ["Points Possible", "", LESSON, "1.0", "2.0", "1.0", "4.0", "", ""]
    by_student = {r[0]: r[1:] for r in rows[2:]}
    assert by_student["alice"] == ["12345", LESSON, "1.0", "2.0", "", "3.0", "1.0", "needs manual grading"]
    assert by_student["bob"] == ["22222", LESSON, "0.0", "0.0", "0.0", "0.0", "0.0", "graded"]  # stub: 0
    assert by_student["carol"][:7] == ["33333", LESSON, "", "", "", "", ""]
    assert by_student["carol"][7].startswith("error")
    assert by_student["dave"] == ["44444", LESSON, "1.0", "2.0", "0.5", "3.5", "0.0", "graded"]
    assert by_student["erin"][:7] == ["55555", LESSON, "", "", "", "", "4.0"]
    assert by_student["erin"][7].startswith("held for manual review")
    assert by_student["frank"][:2] == ["", LESSON]
    assert len(rows) == 2 + 6


def test_autograde_csv_carries_the_lms_ids(graded):
    rows = {r[0]: r[1] for r in _read(graded["autograde_csv"])[2:]}
    assert rows == {"alice": "12345", "bob": "22222", "carol": "33333", "dave": "44444", "erin": "55555",
                    "frank": ""}


def test_canvas_csv_has_the_import_header_and_points_row(graded, tmp_path):
    path = export_csv(graded["work"], tmp_path / "canvas.csv", [LESSON], fmt="canvas",
                      submissions=[graded["subs"]], canvas_assignments={LESSON: "777"})
    rows = _read(path)
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", f"{LESSON} (777)"]
    assert rows[1] == ["Points Possible", "", "", "", "", "4.0"]
    # a grade only where nothing is left to grade: an empty cell leaves Canvas's grade alone
    assert rows[2:] == [["alice", "12345", "", "", "", ""], ["bob", "22222", "", "", "", "0.0"],
                        ["carol", "33333", "", "", "", ""], ["dave", "44444", "", "", "", "3.5"],
                        ["erin", "55555", "", "", "", ""], ["frank", "", "", "frank", "", "0.0"]]
    plain_title = _read(export_csv(graded["work"], tmp_path / "c2.csv", [LESSON], fmt="canvas"))[0][-1]
    assert plain_title == LESSON


def test_cli_export_formats_and_mistakes(graded, tmp_path, capsys):
    from mi_course.cli import main

    work, subs = str(graded["work"]), str(graded["subs"])
    assert main(["export", LESSON, "--work", work, "--to", str(tmp_path / "p.csv")]) == 0
    assert _read(tmp_path / "p.csv")[0][:2] == ["student", "lms_id"]  # plain stays the default
    assert main(["export", LESSON, "--work", work, "--to", str(tmp_path / "c.csv"), "--format", "canvas",
                 "--submissions", subs, "--canvas-assignment", "01=777"]) == 0
    assert _read(tmp_path / "c.csv")[0][-1] == f"{LESSON} (777)"
    mistakes = {("--canvas-assignment", "01=abc", "--format", "canvas"): "must be a number",
                ("--canvas-assignment", "01=777"): "--format canvas",
                ("--canvas-assignment", "777", "--format", "canvas"): "LESSON=ID",
                ("--submissions", str(tmp_path / "missing")): "no submissions folder"}
    capsys.readouterr()
    for args, words in mistakes.items():
        assert main(["export", LESSON, "--work", work, "--to", str(tmp_path / "x.csv"), *args]) == 2, args
        assert words in capsys.readouterr().err, args
