"""Turn LMS downloads (a .zip, or a folder of notebooks and .zip files, named after their students) into
``OUT/<student_id>/<lesson>.ipynb``, the layout ``autograde`` reads: one notebook per student.

A student with several notebooks gets the latest (``LATEST_RULE``): the one with the largest
upload number in its name (Canvas names a download ``<name>[_LATE]_<user id>_<file id>_<file>``
and its file ids grow with every upload), then the newest time stored in the zip (a loose file:
its modification time), then the name that sorts last in natural order (``lesson-2`` after
``lesson-1`` after ``lesson``). The others are listed as superseded, each with the reason.
The LMS's user ids found in the names go to ``OUT/lms-ids.json``, for ``export``.
"""

from __future__ import annotations

import json
import re
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

# "<student_id>_<anything>.ipynb" ("jdoe_01_tokens_and_logits.ipynb"), and Canvas's
# "<student_id>[_LATE]_<lms_id>_<upload>_<file>" ("alice_LATE_12345_67890_lesson-1.ipynb").
DEFAULT_PATTERN = r"(?P<student_id>[^/_]+)_(?:LATE_)?(?:(?P<lms_id>\d+)_(?P<upload>\d+)_)?(?P<file_id>[^/]+\.ipynb)"
LATEST_RULE = ("the largest upload number (Canvas: <name>_<user id>_<upload>_<file>), then the newest time "
               "in the zip (a loose file: its modification time), then the name that sorts last (-2 after -1)")
LMS_IDS = "lms-ids.json"


@dataclass
class Notebook:
    """One notebook of the downloads and what its name says."""
    where: str  # "batch.zip/alice_12345_67890_lesson.ipynb", or "lesson.ipynb" in the folder
    file: str  # its own name ("lesson.ipynb")
    lms_id: str | None
    upload: int  # -1: the name has none
    time: datetime
    read: Callable[[], bytes]

    def key(self) -> tuple:
        """Later sorts last (``LATEST_RULE``)."""
        stem = self.file.removesuffix(".ipynb")
        return self.upload, self.time, [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", stem)], self.where


@dataclass
class Collected:
    students: dict[str, str] = field(default_factory=dict)  # student -> the downloaded file kept
    superseded: dict[str, list[str]] = field(default_factory=dict)  # student -> "<name> (<why>)"
    unmatched: list[str] = field(default_factory=list)  # downloaded files no student id was found in
    refused: list[str] = field(default_factory=list)  # "<name>: <why>", e.g. an unsafe student id


def _why_older(old: Notebook, new: Notebook) -> str:
    if old.upload != new.upload:
        return f"earlier upload: {old.upload} < {new.upload}"
    if old.time != new.time:
        return f"older: {old.time:%Y-%m-%d %H:%M:%S} < {new.time:%Y-%m-%d %H:%M:%S}"
    return "same time, name sorts first"


def _files(source: Path, stack: ExitStack):
    """``(where, name, time, read)`` of every file of ``source``: a zip's entries (``name``: the path
    inside the zip), else the file itself."""
    for path in [source] if source.is_file() else sorted(p for p in source.iterdir() if p.is_file()):
        if path.suffix.lower() == ".zip" and not zipfile.is_zipfile(path):
            raise ValueError(f"not a zip archive (an incomplete download?): {path}")
        if not zipfile.is_zipfile(path):
            yield path.name, path.name, datetime.fromtimestamp(path.stat().st_mtime), path.read_bytes
            continue
        archive = stack.enter_context(zipfile.ZipFile(path))
        for info in archive.infolist():
            if not info.is_dir() and not info.filename.startswith("__MACOSX/"):  # macOS metadata, not a file
                yield (f"{path.name}/{info.filename}", info.filename, datetime(*info.date_time),
                       lambda info=info, archive=archive: archive.read(info))


def collect(lesson: str, source: Path, out: Path, pattern: str = DEFAULT_PATTERN) -> Collected:
    """Collect ``source`` (a .zip, or a folder of files and .zip archives) into ``out/<student>/<lesson>.ipynb``.

    ``pattern``: a regular expression on each file's name (its path inside a zip) with the named
    groups ``student_id`` and ``file_id``, optionally ``lms_id`` (the LMS's user id) and
    ``upload`` (a number that grows with each upload). Collecting again replaces a student's notebook.
    """
    from mi_course.grading.autograde import refused_id

    try:
        regexp = re.compile(rf"(?:.*/)?(?:{pattern})", re.DOTALL)
    except re.error as err:
        raise ValueError(f"the pattern is not a regular expression: {err}") from None
    if not {"student_id", "file_id"} <= set(regexp.groupindex):
        raise ValueError("the pattern needs the named groups (?P<student_id>...) and (?P<file_id>...)")
    source, out = Path(source), Path(out)
    if not source.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")
    result, found, lms_ids = Collected(), {}, {}
    with ExitStack() as stack:
        for where, name, time, read in _files(source, stack):
            match = regexp.fullmatch(name)
            if not match or not name.endswith(".ipynb"):
                result.unmatched.append(where)
                continue
            why = refused_id(match["student_id"])
            if why:
                result.refused.append(f"{where}: {why}")
                continue
            groups = match.groupdict()
            found.setdefault(match["student_id"], []).append(Notebook(
                where, Path(match["file_id"]).name, groups.get("lms_id"), int(groups.get("upload") or -1), time, read))
        for student, notebooks in sorted(found.items()):
            ids = sorted({n.lms_id for n in notebooks if n.lms_id})
            if len(ids) > 1:  # two people with one name: never keep one and drop the other
                result.refused += [f"{n.where}: {student} has several LMS ids ({', '.join(ids)}): use a pattern "
                                   "that tells them apart" for n in notebooks]
                continue
            latest, *older = sorted(notebooks, key=Notebook.key, reverse=True)
            try:
                data = latest.read()
            except (zipfile.BadZipFile, OSError) as err:
                result.refused.append(f"{latest.where}: unreadable ({err})")
                continue
            (out / student).mkdir(parents=True, exist_ok=True)
            (out / student / f"{lesson}.ipynb").write_bytes(data)
            result.students[student] = latest.where
            if older:
                result.superseded[student] = [f"{n.where} ({_why_older(n, latest)})" for n in older]
            if ids:
                lms_ids[student] = ids[0]
    if lms_ids:
        _save_lms_ids(out, lms_ids)
    return result


def _save_lms_ids(out: Path, lms_ids: dict[str, str]) -> None:
    """Add ``lms_ids`` to ``out/lms-ids.json`` (written whole, then renamed: never half a file)."""
    path = out / LMS_IDS
    known = json.loads(path.read_text()) if path.is_file() else {}
    path.with_suffix(".tmp").write_text(json.dumps({**known, **lms_ids}, indent=1, sort_keys=True))
    path.with_suffix(".tmp").replace(path)


def lms_ids(folders: list[Path]) -> dict[str, str]:
    """``student -> LMS user id`` from the ``lms-ids.json`` of collect's ``OUT`` folders."""
    ids: dict[str, str] = {}
    for folder in folders:
        path = Path(folder) / LMS_IDS
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"no submissions folder {folder}")
        for student, lms_id in (json.loads(path.read_text()) if path.is_file() else {}).items():
            if ids.setdefault(student, lms_id) != lms_id:
                raise ValueError(f"{student} has two LMS ids ({ids[student]}, {lms_id}) in {', '.join(map(str, folders))}")
    return ids
