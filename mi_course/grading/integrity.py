"""Read a submitted notebook defensively and undo tampering, saying what was undone.

Every graded cell of the released notebook (answer cells, test cells, written
answers) is looked up by its nbgrader ``grade_id`` in the submission: a test
cell whose source, type or metadata changed is restored, a deleted one is
re-inserted where it belongs, a deleted answer cell comes back as the released
stub (so its tests score 0), duplicates and unknown graded cells lose their
nbgrader metadata (they run as ordinary cells, never graded). Each repair is a
note in the student's report, and a sentence for the student in the repaired
cell's metadata (``NOTE_KEY``) that the feedback shows at that cell.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from dataclasses import dataclass, field

import nbformat


# Student code that can subvert the tests sharing its kernel (they cannot be isolated from it):
# flagged for a human, not scored down (a legitimate answer may need some of it).
SUSPICIOUS = {
    "patches builtins": r"\b__builtins__\b|\bbuiltins\b",
    "edits sys.modules": r"\bsys\.modules\s*\[[^\]]*\]\s*=[^=]|\bsys\.modules\.(pop|update|setdefault|clear)\b"
                         r"|\bdel\s+sys\.modules\b",
    "rebinds a library function": r"^\s*(torch|np|numpy|math|mi_course|checks)(\.\w+)+\s*=[^=]",
    "redefines a check": r"^\s*(def\s+|)(as_int|as_float|as_str|as_list|as_tensor|assert_close|"
                         r"assert_probabilities|require|AssertionError)\b\s*(\(|=[^=])",
}
# Reading the interpreter's internals is the only way past the grader's check of how cells run
# (sandbox/_guard.py): such a submission earns nothing automatically and is held for a human.
HOLD_NOTE = "reads the interpreter's internals"
INTERNALS = {
    "reads the caller's frames": r"\b(_getframe|currentframe|f_back|f_globals|f_locals|tb_frame|gi_frame|cr_frame)\b",
    "reads closures or code objects": r"\b(__closure__|cell_contents|__code__)\b",
    "walks the garbage collector": r"\bgc\.get_(objects|referrers|referents)\b",
    "uses ctypes": r"\bctypes\b",
    "changes how later cells run": r"\b(settrace|setprofile|addaudithook|input_transformers_\w+|ast_transformers|"
                                   r"set_custom_exc|meta_path|path_hooks)\b|\bevents\.register\b",
}


# Cell metadata: what the grader did to this cell, in a sentence for the student (feedback.GraderNotes
# shows it). Set only by ``repair``, which drops any copy a submission carries.
NOTE_KEY = "mi_course_grader_note"


class Unreadable(ValueError):
    """The submission cannot be graded at all (the message is the reason)."""


@dataclass
class Inspection:
    notebook: nbformat.NotebookNode
    notes: list[str] = field(default_factory=list)


def _grade_id(cell) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta.get("grade_id") if isinstance(meta, dict) else None


def _grading(cell) -> dict:
    """The nbgrader metadata that decides grading (``checksum``, ``cell_type`` are bookkeeping)."""
    meta = cell.metadata.get("nbgrader", {})
    keys = ("grade", "solution", "locked", "points") if meta.get("grade") else ("grade", "solution", "locked")
    return {k: meta.get(k) or False for k in keys}


def is_test_cell(cell) -> bool:
    """An autograded test cell: graded, not a solution (written answers are both)."""
    meta = cell.metadata.get("nbgrader", {})
    return bool(meta.get("grade")) and not meta.get("solution")


def read_submission(data: bytes, max_bytes: int) -> nbformat.NotebookNode:
    """Parse the submitted bytes as a version-4 notebook, or raise ``Unreadable`` with the reason."""
    if not data.strip():
        raise Unreadable("empty file")
    if len(data) > max_bytes:
        raise Unreadable(f"file too large ({len(data) / 1e6:.1f} MB > {max_bytes / 1e6:.1f} MB)")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise Unreadable(f"invalid JSON ({str(err).splitlines()[0][:120]})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells", raw.get("worksheets")), list):
        raise Unreadable("not a Jupyter notebook (no list of cells)")
    if raw.get("nbformat") not in (3, 4):
        raise Unreadable(f"unsupported notebook format {raw.get('nbformat')!r} (expected 4)")
    try:
        nb = nbformat.reads(json.dumps(raw), as_version=4)
    except Exception as err:  # nbformat raises many kinds on malformed notebooks
        raise Unreadable(f"malformed notebook ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    for cell in nb.cells:
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise Unreadable("malformed notebook (a cell has no valid cell_type)")
        if not isinstance(cell.get("source"), str):
            raise Unreadable("malformed notebook (a cell's source is not text)")
        if not isinstance(cell.get("metadata", {}), dict):
            raise Unreadable("malformed notebook (a cell's metadata is not a mapping)")
    return nb


def _fresh(reference_cell, source: str | None = None):
    """A copy of the released cell (its type, metadata and id), optionally with another source."""
    cell = copy.deepcopy(reference_cell)
    if source is not None:
        cell.source = source
    if cell.cell_type == "code":
        cell.outputs, cell.execution_count = [], None
    return cell


def repair(submitted: nbformat.NotebookNode, released: nbformat.NotebookNode, lesson: str,
           source: nbformat.NotebookNode | None = None) -> Inspection:
    """The submission with every graded cell as released (see the module docstring), plus the notes.
    A test cell may also read as in ``source`` (the instructor's notebook, hidden tests included)."""
    reference = {gid: c for c in released.cells if (gid := _grade_id(c))}
    accepted = {gid: {c.source} for gid, c in reference.items()}
    for cell in source.cells if source is not None else []:
        if _grade_id(cell) in accepted:
            accepted[_grade_id(cell)].add(cell.source)
    order = [gid for c in released.cells if (gid := _grade_id(c))]
    found = {_grade_id(c) for c in submitted.cells} & set(reference)
    if not found:
        raise Unreadable(f"not a notebook of lesson {lesson} (none of its {len(reference)} graded cells found)")
    notes, cells, seen = [], [], set()
    missing_ids = sum(1 for c in submitted.cells if not c.get("id"))
    if missing_ids:
        notes.append(f"{missing_ids} cell(s) without a cell id")
    for cell in submitted.cells:
        cell = copy.deepcopy(cell)
        cell.get("metadata", {}).pop(NOTE_KEY, None)
        gid = _grade_id(cell)
        if gid is None and "nbgrader" in cell.get("metadata", {}):
            cell.metadata.pop("nbgrader")
        if gid is None:
            cells.append(cell)
            continue
        ref = reference.get(gid)
        if ref is None or gid in seen:
            notes.append(f"{'duplicated' if ref is not None else 'unknown'} graded cell {gid} (not graded)")
            cell.metadata.pop("nbgrader")
            what = "is a copy of a graded cell" if ref is not None else "has grading metadata the lesson does not have"
            cell.metadata[NOTE_KEY] = f"This cell {what}: it ran as an ordinary cell and was not graded."
            cells.append(cell)
            continue
        seen.add(gid)
        changes = []
        if cell.cell_type != ref.cell_type:
            changes.append(f"type {ref.cell_type}->{cell.cell_type}")
        if is_test_cell(ref) and cell.source not in accepted[gid]:
            changes.append("source")
        if _grading(cell) != _grading(ref):
            changes.append("metadata")
        if changes:
            what = "test cell" if is_test_cell(ref) else "graded cell"
            notes.append(f"edited {what} {gid} ({', '.join(changes)}; restored)")
        keep = None if is_test_cell(ref) else cell.source
        repaired = _fresh(ref, keep)
        if cell.cell_type == ref.cell_type == "code" and keep is not None:
            repaired.outputs = []
        if changes:
            repaired.metadata[NOTE_KEY] = (
                f"This test cell was changed in your submission ({', '.join(changes)}): the grader restored the "
                "original and ran that." if is_test_cell(ref) else
                f"This cell was changed in your submission ({', '.join(changes)}): the grader restored it as "
                "released, keeping your answer.")
        cells.append(repaired)
    for gid in order:
        if gid in seen:
            continue
        ref = reference[gid]
        before = order[: order.index(gid)]
        at = max((i + 1 for i, c in enumerate(cells) if _grade_id(c) in before), default=0)
        restored = _fresh(ref)
        cells.insert(at, restored)
        seen.add(gid)
        if is_test_cell(ref):
            notes.append(f"deleted test cell {gid} (re-inserted)")
            restored.metadata[NOTE_KEY] = ("This test cell was missing from your submission: the grader put it "
                                           "back and ran it.")
        else:
            notes.append(f"deleted graded cell {gid} (re-inserted as released: scores 0)")
            restored.metadata[NOTE_KEY] = ("Your submission had no answer cell here: the grader put back the empty "
                                           "cell as released, so this exercise scores 0.")
    ids = set()
    for cell in cells:
        if not cell.get("id") or cell.id in ids:
            cell.id = uuid.uuid4().hex[:8]
        ids.add(cell.id)
    nb = copy.deepcopy(submitted)
    nb.cells = cells
    nb.nbformat, nb.nbformat_minor = 4, max(5, released.nbformat_minor)
    nb.metadata["kernelspec"] = copy.deepcopy(released.metadata.get("kernelspec", {}))
    return Inspection(nb, notes)


def suspicious(notebook: nbformat.NotebookNode, *known: nbformat.NotebookNode) -> list[str]:
    """Notes on the student's code cells matching ``SUSPICIOUS``; test cells and cells as
    in a ``known`` notebook (the released one, the instructor's) are not the student's."""
    released_code = {c.source for nb in known for c in nb.cells if c.cell_type == "code"}
    notes = []
    for index, cell in enumerate(notebook.cells, start=1):
        if cell.cell_type != "code" or is_test_cell(cell) or cell.source in released_code:
            continue
        for what, pattern in SUSPICIOUS.items():
            if re.search(pattern, cell.source, flags=re.MULTILINE):
                notes.append(f"suspicious code to review by hand: {what} in cell {index}")
        for what, pattern in INTERNALS.items():
            if re.search(pattern, cell.source, flags=re.MULTILINE):
                notes.append(f"{HOLD_NOTE}: {what} in cell {index}")
    return notes
