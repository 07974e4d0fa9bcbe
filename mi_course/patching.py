"""Causal interventions: activation patching and interchange interventions (nnsight, pyvene).

A *clean* prompt and a *corrupted* prompt of the same token length differ in the
detail that decides the answer. Patching an activation from the clean run into the
corrupted run and measuring how much of the clean answer comes back tells which
activation carries that detail.

Shapes: ``ids`` are ``[batch, pos]``; logits ``[batch, pos, vocab]``; a residual
cache ``[n_layers, pos, d_model]``. For SmolLM2 the tokenizer adds no BOS, so
position 0 is the prompt's first token. Head ablation is in :mod:`mi_course.ablation`, layer
skipping in :mod:`mi_course.skipping`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from functools import partial

import torch
from tqdm import tqdm  # plain text: a widget is blank once a saved notebook is reopened

from mi_course import architecture
from mi_course.activations import hooks, residual_stream
from mi_course.tokens import encode, str_tokens, token_id

COMPONENTS = ("block_output", "mlp_output", "attention_output")

Metric = Callable[[torch.Tensor], torch.Tensor]
"""What a sweep measures on each patched run: logits ``[batch, pos, vocab]`` -> ``[batch]``. Sweeps may keep only
the last position's logits (``pos`` = 1), so a metric reads position -1."""


# --- prompts and metric -------------------------------------------------------------------------


def prompt_pair(model, clean: str, corrupted: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``([1, pos], [1, pos])`` of a clean and a corrupted prompt; ValueError unless equal length."""
    clean_ids, corrupted_ids = encode(model, clean), encode(model, corrupted)
    if clean_ids.shape != corrupted_ids.shape:
        raise ValueError(
            f"Clean and corrupted prompts must have the same number of tokens, so that position p means the "
            f"same slot in both runs: clean has {clean_ids.shape[1]} {str_tokens(model, clean)}, corrupted has "
            f"{corrupted_ids.shape[1]} {str_tokens(model, corrupted)}. Pick words that are single tokens."
        )
    return clean_ids, corrupted_ids


def answer_ids(model, correct: str, wrong: str) -> tuple[int, int]:
    """Ids of the correct and the wrong answer, each required to be exactly one token."""
    ids = token_id(model, correct), token_id(model, wrong)
    if ids[0] == ids[1]:
        raise ValueError(f"{correct!r} and {wrong!r} are the same token: a logit difference would be 0.")
    return ids


def logit_diff(logits: torch.Tensor, correct_id: int, wrong_id: int, position: int = -1) -> torch.Tensor:
    """``logit[correct] - logit[wrong]`` at ``position`` (default: the last token): ``[batch, pos, vocab]`` -> ``[batch]``."""
    at = logits[:, position]
    return at[:, correct_id] - at[:, wrong_id]


def logit_diff_metric(correct_id: int, wrong_id: int) -> Metric:
    """:func:`logit_diff` at the last position as a sweep's metric."""
    return partial(logit_diff, correct_id=correct_id, wrong_id=wrong_id)


def normalised(value: torch.Tensor, clean_value: float, corrupted_value: float) -> torch.Tensor:
    """Rescale a metric so that the corrupted run gives 0 and the clean run gives 1."""
    return (value - corrupted_value) / (clean_value - corrupted_value)


def first_difference(clean_ids: torch.Tensor, corrupted_ids: torch.Tensor) -> int:
    """The first position where the two prompts' tokens differ (``[1, pos]`` each)."""
    differ = (clean_ids[0] != corrupted_ids[0]).nonzero()
    if len(differ) == 0:
        raise ValueError("The clean and corrupted prompts are identical.")
    return int(differ[0])


# --- activation patching with nnsight -----------------------------------------------------------


@contextmanager
def count_work(model):
    """Count the decoder work of the forward passes run inside the block: yields a dict whose ``token_layers``
    is the number of tokens passed through a decoder layer, summed over layers and calls, and ``forwards``
    the number of calls of layer 0 (one per forward pass that starts at the embeddings)."""
    counts = {"token_layers": 0, "forwards": 0}

    def hook(module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]  # [batch, pos, d_model]
        counts["token_layers"] += x.shape[0] * x.shape[1]
        counts["forwards"] += module is layers[0]

    layers = architecture.layers(model.hf)
    with hooks([layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers]):
        yield counts


def patch_residual_loop(model, clean_ids, corrupted_ids, metric: Metric, layers, positions) -> torch.Tensor:
    """``metric`` after patching the clean residual into the corrupted run, one forward per cell.

    Returns ``[len(layers), len(positions)]``.
    """
    cache = residual_stream(model, clean_ids)
    lm = model.nnsight
    result = torch.zeros(len(layers), len(positions))
    for i, layer in enumerate(tqdm(layers, desc="loop: layers")):
        for j, pos in enumerate(positions):
            with lm.trace(corrupted_ids):
                lm.model.layers[layer].output[0, pos] = cache[layer, pos]
                logits = lm.lm_head.output.save()
            result[i, j] = metric(logits)[0]
    return result


def patch_residual_batched(
    model, clean_ids, corrupted_ids, metric: Metric, layers, positions, batch_size: int = 64
) -> torch.Tensor:
    """The same sweep as :func:`patch_residual_loop`, many patched runs per forward pass.

    Row ``r`` of a batch is a copy of the corrupted prompt whose residual is patched at
    its own cell ``(layer, pos)``. Returns ``[len(layers), len(positions)]``.
    """
    cache = residual_stream(model, clean_ids)
    cells = [(layer, pos) for layer in layers for pos in positions]
    lm = model.nnsight
    values = []
    for start in tqdm(range(0, len(cells), batch_size), desc="batched"):
        chunk = cells[start : start + batch_size]
        with lm.trace(corrupted_ids.expand(len(chunk), -1), logits_to_keep=1):
            for layer in sorted({c[0] for c in chunk}):
                rows = [r for r, c in enumerate(chunk) if c[0] == layer]
                pos = [chunk[r][1] for r in rows]
                lm.model.layers[layer].output[rows, pos] = cache[layer, pos]
            logits = lm.lm_head.output.save()
        values.append(metric(logits))
    return torch.cat(values).reshape(len(layers), len(positions))


def patch_residual_cached(model, clean_ids, corrupted_ids, metric: Metric, layers, positions) -> torch.Tensor:
    """The same sweep as :func:`patch_residual_loop`, computing only what each patch changes.

    A run patched at ``(layer, p)`` is the corrupted run up to ``layer``, and at every position before
    ``p``. So one forward of both prompts keeps every layer's residual and the corrupted run's keys and
    values, then cell ``(layer, p)`` runs only the layers after ``layer``, on positions ``p..`` only,
    attending to the corrupted keys and values of the positions before ``p``. All cells go through a layer
    together as one packed sequence ``[1, N, d_model]`` (each cell's tokens side by side, the cells sorted
    by layer so that those already running come first), with a mask keeping each token to the corrupted
    prefix of its cell and to its own cell's tokens. Returns ``[len(layers), len(positions)]``.
    """
    hf, lm, n, T = model.hf, model.nnsight, model.n_layers, clean_ids.shape[1]
    with lm.trace(torch.cat([clean_ids, corrupted_ids]), use_cache=True, logits_to_keep=1):
        resid = [layer.output for layer in lm.model.layers].save()  # n_layers x [2, pos, d_model]
        cache = lm.model.output.cache.save()
    clean, corrupted = torch.stack(list(resid)).unbind(1)  # [n_layers, pos, d_model] each
    cache.batch_select_indices(torch.tensor([1]))  # the corrupted run's keys and values, [1, kv_heads, pos, d_head]
    result = torch.zeros(len(layers), len(positions))
    cells = sorted((layer % n, p % T, i, j) for i, layer in enumerate(layers) for j, p in enumerate(positions))
    if not cells:
        return result
    tokens = [(c, layer, p, q) for c, (layer, p, _, _) in enumerate(cells) for q in range(p, T)]
    cell, L, p, q = torch.tensor(tokens, device=clean.device).T  # [N] each: token's cell, cell's (layer, p), position

    x = torch.where((q == p)[:, None], clean[L, q], corrupted[L, q])[None]  # [1, N, d_model]: after layer L, patched
    sees = torch.cat([torch.arange(T, device=q.device) < p[:, None], (cell[:, None] == cell) & (q[:, None] >= q)], 1)
    mask = torch.zeros(sees.shape, dtype=x.dtype, device=x.device).masked_fill(~sees, float("-inf"))  # [N, pos + N]
    for layer in range(int(L[0]) + 1, n):
        m = int((L < layer).sum())  # the first m tokens: cells patched below this layer
        # each token at its own position (rotary models; GPT-2's learned positions are already in x)
        x[:, :m] = architecture.call_layer(hf, layer, x[:, :m], mask[None, None, :m, : T + m], q[None, :m], cache)
    logits = hf.lm_head(architecture.final_norm(hf)(x[:, q == T - 1]))  # each cell's last token: [1, cells, vocab]
    rows, cols = torch.tensor([c[2:] for c in cells]).T
    result[rows, cols] = metric(logits.transpose(0, 1)).cpu()  # [cells, 1, vocab] -> [cells]
    return result


def _component(lm, layer: int, component: str):
    """The nnsight module whose output pyvene calls ``component`` at ``layer``."""
    block = lm.model.layers[layer]
    return {"block_output": block, "mlp_output": block.mlp, "attention_output": block.self_attn}[component]


def _component_output(module, component: str):
    """The ``[batch, pos, d_model]`` tensor of a component (attention returns a tuple)."""
    return module.output[0] if component == "attention_output" else module.output


def patch_component_layers(model, clean_ids, corrupted_ids, metric: Metric, component: str, positions) -> torch.Tensor:
    """``metric`` after patching ``component``'s clean output at ``positions`` of one layer, for each layer.

    One batched forward: row l patches layer l. Returns ``[n_layers]``.
    """
    lm = model.nnsight
    positions = list(positions)
    with lm.trace(clean_ids):
        clean = [_component_output(_component(lm, layer, component), component) for layer in range(model.n_layers)].save()
    with lm.trace(corrupted_ids.expand(model.n_layers, -1), logits_to_keep=1):
        for layer in range(model.n_layers):
            out = _component_output(_component(lm, layer, component), component)
            out[layer, positions] = clean[layer][0, positions]
        logits = lm.lm_head.output.save()
    return metric(logits)


def nnsight_patch(model, clean_ids, corrupted_ids, layer: int, component: str, position: int) -> torch.Tensor:
    """Corrupted-run logits ``[1, pos, vocab]`` with ``component``'s clean output patched at one (layer, position)."""
    lm = model.nnsight
    with lm.trace(clean_ids):
        clean = _component_output(_component(lm, layer, component), component)[0, position].save()
    with lm.trace(corrupted_ids):
        _component_output(_component(lm, layer, component), component)[0, position] = clean
        logits = lm.lm_head.output.save()
    return logits.detach().clone()


def pyvene_config(layer: int, component: str):
    """A pyvene config swapping one position of ``component`` at ``layer`` (a vanilla interchange)."""
    import pyvene

    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS}, got {component!r}")
    return pyvene.IntervenableConfig(
        representations=[pyvene.RepresentationConfig(layer, component, "pos", 1)],
        intervention_types=pyvene.VanillaIntervention,
    )


def pyvene_patch(model, clean_ids, corrupted_ids, layer: int, component: str, position: int) -> torch.Tensor:
    """:func:`nnsight_patch` done with pyvene: the base is the corrupted run, the source the clean run."""
    intervenable = model.intervenable(pyvene_config(layer, component))
    _, out = intervenable(
        {"input_ids": corrupted_ids}, [{"input_ids": clean_ids}], {"sources->base": ([[[position]]], [[[position]]])}
    )
    return out.logits.detach().clone()
