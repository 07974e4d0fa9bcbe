"""Early decoding: the logit lens, the residual stream split into attention and MLP
outputs, and direct logit attribution (any architecture :mod:`mi_course.architecture` supports).

Conventions used throughout:

- "lens layer" ``l`` in ``0..n_layers`` is the residual stream *after* ``l`` decoder
  layers: ``0`` is the first layer's input (the token embeddings, plus GPT-2's position
  embeddings), ``n_layers`` the raw output of the last layer.
- the logit lens of a residual ``x`` is ``lm_head(norm(x))`` with the model's *final*
  norm, which is exactly how the model turns its last residual into logits.
- transformers 5 off-by-one: ``output_hidden_states=True`` returns ``n_layers + 1``
  tensors whose **last one is already final-normed** (the raw output of the last
  layer is not among them). :func:`hidden_states_lens` handles this; the three
  ``residuals_*`` functions return the raw residuals, last layer included.
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch

from mi_course import architecture, plotting
from mi_course.activations import hooks
from mi_course.tokens import token_label


def final_norm(model) -> torch.nn.Module:
    """The model's final norm (``model.hf.model.norm`` for Llama-family models, ``transformer.ln_f`` for GPT-2)."""
    return architecture.final_norm(model.hf)


def lens_logits(model, resid: torch.Tensor) -> torch.Tensor:
    """Logit lens of raw residuals: ``[..., d_model]`` -> ``[..., vocab]`` (final norm, then unembedding)."""
    return model.hf.lm_head(final_norm(model)(resid))


def hidden_states_lens(model, hidden_states, pos: int = -1, batch: int = 0) -> torch.Tensor:
    """Lens logits ``[n_layers + 1, vocab]`` at one position from ``output_hidden_states``.

    ``hidden_states``: the ``n_layers + 1`` tensors ``[batch, pos, d_model]`` of a
    transformers-5 forward; the last one is already normed, so it is unembedded as is.
    """
    raw = torch.stack([h[batch, pos] for h in hidden_states[:-1]])
    return torch.cat([lens_logits(model, raw), model.hf.lm_head(hidden_states[-1][batch, pos])[None]])


def residuals_hooks(model, ids: torch.Tensor) -> torch.Tensor:
    """Raw residual stream ``[n_layers + 1, batch, pos, d_model]`` with plain PyTorch forward hooks
    (on the first decoder layer's input and on every decoder layer's output)."""
    layers = architecture.layers(model.hf)
    saved = []

    def keep(module, inputs, output):
        saved.append(output[0] if isinstance(output, tuple) else output)

    handles = [layers[0].register_forward_pre_hook(lambda module, args: saved.append(args[0]))]
    handles += [m.register_forward_hook(keep) for m in layers]
    with hooks(handles):
        model.hf(ids, logits_to_keep=1)  # only the residuals are kept: unembed one position, not all
    return torch.stack(saved)


def residuals_nnsight(model, ids: torch.Tensor) -> torch.Tensor:
    """Raw residual stream ``[n_layers + 1, batch, pos, d_model]`` read with nnsight."""
    lm = model.nnsight
    with lm.trace(ids):
        saved = [lm.model.layers[0].input] + [layer.output for layer in lm.model.layers]
        saved = saved.save()
    return torch.stack(list(saved))


def residuals_bridge(model, ids: torch.Tensor) -> torch.Tensor:
    """Raw residual stream ``[n_layers + 1, batch, pos, d_model]`` from TransformerLens'
    ``TransformerBridge.run_with_cache`` (pass ids without BOS to match the other two)."""
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(model.n_layers)]
    _, cache = model.bridge.run_with_cache(ids, names_filter=lambda name: name in names)
    return torch.stack([cache[name] for name in names])


def answer_rank(logits: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """Rank of each answer among the vocabulary (0 = top): ``[..., vocab]``, ``[...]`` -> ``[...]``."""
    answer_logit = logits.gather(-1, answer.unsqueeze(-1))
    return (logits > answer_logit).sum(-1)


def answer_ranks(logits: torch.Tensor, token: int) -> torch.Tensor:
    """Rank of ``token`` (0 = top) in each row of ``logits`` ``[layers, vocab]`` -> ``[layers]``."""
    return answer_rank(logits, torch.full(logits.shape[:-1], token, device=logits.device))


def first_top_layer(ranks) -> int | None:
    """The first lens layer from which on the answer is the top token at every later layer
    (``None`` if it is not the top token at the last one)."""
    ranks = [int(r) for r in ranks]
    first = None
    for layer in range(len(ranks) - 1, -1, -1):
        if ranks[layer] != 0:
            break
        first = layer
    return first


def component_outputs(model, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """What each component writes into the residual stream, by forward hooks.

    Returns ``embed`` ``[batch, pos, d_model]`` (the first layer's input), ``attn`` and ``mlp``
    ``[n_layers, batch, pos, d_model]`` (each layer's ``self_attn`` output, before it is
    added to the residual, and its ``mlp`` output), and ``final`` (the raw last residual,
    ``embed + attn.sum(0) + mlp.sum(0)``).
    """
    layers = architecture.layers(model.hf)
    saved = {"embed": [], "attn": [], "mlp": [], "final": []}

    def keep(key):
        return lambda module, inputs, output: saved[key].append(output[0] if isinstance(output, tuple) else output)

    targets = [(layers[-1], "final")] + [(architecture.attention(layer), "attn") for layer in layers]
    targets += [(architecture.get(layer, "mlp"), "mlp") for layer in layers]
    handles = [layers[0].register_forward_pre_hook(lambda module, args: saved["embed"].append(args[0]))]
    handles += [module.register_forward_hook(keep(key)) for module, key in targets]
    with hooks(handles):
        model.hf(ids)
    return {"embed": saved["embed"][0], "attn": torch.stack(saved["attn"]), "mlp": torch.stack(saved["mlp"]),
            "final": saved["final"][0]}


def attention_by_source(model, ids: torch.Tensor, layer: int, pos: int = -1) -> torch.Tensor:
    """Layer ``layer``'s attention output at position ``pos`` of the first prompt, split by the key
    position it reads from: ``[n_positions, d_model]``, summing to that output minus the output
    projection's bias (none in Llama).

    For each head the output at ``pos`` is ``sum_k pattern[pos, k] * v[k]`` and ``o_proj`` is linear,
    so the term of each key position ``k`` is ``W_O concat_heads(pattern[h, pos, k] * v_h[k])``; with
    grouped-query attention head ``h`` reads key/value head ``h // (n_heads // n_kv_heads)``. The values
    are read from the key/value cache (every architecture keeps them there, after any bias). Needs
    eager attention (the pattern).
    """
    block = architecture.layers(model.hf)[layer]
    n_heads, n_kv, d_head = architecture.heads(model.config)
    saved = {}
    with hooks([architecture.attention(block).register_forward_hook(lambda m, i, o: saved.__setitem__("out", o))]):
        cache = model.hf(ids[:1], use_cache=True).cache
    pattern = saved["out"][1]
    if pattern is None:
        raise ValueError("The attention pattern is not materialised: run the model with eager attention.")
    values = cache.layers[layer].values[0].transpose(0, 1)[:, torch.arange(n_heads) // (n_heads // n_kv)]  # [k, head, d_head]
    weighted = pattern[0, :, pos, :].T[:, :, None] * values            # [k, head, d_head]
    return weighted.reshape(ids.shape[1], n_heads * d_head) @ architecture.out_proj_weight(block).T


def logit_direction(model, answer: int, alternative: int) -> torch.Tensor:
    """Unembedding direction ``[d_model]`` of the logit difference ``answer - alternative``."""
    w_u = model.hf.lm_head.weight
    return w_u[answer] - w_u[alternative]


def direct_logit_attribution(model, parts: torch.Tensor, final: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Each part's direct effect on the logit difference along ``direction`` ``[d_model]``.

    ``parts`` ``[..., d_model]`` are vectors added into the residual stream at one position and
    ``final`` ``[d_model]`` is the raw last residual there. The final norm is linear once its
    scale (``1 / rms(final)``; LayerNorm: ``1 / std(final)``, after centring) is frozen at the value of
    the actual forward (:func:`mi_course.architecture.frozen_norm`), so the results sum exactly to the
    model's logit difference (minus the LayerNorm bias's share, ``norm.bias @ direction``, where the model
    has one). The approximation: a part's number is what it adds *given* that scale; removing the part
    would also change the scale (and every later layer).
    """
    return architecture.frozen_norm(final_norm(model), final)(parts) @ direction


def lens_grid(model, ids: torch.Tensor, positions=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top token id and its probability ``[n_layers + 1, n_positions]`` at ``positions`` (default all)
    of the first prompt in ``ids``; only the requested positions are unembedded."""
    positions = list(range(ids.shape[1])) if positions is None else list(positions)
    resid = residuals_hooks(model, ids[:1])[:, 0, positions]
    probs, top = lens_logits(model, resid).softmax(-1).max(-1)
    return top, probs


def lens_heatmap(model, ids: torch.Tensor, positions=None, title: str = "Logit lens") -> go.Figure:
    """Heatmap (lens layer x position, layer 0 at the bottom): colour = top token's probability, text = the
    token, whitespace made visible (:func:`mi_course.plotting.heatmap`: a bare space reads ``␣``)."""
    positions = list(range(ids.shape[1])) if positions is None else list(positions)
    top, probs = lens_grid(model, ids, positions)
    text = [[token_label(model.tokenizer.decode([int(t)])) for t in row] for row in top]
    fig = plotting.heatmap(probs, plotting.position_labels(model, ids, positions), list(range(top.shape[0])), title,
                           label="p(top)", text=text, zrange=(0, 1))
    fig.update_yaxes(autorange=True)  # lens layers read upwards, as the residual stream flows
    return fig.update_layout(xaxis_title="position: input token", yaxis_title="lens layer",
                             height=700, width=max(500, 110 * len(positions)))
