"""The nbgrader exchange (a folder every user can reach, e.g. a JupyterHub volume): release a
lesson to it, collect what students submitted, send their feedback back.

Students use nbgrader's own side: the Assignments tab, or ``nbgrader fetch_assignment``,
``nbgrader submit`` and ``nbgrader fetch_feedback`` with ``--course mi-course``.
Every step is nbgrader's (``release_assignment``, ``collect``, ``generate_feedback``,
``release_feedback``); this module only points them at the course's folders.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from mi_course.grading.config import graded_work, nbgrader_config

# What ``feedback`` says of a student whose submission did not come through the exchange.
NOT_RELEASED = "NOT released: not submitted through the exchange"
# How ``feedback`` starts what it says of a student in error (no feedback to send).
SKIPPED = "skipped: "


def _api(exchange: Path, work: Path, force: bool = False, **folders):
    """nbgrader's API on ``exchange`` with the course config; ``folders``: CourseDirectory paths."""
    from nbgrader.apps import NbGraderAPI

    config = nbgrader_config(work, work=work, release=folders.pop("release", None))
    config.Exchange.root = str(Path(exchange).resolve())
    config.ExchangeReleaseAssignment.force = force
    for name, value in folders.items():
        setattr(config.CourseDirectory, name, str(Path(value).resolve()))
    return NbGraderAPI(config=config), config


def _check(result: dict, what: str) -> None:
    if not result["success"]:
        raise RuntimeError(f"nbgrader {what} failed:\n{result.get('log', '')}{result.get('error', '')}")


def release(lesson: str, exchange: Path, released: Path, force: bool = False) -> Path:
    """Put ``released/<lesson>/`` (generated student notebooks) on the exchange; return its folder there.
    ``force`` replaces an earlier release (students who fetched it keep their copy)."""
    with tempfile.TemporaryDirectory(prefix="mi-course-exchange-") as work:
        api, config = _api(exchange, Path(work), force, release=released)
        _check(api.release_assignment(lesson), f"release_assignment {lesson}")
        return Path(exchange) / config.CourseDirectory.course_id / "outbound" / lesson


def collect(lesson: str, exchange: Path, to: Path) -> list[str]:
    """Copy every student's latest submission of ``lesson`` into ``to/<student>/<lesson>/``
    (nbgrader's layout, with its timestamp); return the students collected."""
    with tempfile.TemporaryDirectory(prefix="mi-course-exchange-") as work:
        api, _ = _api(exchange, Path(work), submitted_directory=to)
        _check(api.collect(lesson), f"collect {lesson}")
    return sorted(p.parent.name for p in Path(to).glob(f"*/{lesson}") if p.is_dir())


def feedback(lesson: str, work: Path, exchange: Path | None = None, to: Path | None = None) -> dict[str, str]:
    """nbgrader's HTML feedback for every student graded in ``work`` (an autograde ``--work``
    folder): copied to ``to/<student>/<lesson>.html`` (to upload to an LMS) and/or released to
    ``exchange`` for ``nbgrader fetch_feedback``. Returns ``student -> where it went``; a
    submission that did not come through the exchange cannot be released there (nbgrader matches
    feedback to the submission's timestamp and secret), and says so; a student whose last grading
    ended in error has none: ``skipped: <the error>``."""
    from mi_course.grading.autograde import stored_results

    work = graded_work(work)
    api, config = _api(exchange or work / "no-exchange", work)
    _check(api.generate_feedback(lesson), f"generate_feedback {lesson}")
    done = {}
    for page in sorted(Path(config.CourseDirectory.feedback_directory).glob(f"*/{lesson}/{lesson}.html")):
        student, where = page.parents[1].name, []
        if to is not None:
            (Path(to) / student).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(page, Path(to) / student / f"{lesson}.html")
            where.append(f"copied to {Path(to) / student}/")
        if exchange is not None:
            if all((page.parent / name).is_file() for name in ("timestamp.txt", "submission_secret.txt")):
                _check(api.release_feedback(lesson, student), f"release_feedback {lesson} {student}")
                where.append("released to the exchange")
            else:
                where.append(NOT_RELEASED)
        done[student] = ", ".join(where)
    for result in stored_results(work, lesson):
        if result.status.startswith("error") and result.student not in done:
            done[result.student] = SKIPPED + result.status
    return done
