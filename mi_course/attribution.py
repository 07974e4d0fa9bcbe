"""Attribution patching: a first-order estimate of every activation patch at once.

Patching an activation ``a`` from its corrupted value ``a*`` to its clean value ``a'`` changes a
metric ``m`` by about ``grad m(a*) · (a' - a*)`` (a Taylor expansion around the corrupted run).
One clean forward, one corrupted forward and one backward give that estimate for every layer,
position and head (Nanda 2023; Syed et al. 2023). It is exact where ``m`` is linear in ``a`` (the
last layer's output at the last position) and can be far off where the patch is large and the
model is not linear in it (early layers, where a whole token's identity changes).

Shapes: ``ids`` are ``[batch, pos]``; residuals ``[n_layers, pos, d_model]``; the attention heads'
outputs are the input of each layer's ``o_proj``, ``[batch, pos, d_model]``, head ``h`` owning
columns ``d_head*h .. d_head*(h+1)-1``. Gradients are taken with nnsight's ``with metric.backward():``;
the course model's weights are frozen, so the trace marks the embeddings as requiring a gradient.
"""

from __future__ import annotations

import torch

from mi_course.ablation import head_dim
from mi_course.patching import Metric


def residual_attribution(model, clean_ids, corrupted_ids, metric: Metric) -> torch.Tensor:
    """Estimated change of ``metric(logits)`` when layer l's output at position p is patched from the clean
    run into the corrupted run: ``[1, pos]`` ids each -> ``[n_layers, pos]``.

    ``grad`` of the metric at the corrupted run (one forward, one backward) times ``clean - corrupted``,
    summed over ``d_model``.
    """
    lm = model.nnsight
    with lm.trace(clean_ids):
        clean = [layer.output[0] for layer in lm.model.layers].save()
    with torch.enable_grad(), lm.trace(corrupted_ids):
        lm.model.embed_tokens.output.requires_grad_(True)
        acts = [layer.output for layer in lm.model.layers]
        value = metric(lm.lm_head.output).sum()
        with value.backward():
            grads = [act.grad[0] for act in reversed(acts)].save()  # gradients arrive last layer first
        corrupted = [act[0].detach() for act in acts].save()
    grad = torch.stack(list(grads)[::-1])  # [n_layers, pos, d_model]
    return ((torch.stack(list(clean)) - torch.stack(list(corrupted))) * grad).sum(-1).detach()


def head_inputs(model, ids, position: int = -1) -> torch.Tensor:
    """Every layer's ``o_proj`` input (all heads' outputs side by side) at ``position``:
    ``[batch, pos]`` -> ``[n_layers, batch, d_model]``."""
    lm = model.nnsight
    with lm.trace(ids):
        outs = [layer.self_attn.o_proj.input[:, position] for layer in lm.model.layers].save()
    return torch.stack(list(outs)).detach()


def head_attribution(model, ids, patch: torch.Tensor, metric: Metric, position: int = -1) -> torch.Tensor:
    """Estimated change of ``metric(logits)`` when each head's output at ``position`` is replaced by its
    slice of ``patch`` (``[n_layers, d_model]`` or ``[n_layers, batch, d_model]``, e.g. the clean run's
    :func:`head_inputs`, or a mean over prompts): ``[batch, pos]`` ids -> ``[n_layers, n_heads]``,
    summed over the batch. One forward and one backward.
    """
    lm = model.nnsight
    with torch.enable_grad(), lm.trace(ids):
        lm.model.embed_tokens.output.requires_grad_(True)
        acts = [layer.self_attn.o_proj.input for layer in lm.model.layers]
        value = metric(lm.lm_head.output).sum()
        with value.backward():
            grads = [act.grad[:, position] for act in reversed(acts)].save()
        here = [act[:, position].detach() for act in acts].save()
    grad, here = torch.stack(list(grads)[::-1]), torch.stack(list(here))  # [n_layers, batch, d_model]
    patch = patch if patch.dim() == 3 else patch[:, None]
    per_column = ((patch - here) * grad).sum(1)  # [n_layers, d_model]
    return per_column.reshape(model.n_layers, -1, head_dim(model)).sum(-1).detach()


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two tensors of the same shape, flattened (1 = same up to scale and shift)."""
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))
