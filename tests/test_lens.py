"""mi_course.lens on the embedded model: the three logit-lens implementations agree, the
lens at the last layer is the model's output, and the attribution adds up."""

import pytest
import torch

from mi_course import lens, load_model
from mi_course.tokens import encode, token_id, token_label

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model()


@pytest.fixture(scope="module")
def ids(model):
    return encode(model, PROMPT)


@pytest.fixture(scope="module")
def forward(model, ids):
    return model.hf(ids, output_hidden_states=True)


@pytest.fixture(scope="module")
def residuals(model, ids):
    return {
        "hooks": lens.residuals_hooks(model, ids),
        "nnsight": lens.residuals_nnsight(model, ids),
        "bridge": lens.residuals_bridge(model, ids),
    }


def test_residual_shapes(model, ids, residuals):
    for name, resid in residuals.items():
        assert resid.shape == (model.n_layers + 1, 1, ids.shape[1], model.d_model), name


def test_hooks_match_hidden_states_before_the_last_layer(forward, residuals):
    """hidden_states[l] is the raw residual after l layers, except the last one (final-normed).
    (Not bit-exact: booting the bridge switches the HF model from sdpa to eager attention.)"""
    hidden = torch.stack(forward.hidden_states[:-1])
    torch.testing.assert_close(residuals["hooks"][:-1], hidden, atol=1e-3, rtol=1e-4)
    assert not torch.allclose(residuals["hooks"][-1], forward.hidden_states[-1], atol=1e-2)


def test_three_libraries_agree(model, residuals):
    """Plain PyTorch hooks, nnsight and TransformerBridge give the same lens at every layer."""
    reference = lens.lens_logits(model, residuals["hooks"][:, 0, -1])
    for name in ("nnsight", "bridge"):
        torch.testing.assert_close(residuals[name], residuals["hooks"], atol=2e-3, rtol=1e-3, msg=name)
        logits = lens.lens_logits(model, residuals[name][:, 0, -1])
        torch.testing.assert_close(logits, reference, atol=1e-3, rtol=1e-3, msg=name)
        assert torch.equal(logits.argmax(-1), reference.argmax(-1)), name


@pytest.mark.parametrize("name", ["hooks", "nnsight", "bridge"])
def test_lens_at_last_layer_is_the_model_output(model, forward, residuals, name):
    last = lens.lens_logits(model, residuals[name][-1, 0])
    torch.testing.assert_close(last, forward.logits[0], atol=1e-3, rtol=1e-4)


def test_hidden_states_lens_handles_the_normed_last_state(model, forward, residuals):
    from_hidden = lens.hidden_states_lens(model, forward.hidden_states, pos=-1)
    assert from_hidden.shape == (model.n_layers + 1, model.hf.config.vocab_size)
    torch.testing.assert_close(from_hidden[-1], forward.logits[0, -1], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(from_hidden, lens.lens_logits(model, residuals["hooks"][:, 0, -1]), atol=1e-3, rtol=1e-4)
    # normalising the last hidden state a second time is the classic bug, and it is visible
    twice = model.hf.lm_head(lens.final_norm(model)(forward.hidden_states[-1][0, -1]))
    assert (twice - forward.logits[0, -1]).abs().max() > 1.0


def test_bridge_matches_when_given_the_same_ids(model, ids, forward):
    """to_tokens would prepend BOS; with the same ids the bridge's logits are the model's."""
    assert model.bridge.to_tokens(PROMPT).shape[1] == ids.shape[1] + 1
    torch.testing.assert_close(model.bridge(ids), forward.logits, atol=1e-3, rtol=1e-4)


def test_answer_ranks_and_first_top_layer():
    logits = torch.tensor([[3.0, 1.0, 2.0], [1.0, 2.0, 3.0], [0.0, 5.0, 1.0]])
    assert lens.answer_ranks(logits, 1).tolist() == [2, 1, 0]
    assert lens.first_top_layer([0, 0, 1, 0, 0]) == 3
    assert lens.first_top_layer([0, 0, 0]) == 0
    assert lens.first_top_layer([0, 0, 1]) is None


def test_components_add_up_to_the_last_residual(model, ids, residuals):
    parts = lens.component_outputs(model, ids)
    assert parts["attn"].shape == parts["mlp"].shape == (model.n_layers, 1, ids.shape[1], model.d_model)
    torch.testing.assert_close(parts["final"], residuals["hooks"][-1], atol=1e-4, rtol=1e-5)
    total = parts["embed"] + parts["attn"].sum(0) + parts["mlp"].sum(0)
    torch.testing.assert_close(total, parts["final"], atol=1e-2, rtol=1e-4)


def test_attention_and_mlp_outputs_match_the_bridge(model, ids):
    parts = lens.component_outputs(model, ids)
    _, cache = model.bridge.run_with_cache(ids)
    for layer in (0, model.n_layers // 2, model.n_layers - 1):
        torch.testing.assert_close(parts["attn"][layer], cache[f"blocks.{layer}.hook_attn_out"], atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(parts["mlp"][layer], cache[f"blocks.{layer}.hook_mlp_out"], atol=1e-3, rtol=1e-3)


def test_direct_logit_attribution_sums_to_the_logit_difference(model, ids, forward):
    answer, alternative = token_id(model, " Paris"), token_id(model, " London")
    parts = lens.component_outputs(model, ids)
    final = parts["final"][0, -1]
    direction = lens.logit_direction(model, answer, alternative)
    total = sum(
        lens.direct_logit_attribution(model, p, final, direction).sum()
        for p in (parts["embed"][0, -1], parts["attn"][:, 0, -1], parts["mlp"][:, 0, -1])
    )
    logits = forward.logits[0, -1]
    assert float(total) == pytest.approx(float(logits[answer] - logits[alternative]), abs=1e-3)


def test_attention_by_source_sums_to_the_attention_output(model, ids):
    parts = lens.component_outputs(model, ids)
    for layer, pos in [(23, -1), (5, 2)]:
        by_source = lens.attention_by_source(model, ids, layer, pos)
        assert by_source.shape == (ids.shape[1], model.d_model)
        assert torch.allclose(by_source.sum(0), parts["attn"][layer, 0, pos], atol=1e-4)
        if pos >= 0:  # causal: nothing is read from later positions
            assert float(by_source[pos + 1:].abs().max()) == 0.0


def test_token_label_makes_whitespace_visible():
    assert [token_label(t) for t in (" ", " Paris", "Paris", "\n", "\n\n", "\t", "", "a\x00")] == [
        "␣", "␣Paris", "Paris", "↵", "↵↵", "⇥", "∅", "a\\x00"]


def test_figures(model, ids):
    heat = lens.lens_heatmap(model, ids, positions=[3, 4])
    assert heat.data[0].z.shape == (model.n_layers + 1, 2)
    assert list(heat.data[0].x) == ["3: ␣France", "4: ␣is"]
    # A predicted bare space is a visible cell, not an empty one (the arithmetic prompt's last row).
    arith = encode(model, "122 + 125 = 247; 161 + 224 =")
    cells = lens.lens_heatmap(model, arith, positions=[arith.shape[1] - 1]).data[0].text
    assert cells[-1][0] == "␣" and all(row[0].strip() for row in cells)
