"""mi_course.plotting: every figure builds, labels tokens with their whitespace visible, and picks its colours
from the values it shows."""

import numpy as np
import torch

from mi_course import plotting


def test_by_layer_draws_one_line_per_curve():
    fig = plotting.by_layer({"a": [0.1, 0.2], "b": torch.tensor([0.3, 0.4])}, "t")
    assert [trace.name for trace in fig.data] == ["a", "b"] and list(fig.data[1].x) == [0, 1]
    fig = plotting.by_layer({"task": np.array([0.5, 0.9]), "control": np.array([0.4, 0.5])}, chance=0.25, layers=[2, 8],
                            yaxis_range=[0, 1.02])
    assert [t.name for t in fig.data] == ["task", "control"] and list(fig.data[0].y) == [0.5, 0.9]
    assert list(fig.data[0].x) == [2, 8] and fig.layout.shapes[0].y0 == 0.25 and list(fig.layout.yaxis.range) == [0, 1.02]


def test_attention_pattern_labels_whitespace():
    heat = plotting.attention_pattern(torch.eye(3), ["x", " y", "\n"])
    assert heat.data[0].z.shape == (3, 3)
    assert list(heat.data[0].x) == ["0: x", "1: ␣y", "2: ↵"], "whitespace tokens are labelled visibly"


def test_heatmap_and_labels(model, pair):
    labels = plotting.position_labels(model, pair[0], [9, 13])
    assert labels == ["9: ␣John", "13: ␣to"]
    assert plotting.position_labels(model, pair[0])[9] == labels[0]
    fig = plotting.heatmap(torch.zeros(3, 2), labels, [0, 1, 2], "t", text=[["a", "b"]] * 3)
    assert fig.data[0].z.shape == (3, 2) and fig.data[0].text[2][1] == "b"


def test_heatmap_is_diverging_only_for_signed_values():
    signed = plotting.heatmap(torch.tensor([[-1.0, 2.0]]), ["a", "b"], [0], "signed")
    damage = plotting.heatmap(torch.tensor([[0.0, 2.0]]), ["a", "b"], [0], "non-negative")
    assert signed.layout.coloraxis.cmid == 0.0 and signed.layout.coloraxis.colorscale[0][1] == "rgb(103,0,31)"
    assert damage.layout.coloraxis.cmid is None and damage.layout.coloraxis.colorscale[0][1] == "rgb(247,251,255)"


def test_contributions_by_layer():
    bars = plotting.contributions_by_layer(0.1, [1.0, 2.0], [3.0, -1.0])
    assert [trace.name for trace in bars.data] == ["attention", "MLP", "embeddings"]
