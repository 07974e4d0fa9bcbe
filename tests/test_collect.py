"""LMS downloads -> one notebook per student (the latest), with a report of what could not be matched."""

import json
import os
import zipfile

import nbformat
import pytest

from mi_course.grading.collect import collect

LESSON = "01_tokens_and_logits"
NOTEBOOK = nbformat.writes(nbformat.v4.new_notebook())


def _downloads(folder):
    names = ["alice_01_tokens_and_logits.ipynb", "bob_my copy.ipynb", "notes (1).ipynb", "README.txt"]
    for name in names:
        (folder / name).write_text(NOTEBOOK if name.endswith(".ipynb") else "hello")
    return names


def _zip(path, entries):
    """``entries``: (name, (year, month, day, hour, minute, second)); each entry's text names it."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, when in entries:
            archive.writestr(zipfile.ZipInfo(name, when), NOTEBOOK.replace("{", '{"_": "' + name + '", ', 1))
    return path


def _kept(out, student):
    return json.loads((out / student / f"{LESSON}.ipynb").read_text())["_"]


def test_zip_of_downloads_is_sorted_by_student(tmp_path):
    (tmp_path / "dl").mkdir()
    names = _downloads(tmp_path / "dl")
    with zipfile.ZipFile(tmp_path / "batch.zip", "w") as archive:
        for name in names:
            archive.write(tmp_path / "dl" / name, name)
    found = collect(LESSON, tmp_path / "batch.zip", tmp_path / "out")
    assert found.students == {"alice": f"batch.zip/{names[0]}", "bob": "batch.zip/bob_my copy.ipynb"}
    assert (tmp_path / "out" / "bob" / f"{LESSON}.ipynb").read_text() == NOTEBOOK
    assert sorted(found.unmatched) == ["batch.zip/README.txt", "batch.zip/notes (1).ipynb"]
    assert not found.superseded and not found.refused
    assert not (tmp_path / "out" / "lms-ids.json").exists()  # no LMS ids in these names


def test_folder_and_custom_pattern(tmp_path):
    _downloads(tmp_path)
    found = collect(LESSON, tmp_path, tmp_path / "out", r"(?P<student_id>notes) \((?P<file_id>\d)\)\.ipynb")
    assert list(found.students) == ["notes"] and len(found.unmatched) == 3


def test_latest_by_upload_number_then_time_then_name(tmp_path):
    """Issue 27 item 3: one notebook per student, the latest; every other one listed with the reason."""
    early, late = (2026, 11, 30, 9, 0, 0), (2026, 11, 30, 10, 0, 0)
    _zip(tmp_path / "canvas.zip", [
        ("alice_12345_67890_lesson.ipynb", late),            # Canvas: a later upload has a larger number,
        ("alice_LATE_12345_67891_lesson-1.ipynb", early),    # whatever the time in the zip says
        ("bob_lesson.ipynb", late), ("bob_lesson-1.ipynb", early),  # no numbers: the newer in the zip
        ("carol_x-2.ipynb", early), ("carol_x-10.ipynb", early), ("carol_x.ipynb", early),  # same time: name
        ("__MACOSX/._alice_12345_67890_lesson.ipynb", late),  # macOS metadata: not a file
    ])
    found = collect(LESSON, tmp_path / "canvas.zip", tmp_path / "out")
    assert {s: _kept(tmp_path / "out", s) for s in found.students} == {
        "alice": "alice_LATE_12345_67891_lesson-1.ipynb", "bob": "bob_lesson.ipynb", "carol": "carol_x-10.ipynb"}
    assert found.superseded == {
        "alice": ["canvas.zip/alice_12345_67890_lesson.ipynb (earlier upload: 67890 < 67891)"],
        "bob": ["canvas.zip/bob_lesson-1.ipynb (older: 2026-11-30 09:00:00 < 2026-11-30 10:00:00)"],
        "carol": ["canvas.zip/carol_x-2.ipynb (same time, name sorts first)",
                  "canvas.zip/carol_x.ipynb (same time, name sorts first)"]}
    assert not found.unmatched and not found.refused
    assert sorted(p.name for p in (tmp_path / "out" / "alice").iterdir()) == [f"{LESSON}.ipynb"]
    # the LMS ids go next to the student folders, never inside one
    assert json.loads((tmp_path / "out" / "lms-ids.json").read_text()) == {"alice": "12345"}


def test_loose_files_by_modification_time_and_collecting_again(tmp_path):
    (tmp_path / "dl").mkdir()
    for name, mtime in [("dave_v1.ipynb", 2_000_000_000), ("dave_v2.ipynb", 1_000_000_000)]:
        (tmp_path / "dl" / name).write_text(NOTEBOOK.replace("{", '{"_": "' + name + '", ', 1))
        os.utime(tmp_path / "dl" / name, (mtime, mtime))
    found = collect(LESSON, tmp_path / "dl", tmp_path / "out")
    assert _kept(tmp_path / "out", "dave") == "dave_v1.ipynb" and len(found.superseded["dave"]) == 1
    _zip(tmp_path / "late.zip", [("dave_77_5_v3.ipynb", (2026, 1, 1, 0, 0, 0))])
    collect(LESSON, tmp_path / "late.zip", tmp_path / "out")
    assert _kept(tmp_path / "out", "dave") == "dave_77_5_v3.ipynb"  # a later collect replaces it
    assert json.loads((tmp_path / "out" / "lms-ids.json").read_text()) == {"dave": "77"}


def test_unsafe_ids_and_one_name_for_two_people_are_refused(tmp_path):
    when = (2026, 1, 1, 0, 0, 0)
    _zip(tmp_path / "b.zip", [("victi[m]_1_2_a.ipynb", when), ("smithjohn_111_5_a.ipynb", when),
                              ("smithjohn_222_6_a.ipynb", when), ("ok_3_4_a.ipynb", when)])
    found = collect(LESSON, tmp_path / "b.zip", tmp_path / "out")
    assert list(found.students) == ["ok"]
    assert len(found.refused) == 3 and "student id refused" in found.refused[0]
    assert all("several LMS ids (111, 222)" in r for r in found.refused[1:])
    assert not (tmp_path / "out" / "smithjohn").exists()
    _zip(tmp_path / "crc.zip", [("eve_1_2_a.ipynb", when)])
    data = (tmp_path / "crc.zip").read_bytes()
    (tmp_path / "crc.zip").write_bytes(data.replace(b"eve_1_2_a.ipynb\", ", b"eve_1_2_X.ipynb\", "))  # bad CRC
    found = collect(LESSON, tmp_path / "crc.zip", tmp_path / "out")
    assert not found.students and found.refused[0].startswith("crc.zip/eve_1_2_a.ipynb: unreadable (Bad CRC")


def test_cli_lists_what_to_act_on_and_nothing_else(tmp_path, capsys):
    """Issue 27 item 7: no nbgrader warnings about files collect handled; the rule is named."""
    from mi_course.cli import main

    when = (2026, 1, 1, 0, 0, 0)
    _zip(tmp_path / "b.zip", [("alice_1_2_a.ipynb", when), ("alice_1_3_a.ipynb", when)])
    assert main(["collect", "01", str(tmp_path / "b.zip"), "--to", str(tmp_path / "out")]) == 0
    out = capsys.readouterr()
    assert "superseded: b.zip/alice_1_2_a.ipynb (earlier upload: 2 < 3)" in out.out
    assert "kept the latest: the largest upload number" in out.out
    assert out.err == "" and "No release notebooks" not in out.out and "Invalid submission" not in out.out
    (tmp_path / "stray.txt").write_text("x")
    assert main(["collect", "01", str(tmp_path), "--to", str(tmp_path / "out2")]) == 1  # not matched: exit 1
    assert "NOT MATCHED: stray.txt" in capsys.readouterr().out


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="student_id"):
        collect(LESSON, tmp_path, tmp_path / "out", r"(?P<name>.*)")
    with pytest.raises(ValueError, match="not a regular expression"):
        collect(LESSON, tmp_path, tmp_path / "out", r"(?P<student_id>(")
    with pytest.raises(FileNotFoundError, match="no such"):
        collect(LESSON, tmp_path / "missing.zip", tmp_path / "out")
    (tmp_path / "half.zip").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ValueError, match="not a zip archive"):
        collect(LESSON, tmp_path / "half.zip", tmp_path / "out")
