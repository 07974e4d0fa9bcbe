"""Where each architecture keeps its parts: one spelling for every supported model.

The course writes Llama's names everywhere: ``model.layers[i].self_attn.o_proj``, ``.mlp``,
``model.embed_tokens``, ``model.norm``, ``lm_head``. :data:`RENAME` maps other architectures'
native names onto them. nnsight applies it as aliases (``rename=`` on the model wrapper: a key
that does not resolve on a model is skipped, so one map serves all), and :func:`get` applies
the same map to the plain ``transformers`` module tree for hooks and weights.

Supported and tested (``tests/test_architectures.py``): Llama (SmolLM2), Qwen2, Gemma (as is),
GPT-2 (``transformer.h``, ``attn.c_proj``, ``wte``, ``ln_f``), GPT-NeoX / Pythia (``gpt_neox``,
``attention.dense``, ``embed_in``, ``final_layer_norm``). What differs beyond names:

- GPT-2 adds learned position embeddings (``wpe``) to the token embeddings, so the residual
  stream before layer 0 is the first layer's *input*, not the embedding's output
  (:func:`positions` says which kind a model has);
- GPT-2's projections are ``Conv1D`` (weight stored ``[in, out]``): :func:`out_proj_weight`
  returns every model's output projection as ``[d_model, n_heads * d_head]``;
- GPT-2 and GPT-NeoX use LayerNorm (centring, bias), Llama, Qwen2 and Gemma RMSNorm; Gemma's
  RMSNorm multiplies by ``1 + weight`` and its embedding scales by ``sqrt(d_model)``
  (:func:`norm_gain`, :func:`embed_scale`);
- GPT-NeoX runs attention and MLP in parallel from the same input and names its layers' cache
  argument ``layer_past``.

In transformers 5 every decoder layer here returns a tensor ``[batch, pos, d_model]`` and
every attention module a tuple ``(output, weights)``.
"""

from __future__ import annotations

import inspect

import torch

RENAME = {
    "transformer": "model", "gpt_neox": "model",              # the backbone
    "h": "layers",                                             # GPT-2's decoder layers
    "wte": "embed_tokens", "embed_in": "embed_tokens",         # token embedding
    "ln_f": "norm", "final_layer_norm": "norm",                # final norm
    "attn": "self_attn", "attention": "self_attn",             # a layer's attention
    "attn.c_proj": "attn.o_proj", "attention.dense": "attention.o_proj",  # its output projection
}
"""Native name -> the course's (Llama's) name, as nnsight's ``rename=`` takes it."""

_NATIVE: dict[str, list[str]] = {}
for _key, _alias in RENAME.items():
    _NATIVE.setdefault(_alias.rsplit(".", 1)[-1], []).append(_key.rsplit(".", 1)[-1])

PATHS = ("model.embed_tokens", "model.layers", "model.norm", "lm_head")
LAYER_PATHS = ("self_attn", "self_attn.o_proj", "mlp")


class UnsupportedArchitectureError(ValueError):
    """The model lacks a part the course reads (named in the message)."""


def get(module: torch.nn.Module, path: str) -> torch.nn.Module:
    """The submodule at ``path`` in the course's spelling (``"model.layers"``, ``"self_attn.o_proj"``),
    found under its native name where the model spells it differently; AttributeError if absent."""
    for part in path.split("."):
        names = [part, *_NATIVE.get(part, [])]
        found = [getattr(module, n) for n in names if isinstance(getattr(module, n, None), torch.nn.Module)]
        if not found:
            raise AttributeError(f"{type(module).__name__} has no {' / '.join(names)}")
        module = found[0]
    return module


def layers(hf) -> torch.nn.ModuleList:
    """The decoder layers (``model.layers`` / ``transformer.h`` / ``gpt_neox.layers``)."""
    return get(hf, "model.layers")


def backbone(hf) -> torch.nn.Module:
    """The transformer without its unembedding (``hf.model`` / ``hf.transformer`` / ``hf.gpt_neox``)."""
    return get(hf, "model")


def final_norm(hf) -> torch.nn.Module:
    """The norm applied before the unembedding."""
    return get(hf, "model.norm")


def attention(layer) -> torch.nn.Module:
    """A decoder layer's attention module (returns ``(output, weights)``)."""
    return get(layer, "self_attn")


def out_proj(layer) -> torch.nn.Module:
    """A layer's attention output projection; its input is the query heads' outputs side by side,
    ``[..., n_heads * d_head]``, head ``h`` owning columns ``h * d_head .. (h + 1) * d_head - 1``."""
    return get(layer, "self_attn.o_proj")


def out_proj_weight(layer) -> torch.Tensor:
    """The output projection's weight as ``[d_model, n_heads * d_head]`` (GPT-2's ``Conv1D`` stores it transposed)."""
    proj = out_proj(layer)
    return proj.weight if isinstance(proj, torch.nn.Linear) else proj.weight.T


def heads(config) -> tuple[int, int, int]:
    """``(n_heads, n_kv_heads, d_head)``: query heads, key/value heads (fewer with grouped-query
    attention) and the width of one head."""
    n_heads = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    d_head = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    return n_heads, n_kv, d_head


def positions(hf) -> str:
    """``"learned"`` (position embeddings added to the token embeddings, GPT-2) or ``"rotary"``."""
    return "learned" if hasattr(backbone(hf), "wpe") else "rotary"


def embed_scale(hf) -> float:
    """The factor the embedding multiplies token vectors by (``sqrt(d_model)`` for Gemma, else 1)."""
    return float(getattr(get(hf, "model.embed_tokens"), "scalar_embed_scale", 1.0))


def norm_gain(norm) -> torch.Tensor:
    """The per-feature gain ``[d_model]`` a norm multiplies by (``1 + weight`` for Gemma's RMSNorm)."""
    return norm.weight + 1 if type(norm).__name__.startswith("Gemma") else norm.weight


def frozen_norm(norm, final: torch.Tensor):
    """The norm as a linear map with its scale frozen at the value it takes on ``final`` ``[..., d_model]``:
    a function ``[..., d_model]`` -> ``[..., d_model]`` without the bias (LayerNorm also centres).
    The images of vectors summing to ``final`` sum to ``norm(final)`` minus the bias."""
    if isinstance(norm, torch.nn.LayerNorm):
        scale = torch.rsqrt(final.var(-1, unbiased=False) + norm.eps)[..., None]
        return lambda x: (x - x.mean(-1, keepdim=True)) * scale * norm.weight
    eps = getattr(norm, "variance_epsilon", None) or norm.eps
    scale = torch.rsqrt(final.pow(2).mean(-1) + eps)[..., None]
    return lambda x: x * scale * norm_gain(norm)


def norm_bias(norm) -> torch.Tensor | float:
    """What a norm adds after scaling (LayerNorm's bias; 0 for RMSNorm)."""
    return norm.bias if getattr(norm, "bias", None) is not None else 0.0


def call_layer(hf, layer: int, x: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, cache) -> torch.Tensor:
    """Run decoder layer ``layer`` alone on ``x`` ``[1, n, d_model]`` at ``position_ids`` ``[1, n]``, with an
    additive attention ``mask`` ``[1, 1, n, k]`` over the ``cache``'s keys followed by the new ones."""
    block = layers(hf)[layer]
    kwargs = {"attention_mask": mask}
    kwargs["layer_past" if "layer_past" in inspect.signature(block.forward).parameters else "cache"] = cache
    rotary = getattr(backbone(hf), "rotary_emb", None)
    if rotary is not None:
        kwargs["position_embeddings"] = rotary(x, position_ids)
    return block(x, **kwargs)


def check(hf) -> None:
    """Raise :class:`UnsupportedArchitectureError` naming every part the course cannot find in ``hf``."""
    missing = []
    for path in PATHS:
        try:
            get(hf, path)
        except AttributeError as err:
            missing.append(f"{path} ({err})")
    if not missing:
        for path in LAYER_PATHS:
            try:
                get(layers(hf)[0], path)
            except AttributeError as err:
                missing.append(f"model.layers[0].{path} ({err})")
    if missing:
        raise UnsupportedArchitectureError(
            f"The course cannot read {type(hf).__name__} ({hf.config.model_type}): missing "
            + "; ".join(missing)
            + ". Supported: Llama/SmolLM2, Qwen2, Gemma, GPT-2, GPT-NeoX/Pythia (mi_course/architecture.py)."
        )
