"""Turn LMS downloads (a folder or .zip of notebooks named after their students) into
``OUT/<student_id>/<file>``, the layout ``autograde`` reads, with nbgrader's ``zip_collect``."""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mi_course.grading.config import nbgrader_config

# "<student_id>_<anything>.ipynb", e.g. "jdoe_01_tokens_and_logits.ipynb"; matched against the file name.
DEFAULT_PATTERN = r"(?P<student_id>[^/_]+)_(?P<file_id>[^/]+\.ipynb)"


@dataclass
class Collected:
    students: dict[str, list[str]] = field(default_factory=dict)  # student -> files written
    unmatched: list[str] = field(default_factory=list)  # downloaded files no student id was found in


def collect(lesson: str, source: Path, out: Path, pattern: str = DEFAULT_PATTERN) -> Collected:
    """Collect ``source`` (a .zip, or a folder of files and .zip archives) for ``lesson`` into ``out``.

    ``pattern``: a regular expression on each file's name with the named groups
    ``student_id`` and ``file_id`` (nbgrader's ``FileNameCollectorPlugin.named_regexp``).
    """
    if "(?P<student_id>" not in pattern or "(?P<file_id>" not in pattern:
        raise ValueError("the pattern needs the named groups (?P<student_id>...) and (?P<file_id>...)")
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")
    from nbgrader.apps.zipcollectapp import ZipCollectApp

    regexp = rf".*/{pattern}$"  # nbgrader matches the whole extracted path
    result = Collected()
    with tempfile.TemporaryDirectory(prefix="mi-course-collect-") as tmp:
        root = Path(tmp)
        config = nbgrader_config(root, work=root / "work", release=root / "release")
        config.ZipCollectApp.downloaded_directory = "downloaded"
        config.FileNameCollectorPlugin.named_regexp = regexp
        archive = root / "downloaded" / lesson / "archive"
        archive.mkdir(parents=True)
        for path in [source] if source.is_file() else sorted(p for p in source.iterdir() if p.is_file()):
            shutil.copy(path, archive / path.name)
        app = ZipCollectApp(config=config)
        app.initialize([lesson])
        app.start()
        extracted = root / "downloaded" / lesson / "extracted"
        for path in sorted(p for p in extracted.rglob("*") if p.is_file()):
            match = re.match(regexp, str(path))
            if not match or not path.name.endswith(".ipynb"):
                result.unmatched.append(str(path.relative_to(extracted)))
        submitted = Path(config.CourseDirectory.submitted_directory)
        for folder in sorted(p for p in submitted.iterdir() if p.is_dir()) if submitted.is_dir() else []:
            files = sorted(p for p in (folder / lesson).iterdir() if p.is_file() and p.suffix == ".ipynb")
            (out / folder.name).mkdir(parents=True, exist_ok=True)
            result.students[folder.name] = [str(shutil.copy(p, out / folder.name / p.name)) for p in files]
    return result
