"""The embedded model: prepared once, rebuilt when corrupt, one set of weights
behind every library view, clear errors for models that are not available."""

import shutil

import pytest
import torch

from mi_course import models, tokens


@pytest.fixture(scope="module")
def model():
    return models.load_model()


def test_embedded_model_predicts_paris(model):
    ids = tokens.encode(model, "The Eiffel Tower is in the city of")
    with torch.no_grad():
        top = model.hf(ids).logits[0, -1].argmax()
    assert model.tokenizer.decode(top) == " Paris"
    assert not any(p.requires_grad for p in model.hf.parameters())
    assert models.load_model() is model, "load_model should return the cached model"


def test_all_library_views_share_the_weights_and_agree(model):
    ids = tokens.encode(model, "The Colosseum is in the city of")
    with torch.no_grad():
        reference = model.hf(ids).logits
    with model.nnsight.trace(ids):
        via_nnsight = model.nnsight.output.logits.save()
    assert torch.allclose(via_nnsight, reference, atol=1e-4)
    with torch.no_grad():
        via_bridge = model.bridge(ids)
    assert torch.allclose(via_bridge, reference, atol=1e-3)
    embed = model.hf.get_input_embeddings().weight
    assert model.nnsight.model.embed_tokens.weight.data_ptr() == embed.data_ptr()
    assert any(p.data_ptr() == embed.data_ptr() for p in model.bridge.parameters()), "the bridge copied the weights"
    with torch.no_grad():
        after = model.hf(ids).logits
    assert torch.equal(after, reference), "building the views changed the transformers model"
    assert type(model.hf.model.layers[0]).__name__ == "LlamaDecoderLayer", "the bridge rewired model.hf"


def test_pyvene_view_runs_on_the_same_module(model):
    import pyvene as pv

    config = pv.IntervenableConfig(
        representations=[pv.RepresentationConfig(5, "block_output", "pos", 1)], intervention_types=pv.VanillaIntervention
    )
    intervenable = model.intervenable(config)
    base = tokens.encode(model, "The Eiffel Tower is in the city of")
    last = base.shape[1] - 1
    # Patching a run into itself changes nothing.
    _, out = intervenable({"input_ids": base}, [{"input_ids": base}], {"sources->base": ([[[last]]], [[[last]]])})
    with torch.no_grad():
        reference = model.hf(base).logits
    assert torch.allclose(out.logits, reference, atol=1e-4)
    hidden = model.hf(base, output_hidden_states=True).hidden_states
    assert len(hidden) == model.n_layers + 1, "running pyvene broke model.hf's hidden-state recording"


def test_unavailable_model_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelNotAvailableError, match="no-such-org/no-such-model.*offline"):
        models.load_model("no-such-org/no-such-model")


def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, monkeypatch):
    models.prepare_embedded()
    source = models.embedded_model_dir()
    monkeypatch.setenv("MI_COURSE_CACHE", str(tmp_path))
    copy = models.embedded_model_dir()
    shutil.copytree(source, copy)
    assert models.embedded_is_prepared()
    with open(copy / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    assert not models.embedded_is_prepared()
    models.prepare_embedded(install=False)
    assert models.embedded_is_prepared()
    assert (copy / "model.safetensors").stat().st_size == (source / "model.safetensors").stat().st_size


def test_loading_progress_is_plain_text_never_a_widget():
    """In a notebook, tqdm.auto draws a widget; saved and reopened, the setup cell then reads "Error
    displaying widget: model not found". While loading, transformers' bars (and the GGUF loader's
    own tqdm) are plain tqdm, shown only after a delay; everything is restored afterwards."""
    import types

    from tqdm import std
    from transformers.utils import logging as hf_logging

    gguf_loader = types.SimpleNamespace(tqdm="tqdm.auto's")
    before = hf_logging.set_tqdm_hook(None)
    hf_logging.set_tqdm_hook(before)
    with models._plain_progress(gguf_loader):
        bar = hf_logging.tqdm(range(3), desc="Loading weights")
        assert type(bar) is std.tqdm and bar.delay > 0
        bar.close()
        assert gguf_loader.tqdm.func is std.tqdm
    assert gguf_loader.tqdm == "tqdm.auto's" and hf_logging.set_tqdm_hook(before) is before
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with models._plain_progress():
            assert isinstance(hf_logging.tqdm(range(3)), hf_logging.EmptyTqdm), "bars the user turned off stay off"
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
