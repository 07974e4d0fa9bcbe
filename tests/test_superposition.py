"""mi_course.superposition: the loss weights features by importance, dimensionality gives the
paper's values on hand-made geometries, and the default run reproduces the phases the lesson states
(dense: the two most important features in orthogonal dimensions; medium: antipodal pairs; sparse:
a pentagon)."""

import math

import pytest
import torch

from mi_course import superposition as sp


def test_importance_loss_weights_each_feature_and_averages_the_batch():
    x = torch.zeros(2, 1, 3)
    x_hat = torch.zeros(2, 1, 3)
    x_hat[0, 0, 2] = 1.0  # error 1 on feature 2 in one of two rows
    importance = torch.tensor([1.0, 0.5, 0.25])
    assert torch.allclose(sp.importance_loss(x, x_hat, importance), torch.tensor([0.125]))


def test_forward_is_relu_of_w_transpose_w_x_plus_b():
    W = torch.tensor([[[1.0, 0.0, -1.0]]])  # one instance, m = 1, n = 3
    b = torch.tensor([[0.0, 0.1, -0.5]])
    x = torch.tensor([[[1.0, 0.0, 0.0]]])
    assert torch.allclose(sp.toy_forward(W, b, x), torch.tensor([[[1.0, 0.1, 0.0]]]))


def test_batch_is_sparse_at_the_stated_probability():
    x = sp.toy_batch(20_000, torch.tensor([1.0, 0.1]), 5, torch.Generator().manual_seed(0))
    present = (x > 0).float().mean(dim=(0, 2))
    assert present[0] > 0.99 and abs(present[1] - 0.1) < 0.01


def _polygon(k, n_extra=0):
    angles = torch.arange(k) * 2 * math.pi / k
    W = torch.stack([angles.cos(), angles.sin()])
    return torch.cat([W, torch.zeros(2, n_extra)], 1)[None]


@pytest.mark.parametrize("k, expected", [(2, 0.5), (4, 0.5), (5, 0.4)])
def test_dimensionality_of_regular_polygons(k, expected):
    D = sp.dimensionality(_polygon(k, n_extra=1))
    assert torch.allclose(D[0, :k], torch.full((k,), expected), atol=1e-5) and D[0, k] == 0


def test_dimensionality_of_orthogonal_features_is_one():
    assert torch.allclose(sp.dimensionality(2 * torch.eye(2)[None]), torch.ones(1, 2))


def test_feature_angles_skip_small_features():
    W = torch.tensor([[1.0, 0.0, 0.01], [0.0, -1.0, 0.0]])
    assert [round(a) for a in sp.feature_angles(W)] == [0, 270]


def test_default_run_reproduces_the_phases():
    torch.set_num_threads(1)
    config = sp.ToyConfig()
    W, b, log = sp.train_toy(config)
    norms, D = W.norm(dim=1), sp.dimensionality(W)
    assert log[-1] < log[0]
    assert (norms[0] > 0.5).tolist() == [True, True, False, False, False]  # dense: features 0 and 1 only
    assert abs(sp.feature_angles(W[0])[1] - sp.feature_angles(W[0])[0] - 90) < 5
    for i in (2, 3):  # two antipodal pairs
        assert int((norms[i] > 0.5).sum()) == 4 and ((D[i][norms[i] > 0.5] - 0.5).abs() < 0.05).all()
    for i in range(4, config.n_instances):  # pentagon
        assert ((D[i] - 0.4).abs() < 0.05).all()
        angles = sp.feature_angles(W[i])
        gaps = [b - a for a, b in zip(angles, angles[1:])] + [360 - angles[-1] + angles[0]]
        assert max(abs(g - 72) for g in gaps) < 8
