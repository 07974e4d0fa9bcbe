"""load_model(..., remote=True): nnsight traces go to NDIF, which cannot be reached here.

The network is faked at its edge (the Hub lookup of the repo id, the websocket and
the HTTP POST nnsight's RemoteBackend opens), so everything up to the wire is
nnsight's own code. A tiny random Llama (config and tokenizer only, like a Hub repo
seen through a meta-device load) stands in for e.g. meta-llama/Llama-3.1-70B.
"""

import importlib.abc
import json
import sys
import types
import warnings

import httpx
import huggingface_hub
import nnsight
import pytest
import torch
import websocket
import zstandard
from tokenizers import Tokenizer, models as tokenizer_models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedTokenizerFast

from mi_course import ablation, activations, load_model
from mi_course.models import ModelNotAvailableError

REPO = "test-org/tiny-llama"
KEY = "ndif-test-key-9f8e7d"
PROMPT = "The Eiffel Tower is in Paris"


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    """A model folder with a config and a tokenizer but no weights."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    words = ["<unk>", "<s>", "</s>", "The", "Eiffel", "Tower", "is", "in", "Paris"]
    tokenizer = Tokenizer(tokenizer_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>").save_pretrained(folder)
    LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1).save_pretrained(folder)
    return str(folder)


class Sent(Exception):
    """Raised by the fake POST: the request left nnsight and reached the network."""


@pytest.fixture
def network(monkeypatch):
    """Fake network edge; records what nnsight sends."""
    sent = {}

    class Subscription:
        def recv(self):
            return json.dumps({"session_id": "test-session"})

        def close(self):
            pass

    def subscribe(url, header=None):
        sent["subscribe"] = (url, header)
        return Subscription()

    def post(client, url, data=None, files=None, headers=None, **kwargs):
        sent.update(url=url, envelope=json.loads(data["data"]), blob=files["blob"][1], headers=headers)
        raise Sent

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda api, repo_id, **kw: types.SimpleNamespace(id=REPO))
    monkeypatch.setattr(websocket, "create_connection", subscribe)
    monkeypatch.setattr(httpx.Client, "post", post)
    return sent


@pytest.fixture
def api_key(monkeypatch):
    """A key in the environment only, as after `export NDIF_API_KEY=...` (nnsight itself was imported before)."""
    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", None)
    monkeypatch.setenv("NDIF_API_KEY", KEY)


def _payload(sent) -> bytes:
    blob = sent["blob"]
    return zstandard.ZstdDecompressor().decompress(blob) if sent["envelope"]["compress"] else blob


def test_without_api_key_fails_before_any_network_call(monkeypatch, network):
    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", None)
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    # Loading a model that does not exist would fail differently: the key is checked first.
    with pytest.raises(ModelNotAvailableError, match="needs an NDIF API key") as error:
        load_model("no-such-org/no-such-model", remote=True)
    for how in ("https://login.ndif.us", "NDIF_API_KEY", "nnsight login", "set_default_api_key"):
        assert how in str(error.value)
    assert not network


def test_the_switch_and_the_embedded_model(monkeypatch, api_key):
    monkeypatch.delenv("MI_COURSE_MODEL", raising=False)
    monkeypatch.setenv("MI_COURSE_REMOTE", "1")
    with pytest.raises(ModelNotAvailableError, match="NDIF does not serve the embedded"):
        load_model()
    monkeypatch.setenv("MI_COURSE_REMOTE", "0")
    assert not load_model().remote
    assert not load_model(remote=False).remote


@pytest.mark.parametrize("run", ["trace", "generate"])
def test_traces_are_sent_to_ndif_and_nothing_runs_here(monkeypatch, tiny_repo, network, api_key, run):
    monkeypatch.setenv("MI_COURSE_REMOTE", "1")
    model = load_model(tiny_repo)
    assert model.remote and (model.n_layers, model.d_model) == (2, 16)
    lm = model.nnsight
    forwards = []
    lm._module.register_forward_pre_hook(lambda module, args: forwards.append(1))

    with pytest.raises(Sent):
        if run == "trace":
            with lm.trace(PROMPT):
                hidden = lm.model.layers[0].output.save()  # noqa: F841
        else:
            with lm.generate(PROMPT, max_new_tokens=2):
                hidden = lm.model.layers[0].output.save()  # noqa: F841

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LanguageModel is deprecated; it is what NDIF's docs use
        documented = nnsight.LanguageModel(tiny_repo, tokenizer=AutoTokenizer.from_pretrained(tiny_repo))
    assert network["envelope"]["model_key"] == documented.to_model_key()
    assert REPO in network["envelope"]["model_key"]
    assert network["envelope"]["env"]["attn_implementation"] == "eager"
    assert network["url"].endswith("/request") and network["subscribe"][0].endswith("/subscribe")
    assert network["headers"]["ndif-api-key"] == KEY and network["subscribe"][1] == {"ndif-api-key": KEY}
    assert KEY not in json.dumps(network["envelope"])
    assert b"mi_course" not in _payload(network), "the server would need mi_course to read the request"
    assert not forwards and not lm.dispatched
    assert all(p.is_meta for p in lm._module.parameters()), "weights were loaded here"
    for text in (repr(model), str(model), repr(lm)):
        assert KEY not in text


def test_views_that_need_weights_say_why(tiny_repo, api_key):
    model = load_model(tiny_repo, remote=True)
    assert "on NDIF" in repr(model) and model.config.num_hidden_layers == 2
    for view in (lambda: model.hf, lambda: model.bridge, lambda: model.intervenable(None)):
        with pytest.raises(ModelNotAvailableError, match=r"runs on NDIF.*model\.nnsight") as error:
            view()
        assert KEY not in str(error.value)
    lm = model.nnsight
    with pytest.raises(ModelNotAvailableError, match="would download all its weights"):
        with lm.trace(PROMPT, remote=False):
            lm.output.save()
    assert not lm.dispatched


class _NoMiCourse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "mi_course":
            raise ModuleNotFoundError(f"no module named {name!r} on the server")


def _run_like_ndif(blob: bytes, compress: bool, server) -> dict:
    """What an NDIF model actor does with a request (ndif-team/ndif: ``BaseModelDeployment.execute``),
    on a server where mi_course is not installed."""
    from nnsight.schema.request import RequestModel
    from nnsight.tracing.tracer import _saves, dec, inc

    hidden = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "mi_course"}
    blocker = _NoMiCourse()
    sys.meta_path.insert(0, blocker)
    try:
        tracer = RequestModel.deserialize(blob, server._remoteable_persistent_objects(), compress=compress)
        inc()
        try:
            tracer.execute(tracer.info.code)
            saves = _saves()
            return {name: value for name, value in tracer.info.frame.f_locals.items() if id(value) in saves}
        finally:
            dec()
    finally:
        sys.meta_path.remove(blocker)
        sys.modules.update(hidden)


def test_a_lesson_trace_runs_on_a_server_without_mi_course(tiny_repo, network, api_key):
    model = load_model(tiny_repo, remote=True)
    lm = model.nnsight
    positions_of = activations.positions_of
    with pytest.raises(Sent):
        with lm.trace(PROMPT):  # like lesson 2: a course helper and the CourseModel inside the block
            where = positions_of(model, PROMPT, "Eiffel")
            hidden = lm.model.layers[model.n_layers - 1].output[0, where].save()  # noqa: F841

    weights = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_repo), attn_implementation="eager")
    server = nnsight.TransformersModel(weights, tokenizer=AutoTokenizer.from_pretrained(tiny_repo), task="text-generation")
    saved = _run_like_ndif(network["blob"], network["envelope"]["compress"], server)

    outputs = []
    weights.model.layers[-1].register_forward_hook(lambda module, args, output: outputs.append(output))
    with torch.no_grad():
        weights(AutoTokenizer.from_pretrained(tiny_repo)(PROMPT, return_tensors="pt").input_ids)
    assert set(saved) == {"hidden"}
    assert torch.allclose(saved["hidden"], outputs[0][0, [1]])


def test_nnsight_helpers_need_no_local_weights(tiny_repo, network, api_key):
    model = load_model(tiny_repo, remote=True)
    with pytest.raises(Sent):  # the request went out: nothing on the way needed model.hf
        activations.attention_patterns(model, PROMPT)
    assert ablation.head_dim(model) == model.config.hidden_size // model.config.num_attention_heads
