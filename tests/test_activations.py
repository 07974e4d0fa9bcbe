"""mi_course.activations on the embedded model: nnsight captures agree with plain transformers."""

import pytest
import torch

from mi_course import load_model
from mi_course.activations import (
    attention_patterns,
    change_by_position,
    cosine_by_layer,
    eager_attention,
    parameter_budget,
    parameter_groups,
    positions_of,
    previous_token_scores,
    residual_stream,
)

PROMPT = "The city Paris is in France"


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model()


def ids(model, text):
    return torch.tensor([model.tokenizer(text, add_special_tokens=False)["input_ids"]], device=model.device)


def test_residual_stream_matches_hidden_states(model):
    resid = residual_stream(model, PROMPT)
    n_pos = ids(model, PROMPT).shape[1]
    assert resid.shape == (model.n_layers, n_pos, model.d_model)
    hidden = model.hf(ids(model, PROMPT), output_hidden_states=True).hidden_states
    # hidden[0] is the embedding, hidden[l + 1] layer l's output, but the last one is final-normed.
    for layer in range(model.n_layers - 1):
        assert torch.equal(resid[layer], hidden[layer + 1][0])
    assert torch.allclose(model.hf.model.norm(resid[-1]), hidden[-1][0], atol=1e-5)


def test_residual_stream_at_a_position(model):
    whole = residual_stream(model, PROMPT)
    assert torch.equal(residual_stream(model, PROMPT, position=2), whole[:, 2])
    assert torch.equal(residual_stream(model, PROMPT, position=-1), whole[:, -1])


def test_cosine_by_layer():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [3.0, 3.0]])
    assert torch.allclose(cosine_by_layer(a, b), torch.tensor([0.0, 1.0]))


def test_positions_of(model):
    assert positions_of(model, "I will break it", "break") == [2]
    assert positions_of(model, "Break it", " BREAK ") == [0]
    assert positions_of(model, "It breaks", "break") == []


def test_attention_patterns_match_transformers_and_restore_implementation(model):
    before = model.hf.config._attn_implementation
    patterns = attention_patterns(model, PROMPT)
    assert model.hf.config._attn_implementation == before
    n_pos = ids(model, PROMPT).shape[1]
    n_heads = model.hf.config.num_attention_heads
    assert patterns.shape == (model.n_layers, n_heads, n_pos, n_pos)
    assert torch.allclose(patterns.sum(-1), torch.ones(model.n_layers, n_heads, n_pos), atol=1e-5)
    assert torch.triu(patterns, diagonal=1).abs().max() == 0
    with eager_attention(model):
        reference = model.hf(ids(model, PROMPT), output_attentions=True).attentions
    assert torch.allclose(patterns, torch.stack([a[0] for a in reference]), atol=1e-6)


def test_eager_attention_switches_and_restores_after_an_error(model):
    before = model.hf.config._attn_implementation
    model.hf.set_attn_implementation("sdpa")
    try:
        with pytest.raises(RuntimeError):
            with eager_attention(model):
                assert model.hf.config._attn_implementation == "eager"
                raise RuntimeError("boom")
        assert model.hf.config._attn_implementation == "sdpa"
        assert attention_patterns(model, "one two").shape[-1] == 2
        assert model.hf.config._attn_implementation == "sdpa"
    finally:
        model.hf.set_attn_implementation(before)


def test_change_by_position_is_zero_before_the_edit(model):
    change = change_by_position(model, "The city Paris is in France", "The beautiful Paris is in France", 10)
    resid = [residual_stream(model, p)[10] for p in ("The city Paris is in France", "The beautiful Paris is in France")]
    assert torch.allclose(change, (resid[0] - resid[1]).norm(dim=-1))
    assert float(change[0]) == 0.0 and bool((change[1:] > 0).all())


def test_previous_token_scores():
    n = 5
    prev = torch.zeros(n, n)
    prev[0, 0] = 1
    prev[torch.arange(1, n), torch.arange(n - 1)] = 1
    bos = torch.zeros(n, n)
    bos[:, 0] = 1
    scores = previous_token_scores(torch.stack([prev, torch.eye(n), bos])[None])
    assert scores.shape == (1, 3) and torch.allclose(scores[0], torch.tensor([1.0, 0.0, 1 / (n - 1)]))


def test_parameter_budget_counts_tied_weights_once(model):
    mlp, attn, share = parameter_budget(model.hf)
    total = sum(p.numel() for p in model.hf.parameters())
    assert len(mlp) == len(attn) == model.n_layers and mlp[0] == 3 * attn[0]
    assert share == pytest.approx(sum(mlp) / total)
    groups = parameter_groups(model.hf)
    assert sum(groups.values()) == total and groups["MLP"] == sum(mlp) and groups["attention"] == sum(attn)
