"""On a fresh copy of the repository, `./course.sh lab` serves a formgrader that lists the lessons."""

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mi_course.course import lesson_names

from conftest import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@contextlib.contextmanager
def serving(command: list[str], cwd: Path, env: dict, token: str):
    """``command`` (a JupyterLab server; ``{port}`` in it becomes a free port) running for the block;
    yields its base URL once it answers."""
    port = _free_port()
    server = subprocess.Popen([arg.replace("{port}", str(port)) for arg in command], cwd=cwd, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, server.stdout.read().decode()[-3000:]
            try:
                if _get(f"{base}/api/status?token={token}")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "JupyterLab did not answer"
            time.sleep(1)
        yield base
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_formgrader_lists_the_lessons_on_a_fresh_checkout(tmp_path):
    checkout = tmp_path / "course"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        target = checkout / name.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name.decode(), target)
    assert not (checkout / ".nbgrader").exists()
    venv = Path(sys.executable).parents[1]
    wanted = hashlib.sha256((checkout / "pyproject.toml").read_bytes() + (checkout / "course.sh").read_bytes()).hexdigest()
    if (venv / ".mi-course-installed").read_text().strip() != wanted:
        # course.sh would reinstall the shared venv from this temporary copy
        pytest.fail(f"{venv} is not set up for this pyproject.toml/course.sh: run ./course.sh setup first")
    token = "formgrader-test"
    env = dict(os.environ, MI_COURSE_VENV=str(venv),
               PATH="/usr/bin:/bin")  # as a user's shell: the venv's bin/ is not on PATH
    command = ["bash", "course.sh", "lab", "--no-browser", "--port={port}", f"--IdentityProvider.token={token}",
               "--ServerApp.open_browser=False"]
    with serving(command, checkout, env, token) as base:
        status, body = _get(f"{base}/formgrader/api/assignments?token={token}")
        assert status == 200, body[-2000:]
        listed = {a["name"] for a in json.loads(body)}
        assert set(lesson_names(ROOT)) <= listed, listed
        assert (checkout / ".nbgrader" / "gradebook.db").is_file()
