"""mi_course.steering on the embedded model: a function vector is the heads' o_proj slices, adding a
vector is exact (zero changes nothing), controls are seeded and of the same norm, generation is seeded."""

import pytest
import torch

from mi_course import steering as st
from mi_course.activations import residual_stream
from mi_course.tokens import encode


def test_function_vector_is_the_heads_o_proj_slices(model):
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(model.n_layers, model.d_model, generator=gen)
    heads = [(3, 1), (3, 4), (20, 8)]
    want = torch.zeros(model.d_model)
    for layer in (3, 20):
        masked = torch.zeros(model.d_model)
        for l, h in heads:
            if l == layer:
                masked[64 * h : 64 * (h + 1)] = mean[layer, 64 * h : 64 * (h + 1)]
        want += model.hf.model.layers[layer].self_attn.o_proj(masked)
    assert torch.allclose(st.function_vector(model, mean, heads), want, atol=1e-4)
    assert float(st.function_vector(model, mean, []).abs().max()) == 0.0


def test_steered_logits(model):
    ids = encode(model, ["The cat sat on the", "A dog ran into the"])
    plain = model.hf(ids).logits[:, -1]
    zero = torch.zeros(model.d_model)
    assert torch.allclose(st.steered_logits(model, ids, zero, 5), plain, atol=1e-4)
    assert torch.allclose(st.steered_logits(model, ids, zero, 5, position=None), plain, atol=1e-4)
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1)) * 10
    last = model.n_layers - 1
    resid = residual_stream(model, ids[:1], -1)[last]
    want = model.hf.lm_head(model.hf.model.norm(resid + v))
    assert torch.allclose(st.steered_logits(model, ids[:1], v, last)[0], want, atol=1e-3)
    assert not torch.allclose(st.steered_logits(model, ids, v, 5, position=None), plain, atol=1e-2)


def test_accuracy_word_probability_random_like_and_wilson():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    assert st.accuracy(logits, torch.tensor([1, 1])) == 0.5
    assert torch.allclose(st.word_probability(logits, [1, 2]), logits.softmax(-1)[:, 1:].sum(-1))
    v = torch.arange(5.0)
    r = st.random_like(v, 4, seed=3)
    assert r.shape == (4, 5) and torch.allclose(r.norm(dim=-1), v.norm().expand(4))
    assert torch.equal(r, st.random_like(v, 4, seed=3)) and not torch.equal(r, st.random_like(v, 4, seed=4))
    low, high = st.wilson(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.2775, abs=1e-3)
    low, high = st.wilson(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)


def test_contrast_vector_and_steering_effect(model):
    v = st.contrast_vector(model, "I love", "I hate", 4)
    want = residual_stream(model, "I love", -1)[4] - residual_stream(model, "I hate", -1)[4]
    assert torch.allclose(v, want, atol=1e-5)
    ids = encode(model, ["The cat sat on the", "A dog ran into the"])
    words = [model.tokenizer(" love")["input_ids"][0]]
    effect, controls = st.steering_effect(model, ids, torch.zeros_like(v), 4, words, n_controls=2)
    assert effect == pytest.approx(0.0, abs=1e-6) and controls.shape == (2,)


def test_generate_steered_is_seeded(model):
    v = st.contrast_vector(model, "I love", "I hate", 4) * 4
    a = st.generate_steered(model, "I think that", None, 4, max_new_tokens=6, seed=0)
    assert a == st.generate_steered(model, "I think that", None, 4, max_new_tokens=6, seed=0)
    b = st.generate_steered(model, "I think that", v, 4, max_new_tokens=6, seed=0)
    assert isinstance(b, str) and b != a
