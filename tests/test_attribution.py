"""mi_course.attribution on the embedded model: the estimate is exact where the model is linear in the
patch, matches a finite difference for small patches, and is zero where the runs agree."""

import numpy as np
import pytest
import torch

from mi_course import ablation
from mi_course import attribution as attr
from mi_course import patching as pt
from mi_course.activations import residual_stream


def test_residual_attribution_shape_zero_prefix_and_last_cell(model, pair):
    clean_ids, corrupted_ids, mary, john = pair
    est = attr.residual_attribution(model, clean_ids, corrupted_ids, pt.logit_diff_metric(mary, john))
    assert est.shape == (model.n_layers, clean_ids.shape[1])
    first = pt.first_difference(clean_ids, corrupted_ids)
    assert float(est[:, :first].abs().max()) < 1e-3  # identical activations: nothing to patch
    assert float(est[-1, :-1].abs().max()) == 0.0  # the last layer's other positions do not reach the logits
    gap = float(pt.logit_diff(model.hf(clean_ids).logits, mary, john) - pt.logit_diff(model.hf(corrupted_ids).logits, mary, john))
    assert abs(float(est[-1, -1]) - gap) < 0.05 * abs(gap)  # only the final norm is not linear there


def test_residual_attribution_is_the_gradient_times_the_difference(model, pair):
    clean_ids, corrupted_ids, mary, john = pair
    # A patch of 1/100 of the difference at one cell: the exact change is 1/100 of the estimate.
    layer, pos = 20, clean_ids.shape[1] - 1
    clean = residual_stream(model, clean_ids)[layer, pos]
    corrupted = residual_stream(model, corrupted_ids)[layer, pos]
    lm = model.nnsight
    with lm.trace(corrupted_ids):
        lm.model.layers[layer].output[0, pos] = corrupted + 0.01 * (clean - corrupted)
        logits = lm.lm_head.output.save()
    small = float(pt.logit_diff(logits, mary, john) - pt.logit_diff(model.hf(corrupted_ids).logits, mary, john))
    est = attr.residual_attribution(model, clean_ids, corrupted_ids, pt.logit_diff_metric(mary, john))
    assert abs(small / 0.01 - float(est[layer, pos])) < 0.02 * abs(float(est[layer, pos])) + 1e-3


def test_head_attribution_matches_a_finite_difference(model, pair):
    clean_ids, corrupted_ids, mary, john = pair
    clean = attr.head_inputs(model, clean_ids)[:, 0]  # [n_layers, d_model]
    corrupted = attr.head_inputs(model, corrupted_ids)[:, 0]
    est = attr.head_attribution(model, corrupted_ids, clean, pt.logit_diff_metric(mary, john))
    assert est.shape == (model.n_layers, model.config.num_attention_heads)
    heads = [(23, 3), (20, 0), (7, 8)]
    small = ablation.ablate_heads(model, corrupted_ids, heads, mean=corrupted + 0.01 * (clean - corrupted))
    base = float(pt.logit_diff(model.hf(corrupted_ids).logits, mary, john))
    for (layer, head), row in zip(heads, small):
        change = float(row[mary] - row[john]) - base
        assert abs(change / 0.01 - float(est[layer, head])) < 0.03 * abs(float(est[layer, head])) + 2e-3
    same = attr.head_attribution(model, corrupted_ids, corrupted, pt.logit_diff_metric(mary, john))
    assert float(same.abs().max()) < 1e-4  # patching a head with its own value changes nothing


def test_head_inputs_shape(model, pair):
    ids = torch.cat([pair[0], pair[1]])
    got = attr.head_inputs(model, ids, position=3)
    assert got.shape == (model.n_layers, 2, model.d_model)


def test_pearson():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=gen), torch.randn(5, 7, generator=gen)
    assert abs(attr.pearson(a, b) - np.corrcoef(a.flatten(), b.flatten())[0, 1]) < 1e-6
    assert abs(attr.pearson(a, 3 * a + 2) - 1) < 1e-9 and abs(attr.pearson(a, -a) + 1) < 1e-9
