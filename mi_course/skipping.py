"""Layer and sublayer skipping: run the model with whole decoder layers, or their attention or
MLP, taken out of the residual stream, and read the last position's logits.

Skipping a layer makes its output equal to its input; skipping a sublayer makes it add nothing.
Many runs go through one batched nnsight trace: run ``r`` is rows ``r*batch .. (r+1)*batch-1``.

Shapes: ``ids`` are ``[batch, pos]``; logits ``[len(skips), batch, vocab]``.
"""

from __future__ import annotations

import torch


def skip_logits(model, ids, skips) -> torch.Tensor:
    """Last-position logits ``[len(skips), batch, vocab]``, one row of skips per run.

    ``skips`` is a list of runs, each a list of ``(layer, part)`` with part ``"block"``
    (the layer's output becomes its input), ``"attn"`` or ``"mlp"`` (that sublayer adds
    nothing to the residual stream).
    """
    lm = model.nnsight
    batch = ids.shape[0]
    runs = [list(s) for s in skips]
    big = ids.repeat(len(runs), 1)
    with lm.trace(big, logits_to_keep=1):
        for layer in range(model.n_layers):
            block = lm.model.layers[layer]
            block_rows = _rows(runs, layer, "block", batch)
            if block_rows:
                skipped = block.input[block_rows].clone()  # read first: nnsight visits modules in forward order
            attn_rows = _rows(runs, layer, "attn", batch)
            if attn_rows:
                block.self_attn.output[0][attn_rows] = 0.0
            mlp_rows = _rows(runs, layer, "mlp", batch)
            if mlp_rows:
                block.mlp.output[mlp_rows] = 0.0
            if block_rows:
                block.output[block_rows] = skipped
        logits = lm.lm_head.output.save()
    return logits[:, -1].reshape(len(runs), batch, -1)


def _rows(runs, layer: int, part: str, batch: int) -> list[int]:
    """Batch rows of the runs that skip ``part`` of ``layer`` (each run has ``batch`` rows)."""
    return [r * batch + b for r, run in enumerate(runs) if (layer, part) in run for b in range(batch)]
