"""mi_course.circuits: scores on hand-made patterns, losses, the toy model's checkpoint and
weight readings (checked against TransformerLens), ablation on the embedded model, and an opt-in
retrain that must reproduce the shipped weights."""

import os

import pytest
import torch
import torch.nn.functional as F

from mi_course import circuits as c


def _causal_random(shape, n, seed):
    scores = torch.randn(*shape, n, n, generator=torch.Generator().manual_seed(seed))
    return scores.masked_fill(torch.ones(n, n).triu(1).bool(), float("-inf")).softmax(-1)


def test_repeated_tokens_repeat_and_are_seeded():
    ids = c.repeated_tokens(7, batch=3, half=5, seed=1)
    assert ids.shape == (3, 11) and (ids[:, 0] == 7).all()
    assert torch.equal(ids[:, 1:6], ids[:, 6:])
    assert torch.equal(ids, c.repeated_tokens(7, batch=3, half=5, seed=1))
    assert not torch.equal(ids, c.repeated_tokens(7, batch=3, half=5, seed=2))


def test_induction_and_previous_token_scores():
    half, n = 4, 9
    q = torch.arange(n)
    pattern = torch.zeros(3, n, n)
    pattern[0, q, (q - half + 1).clamp(min=0)] = 1.0   # induction
    pattern[1, q, (q - 1).clamp(min=0)] = 1.0          # previous token
    pattern[2, :, 0] = 1.0                             # BOS
    assert torch.allclose(c.induction_score(pattern, half), torch.tensor([1.0, 0.0, 0.0]))
    # query 1 attends to position 0 = q - 1 in heads 0 and 2 too: 1 of 8 queries
    assert torch.allclose(c.previous_token_score(pattern), torch.tensor([0.125, 1.0, 0.125]))
    batched = _causal_random((2, 5, 3), n, seed=0)
    assert c.induction_score(batched, half).shape == (2, 5, 3)
    explicit = torch.stack([batched[..., k, k - half + 1] for k in range(half + 1, 2 * half + 1)], -1).mean(-1)
    assert torch.allclose(c.induction_score(batched, half), explicit)


def test_token_and_half_losses():
    logits = torch.randn(2, 9, 11, generator=torch.Generator().manual_seed(3))
    ids = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(4))
    losses = c.token_losses(logits, ids)
    assert losses.shape == (2, 8)
    want = F.cross_entropy(logits[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1), reduction="none").reshape(2, 8)
    assert torch.allclose(losses, want, atol=1e-6)
    first, second = c.half_losses(losses, 4)
    assert torch.isclose(first, losses[:, :4].mean()) and torch.isclose(second, losses[:, 5:].mean())


def test_toy_batches_mark_the_predictable_tokens():
    config = c.ToyConfig()
    tokens, repeated = c.toy_batch(config, 16, torch.Generator().manual_seed(0))
    assert tokens.shape == (16, config.n_ctx) and repeated.shape == (16, config.n_ctx - 1)
    assert (tokens[:, 0] == 0).all() and (tokens[:, 1:] > 0).all() and (tokens < config.d_vocab).all()
    for row, marks in zip(tokens, repeated):
        positions = marks.nonzero().flatten()
        length = len(positions) + 1
        assert 6 <= length <= 23
        targets = positions + 1                       # the tokens these losses predict
        assert torch.equal(row[targets], row[targets - length])


@pytest.fixture(scope="module")
def toy():
    torch.set_num_threads(1)
    return c.load_toy()


def test_shipped_toy_has_induction_heads_and_a_phase_change(toy):
    model, config, history = toy
    patterns = c.toy_patterns(model, c.toy_eval_tokens(config))
    assert patterns.shape == (32, 2, 4, 1 + 2 * config.eval_half, 1 + 2 * config.eval_half)
    assert c.induction_score(patterns, config.eval_half).mean(0)[1].max() > 0.6
    assert c.previous_token_score(patterns).mean(0)[0].max() > 0.6
    losses = history["loss_repeated"]
    assert losses[:30].min() > 3.5 and losses[-1] < 1.0        # flat for 750 steps, then learned
    assert history["induction"].shape == (len(history["step"]), 2, 4)


def test_weight_readings_agree_with_transformer_lens(toy):
    from transformer_lens import FactoredMatrix
    from transformer_lens.utilities.matrix import composition_scores

    model, config, _ = toy
    full = c.full_ov(model, 1, 2)
    assert isinstance(full, FactoredMatrix) and full.shape == (config.d_vocab - 1, config.d_vocab - 1)
    dense = model.W_E[1:] @ model.W_V[1, 2] @ model.W_O[1, 2] @ model.W_U[:, 1:]
    assert torch.allclose(full.AB, dense, atol=1e-4)
    assert c.ov_copying_score(model, 1, 2) == float((dense.argmax(-1) == torch.arange(config.d_vocab - 1)).float().mean())
    qk = c.positional_qk(model, 0, 1)
    assert qk.shape == (config.n_ctx, config.n_ctx) and torch.isinf(qk.triu(1)[0, 1:]).all()
    left, right = model.OV[0, 1], model.QK[1, 3].T
    assert c.composition_score(left, right) == pytest.approx(float(composition_scores(left, right, broadcast_dims=False)), rel=1e-4)
    assert c.composition_score(left.AB, right.AB) == pytest.approx(c.composition_score(left, right), rel=1e-5)
    assert torch.allclose(c.k_composition_scores(model), model.all_composition_scores("K").scores[0, :, 1, :], atol=1e-5)
    baseline = c.random_composition_scores(model, n=20, seed=1)
    assert baseline.shape == (20,) and 0.05 < float(baseline.mean()) < 0.25
    assert torch.equal(baseline, c.random_composition_scores(model, n=20, seed=1))


def test_ablation_on_the_embedded_model(model):
    half = 6
    ids = c.repeated_tokens(model.tokenizer.bos_token_id, batch=2, half=half, seed=0)
    clean = c.half_losses(c.token_losses(model.hf(ids).logits, ids), half)
    losses = c.ablated_losses(model, ids, [[], [(17, 4)], [(17, 4), (17, 4)], [(3, 1), (20, 8)]], half, sets_per_batch=3)
    assert losses.shape == (4, 2)
    assert torch.allclose(losses[0], torch.stack(clean), atol=1e-4)
    assert torch.allclose(losses[1], losses[2], atol=1e-4)                    # zeroing twice = once
    assert float((losses[1] - losses[0]).abs().max()) > 1e-3
    d = model.config.head_dim
    hook = model.hf.model.layers[17].self_attn.o_proj.register_forward_pre_hook(
        lambda module, args: (args[0].index_fill(-1, torch.arange(4 * d, 5 * d), 0.0),))
    try:
        manual = c.half_losses(c.token_losses(model.hf(ids).logits, ids), half)
    finally:
        hook.remove()
    assert torch.allclose(losses[1], torch.stack(manual), atol=1e-4)
    patterns = c.attention_patterns(model, ids)
    assert patterns.shape == (2, model.n_layers, model.config.num_attention_heads, 1 + 2 * half, 1 + 2 * half)
    assert torch.allclose(patterns.sum(-1), torch.ones(()), atol=1e-4)
    assert not torch.allclose(c.attention_patterns(model, ids, ablate=[(16, 0)])[:, 17], patterns[:, 17])
    assert torch.equal(c.attention_patterns(model, ids, ablate=[(16, 0)])[:, :17], patterns[:, :17])


def test_llama_k_composition_matches_the_definition(model):
    scores = c.llama_k_composition(model, (5, 4))
    assert scores.shape == (5, model.config.num_attention_heads)
    d, layers = model.config.head_dim, model.hf.model.layers
    writer, reader = layers[2].self_attn, layers[5].self_attn
    gain = layers[5].input_layernorm.weight
    ov = writer.v_proj.weight[d * 1:d * 2].T @ writer.o_proj.weight[:, d * 3:d * 4].T     # query head 3 reads KV head 1
    kq = (gain[:, None] * reader.k_proj.weight[d * 1:d * 2].T) @ (gain[:, None] * reader.q_proj.weight[d * 4:d * 5].T).T
    assert float(scores[2, 3]) == pytest.approx(c.composition_score(ov, kq), rel=1e-4)


@pytest.mark.skipif(os.environ.get("MI_COURSE_RETRAIN_ALL") != "1",
                    reason="slow (about 80 s of CPU time): opt in with MI_COURSE_RETRAIN_ALL=1")
def test_retraining_reproduces_the_shipped_toy(toy):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, history = c.train_toy(c.ToyConfig(), progress=False)
    finally:
        torch.set_num_threads(threads)
    shipped, _, shipped_history = toy
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), shipped.state_dict().values()))
    assert torch.equal(history["loss_repeated"], shipped_history["loss_repeated"])
