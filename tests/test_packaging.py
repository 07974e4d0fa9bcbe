"""One place for versions, one for the repository URL; the console script exists."""

import re
import shutil
try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

import yaml

from mi_course import course

from conftest import ROOT


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_pins_match_pyproject():
    project = _pyproject()["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml should have one pip: section"
    pinned = {p for p in pip_lists[0] if not p.startswith("-")}
    assert pinned == wanted, (
        f"environment.yml and pyproject.toml disagree. Only in environment.yml: {sorted(pinned - wanted)}; "
        f"only in pyproject.toml: {sorted(wanted - pinned)}"
    )
    assert "-e ." in pip_lists[0], "environment.yml must install the course package itself"


def test_repository_url_is_defined_once():
    url = course.REPOSITORY
    hits = []
    for path in ROOT.rglob("*"):
        if path.is_file() and path.suffix in {".py", ".toml", ".yml", ".md", ".sh", ".cfg"} and ".venv" not in path.parts:
            if url in path.read_text(errors="ignore"):
                hits.append(path.relative_to(ROOT).as_posix())
    assert hits == ["mi_course/course.py"], f"the repository URL must live only in mi_course/course.py, found in {hits}"


def test_badges_point_at_their_own_lesson():
    for lesson in course.lesson_names(ROOT):
        for folder in ("solutions", "lessons"):
            text = (ROOT / folder / lesson / f"{lesson}.ipynb").read_text()
            assert course.colab_url(lesson) in text, f"{folder}/{lesson} lacks its Colab badge"


def test_console_script_and_ci_run_the_readme_command():
    assert shutil.which("mi-course"), "the mi-course console script is not installed"
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./course.sh test" in readme and "./course.sh lab" in readme
    assert re.search(r"^\./course\.sh test$", ci, re.M), ".ci/run must run the README's test command"


def test_every_shipped_checkpoint_is_package_data():
    """A checkpoint the lessons load must be in a wheel (Colab installs one), not only in the checkout."""
    import fnmatch

    patterns = _pyproject()["tool"]["setuptools"]["package-data"]
    for path in (ROOT / "mi_course").rglob("*.pt"):
        package = ".".join(path.parent.relative_to(ROOT).parts)
        assert any(fnmatch.fnmatch(path.name, p) for p in patterns.get(package, [])), (
            f"{path.relative_to(ROOT)} is not package data: add it under [tool.setuptools.package-data] {package!r}")
