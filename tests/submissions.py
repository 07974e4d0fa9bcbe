"""Build submissions from a lesson's solution notebook in which chosen exercises are wrong.

An *exercise* is an autograded test cell together with the answer cells (nbgrader
solution cells) between it and the previous test cell. Three ways to get one wrong:

- ``raise``: every solution region of its answer cells becomes ``raise RuntimeError``;
- ``value``: the answer runs, then every name it defines is made wrong (numbers + 1, tensors
  + 1, strings changed, functions return such values) — or the lesson's ``HARDCODED`` answer
  (the visible example's answer typed in) where it has one;
- ``reference``: the lesson's ``BY_REFERENCE`` answer, a call to the course's own reference
  (imported under an alias), from ``tests/answers/<lesson>.py``.

Cells the suite adds or marks carry ``SUITE`` in their metadata (the grader keeps an ungraded
cell's metadata): ``after a wrong answer`` on the cells of an exercise answered wrongly (they may
fail: they run the wrong answer), ``retest <grade_id>`` on the copy of a test cell that
``with_reference_retests`` runs on the by-reference answer.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import textwrap

import nbformat

from mi_course.grading.autograde import is_test_cell

from conftest import ROOT

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
SUITE = "mi_course_suite"
AFTER_WRONG = "after a wrong answer"
RETEST = "retest "
# How a test says an answer is not the student's own: ``checks.own_work``'s message, and lesson 2's
# exercise 5 (find a sentence of your own), whose course answer is one of the lesson's sentences.
OWN_WORK_FAILURES = ("calls the course's own reference", "Use a sentence of your own, not one of the reference sentences")

WRONG_HELPER = '''
def _deliberately_wrong(value):
    """A value of the same kind as ``value`` that is wrong."""
    import functools, numpy, torch
    if isinstance(value, torch.nn.Module) or value is None:
        return None
    if callable(value) and not isinstance(value, type):
        @functools.wraps(value)
        def wrong(*args, **kwargs):
            return _deliberately_wrong(value(*args, **kwargs))
        return wrong
    if isinstance(value, (bool, numpy.bool_)):
        return not value
    if isinstance(value, torch.Tensor):
        return ~value if value.dtype == torch.bool else value + 1
    if isinstance(value, (int, float, numpy.number, numpy.ndarray)):
        return value + 1
    if isinstance(value, str):
        return value + " (wrong)"
    if isinstance(value, (list, tuple)):
        return type(value)(_deliberately_wrong(v) for v in value) if value else [0]
    if isinstance(value, dict):
        return {k: _deliberately_wrong(v) for k, v in value.items()}
    return None
'''


def answers(lesson: str):
    """``BY_REFERENCE`` and ``HARDCODED`` of ``tests/answers/<lesson>.py``: grade_id of an answer
    cell -> replacement of its solution region (a list of strings where it has several)."""
    path = ROOT / "tests" / "answers" / f"{lesson}.py"
    spec = importlib.util.spec_from_file_location(f"answers_{lesson}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BY_REFERENCE, getattr(module, "HARDCODED", {})


def exercises(nb) -> list[tuple[str, list[int]]]:
    """``(test cell grade_id, indices of its answer cells)`` in notebook order."""
    found, pending = [], []
    for i, cell in enumerate(nb.cells):
        grading = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and grading.get("solution") and not grading.get("grade"):
            pending.append(i)
        elif is_test_cell(cell):
            found.append((grading["grade_id"], pending))
            pending = []
    return found


def _replace_regions(source: str, replacements: list[str]) -> str:
    lines, out, region = source.split("\n"), [], 0
    skipping = False
    for line in lines:
        if line.strip() == BEGIN:
            indent = line[: len(line) - len(line.lstrip())]
            text = replacements[min(region, len(replacements) - 1)]
            out += [indent + l if l else l for l in textwrap.dedent(text).strip("\n").split("\n")]
            region += 1
            skipping = True
        elif line.strip() == END:
            skipping = False
        elif not skipping:
            out.append(line)
    return "\n".join(out)


def _defined_names(source: str) -> list[str]:
    """Names the solution regions define at top level (a function whose body holds one counts)."""
    tree = ast.parse(source)
    lines = source.split("\n")
    regions = [i + 1 for i, l in enumerate(lines) if l.strip() in (BEGIN, END)]
    spans = list(zip(regions[::2], regions[1::2]))
    names = []
    for node in tree.body:
        if not any(node.lineno <= b and a <= node.end_lineno for a, b in spans):
            continue
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
            continue
        names += [n for n in _assigned(node) if n not in names]
    return [n for n in names if not n.startswith("_")]


def _assigned(node) -> list[str]:
    """Names bound by assignments in ``node``, not inside functions, lambdas or comprehensions
    (whose names are not globals) and not loop variables."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda,
                         ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        return []
    found = []
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        found += [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    for child in ast.iter_child_nodes(node):
        found += _assigned(child)
    return found


def wrong_notebook(lesson: str, plan: dict[str, str]):
    """The solution notebook with each exercise in ``plan`` (test grade_id -> ``raise``,
    ``value`` or ``reference``) answered that way; the others keep the reference solution."""
    nb = nbformat.read(ROOT / "solutions" / lesson / f"{lesson}.ipynb", as_version=4)
    by_reference, hardcoded = answers(lesson)
    nb = copy.deepcopy(nb)
    test_index = {cell.metadata.get("nbgrader", {}).get("grade_id"): i for i, cell in enumerate(nb.cells)}
    for test_id, cells in exercises(nb):
        how = plan.get(test_id)
        for i in range(min(cells), test_index[test_id]) if how and cells else []:
            nb.cells[i].metadata[SUITE] = AFTER_WRONG
        for i in cells if how else []:
            cell = nb.cells[i]
            answer_id = cell.metadata.nbgrader["grade_id"]
            if how == "raise":
                cell.source = _replace_regions(cell.source, ['raise RuntimeError("a deliberately wrong answer")'])
            elif how == "value" and answer_id in hardcoded:
                cell.source = _replace_regions(cell.source, _as_list(hardcoded[answer_id]))
            elif how == "value":
                names = _defined_names(cell.source)
                assert names, f"{lesson}/{answer_id}: no names to make wrong; add a HARDCODED answer"
                cell.source += "\n" + "\n".join(f"{n} = _deliberately_wrong({n})" for n in names)
            elif how == "reference":
                assert answer_id in by_reference, f"{lesson}/{answer_id}: tests/answers/{lesson}.py has no BY_REFERENCE answer"
                cell.source = _replace_regions(cell.source, _as_list(by_reference[answer_id]))
            else:
                raise ValueError(how)
    nb.cells.insert(0, nbformat.v4.new_code_cell(WRONG_HELPER.strip()))
    return nb


def with_reference_retests(lesson: str):
    """The released notebook, untouched, with after each test cell: its exercise's answer cells
    answered by the course's own reference (``BY_REFERENCE``), then the test cell again as the
    grader runs it (hidden tests included), ungraded and marked ``retest <grade_id>``. Its graded
    cells score what the release scores (each retest runs after the test it copies, with the
    reference values the failed test supplied); each retest must fail with the check on the
    student's own work."""
    solution = nbformat.read(ROOT / "solutions" / lesson / f"{lesson}.ipynb", as_version=4)
    released = nbformat.read(ROOT / "lessons" / lesson / f"{lesson}.ipynb", as_version=4)
    by_reference, _ = answers(lesson)
    retests = {}
    for test_id, cells in exercises(solution):
        added = []
        for i in cells:
            answer_id = solution.cells[i].metadata.nbgrader["grade_id"]
            assert answer_id in by_reference, f"{lesson}/{answer_id}: tests/answers/{lesson}.py has no BY_REFERENCE answer"
            added.append(nbformat.v4.new_code_cell(_replace_regions(solution.cells[i].source, _as_list(by_reference[answer_id]))))
        test = next(c for c in solution.cells if c.metadata.get("nbgrader", {}).get("grade_id") == test_id)
        added.append(nbformat.v4.new_code_cell(test.source, metadata={SUITE: RETEST + test_id}))
        retests[test_id] = added
    nb = copy.deepcopy(released)
    cells = []
    for cell in nb.cells:
        cells.append(cell)
        cells += retests.pop(cell.metadata.get("nbgrader", {}).get("grade_id"), []) if is_test_cell(cell) else []
    assert not retests, f"{lesson}: test cells missing from the release: {sorted(retests)}"
    nb.cells = cells
    return nb


def errors(cell) -> list[str]:
    """The error outputs of an executed cell, as ``ename: evalue``."""
    return [f"{o.get('ename')}: {o.get('evalue')}" for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def _as_list(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def wrong_answer_ids(lesson: str, plan: dict[str, str]) -> list[str]:
    """grade_ids of the answer cells that ``wrong_notebook(lesson, plan)`` answers wrongly (the
    grader restores their nbgrader metadata, so they are known by id, not by ``SUITE``)."""
    nb = nbformat.read(ROOT / "solutions" / lesson / f"{lesson}.ipynb", as_version=4)
    return [nb.cells[i].metadata.nbgrader["grade_id"] for test_id, cells in exercises(nb) if test_id in plan for i in cells]


def answer_ids(lesson: str) -> list[str]:
    nb = nbformat.read(ROOT / "solutions" / lesson / f"{lesson}.ipynb", as_version=4)
    return [nb.cells[i].metadata.nbgrader["grade_id"] for _, cells in exercises(nb) for i in cells]

