"""`mi-course gradescope`: the bundle Gradescope builds its image from, graded end to end against a
fake /autograder root (the mini lesson): solution, blank release, tampered submission."""

import json
import os
import stat
import subprocess
import sys
import zipfile

import nbformat
import pytest

from mi_course.grading.gradescope import build_bundle

from minicourse import LESSON, mini_course

# Gradescope's results.json, as documented at https://gradescope-autograders.readthedocs.io/en/latest/specs/
TOP_KEYS = {"score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
            "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard"}
TEST_KEYS = {"score", "max_score", "status", "name", "name_format", "number", "output", "output_format", "tags",
             "visibility", "extra_data"}
VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}


def check_schema(results: dict) -> None:
    assert set(results) <= TOP_KEYS, set(results) - TOP_KEYS
    assert isinstance(results["score"], float) and isinstance(results.get("output", ""), str)
    for test in results["tests"]:
        assert set(test) <= TEST_KEYS, set(test) - TEST_KEYS
        assert isinstance(test["name"], str) and isinstance(test["output"], str)
        assert isinstance(test["score"], float) and isinstance(test["max_score"], float)
        assert 0 <= test["score"] <= test["max_score"]
        assert test["status"] in ("passed", "failed") and test["visibility"] in VISIBILITY
    assert results["score"] == sum(t["score"] for t in results["tests"])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    with mini_course(tmp_path_factory.mktemp("course")) as course:
        zipped = build_bundle(LESSON, tmp_path_factory.mktemp("bundle") / "out")
        yield zipped, course


def test_bundle_holds_the_scripts_at_its_root_and_the_course(bundle):
    zipped, _ = bundle
    with zipfile.ZipFile(zipped) as zf:
        names = set(zf.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
    assert {"setup.sh", "run_autograder"} <= names
    assert all(modes[n] & stat.S_IXUSR for n in ("setup.sh", "run_autograder"))
    assert {f"course/solutions/{LESSON}/{LESSON}.ipynb", f"course/lessons/{LESSON}/{LESSON}.ipynb",
            "course/pyproject.toml", "course/course.sh", "course/mi_course/grading/gradescope.py",
            "course/autograder/nbgrader_config.py"} <= names
    assert not any("__pycache__" in n for n in names)


def _grade(bundle, tmp_path, notebooks: dict) -> dict:
    """Unzip the bundle into a fake /autograder root, put ``notebooks`` in submission/, run run_autograder."""
    zipped, _ = bundle
    root = tmp_path / "autograder"
    with zipfile.ZipFile(zipped) as zf:
        zf.extractall(root / "source")
    (root / "source" / "run_autograder").chmod(0o755)
    (root / "submission").mkdir()
    for name, nb in notebooks.items():
        nbformat.write(nb, root / "submission" / name)
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "MI_COURSE_PYTHON": sys.executable}
    subprocess.run([root / "source" / "run_autograder"], env=env, check=True, capture_output=True, timeout=600)
    results = json.loads((root / "results" / "results.json").read_text())
    check_schema(results)
    return results


def _notebook(course, folder):
    return nbformat.read(course / folder / LESSON / f"{LESSON}.ipynb", 4)


def test_solution_earns_full_marks(bundle, tmp_path):
    results = _grade(bundle, tmp_path, {f"{LESSON}.ipynb": _notebook(bundle[1], "solutions")})
    assert results["score"] == 3.0
    assert [(t["name"], t["score"], t["max_score"], t["status"]) for t in results["tests"]] == [
        ("ex1_double_test", 1.0, 1.0, "passed"), ("ex2_answer_test", 2.0, 2.0, "passed")]
    assert "graded" in results["output"]


def test_blank_release_earns_zero_with_the_reason(bundle, tmp_path):
    results = _grade(bundle, tmp_path, {"anything.ipynb": _notebook(bundle[1], "lessons")})
    assert results["score"] == 0.0
    assert all(t["status"] == "failed" and t["output"] for t in results["tests"]), results["tests"]


def test_tampered_submission_is_repaired_and_hidden_tests_never_shown(bundle, tmp_path):
    nb = _notebook(bundle[1], "solutions")
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id == "ex2_answer_test":
            cell.source = "pass  # no test here"
        if grade_id == "ex2_answer":
            cell.source = "answer = 41"
    results = _grade(bundle, tmp_path, {f"{LESSON}.ipynb": nb})
    scores = {t["name"]: t["score"] for t in results["tests"]}
    assert scores == {"ex1_double_test": 1.0, "ex2_answer_test": 0.0}   # the restored test ran
    assert "restored" in results["output"] or "repaired" in results["output"], results["output"]
    assert "HIDDEN" not in json.dumps(results) and "int(answer) == 42" not in json.dumps(results)


def test_two_notebooks_are_an_error_not_a_guess(bundle, tmp_path):
    nb = _notebook(bundle[1], "solutions")
    results = _grade(bundle, tmp_path, {"a.ipynb": nb, "b.ipynb": nb})
    assert results["score"] == 0.0 and "exactly one notebook" in results["output"]
