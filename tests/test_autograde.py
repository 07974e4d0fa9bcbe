"""The autograder against a corpus of hostile and broken submissions.

To stay fast the corpus is graded on a small model-free lesson built like lesson 1
(header, answer cells, test cells with hidden tests, a written question) in a
temporary course. tests/test_lessons.py grades every real lesson with the same code.
"""

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from mi_course.grading.autograde import autograde
from mi_course.grading.sandbox import Limits, isolation_available
from mi_course.grading.integrity import Unreadable, read_submission

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


WRONG = "def double(x):\n    return 0\nanswer = 'x'\n"


def _attack(released, code):
    """The released notebook (stubs: nothing earned) with wrong answers and ``code`` before the tests."""
    return _insert_after(released, "ex1_double", WRONG + textwrap.dedent(code))


# Code that changes how later cells run (issue 15, item 4): each would pass every test it reaches.
TAMPERING = {
    # the issue's own: an input transformer turning the grader's cells into `pass`
    "input_transformer": """
        get_ipython().input_transformers_post.append(
            lambda lines: ["pass\\n"] if any("HIDDEN" in l or "assert" in l or "_mi_grader" in l for l in lines)
            else lines)
        """,
    # the same, spelled so that no scan of the source can see it
    "obfuscated_transformer": """
        _ip = get_ipython()
        getattr(_ip, "input_" + "transformers_post").append(
            lambda lines: ["pass\\n"] if any("assert" in l or "grader" in l for l in lines) else lines)
        """,
    # a transformer that forges the grader's verdict line from the nonce it can read
    "forged_verdict": """
        import re as _re
        def _forge(lines):
            text = "".join(lines)
            m = _re.search(r"run\\('([0-9a-f]+)'", text)
            return [f"print('\\\\nMI-GUARD {m.group(1)} pass  ' + '0' * 64)\\n"] if m else lines
        getattr(get_ipython(), "input_" + "transformers_post").append(_forge)
        """,
    # the student's function, called by the test, installs a tracer mid-test
    "tracer_in_answer": """
        import sys as _sys
        def double(x):
            getattr(_sys, "set" + "trace")(lambda *a: None)
            return 2 * x if x != 3 else 6
        """,
    # the namespace's own builtins replaced: `type(answer) is int` would hold for anything
    "namespace_builtins": """
        _b = dict(vars(__import__("bu" + "iltins")))
        _b["type"] = lambda x: int
        globals()["__bu" + "iltins__"] = _b
        """,
    # an IPython event that fixes the answer just before each cell
    "event_callback": """
        def _fix(*a):
            globals()["answer"] = 42
            globals()["double"] = lambda x: 2 * x
        getattr(get_ipython(), "eve" + "nts").register("pre_run_cell", _fix)
        """,
    # a thread that keeps fixing the answer
    "thread_flipper": """
        import threading as _t, time as _time
        def _flip():
            while True:
                globals()["answer"] = 42
                _time.sleep(0.001)
        _t.Thread(target=_flip, daemon=True).start()
        _time.sleep(0.1)
        """,
    # a library function replaced by one defined in a cell
    "library_monkeypatch": """
        import operator as _op
        _op.eq = lambda a, b: True
        """,
}


def _planting_code(work, canary):
    """A cell that plants links where the grader writes or reads after the kernel exits (its
    working folder, its socket folder, the connection file), aimed at the gradebook and a canary."""
    return textwrap.dedent(f"""
        import os
        _targets = {{"01_mini.ipynb": {str(work / "gradebook.db")!r}, "leak.html": {str(work / "gradebook.db")!r},
                     "01_mini.html": {str(canary)!r}}}
        for _folder in (os.getcwd(), os.path.dirname(os.getcwd())):
            for _name, _target in _targets.items():
                try:
                    os.symlink(_target, os.path.join(_folder, _name))
                except OSError:
                    pass
            for _name in os.listdir(_folder):
                if _name.endswith(".json"):  # the connection file: replaced by a link
                    try:
                        os.unlink(os.path.join(_folder, _name)); os.symlink({str(canary)!r}, os.path.join(_folder, _name))
                    except OSError:
                        pass
        print("PLANTED", sorted(os.listdir(".")))
        """)


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
        print("UID", os.getuid(), open("/proc/self/uid_map").read().split())
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
        cases["planted_links"] = _insert_after(solution(), "ex1_double_test",
                                               _planting_code(work, submissions.parent / "canary.txt"))
        for name, code in TAMPERING.items():
            cases[name] = _attack(released(), code)
    # Links anywhere on the path to the notebook (item 2): never graded.
    cases["linked_lesson_dir"] = ("dirlink", str(course / "solutions" / LESSON))
    cases["linked_other_student"] = ("dirlink", str(submissions / "solution"))
    cases["hardlink_to_solution"] = ("hardlink", str(course / "solutions" / LESSON / f"{LESSON}.ipynb"))
    # Ids nbgrader or a shell would read as patterns or paths, or that would lie in a CSV or a terminal
    # (items 3, 6): refused before anything runs, and "solution" keeps its row.
    for name in REFUSED_IDS:
        cases[name] = released()
    # Output through channels other than print (item 5).
    cases["display_flood"] = _insert_after(solution(), "ex1_double_test", textwrap.dedent("""
        from IPython.display import display, update_display
        for _i in range(200):
            display({"text/plain": "x"}, raw=True, display_id="same")
        for _i in range(5):
            update_display({"text/plain": "y" * 200_000}, raw=True, display_id="same")
        """))
    cases["raw_fd_flood"] = _insert_after(solution(), "ex1_double_test", textwrap.dedent("""
        import os, sys
        for _i in range(4):
            os.write(1, b"o" * 200_000)
            os.write(2, b"e" * 200_000)
            sys.stderr.write("s" * 200_000)
        """))
    # A hidden test that fails: its feedback shows the failure, not the hidden code (item 8).
    nb = solution()
    _cell(nb, "ex2_answer").source = "answer = 7"
    cases["fails_hidden_test"] = nb
    # A timed-out cell that swallows the interrupt (item 10).
    cases["swallows_interrupt"] = _insert_after(solution(), "ex1_double_test", textwrap.dedent("""
        while True:
            try:
                while True:
                    pass
            except KeyboardInterrupt:
                pass
        """))
    return cases


REFUSED_IDS = ["solutio[n]", "-rf", "a*", "x?y", "a..b", '=HYPERLINK("evil.example","9.0")', "x\nmallory 9.0 graded",
               "\x1b[2Jred"]


def _write(submissions, cases):
    for student, content in cases.items():
        folder = submissions / student
        folder.mkdir(parents=True)
        if isinstance(content, str):  # a symbolic link to this path
            (folder / f"{LESSON}.ipynb").symlink_to(content)
        elif isinstance(content, tuple) and content[0] == "dirlink":  # the lesson folder is a link
            (folder / LESSON).symlink_to(content[1], target_is_directory=True)
        elif isinstance(content, tuple):  # a hard link
            os.link(content[1], folder / f"{LESSON}.ipynb")
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
    (base / "canary.txt").write_text("the canary")
    before = _digests(submissions)
    course_before = _digests(course)
    # Two graders at once: the rest of the module checks that nothing was lost or mixed up.
    results = autograde(LESSON, submissions, base / "out" / "grades.csv", work_dir=work, limits=LIMITS, jobs=2)
    return {"results": {r.student: r for r in results}, "before": before, "submissions": submissions,
            "work": work, "csv": base / "out" / "grades.csv", "base": base, "course_before": course_before}


# student -> (expected scores of ex1_double_test and ex2_answer_test, words the status must contain)
EXPECTED = {
    "solution": ((1, 2), ["graded"]),
    "released": ((0, 0), ["graded"]),
    "empty": ((0, 0), ["error: empty file"]),
    "invalid_json": ((0, 0), ["error: invalid JSON"]),
    "not_a_notebook": ((0, 0), ["error: not a Jupyter notebook"]),
    "wrong_lesson": ((0, 0), ["error: not a notebook of lesson 01_mini"]),
    "no_notebook": ((0, 0), ["error: no single notebook"]),
    "symlink_to_solution": ((0, 0), ["error: the submission is not a plain file", "symbolic link"]),
    "linked_lesson_dir": ((0, 0), ["error: the submission is not a plain file", "symbolic link"]),
    "linked_other_student": ((0, 0), ["error: the submission is not a plain file", "symbolic link"]),
    "hardlink_to_solution": ((0, 0), ["error: the submission is not a plain file", "hard links"]),
    "display_flood": ((1, 2), ["output over 256 KiB truncated"]),
    "raw_fd_flood": ((1, 2), ["output over 256 KiB truncated"]),
    "fails_hidden_test": ((1, 0), ["graded"]),
    "swallows_interrupt": ((1, 0), ["timed out after 4 s and did not stop when interrupted", "rest not run"]),
    "os_exit": ((1, 0), ["the kernel died", "cell"]),
    "infinite_loop": ((1, 2), ["timed out after 4 s"]),
    "uninterruptible_loop": ((1, 0), ["timed out after 4 s and did not stop when interrupted", "rest not run"]),
    # On a busy machine the bomb may reach the cell timeout before the memory limit: either kind.
    "memory_bomb": ((1, 2), [("memory limit hit", "timed out after 4 s")]),
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
    # Scored as usual (IPython restores what it changed), flagged for a human.
    "patches_builtins": ((1, 2), ["suspicious code to review by hand: patches builtins in cell"]),
    **{name: ((0, 0), ["error: student id refused"]) for name in REFUSED_IDS},
}
if ISOLATED:
    # it uses ctypes (to try to unmount what hides the secrets): held for a human
    EXPECTED["isolation_probe"] = ((0, 0), ["held for manual review", "uses ctypes"])
    EXPECTED["planted_links"] = ((1, 2), ["graded"])
    # Changing how later cells run: nothing earned automatically, held for a human, with the reason.
    EXPECTED.update({name: ((0, 0), ["held for manual review"]) for name in TAMPERING})
    EXPECTED["input_transformer"][1].append("changes how later cells run")
    EXPECTED["obfuscated_transformer"][1].extend(["the grader's check did not report",
                                                  "IPython input_transformers_post changed"])
    EXPECTED["forged_verdict"][1].append("check line(s) the grader did not write")
    EXPECTED["tracer_in_answer"][1].append("sys.settrace by student code")
    EXPECTED["namespace_builtins"][1].append("the namespace's builtins changed")
    EXPECTED["event_callback"][1].append("IPython event callbacks changed (pre_run_cell)")
    EXPECTED["thread_flipper"][1].append("threads running student code")
    EXPECTED["library_monkeypatch"][1].append("library functions replaced: operator.eq")


@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_corpus_case(graded, student):
    result = graded["results"][student]
    (ex1, ex2), words = EXPECTED[student]
    assert (result.scores["ex1_double_test"], result.scores["ex2_answer_test"]) == (ex1, ex2), result.status
    for word in words:
        assert any(w in result.status for w in ((word,) if isinstance(word, str) else word)), result.status
    if result.status.startswith(("graded", "held")):
        assert result.feedback and "<html" in open(result.feedback).read(2000).lower()


def test_clean_submissions_have_a_plain_status(graded):
    assert graded["results"]["solution"].status == "graded"
    assert graded["results"]["lying_object"].status == "graded"


def test_batch_completes_with_one_row_per_student(graded):
    from mi_course.grading.export import safe_cell

    with open(graded["csv"], newline="") as f:
        points, *rows = list(csv.DictReader(f))
    assert list(points) == ["student", "lms_id", "lesson", "ex1_double_test", "ex2_answer_test", "q3_written", "total",
                            "pending_manual", "status"]
    assert [points[k] for k in ("student", "ex1_double_test", "ex2_answer_test", "q3_written", "total")] == [
        "Points Possible", "1.0", "2.0", "1.0", "4.0"]
    # ids as written to the CSV: one line each, never a formula
    ids = {safe_cell(student): student for student in EXPECTED}
    assert sorted(r["student"] for r in rows) == sorted(ids)
    for row in rows:
        result = graded["results"][ids[row["student"]]]
        if result.status == "graded" and row["pending_manual"] == "1.0":
            assert row["status"] == "needs manual grading"
        else:
            assert row["status"].startswith(safe_cell(result.status))
        if result.status.startswith(("error", "held")):  # not graded (yet): blanks, not zeros
            assert row["ex1_double_test"] == row["ex2_answer_test"] == row["total"] == "", row
        else:
            assert [float(row["ex1_double_test"]), float(row["ex2_answer_test"])] == list(EXPECTED[result.student][0])
        # The written answer: 0 when left as the stub, empty (to grade by hand) when answered.
        assert row["q3_written"] == {"solution": "", "released": "0.0"}.get(row["student"], row["q3_written"])


def test_csv_is_safe_in_a_spreadsheet(graded):
    """Item 6: no cell starts a formula, no record spans lines, escape characters are written out."""
    text = graded["csv"].read_text()
    assert len(text.splitlines()) == len(EXPECTED) + 2  # the header, the points possible
    assert "\x1b" not in text and "'=HYPERLINK(" in text and "x\\nmallory 9.0 graded" in text
    for row in csv.reader(text.splitlines()):
        assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row), row


def test_parallel_graders_keep_the_gradebook_whole(graded):
    """Graded two at a time: exactly one gradebook submission per gradable student, none for the others."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{graded['work'] / 'gradebook.db'}") as gradebook:
        submitted = sorted(s.student.id for s in gradebook.find_assignment(LESSON).submissions)
        # held submissions earn nothing automatically, in the gradebook too
        for student, result in graded["results"].items():
            if result.status.startswith("held"):
                notebook = gradebook.find_submission_notebook(LESSON, LESSON, student)
                assert [g.score for g in notebook.grades if g.name.endswith("_test")] == [0, 0], student
    gradable = sorted(s for s, r in graded["results"].items() if r.status.startswith(("graded", "held")))
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
    if os.getuid() == 0:  # item 7: a root grader's kernel is nobody on the host
        assert "UID 1000 ['0', '0', '1', '1000', '65534', '1']" in printed, printed


@pytest.mark.skipif(not ISOLATED, reason="user namespaces unavailable here: the kernel is not isolated")
def test_nothing_a_kernel_leaves_is_followed(graded, course):
    """Item 1: links planted by a kernel are never followed, copied or published: no link anywhere in
    the grader's folders, the canary, the course and the submissions are byte-identical, the
    gradebook is whole (the batch completed, the CSV was written)."""
    nb = nbformat.read(graded["work"] / "autograded" / "planted_links" / LESSON / f"{LESSON}.ipynb", 4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "PLANTED ['01_mini.html', '01_mini.ipynb', 'leak.html']" in printed, printed  # it did plant them
    base = graded["base"]
    links = [p for p in base.rglob("*") if p.is_symlink() and not p.is_relative_to(graded["submissions"])]
    assert links == []
    assert (base / "canary.txt").read_text() == "the canary"
    assert _digests(course) == graded["course_before"]
    assert sorted(p.name for p in (base / "out" / "feedback" / "planted_links").iterdir()) == [f"{LESSON}.html"]
    assert not (graded["work"] / "feedback" / "planted_links" / LESSON / "leak.html").exists()


def test_a_clean_row_does_not_depend_on_the_batch(graded, tmp_path):
    """The attackers change nothing in another student's row: "solution" graded alone gets the same."""
    shutil.copytree(graded["submissions"] / "solution", tmp_path / "subs" / "solution")
    (alone,) = autograde(LESSON, tmp_path / "subs", work_dir=tmp_path / "work", limits=LIMITS)
    batch = graded["results"]["solution"]
    assert (alone.status, alone.scores) == (batch.status, batch.scores) == ("graded", {"ex1_double_test": 1.0,
                                                                                       "ex2_answer_test": 2.0})


def test_feedback_never_shows_hidden_tests(graded):
    """Item 8: each test's name, points and failure message; never the hidden code."""
    pages = {s: open(r.feedback).read() for s, r in graded["results"].items() if r.feedback}
    assert len(pages) >= 10
    for student, page in pages.items():
        for secret in ("BEGIN HIDDEN TESTS", "range(-5, 6)", "int(answer) == 42"):
            assert secret not in page, (student, secret)
    page = pages["fails_hidden_test"]
    assert "ex2_answer_test" in page and "AssertionError" in page and "(Score: 0.0 / 2.0)" in page


def test_every_output_channel_is_capped(graded):
    """Item 5: display updates, raw descriptors and stderr count against the cap (256 KiB here)."""
    for student in ("display_flood", "raw_fd_flood", "gigantic_output"):
        executed = graded["work"] / "autograded" / student / LESSON / f"{LESSON}.ipynb"
        assert executed.stat().st_size < 2 * LIMITS.output, student
        assert Path(graded["results"][student].feedback).stat().st_size < 2 * LIMITS.output + 400_000, student


def _kind(status: str) -> str:
    """What must not depend on timing: graded, held or error, and for errors the reason's first words."""
    return status.split(" (")[0].split(":")[0] if not status.startswith("error") else status[:40]


def test_regrading_is_idempotent_and_resumes(graded, course):
    """A second run over the same work folder (same limits, feedback again) reuses every stored row;
    a forced re-grade of a few students gives the same scores and the same kind of status again."""
    again = autograde(LESSON, graded["submissions"], graded["csv"], work_dir=graded["work"], limits=LIMITS)
    assert [r.student for r in again if not r.reused and not r.status.startswith("error")] == []
    assert {r.student: (r.status, r.scores) for r in again} == {
        s: (r.status, r.scores) for s, r in graded["results"].items()}
    few = graded["base"] / "few"
    for student in ("solution", "deleted_test", "empty", "memory_bomb"):
        shutil.copytree(graded["submissions"] / student, few / student)
    forced = autograde(LESSON, few, work_dir=graded["work"], limits=LIMITS, force=True)
    assert {r.student: (_kind(r.status), r.scores) for r in forced} == {
        r.student: (_kind(graded["results"][r.student].status), graded["results"][r.student].scores) for r in forced}


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
    from mi_course.grading.integrity import suspicious

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
        assert [(r["student"], r["total"], r["status"]) for r in csv.DictReader(f)] == [
            ("Points Possible", "4.0", ""), ("alice", "3.0", "needs manual grading")]
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


def _descendants(pid: int) -> dict[int, str]:
    """``pid -> start time`` of every live descendant of ``pid`` (from /proc)."""
    parents, start = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)], start[int(entry.name)] = int(fields[1]), fields[19]
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found[child] = start[child]
                todo.append(child)
    return found


def _alive(processes: dict[int, str]) -> list[int]:
    alive = []
    for pid, started in processes.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[19] == started and stat[0] != "Z":
            alive.append(pid)
    return alive


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_killing_the_grader_ends_every_kernel(course, tmp_path, how):
    """Item 9: the grader (the CLI, two workers) is killed while two kernels are busy: every process
    it started (workers, launchers, kernels) is gone soon after, whatever the signal."""
    import signal
    import time

    solution = nbformat.read(course / "solutions" / LESSON / f"{LESSON}.ipynb", 4)
    _insert_after(solution, "ex1_double_test", "import time\ntime.sleep(600)")
    for student in ("ann", "ben"):
        (tmp_path / "subs" / student).mkdir(parents=True)
        nbformat.write(solution, tmp_path / "subs" / student / f"{LESSON}.ipynb")
    grader = subprocess.Popen([sys.executable, "-m", "mi_course.cli", "autograde", LESSON, str(tmp_path / "subs"),
                               "--work", str(tmp_path / "work"), "--jobs", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    family = {}
    try:
        deadline = time.monotonic() + 300  # against a hang only: kernels start in seconds
        while time.monotonic() < deadline:
            family = _descendants(grader.pid)
            # the kernels themselves, not their launchers (whose command lines name the kernel's)
            kernels = [p for p in family if "ipykernel" in _cmdline(p) and "_launcher.py" not in _cmdline(p)]
            if len(kernels) >= 2:
                break
            assert grader.poll() is None, "the grader ended before its kernels started"
            time.sleep(0.5)
        else:
            pytest.fail("the kernels did not start")
        time.sleep(2)
        family = _descendants(grader.pid)
        grader.send_signal(getattr(signal, how))
        grader.wait(timeout=300)  # against a hang only: a loaded machine took over 120 s to wind down
        deadline = time.monotonic() + 120
        while _alive(family) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _alive(family) == [], [_cmdline(p)[:200] for p in _alive(family)]
    finally:
        grader.kill()
        for pid in _alive(family):  # leave nothing behind, whatever happened
            os.kill(pid, signal.SIGKILL)
