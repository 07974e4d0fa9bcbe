"""mi_course.saes: the loss's decoder-norm weighting, variance explained, residuals equal the
model's hidden states, an SAE that reconstructs exactly splices in without changing the loss, a zero
steering vector changes nothing, the shipped checkpoint is consistent, and (opt-in, slow) retraining
reproduces the shipped measures."""

import os

import pytest
import torch

from mi_course import saes


def _random_sae(d_model=6, d_sae=10, seed=0):
    sae = saes.SAE(d_model, d_sae, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.b_enc.copy_(0.1 * torch.randn(d_sae, generator=g))
        sae.b_dec.copy_(torch.randn(d_model, generator=g))
    return sae


def test_forward_encodes_then_decodes():
    sae = _random_sae()
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    latents, x_hat = sae(x)
    assert torch.allclose(latents, torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc))
    assert torch.allclose(x_hat, latents @ sae.W_dec + sae.b_dec)


def test_penalty_is_invariant_to_rescaling_latents_against_decoder_rows():
    sae, x = _random_sae(), torch.randn(5, 6, generator=torch.Generator().manual_seed(2))
    _, x_hat, loss = saes.sae_loss(sae, x, 0.7)
    with torch.no_grad():  # latents / 10 and decoder rows * 10: same reconstruction, same loss
        sae.W_enc /= 10
        sae.b_enc /= 10
        sae.W_dec *= 10
    _, x_hat2, loss2 = saes.sae_loss(sae, x, 0.7)
    assert torch.allclose(x_hat, x_hat2, atol=1e-5) and torch.isclose(loss, loss2, rtol=1e-4)


def test_loss_without_penalty_is_the_summed_squared_error():
    sae, x = _random_sae(), torch.randn(4, 6, generator=torch.Generator().manual_seed(3))
    _, x_hat, loss = saes.sae_loss(sae, x, 0.0)
    assert torch.isclose(loss, ((x - x_hat) ** 2).sum(-1).mean())


def test_variance_explained():
    x = torch.randn(100, 4, generator=torch.Generator().manual_seed(4)) + 5
    assert saes.variance_explained(x, x) == 1.0
    assert abs(saes.variance_explained(x, x.mean(0).expand_as(x))) < 1e-6


def test_split_corpus_holds_out_every_kth():
    train, held = saes.split_corpus([str(i) for i in range(25)], 10)
    assert held == ["0", "10", "20"] and len(train) == 22 and not set(train) & set(held)


def test_checkpoint_is_consistent():
    sae, config, extra = saes.load_trained()
    assert tuple(sae.W_enc.shape) == (576, config.d_sae) and tuple(sae.W_dec.shape) == (config.d_sae, 576)
    assert extra["tokens"].shape == (config.n_sequences, config.context)
    assert extra["top_rows"].shape == (config.d_sae, 8) and int(extra["top_rows"].max()) < config.n_sequences * (config.context - 1)
    assert len(extra["log"]["fires_per_latent"]) == config.d_sae and extra["heldout"].shape[1] == config.context
    assert extra["log"]["n_tokens"] + extra["log"]["n_massive"] == config.n_sequences * (config.context - 1)


@pytest.fixture(scope="module")
def model():
    from mi_course import load_model

    torch.set_num_threads(1)
    return load_model()


def test_residuals_are_the_hidden_states(model):
    ids = torch.tensor([model.tokenizer("The cat sat on the mat, said 42 people.")["input_ids"]])
    with torch.no_grad():
        want = model.hf(ids, output_hidden_states=True).hidden_states[13]
    assert torch.allclose(saes.residuals(model.hf, ids, 12), want, atol=1e-4)


def test_an_exact_sae_splices_in_without_changing_the_loss(model):
    d = model.d_model
    exact = saes.SAE(d, 2 * d)
    with torch.no_grad():  # ReLU(x) - ReLU(-x) = x
        exact.W_enc.copy_(torch.cat([torch.eye(d), -torch.eye(d)], 1))
        exact.W_dec.copy_(torch.cat([torch.eye(d), -torch.eye(d)], 0))
        exact.b_enc.zero_()
        exact.b_dec.zero_()
    ids = torch.tensor([model.tokenizer("Return the sum of the values in the list.")["input_ids"]])
    clean, spliced = saes.spliced_losses(model, ids, exact, 12)
    assert abs(clean - spliced) < 1e-4 and clean > 0
    broken = saes.SAE(d, 8)
    assert saes.spliced_losses(model, ids, broken, 12)[1] > clean + 0.5


def test_zero_steering_changes_nothing(model):
    ids = torch.tensor([model.tokenizer("Return the first")["input_ids"]])
    tokens = torch.tensor([15, 16, 17])
    with torch.no_grad():
        want = model.hf(ids).logits[:, -1].softmax(-1)[:, tokens].sum(-1)
    got = saes.steered_probability(model, ids, torch.zeros(model.d_model), 12, tokens)
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.skipif(os.environ.get("MI_COURSE_RETRAIN_ALL") != "1",
                    reason="slow (collects 40k activations and trains; 10-30 minutes): opt in with MI_COURSE_RETRAIN_ALL=1")
def test_retraining_reproduces_the_shipped_measures(model, tmp_path):
    config = saes.SAEConfig()
    acts, ids, heldout = saes.collect(model, config)
    _, _, shipped = saes.load_trained()
    assert torch.equal(ids, shipped["tokens"]) and torch.equal(heldout, shipped["heldout"])
    log = saes.fit_and_save(acts, ids, heldout, config, tmp_path / "sae.pt")
    assert abs(log["train_fve"] - shipped["log"]["train_fve"]) < 0.03
    assert abs(log["train_l0"] - shipped["log"]["train_l0"]) < 0.25 * shipped["log"]["train_l0"]
