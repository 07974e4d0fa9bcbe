"""The worked JupyterHub deployment (autograder/jupyterhub/) loads, and its pieces agree: with the
course's nbgrader config, with each other (exchange path, groups, images, network) and with the
extension names of the installed nbgrader. JupyterHub itself is not needed: the configs are
loaded with traitlets, and the hub's per-role hook runs on a stand-in spawner."""

import glob
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from traitlets.config.loader import PyFileConfigLoader

from conftest import ROOT

HUB = ROOT / "autograder" / "jupyterhub"


def load(folder: Path, name: str):
    return PyFileConfigLoader(name, path=str(folder)).load_config()


@pytest.fixture
def hub(monkeypatch):
    # The hub config must load without jupyterhub or dockerspawner (classes named by string).
    for module in ("jupyterhub", "dockerspawner", "kubespawner"):
        monkeypatch.setitem(sys.modules, module, None)
    return load(HUB, "jupyterhub_config.py")


@pytest.fixture
def student_nbgrader(monkeypatch):
    monkeypatch.delenv("MI_COURSE_ROOT", raising=False)  # what a student's server has
    return load(HUB, "nbgrader_config.py")


def course_config():
    return load(ROOT / "autograder", "nbgrader_config.py")


def spawn(hub, name, uid, *groups):
    """Run the hub's pre-spawn hook on a stand-in for a DockerSpawner of user ``name``."""
    spawner = SimpleNamespace(
        user=SimpleNamespace(name=name, id=uid, groups=[SimpleNamespace(name=g) for g in groups]),
        image=hub.DockerSpawner.image, volumes=dict(hub.DockerSpawner.volumes),
        environment=dict(hub.Spawner.environment), disable_user_config=False, cpu_limit=hub.Spawner.cpu_limit, mem_limit=hub.Spawner.mem_limit)
    hub.Spawner.pre_spawn_hook(spawner)
    return spawner


def server_configs(stage_lines):
    """Jupyter server config files a Dockerfile stage writes with ``COPY <<'EOF' PATH``: PATH -> text."""
    found, target, body = {}, None, []
    for line in stage_lines:
        if target is not None:
            if line.strip() == "EOF":
                found[target], target, body = "\n".join(body), None, []
            else:
                body.append(line)
        elif re.match(r"COPY <<'?EOF'? ", line):
            target = line.split()[-1]
    return found


def csp(stage_lines, tmp_path):
    """The Content-Security-Policy header a Jupyter server gets from the image's config files."""
    from jupyter_core.paths import SYSTEM_CONFIG_PATH
    from jupyter_server.serverapp import ServerApp

    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    for target, text in server_configs(stage_lines).items():
        assert str(Path(target).parent) in SYSTEM_CONFIG_PATH, f"{target} is not where Jupyter reads config"
        (folder / Path(target).name).write_text(text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_CONFIG_PATH", str(folder))
        app = ServerApp()
        app.load_config_file()
    return app.tornado_settings.get("headers", {}).get("Content-Security-Policy")


def dockerfile_stages():
    """Dockerfile stage name -> its instructions, continuation lines joined."""
    text = (HUB / "Dockerfile").read_text().replace("\\\n", " ")
    stages, name = {}, None
    for line in text.splitlines():
        found = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.I)
        if found:
            name = found.group(1)
            stages[name] = [line]
        elif name and line.strip() and not line.lstrip().startswith("#"):
            stages[name].append(" ".join(line.split()))
    return stages


def disabled(stage_lines, command):
    """Names given to ``<command> disable`` (e.g. ``jupyter labextension``) in a stage."""
    head = [*command.split(), "disable"]
    names = set()
    for line in stage_lines:
        for part in line.removeprefix("RUN ").split("&&"):
            words = part.split()
            if words[:len(head)] == head:
                names |= {w for w in words[len(head):] if not w.startswith("-")}
    return names


def test_files_compile():
    for path in (HUB / "jupyterhub_config.py", HUB / "nbgrader_config.py"):
        compile(path.read_text(), str(path), "exec")


def test_course_id_and_exchange_agree(hub, student_nbgrader):
    course_id = course_config().CourseDirectory.course_id
    assert course_id and student_nbgrader.CourseDirectory.course_id == course_id, \
        "autograder/jupyterhub/nbgrader_config.py must use the course's course_id"
    exchange = student_nbgrader.Exchange.root
    assert exchange.startswith("/"), exchange
    assert exchange in hub.DockerSpawner.volumes.values(), \
        f"every server must mount the exchange at {exchange} (nbgrader_config.py's Exchange.root)"
    # nbgrader's naming, so its JupyterHubAuthPlugin can be switched on later
    assert set(hub.JupyterHub.load_groups) == {f"nbgrader-{course_id}", f"formgrade-{course_id}"}
    stages = dockerfile_stages()
    base = " ".join(stages["base"])
    assert f"mkdir -p {exchange}" in base and f"chmod 777 {exchange}" in base, "the image must prepare the exchange"
    assert "COPY autograder/jupyterhub/nbgrader_config.py /etc/jupyter/nbgrader_config.py" in base


def test_roles_get_their_image_volumes_and_uid(hub, student_nbgrader):
    exchange = student_nbgrader.Exchange.root
    alice = spawn(hub, "alice", 7, "nbgrader-mi-course")
    bob = spawn(hub, "bob", 8, "nbgrader-mi-course")
    teacher = spawn(hub, "teacher", 1, "formgrade-mi-course")

    assert "student" in alice.image and "instructor" in teacher.image
    home = {path for path in alice.volumes.values() if path != exchange}
    assert len(alice.volumes) == 2 and exchange in alice.volumes.values(), \
        f"a student mounts their home and the exchange, nothing else: {alice.volumes}"
    assert exchange in teacher.volumes.values() and len(teacher.volumes) == 3
    course_dir = teacher.environment["MI_COURSE_ROOT"]
    assert course_dir in teacher.volumes.values() and course_dir not in alice.volumes.values()
    assert any(course_dir.startswith(h + "/") for h in home), "the formgrader needs the course under the home"
    assert "MI_COURSE_ROOT" not in alice.environment

    uids = {s.environment["NB_UID"] for s in (alice, bob, teacher)}
    assert len(uids) == 3, "nbgrader's exchange relies on Unix permissions: one uid per student"
    assert hub.DockerSpawner.extra_create_kwargs == {"user": "root"}, "the start script sets NB_UID as root"
    assert alice.disable_user_config and not teacher.disable_user_config

    with pytest.raises(PermissionError):
        spawn(hub, "mallory", 9)


def test_images_give_each_role_its_extensions_and_csp(tmp_path):
    stages = dockerfile_stages()
    assert {"hub", "base", "student", "instructor"} <= set(stages)
    for role in ("student", "instructor"):
        assert re.match(r"FROM base AS", stages[role][0]), f"the {role} image must build on the shared base"
    lab = disabled(stages["student"], "jupyter labextension")
    server = disabled(stages["student"], "jupyter server extension")
    assert {"@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment"} <= lab, lab
    assert "nbgrader.server_extensions.formgrader" in server, server
    assert not {"@jupyter/nbgrader:assignment-list", "@jupyter/nbgrader:validate-assignment"} & lab
    assert not any("disable" in line for line in stages["instructor"]), "instructors keep every extension"

    # The formgrader iframe workaround for JupyterHub >= 4.1: on instructors' servers only.
    assert csp(stages["base"] + stages["instructor"], tmp_path) == "frame-ancestors 'self'"
    assert csp(stages["base"] + stages["student"], tmp_path) is None, \
        "students keep JupyterHub's default, frame-ancestors 'none'"

    # The names are those of the installed nbgrader.
    from jupyter_core.paths import jupyter_config_path, jupyter_path

    modules = set()  # what nbgrader's installation enables (pip puts it in the environment's etc/jupyter)
    for folder in jupyter_config_path():
        for path in glob.glob(os.path.join(folder, "jupyter_server_config.d", "nbgrader*.json")):
            modules |= set(json.loads(Path(path).read_text())["ServerApp"]["jpserver_extensions"])
    assert server <= modules, f"unknown server extensions {server - modules}"
    bundles = [f for d in jupyter_path("labextensions")
               for f in glob.glob(os.path.join(d, "@jupyter", "nbgrader", "static", "*.js"))]
    assert bundles, "nbgrader's JupyterLab extension is not installed"
    plugins = set(re.findall(r'"(@jupyter/nbgrader:[a-z-]+)"', "".join(Path(f).read_text() for f in bundles)))
    assert lab <= plugins, f"unknown JupyterLab plugins {lab - plugins}"
    readme = (HUB / "README.md").read_text()
    assert all(name in readme for name in lab | server), "README.md must name what students lack"


def test_formgrader_sees_what_mi_course_grades(tmp_path, monkeypatch):
    """On an instructor's server the formgrader's gradebook and folders are those that
    `mi-course autograde/feedback/export` use by default."""
    from mi_course.cli import _work
    from mi_course.grading.config import nbgrader_config

    shutil.copytree(ROOT / "autograder", tmp_path / "autograder")
    monkeypatch.setenv("MI_COURSE_ROOT", str(tmp_path))
    formgrader = load(HUB, "nbgrader_config.py").CourseDirectory
    ours = nbgrader_config(tmp_path, work=_work(SimpleNamespace(work=None))).CourseDirectory

    assert Path(formgrader.root) == tmp_path and (tmp_path / ".nbgrader").is_dir()
    assert formgrader.db_url.startswith("sqlite:////"), "the gradebook must not depend on the working folder"
    assert Path(formgrader.db_url.removeprefix("sqlite:///")).resolve() == \
        Path(ours.db_url.removeprefix("sqlite:///")).resolve()
    for name in ("submitted_directory", "autograded_directory", "feedback_directory"):
        assert (tmp_path / getattr(formgrader, name)).resolve() == Path(getattr(ours, name)).resolve(), name
    assert (formgrader.source_directory, formgrader.release_directory) == ("solutions", "lessons")
    assert formgrader.course_id == ours.course_id


def test_compose_runs_the_hub_the_config_expects(hub):
    compose = yaml.safe_load((HUB / "docker-compose.yml").read_text())
    service = compose["services"]["hub"]
    assert service["build"]["target"] == "hub" and "hub" in dockerfile_stages()
    assert (HUB / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == HUB / "Dockerfile"
    assert service["container_name"] == hub.JupyterHub.hub_connect_ip
    network = service["environment"]["DOCKER_NETWORK_NAME"]
    assert network == hub.DockerSpawner.network_name and service["networks"] == [network]
    assert compose["networks"][network]["name"] == network, "DockerSpawner looks the network up by name"
    data = os.path.dirname(hub.JupyterHub.db_url.removeprefix("sqlite:///"))
    assert any(v.endswith(":" + data) for v in service["volumes"]), "the hub's database must outlive its container"
