"""Shared test setup: offline, Jupyter state in a temporary folder, one thread per process."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# One thread per process, set before torch is imported: on 2 cores with any other
# busy process, two torch threads run 10x slower than one (measured: a forward of
# 9 tokens 0.35 s with 1 thread, 2.3-6.4 s with 2). Kernels started by nbgrader
# inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# The suite runs on the embedded model, here: a user's exported model choice must not leak in.
for _name in ("MI_COURSE_MODEL", "MI_COURSE_REMOTE", "MI_COURSE_DEVICE"):
    os.environ.pop(_name, None)

# The lessons' grading tests take most of the suite's time. Under pytest-xdist (`-n 2 --dist
# loadgroup --no-loadscope-reorder`, as `./course.sh test` runs the suite) they run first, heaviest
# first, each on its own, and every other module then stays whole on one worker (its
# module-scoped fixtures, such as a graded batch, are built once), heaviest first: the longest
# jobs start early and the short ones fill in at the end, so neither worker waits long for the
# other. The costs are measured (`benchmarks/run.py --only notebooks`, CPU seconds of one
# autograded submission; `pytest --durations=0` for the modules); an order, never a threshold.
SPREAD = "test_each_exercise_is_graded_on_its_own"
LESSON_COST = {"06": 113, "04": 96, "05": 83, "09": 58, "03": 48, "02": 44, "08": 43, "01": 42, "10": 35, "07": 38, "11": 60}
MODULE_COST = {"test_autograde": 420, "test_exchange": 148, "test_addition_prompts": 129, "test_cli": 90,
               "test_manual_grading": 120, "test_models": 92, "test_gradescope": 89, "test_lessons": 86,
               "test_lessons_on_other_models": 80, "test_addition": 39, "test_report": 33, "test_patching": 30,
               "test_export": 26, "test_truncation": 20, "test_formgrader": 18, "test_attribution": 16,
               "test_architectures": 16, "test_activations": 15}


def _cost(item) -> float:
    if getattr(item, "originalname", item.name) == SPREAD:
        return 1e6 + LESSON_COST.get(item.callspec.params["lesson"][:2], max(LESSON_COST.values()))
    return MODULE_COST.get(item.module.__name__, 0)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if getattr(item, "originalname", item.name) != SPREAD:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    items.sort(key=_cost, reverse=True)  # stable: a module's tests stay in their order


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory):
    """Tests never touch ~/.jupyter and friends, never reach a model hub, and don't
    oversubscribe the 2 cores (kernels started by nbgrader inherit this)."""
    home = tmp_path_factory.mktemp("jupyter")
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "MI_COURSE_ROOT": str(ROOT),
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module", autouse=True)
def grad_mode_restored():
    """A module that turns gradients off (``torch.set_grad_enabled(False)`` in its model
    fixture) leaves them as it found them for the next module (training tests need them)."""
    import torch

    enabled = torch.is_grad_enabled()
    yield
    torch.set_grad_enabled(enabled)


CLEAN = "When John and Mary went to the store, John gave a drink to"
CORRUPTED = "When John and Mary went to the store, Mary gave a drink to"


@pytest.fixture(scope="module")
def model():
    """The embedded model for a module's tests: one thread, no gradients (restored afterwards)."""
    import torch

    from mi_course import load_model

    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    return load_model()


@pytest.fixture(scope="module")
def pair(model):
    """Lesson 5's clean/corrupted prompts as ids, and the ids of ' Mary' (correct) and ' John'."""
    from mi_course import patching as pt

    clean_ids, corrupted_ids = pt.prompt_pair(model, CLEAN, CORRUPTED)
    return clean_ids, corrupted_ids, *pt.answer_ids(model, " Mary", " John")
