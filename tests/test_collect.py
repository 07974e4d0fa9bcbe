"""LMS downloads -> one folder per student, with a report of what could not be matched."""

import zipfile

import nbformat
import pytest

from mi_course.grading.collect import collect

LESSON = "01_tokens_and_logits"


def _downloads(folder):
    notebook = nbformat.writes(nbformat.v4.new_notebook())
    names = ["alice_01_tokens_and_logits.ipynb", "bob_my copy.ipynb", "notes (1).ipynb", "README.txt"]
    for name in names:
        (folder / name).write_text(notebook if name.endswith(".ipynb") else "hello")
    return names


def test_zip_of_downloads_is_sorted_by_student(tmp_path):
    (tmp_path / "dl").mkdir()
    names = _downloads(tmp_path / "dl")
    with zipfile.ZipFile(tmp_path / "batch.zip", "w") as archive:
        for name in names:
            archive.write(tmp_path / "dl" / name, name)
    found = collect(LESSON, tmp_path / "batch.zip", tmp_path / "out")
    assert sorted(found.students) == ["alice", "bob"]
    assert (tmp_path / "out" / "alice" / "01_tokens_and_logits.ipynb").is_file()
    assert (tmp_path / "out" / "bob" / "my copy.ipynb").is_file()
    assert sorted(n.split("/")[-1] for n in found.unmatched) == ["README.txt", "notes (1).ipynb"]
    assert (tmp_path / "dl" / names[0]).read_text() == (tmp_path / "out" / "alice" / names[0][6:]).read_text()


def test_folder_and_custom_pattern(tmp_path):
    _downloads(tmp_path)
    found = collect(LESSON, tmp_path, tmp_path / "out", r"(?P<student_id>notes) \((?P<file_id>\d)\)\.ipynb")
    assert list(found.students) == ["notes"] and len(found.unmatched) == 3


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="student_id"):
        collect(LESSON, tmp_path, tmp_path / "out", r"(?P<name>.*)")
    with pytest.raises(FileNotFoundError, match="no such"):
        collect(LESSON, tmp_path / "missing.zip", tmp_path / "out")
