"""What one autograde run did, in a few lines for the instructor: graded in this run, reused
from the work folder, in error (grouped by reason), held for manual review, waiting for
manual grading. Ids and reasons are escaped (one line each, no terminal escapes)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from mi_course.grading.autograde import HELD, StudentResult, printable
from mi_course.grading.feedback import awaiting_manual_grade


def waiting_for_manual_grading(work: Path, lesson: str) -> dict[str, int]:
    """``student -> number of answers that need a human and have not had one`` in ``work``'s gradebook."""
    from nbgrader.api import Gradebook, MissingEntry

    if not (Path(work) / "gradebook.db").is_file():
        return {}
    with Gradebook(f"sqlite:///{Path(work).resolve() / 'gradebook.db'}") as gradebook:
        try:
            submissions = gradebook.find_assignment(lesson).submissions
        except MissingEntry:
            return {}
        counts = {s.student.id: sum(awaiting_manual_grade(g) for nb in s.notebooks for g in nb.grades)
                  for s in submissions}
    return {student: n for student, n in counts.items() if n}


def _names(students: list[str], limit: int = 8) -> str:
    shown = ", ".join(printable(s) for s in students[:limit])
    return shown + (f" and {len(students) - limit} more" if len(students) > limit else "")


def _reason(status: str) -> str:
    """The kind of error, without its details: ``error: invalid JSON (...)`` -> ``invalid JSON``."""
    return re.split(r" \(|: ", status.removeprefix("error: "), maxsplit=1)[0]


def summary(results: list[StudentResult], work: Path, lesson: str) -> str:
    """A few lines on ``results`` (one ``autograde`` run over ``work``)."""
    reused = [r.student for r in results if r.reused]
    errors: dict[str, list[str]] = defaultdict(list)
    for r in results:
        if r.status.startswith("error"):
            errors[_reason(r.status)].append(r.student)
    held = [r.student for r in results if r.status.startswith(HELD)]
    gradable = {r.student for r in results if not r.status.startswith("error")}
    waiting = {s: n for s, n in waiting_for_manual_grading(work, lesson).items() if s in gradable}
    lines = [f"{lesson}: {len(results)} student(s): {len(results) - len(reused)} graded in this run, {len(reused)} "
             f"reused from {work} (unchanged since graded; --force regrades them)"]
    if errors:
        lines.append(f"in error: {sum(map(len, errors.values()))} (no grade, no feedback)")
        lines += [f"  {printable(reason)}: {len(who)} ({_names(who)})" for reason, who in sorted(errors.items())]
    if held:
        lines.append(f"held for manual review: {len(held)} ({_names(held)})")
    if waiting:
        lines.append(f"waiting for manual grading: {len(waiting)} student(s), {sum(waiting.values())} answer(s) "
                     f"({_names(sorted(waiting))}): mark them in the formgrader (MI_COURSE_WORK={work} "
                     f"./course.sh lab) or with `mi-course grade-written {lesson} --work {work} --from FILE`")
    return "\n".join(lines)
