"""The autograder against a corpus of hostile and broken submissions.

To stay fast the corpus is graded on a small model-free lesson built like lesson 1
(header, answer cells, test cells with hidden tests, a written question) in a
temporary course. tests/test_lessons.py grades every real lesson with the same code.
"""

import csv
import dataclasses
import hashlib
import json
import shutil
import textwrap

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from mi_course.grading.autograde import autograde
from mi_course.grading.sandbox import Limits, isolation_available
from mi_course.grading.tamper import Unreadable, read_submission

from conftest import ROOT
from minicourse import LESSON, mini_course

ISOLATED = isolation_available()[0]
LIMITS = Limits(cell_timeout=4, wall=25, cpu=12, memory=1 * 2**30, output=256 * 2**10)


def _insert_after(nb, grade_id, source):
    at = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    nb.cells.insert(at + 1, new_code_cell(source))
    return nb


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _hostile_code(course, submissions, work):
    """A cell that tries to read the hidden tests, the gradebook and other submissions, write
    outside its folder and reach the network; it prints what worked."""
    return textwrap.dedent(f"""
        import ctypes, os, socket
        _got = []
        for _p in [{str(course / "solutions")!r}, {str(work)!r}, {str(submissions)!r}]:
            if ctypes.CDLL(None).umount2(_p.encode(), 2) == 0:  # MNT_DETACH: undo the hiding?
                _got.append("unmounted " + _p)
        for _p in [{str(course / "solutions" / LESSON / f"{LESSON}.ipynb")!r}, {str(work / "gradebook.db")!r},
                   {str(submissions / "solution" / f"{LESSON}.ipynb")!r}]:
            try:
                open(_p, "rb").read(10); _got.append("read " + _p)
            except OSError:
                pass
        for _p in [{str(work / "PWNED")!r}, {str(submissions / "PWNED")!r}, {str(course / "PWNED")!r}]:
            try:
                open(_p, "w").write("x")  # may land in a private scratch copy: checked from outside
            except OSError:
                pass
        try:
            socket.create_connection(("1.1.1.1", 53), timeout=2); _got.append("network")
        except OSError:
            pass
        print("LEAKS:", _got)
        """)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    with mini_course(tmp_path_factory.mktemp("course")) as root:
        yield root


def _corpus(course, submissions, work) -> dict[str, bytes | nbformat.NotebookNode | None]:
    solution = lambda: nbformat.read(course / "solutions" / LESSON / f"{LESSON}.ipynb", 4)  # noqa: E731
    released = lambda: nbformat.read(course / "lessons" / LESSON / f"{LESSON}.ipynb", 4)  # noqa: E731
    cases = {"solution": solution(), "released": released()}
    cases["empty"] = b""
    cases["invalid_json"] = json.dumps(nbformat.writes(solution()))[:500].encode()
    cases["not_a_notebook"] = b'{"hello": "world"}'
    cases["wrong_lesson"] = (ROOT / "lessons" / "01_tokens_and_logits" / "01_tokens_and_logits.ipynb").read_bytes()
    cases["no_notebook"] = None
    cases["symlink_to_solution"] = str(course / "solutions" / LESSON / f"{LESSON}.ipynb")
    cases["os_exit"] = _insert_after(solution(), "ex1_double_test", "import os\nos._exit(1)")
    cases["infinite_loop"] = _insert_after(solution(), "ex1_double_test", "while True:\n    pass")
    cases["uninterruptible_loop"] = _insert_after(
        solution(), "ex1_double_test", "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass")
    cases["memory_bomb"] = _insert_after(
        solution(), "ex1_double_test", "_hog = []\nwhile True:\n    _hog.append(bytearray(64 * 2**20))")
    cases["gigantic_output"] = _insert_after(solution(), "ex1_double_test", "for _i in range(200):\n    print('x' * 100_000)")
    nb = released()
    _cell(nb, "ex1_double_test").source = "pass"
    cases["edited_test"] = nb
    nb = solution()
    nb.cells.remove(_cell(nb, "ex1_double_test"))
    cases["deleted_test"] = nb
    nb = released()
    nb.cells.remove(_cell(nb, "ex2_answer_test"))
    cases["deleted_test_stub"] = nb
    nb = released()
    cell = _cell(nb, "ex2_answer_test")
    del cell.metadata["nbgrader"]
    cell.source = "pass"
    cases["unmarked_test"] = nb
    nb = released()
    _cell(nb, "ex1_double_test").cell_type = "markdown"
    cases["changed_cell_type"] = nb
    nb = solution()
    nb.cells.remove(_cell(nb, "ex2_answer"))
    cases["deleted_answer"] = nb
    nb = released()
    dup = nbformat.from_dict(json.loads(json.dumps(_cell(solution(), "ex2_answer_test"))))
    dup.source, dup.id = "answer = 42", "dup"
    nb.cells.append(dup)
    cases["duplicated_graded_cell"] = nb
    nb = solution()
    for cell in nb.cells:
        del cell["id"]
    nb.nbformat_minor = 4
    cases["missing_cell_ids"] = nb
    nb = solution()
    _cell(nb, "ex2_answer").source = textwrap.dedent("""
        class _Liar(int):
            def __eq__(self, other):
                return True
        answer = _Liar(7)
        """)
    cases["lying_object"] = nb
    nb = solution()
    _cell(nb, "ex2_answer").source = "import builtins\nbuiltins.quit = None  # harmless, but could be worse\nanswer = 42"
    cases["patches_builtins"] = nb
    if ISOLATED:  # without isolation the probe would really write into the course
        cases["isolation_probe"] = _insert_after(solution(), "ex1_double_test", _hostile_code(course, submissions, work))
    return cases


def _write(submissions, cases):
    for student, content in cases.items():
        folder = submissions / student
        folder.mkdir(parents=True)
        if isinstance(content, str):  # a symbolic link to this path
            (folder / f"{LESSON}.ipynb").symlink_to(content)
        elif isinstance(content, bytes):
            (folder / f"{LESSON}.ipynb").write_bytes(content)
        elif content is not None:
            (folder / f"{LESSON}.ipynb").write_text(json.dumps(content, indent=1))
        else:
            (folder / "notes.txt").write_text("forgot the notebook")


def _digests(folder):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def graded(course, tmp_path_factory):
    base = tmp_path_factory.mktemp("grading")
    submissions, work = base / "submissions", base / "work"
    _write(submissions, _corpus(course, submissions, work))
    before = _digests(submissions)
    # Two graders at once: the rest of the module checks that nothing was lost or mixed up.
    results = autograde(LESSON, submissions, base / "out" / "grades.csv", work_dir=work, limits=LIMITS, jobs=2)
    return {"results": {r.student: r for r in results}, "before": before, "submissions": submissions,
            "work": work, "csv": base / "out" / "grades.csv", "base": base}


# student -> (expected scores of ex1_double_test and ex2_answer_test, words the status must contain)
EXPECTED = {
    "solution": ((1, 2), ["graded"]),
    "released": ((0, 0), ["graded"]),
    "empty": ((0, 0), ["error: empty file"]),
    "invalid_json": ((0, 0), ["error: invalid JSON"]),
    "not_a_notebook": ((0, 0), ["error: not a Jupyter notebook"]),
    "wrong_lesson": ((0, 0), ["error: not a notebook of lesson 01_mini"]),
    "no_notebook": ((0, 0), ["error: no single notebook"]),
    "symlink_to_solution": ((0, 0), ["error: the submission is a symbolic link"]),
    "os_exit": ((1, 0), ["the kernel died", "cell"]),
    "infinite_loop": ((1, 2), ["timed out after 4 s"]),
    "uninterruptible_loop": ((1, 0), ["timed out", "kernel"]),
    "memory_bomb": ((1, 2), ["memory limit hit"]),
    "gigantic_output": ((1, 2), ["output over 256 KiB truncated"]),
    "edited_test": ((0, 0), ["edited test cell ex1_double_test (source; restored)"]),
    "deleted_test": ((1, 2), ["deleted test cell ex1_double_test (re-inserted)"]),
    "deleted_test_stub": ((0, 0), ["deleted test cell ex2_answer_test (re-inserted)"]),
    "unmarked_test": ((0, 0), ["deleted test cell ex2_answer_test (re-inserted)"]),
    "changed_cell_type": ((0, 0), ["edited test cell ex1_double_test (type code->markdown"]),
    "deleted_answer": ((1, 0), ["deleted graded cell ex2_answer"]),
    "duplicated_graded_cell": ((0, 0), ["duplicated graded cell ex2_answer_test"]),
    "missing_cell_ids": ((1, 2), ["cell(s) without a cell id"]),
    "lying_object": ((1, 0), ["graded"]),
    # Scored as usual (a patch could subvert the tests sharing its kernel), flagged for a human.
    "patches_builtins": ((1, 2), ["suspicious code to review by hand: patches builtins in cell"]),
}
if ISOLATED:
    EXPECTED["isolation_probe"] = ((1, 2), ["graded"])


@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_corpus_case(graded, student):
    result = graded["results"][student]
    (ex1, ex2), words = EXPECTED[student]
    assert (result.scores["ex1_double_test"], result.scores["ex2_answer_test"]) == (ex1, ex2), result.status
    for word in words:
        assert word in result.status, result.status
    if result.status.startswith("graded"):
        assert result.feedback and "<html" in open(result.feedback).read(2000).lower()


def test_clean_submissions_have_a_plain_status(graded):
    assert graded["results"]["solution"].status == "graded"
    assert graded["results"]["lying_object"].status == "graded"


def test_batch_completes_with_one_row_per_student(graded):
    with open(graded["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["student", "lesson", "ex1_double_test", "ex2_answer_test", "q3_written", "total",
                             "status"]
    assert sorted(r["student"] for r in rows) == sorted(EXPECTED)
    for row in rows:
        result = graded["results"][row["student"]]
        assert row["status"] == result.status
        assert [float(row["ex1_double_test"]), float(row["ex2_answer_test"])] == list(EXPECTED[row["student"]][0])
        # The written answer: 0 when left as the stub, empty (to grade by hand) when answered.
        assert row["q3_written"] == {"solution": "", "released": "0.0"}.get(row["student"], row["q3_written"])


def test_parallel_graders_keep_the_gradebook_whole(graded):
    """Graded two at a time: exactly one gradebook submission per gradable student, none for the others."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{graded['work'] / 'gradebook.db'}") as gradebook:
        submitted = sorted(s.student.id for s in gradebook.find_assignment(LESSON).submissions)
    gradable = sorted(s for s, r in graded["results"].items() if r.status.startswith("graded"))
    assert submitted == gradable


def test_submissions_are_untouched(graded):
    assert _digests(graded["submissions"]) == graded["before"]


@pytest.mark.skipif(not ISOLATED, reason="user namespaces unavailable here: the kernel is not isolated")
def test_kernel_is_isolated(graded, course):
    nb = nbformat.read(graded["work"] / "autograded" / "isolation_probe" / LESSON / f"{LESSON}.ipynb", 4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "LEAKS: []" in printed, printed
    for folder in (graded["work"], graded["submissions"], course):
        assert not (folder / "PWNED").exists()


def test_regrading_is_idempotent_and_resumes(graded, course):
    """A second run over the same work folder reuses every stored row; a forced re-grade of a
    few students gives the same rows again."""
    again = autograde(LESSON, graded["submissions"], work_dir=graded["work"], limits=LIMITS)
    assert {r.student: (r.status, r.scores) for r in again} == {
        s: (r.status, r.scores) for s, r in graded["results"].items()}
    few = graded["base"] / "few"
    for student in ("solution", "deleted_test", "empty"):
        shutil.copytree(graded["submissions"] / student, few / student)
    forced = autograde(LESSON, few, work_dir=graded["work"], limits=LIMITS, force=True)
    assert {r.student: (r.status, r.scores) for r in forced} == {
        r.student: (graded["results"][r.student].status, graded["results"][r.student].scores) for r in forced}


def test_real_lesson_tampering_is_repaired(tmp_path, monkeypatch):
    """Lesson 1 itself: an edited test cell is restored (with its hidden tests, from the
    gradebook), a deleted one re-inserted; the stubbed exercise earns nothing."""
    monkeypatch.setenv("MI_COURSE_ROOT", str(ROOT))
    lesson = "01_tokens_and_logits"
    nb = nbformat.read(ROOT / "solutions" / lesson / f"{lesson}.ipynb", 4)
    released = nbformat.read(ROOT / "lessons" / lesson / f"{lesson}.ipynb", 4)
    _cell(nb, "ex1_tokens_test").source = "pass"
    _cell(nb, "ex2_logits").source = _cell(released, "ex2_logits").source
    nb.cells.remove(_cell(nb, "ex2_logits_test"))
    (tmp_path / "subs" / "mallory").mkdir(parents=True)
    nbformat.write(nb, tmp_path / "subs" / "mallory" / f"{lesson}.ipynb")
    [result] = autograde(lesson, tmp_path / "subs", limits=Limits(cell_timeout=120, wall=600))
    assert "edited test cell ex1_tokens_test (source; restored)" in result.status
    assert "deleted test cell ex2_logits_test (re-inserted)" in result.status
    assert result.scores["ex1_tokens_test"] == 1 and result.scores["ex2_logits_test"] == 0, result.status


@pytest.mark.parametrize("data, reason", [
    (b"   ", "empty file"),
    (b"\xff\xfe", "invalid JSON"),
    (b'{"cells": [], "nbformat": 5}', "unsupported notebook format"),
    (b'{"cells": [{"cell_type": "spreadsheet", "source": ""}], "nbformat": 4, "nbformat_minor": 5, '
     b'"metadata": {}}', "malformed notebook"),
    (b"x" * 2000, "too large"),
])
def test_unreadable_submissions(data, reason):
    with pytest.raises(Unreadable, match=reason):
        read_submission(data, max_bytes=1000)


@pytest.mark.parametrize("source, flagged", [
    ("import builtins\nbuiltins.int = lambda *a: 42", "patches builtins"),
    ("import sys\nsys.modules['torch'] = None", "edits sys.modules"),
    ("torch.allclose = lambda *a, **k: True", "rebinds a library function"),
    ("def as_float(x, *a):\n    return 1.0", "redefines a check"),
    ("import sys\nprint('google.colab' in sys.modules)\nx = torch.zeros(3)\nif torch.x == 3: pass", None),
])
def test_suspicious_code_is_flagged(source, flagged):
    from mi_course.grading.tamper import suspicious

    notes = suspicious(new_notebook(cells=[new_code_cell(source)]))
    assert notes == ([f"suspicious code to review by hand: {flagged} in cell 1"] if flagged else [])


def test_resubmissions_replace_what_was_graded(course, tmp_path):
    """The exchange's layout with a stray notebook next to the lesson's; asking for feedback later is
    not answered from the cache; an ungradable resubmission removes the earlier grade everywhere;
    nbgrader's own `export` (no results folder given) still reads the grader's statuses."""
    from nbgrader.api import Gradebook

    from mi_course.grading.exchange import feedback
    from mi_course.grading.export import ExerciseCsvExport

    subs, work = tmp_path / "subs", tmp_path / "work"
    folder = subs / "alice" / LESSON
    folder.mkdir(parents=True)
    (folder / f"{LESSON}.ipynb").write_bytes((course / "solutions" / LESSON / f"{LESSON}.ipynb").read_bytes())
    (folder / "Untitled.ipynb").write_text("{}")
    (first,) = autograde(LESSON, subs, work_dir=work, limits=LIMITS)
    assert (first.status, first.total, first.feedback) == ("graded", 3.0, None)
    (again,) = autograde(LESSON, subs, work_dir=work, limits=LIMITS, feedback_dir=tmp_path / "fb")
    assert again.feedback and (tmp_path / "fb" / "alice" / f"{LESSON}.html").is_file()

    with Gradebook(f"sqlite:///{work / 'gradebook.db'}") as gradebook:
        ExerciseCsvExport(to=str(tmp_path / "by_nbgrader.csv")).export(gradebook)
    with open(tmp_path / "by_nbgrader.csv", newline="") as f:
        assert [(r["student"], r["total"], r["status"]) for r in csv.DictReader(f)] == [("alice", "3.0", "graded")]
    sent = feedback(LESSON, work, exchange=tmp_path / "exchange", to=tmp_path / "lms")
    assert sent == {"alice": f"copied to {tmp_path / 'lms' / 'alice'}/, NOT released: not submitted through "
                             "the exchange"}

    (folder / f"{LESSON}.ipynb").write_bytes(b"")
    (empty,) = autograde(LESSON, subs, work_dir=work, limits=LIMITS)
    assert (empty.status, empty.total) == ("error: empty file", 0.0)
    with Gradebook(f"sqlite:///{work / 'gradebook.db'}") as gradebook:
        assert not gradebook.find_assignment(LESSON).submissions
    for step in ("submitted", "autograded", "feedback"):
        assert not (work / step / "alice" / LESSON).exists(), step


def test_parallel_kernels_run_side_by_side(course, tmp_path):
    """With --jobs 2 the two students' kernels run at the same time: each notebook records when its
    cell ran, and the two intervals overlap (if a grader kept the gradebook lock while its kernel
    ran, they could not)."""
    solution = nbformat.read(course / "solutions" / LESSON / f"{LESSON}.ipynb", 4)
    _insert_after(solution, "ex2_answer_test", 'import time\nprint("RAN", time.time())\ntime.sleep(5)\n'
                                               'print("RAN", time.time())')
    for student in ("ann", "ben"):
        (tmp_path / "subs" / student).mkdir(parents=True)
        nbformat.write(solution, tmp_path / "subs" / student / f"{LESSON}.ipynb")
    limits = dataclasses.replace(LIMITS, cell_timeout=20, wall=60)
    results = autograde(LESSON, tmp_path / "subs", work_dir=tmp_path / "work", limits=limits, jobs=2)
    assert [(r.student, r.total) for r in results] == [("ann", 3.0), ("ben", 3.0)], [r.status for r in results]
    spans = []
    for student in ("ann", "ben"):
        nb = nbformat.read(tmp_path / "work" / "autograded" / student / LESSON / f"{LESSON}.ipynb", 4)
        printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        spans.append([float(line.split()[1]) for line in printed.splitlines() if line.startswith("RAN")])
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, f"the kernels ran one after the other: {spans}"
