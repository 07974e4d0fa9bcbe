"""Head ablation: replace one attention head's output by zeros or by its mean, and read the logits.

An attention layer's heads write to the residual stream through one matrix, ``o_proj``, whose
input is the concatenation of the query heads' outputs: head ``h`` owns the columns
``d_head*h .. d_head*(h+1)-1`` (with grouped-query attention each query head still has its own
slice, even though heads share keys and values). Ablating a head replaces its slice, at the last
position only, and the logits say what that head contributed to the answer.

Shapes: ``ids`` are ``[batch, pos]``; the ``o_proj`` input ``[batch, pos, d_model]``; a mean over
prompts ``[n_layers, d_model]``; last-position logits ``[len(heads), vocab]``.
"""

from __future__ import annotations

import torch

from mi_course import architecture
from mi_course.activations import hooks


def head_dim(model) -> int:
    """Width of one query head's slice of the attention's ``o_proj`` input (64 for SmolLM2;
    ``config.head_dim`` where the model sets it)."""
    return architecture.heads(model.config)[2]


def mean_head_inputs(model, ids: torch.Tensor) -> torch.Tensor:
    """Mean of every layer's ``o_proj`` input at the last position over prompts: ``[batch, pos]`` -> ``[n_layers, d_model]``.

    The ``o_proj`` input is the concatenation of the query heads' outputs (with GQA,
    each query head still has its own slice, even though heads share keys and values).
    """
    lm = model.nnsight
    with lm.trace(ids):
        means = [layer.self_attn.o_proj.input[:, -1].mean(0) for layer in lm.model.layers].save()
    return torch.stack(list(means))


def ablate_heads(model, ids, heads, mean: torch.Tensor | None = None, batch_size: int = 128) -> torch.Tensor:
    """Last-position logits ``[len(heads), vocab]``, row r with head ``heads[r] = (layer, head)`` ablated.

    The head's slice of the ``o_proj`` input at the last position is replaced by zeros, or by
    ``mean[layer]``'s slice (``[n_layers, d_model]``, from :func:`mean_head_inputs`). Earlier
    positions are not touched, so they run once and every row reuses their keys and values:
    each row then costs one token of compute.
    """
    d_head, layers = head_dim(model), architecture.layers(model.hf)
    heads = list(heads)
    out = []
    for start in range(0, len(heads), batch_size):
        chunk = heads[start : start + batch_size]
        cache = model.hf(ids[:, :-1], use_cache=True).cache
        cache.batch_repeat_interleave(len(chunk))

        def ablate(layer):
            def hook(module, args):
                x = args[0].clone()  # [rows, 1, d_model]: the query heads' outputs at the last position
                for r, (l, h) in enumerate(chunk):
                    if l == layer:
                        cols = slice(h * d_head, (h + 1) * d_head)
                        x[r, :, cols] = 0.0 if mean is None else mean[layer, cols]
                return (x,)

            return hook

        with hooks([architecture.out_proj(layers[l]).register_forward_pre_hook(ablate(l)) for l in {h[0] for h in chunk}]):
            logits = model.hf(ids[:, -1:].expand(len(chunk), 1), cache=cache).logits
        out.append(logits[:, -1])
    return torch.cat(out)
