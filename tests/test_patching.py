"""mi_course.patching, .ablation and .skipping on the embedded model: batched == cached == loop, pyvene == nnsight,
ablation and skipping are exact."""

import pytest
import torch

from mi_course import ablation, skipping
from mi_course import patching as pt
from mi_course.activations import residual_stream
from mi_course.lens import answer_rank
from mi_course.tokens import encode, token_id

from conftest import CLEAN


def test_prompt_pair_refuses_unequal_lengths(model):
    with pytest.raises(ValueError, match="same number of tokens"):
        pt.prompt_pair(model, CLEAN, CLEAN.replace("Mary", "Maximilian"))


def test_answer_ids_refuse_multi_token_and_identical_answers(model):
    with pytest.raises(ValueError, match="not one"):
        pt.answer_ids(model, " 5", " 6")  # ' 5' is ['Ġ', '5']
    with pytest.raises(ValueError, match="same token"):
        pt.answer_ids(model, " Mary", " Mary")


def test_logit_diff_and_normalised():
    logits = torch.zeros(2, 3, 5)
    logits[:, -1, 1], logits[:, -1, 4] = 3.0, 1.0
    logits[:, 0, 1] = 50.0
    assert torch.equal(pt.logit_diff(logits, 1, 4), torch.tensor([2.0, 2.0]))
    assert torch.equal(pt.logit_diff(logits, 1, 4, position=0), torch.tensor([50.0, 50.0]))
    assert torch.allclose(pt.normalised(torch.tensor([-1.0, 1.0, 3.0]), 3.0, -1.0), torch.tensor([0.0, 0.5, 1.0]))


def ioi(pair):
    """``(clean_ids, corrupted_ids, metric)`` of the IOI pair, the metric its logit difference."""
    clean_ids, corrupted_ids, correct, wrong = pair
    return clean_ids, corrupted_ids, pt.logit_diff_metric(correct, wrong)


def test_logit_diff_metric_reads_the_last_position():
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pt.logit_diff_metric(1, 4)(logits), pt.logit_diff(logits, 1, 4))
    assert torch.equal(pt.logit_diff_metric(1, 4)(logits[:, -1:]), pt.logit_diff(logits, 1, 4))


def test_first_difference(pair):
    clean_ids, corrupted_ids, *_ = pair
    assert pt.first_difference(clean_ids, corrupted_ids) == 9
    with pytest.raises(ValueError):
        pt.first_difference(clean_ids, clean_ids)


def test_residual_stream_matches_hidden_states(model, pair):
    clean_ids = pair[0]
    cache = residual_stream(model, clean_ids)
    hidden = model.hf(clean_ids, output_hidden_states=True).hidden_states
    assert cache.shape == (model.n_layers, clean_ids.shape[1], model.d_model)
    assert torch.allclose(cache[3], hidden[4][0], atol=1e-5)


def test_batched_sweep_equals_loop(model, pair):
    layers, positions = [0, 20, 29], [9, 13]
    loop = pt.patch_residual_loop(model, *ioi(pair), layers, positions)
    batched = pt.patch_residual_batched(model, *ioi(pair), layers, positions, batch_size=4)  # chunks split a layer
    assert torch.allclose(loop, batched, atol=1e-3)
    clean_ld = pt.logit_diff(model.hf(pair[0]).logits, pair[2], pair[3])
    assert torch.allclose(batched[2, 1], clean_ld[0], atol=1e-3)  # last layer, last position = clean run


def test_cached_sweep_equals_loop(model, pair):
    # unsorted, repeated and negative cells; position 0 has no prefix to reuse, layer 29 no layer left to run
    layers, positions = [29, 0, 17, 17], [-1, 0, 9, 11]
    loop = pt.patch_residual_loop(model, *ioi(pair), layers, positions)
    cached = pt.patch_residual_cached(model, *ioi(pair), layers, positions)
    assert cached.shape == loop.shape == (4, 4)
    assert (cached - loop).abs().max() < 1e-4
    assert (loop[:, 2] - loop[:, 1]).abs().max() > 1  # patching S2 (position 9) matters: the cells are not all alike
    assert pt.patch_residual_cached(model, *ioi(pair), [], positions).shape == (0, 4)


def test_sweeps_take_any_metric(model, pair):
    prob = lambda logits: logits[:, -1].softmax(-1)[:, pair[2]]  # noqa: E731  p(correct answer): [batch]
    layers, positions = [5, 29], [9, -1]
    loop = pt.patch_residual_loop(model, *pair[:2], prob, layers, positions)
    assert torch.allclose(pt.patch_residual_batched(model, *pair[:2], prob, layers, positions), loop, atol=1e-5)
    assert torch.allclose(pt.patch_residual_cached(model, *pair[:2], prob, layers, positions), loop, atol=1e-5)
    assert torch.allclose(loop[1, 1], prob(model.hf(pair[0]).logits)[0], atol=1e-5)  # last layer, last position = clean
    by_layer = pt.patch_component_layers(model, *pair[:2], prob, "attention_output", [13])
    assert torch.allclose(by_layer[23], prob(pt.nnsight_patch(model, *pair[:2], 23, "attention_output", 13))[0], atol=1e-5)


def test_count_work_counts_token_layers(model, pair):
    clean_ids = pair[0]
    T, n = clean_ids.shape[1], model.n_layers
    with pt.count_work(model) as batched:
        pt.patch_residual_batched(model, *ioi(pair), [3, 20], [9, T - 1])
    assert batched == {"token_layers": (1 + 4) * T * n, "forwards": 2}  # the clean cache, then 4 patched rows
    with pt.count_work(model) as cached:
        pt.patch_residual_cached(model, *ioi(pair), [3, 20], [9, T - 1])
    above = (n - 1 - 3) + (n - 1 - 20)  # layers each cell's layer has above it
    want = 2 * T * n + above * (T - 9) + above * 1  # both prompts once, then each cell from its position on
    assert cached["forwards"] == 1 and cached["token_layers"] == want
    model.hf(clean_ids)
    assert cached["token_layers"] == want  # the hooks are gone after the block


@pytest.mark.parametrize("component", pt.COMPONENTS)
def test_pyvene_and_nnsight_give_the_same_patched_logits(model, pair, component):
    clean_ids, corrupted_ids, *_ = pair
    a = pt.pyvene_patch(model, clean_ids, corrupted_ids, 20, component, 9)
    b = pt.nnsight_patch(model, clean_ids, corrupted_ids, 20, component, 9)
    assert a.shape == b.shape == (1, clean_ids.shape[1], model.hf.config.vocab_size)
    assert (a - b).abs().max() < 1e-4
    assert (b - model.hf(corrupted_ids).logits).abs().max() > 1e-3  # the patch did something


def test_component_layers_match_single_patches(model, pair):
    clean_ids, corrupted_ids, correct, wrong = pair
    metric = pt.logit_diff_metric(correct, wrong)
    batched = pt.patch_component_layers(model, clean_ids, corrupted_ids, metric, "attention_output", [13])
    single = pt.nnsight_patch(model, clean_ids, corrupted_ids, 23, "attention_output", 13)
    assert batched.shape == (model.n_layers,)
    assert torch.allclose(batched[23], pt.logit_diff(single, correct, wrong)[0], atol=1e-3)


def test_ablate_heads_reuses_the_prefix_exactly(model, pair):
    clean_ids = pair[0]
    lm, d = model.nnsight, ablation.head_dim(model)
    mean = ablation.mean_head_inputs(model, clean_ids)
    got_zero = ablation.ablate_heads(model, clean_ids, [(23, 3), (5, 0)])
    got_mean = ablation.ablate_heads(model, clean_ids, [(23, 3)], mean=mean)
    for row, (layer, head) in enumerate([(23, 3), (5, 0)]):
        with lm.trace(clean_ids):
            lm.model.layers[layer].self_attn.o_proj.input[0, -1, head * d : (head + 1) * d] = 0.0
            want = lm.lm_head.output.save()
        assert torch.allclose(got_zero[row], want[0, -1], atol=1e-3)
    # mean of a single prompt's last position is that prompt's own value: mean ablation changes nothing
    assert torch.allclose(got_mean[0], model.hf(clean_ids).logits[0, -1], atol=1e-3)


def test_skip_logits(model):
    ids = encode(model, ["1 2 3 4 ", "Monday, Tuesday, Wednesday, Thursday,"])
    answers = torch.tensor([token_id(model, "5"), token_id(model, " Friday")])
    logits = skipping.skip_logits(model, ids, [[], [(0, "block")], [(4, "attn"), (4, "mlp")], [(0, "mlp")]])
    assert logits.shape == (4, 2, model.hf.config.vocab_size)
    assert torch.allclose(logits[0], model.hf(ids).logits[:, -1], atol=1e-3)
    # skipping both sublayers of a block is skipping the block
    block4 = skipping.skip_logits(model, ids, [[(4, "block")]])[0]
    assert torch.allclose(logits[2], block4, atol=1e-3)
    assert (answer_rank(logits[0], answers) == 0).all()
    assert (answer_rank(logits[1], answers) > 0).all()


def test_answer_rank():
    logits = torch.tensor([[0.5, 3.0, -1.0], [1.0, 0.0, 2.0]])
    assert answer_rank(logits, torch.tensor([1, 1])).tolist() == [0, 2]
