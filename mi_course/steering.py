"""Steering: adding a vector to the residual stream (function vectors, activation addition).

A *function vector* (Todd et al. 2024) is the sum of a few attention heads' mean outputs on
in-context-learning prompts of a task; added to the residual stream of a zero-shot prompt it can
make the model do the task. *Activation addition* (Turner et al. 2023) adds the difference of the
residual streams of a contrast pair ("love" minus "hate") while the model generates. Either is
measured against a *control*: a random vector of the same norm added at the same place.

Shapes: ``ids`` ``[batch, pos]``; a head's output is its ``d_head`` slice of the layer's ``o_proj``
input (``[..., d_model]``); a steering vector is ``[d_model]``; last-position logits ``[batch, vocab]``.
"""

from __future__ import annotations

import torch

from mi_course import architecture
from mi_course.ablation import head_dim

AFTER_FIRST = slice(1, None)
"""Every position but the first: the first token's residual is huge in SmolLM2 (an attention sink),
and adding a vector there breaks the model instead of steering it."""


def function_vector(model, mean_inputs: torch.Tensor, heads) -> torch.Tensor:
    """The sum over ``heads`` (``(layer, head)`` pairs) of each head's mean output mapped into the residual
    stream by its slice of ``o_proj``: ``mean_inputs`` ``[n_layers, d_model]`` (mean ``o_proj`` input at the
    last position, e.g. :func:`mi_course.attribution.head_inputs` averaged over prompts) -> ``[d_model]``."""
    d, layers = head_dim(model), architecture.layers(model.hf)
    vector = torch.zeros(model.d_model, device=mean_inputs.device)
    for layer, head in heads:
        cols = slice(d * head, d * (head + 1))
        vector += architecture.out_proj_weight(layers[layer])[:, cols] @ mean_inputs[layer, cols]
    return vector


def steered_logits(model, ids, vector: torch.Tensor, layer: int, position: int | slice = -1) -> torch.Tensor:
    """Last-position logits ``[batch, vocab]`` with ``vector`` (``[d_model]``, or ``[batch, d_model]``: one per
    prompt) added to decoder layer ``layer``'s output at ``position`` (an int, or a slice such as
    ``AFTER_FIRST``)."""
    if isinstance(position, slice) and vector.dim() == 2:
        vector = vector[:, None]
    lm = model.nnsight
    with lm.trace(ids, logits_to_keep=1):
        lm.model.layers[layer].output[:, position] += vector
        logits = lm.lm_head.output[:, -1].save()
    return logits.detach()


def accuracy(logits: torch.Tensor, answer_ids: torch.Tensor) -> float:
    """Share of rows whose top token is the answer: ``[batch, vocab]``, ``[batch]`` -> a float in [0, 1]."""
    return float((logits.argmax(-1) == answer_ids).float().mean())


def random_like(vector: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` random directions with the norm of ``vector`` (``[d_model]`` -> ``[n, d_model]``), seeded."""
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randn(n, vector.shape[-1], generator=gen).to(vector.device)
    return draws / draws.norm(dim=-1, keepdim=True) * vector.norm()


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a rate ``successes / n``."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre, half = p + z * z / (2 * n), z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def contrast_vector(model, positive: str, negative: str, layer: int) -> torch.Tensor:
    """Activation addition's steering vector: layer ``layer``'s output at the last position of ``positive``
    minus that of ``negative`` (two prompts) -> ``[d_model]``."""
    from mi_course.activations import residual_stream

    return residual_stream(model, positive, -1)[layer] - residual_stream(model, negative, -1)[layer]


def word_probability(logits: torch.Tensor, word_ids) -> torch.Tensor:
    """Probability of the next token being any of ``word_ids``: ``[batch, vocab]`` -> ``[batch]``."""
    return logits.softmax(-1)[:, list(word_ids)].sum(-1)


def steering_effect(model, ids, vector, layer: int, word_ids, n_controls: int = 8, seed: int = 0):
    """Mean change of :func:`word_probability` over the prompts ``ids`` when ``vector`` is added at every position
    but the first of ``layer``, and the same for ``n_controls`` random vectors of its norm (:func:`random_like`
    with ``seed``): ``(effect, [n_controls] effects)``."""
    base = word_probability(model.hf(ids, logits_to_keep=1).logits[:, -1], word_ids)

    def change(v):
        return float((word_probability(steered_logits(model, ids, v, layer, AFTER_FIRST), word_ids) - base).mean())

    return change(vector), torch.tensor([change(v) for v in random_like(vector, n_controls, seed)])


def generate_steered(model, prompt: str, vector: torch.Tensor | None, layer: int, max_new_tokens: int = 20,
                     seed: int = 0) -> str:
    """A sampled continuation of ``prompt`` (seeded) with ``vector`` added to ``layer``'s output at every
    position but the first, at every generation step (nnsight's ``generate``, looping over ``tracer.iter``); ``None``: unsteered."""
    lm = model.nnsight
    torch.manual_seed(seed)
    with lm.generate(prompt, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=True,
                     top_p=0.9, pad_token_id=model.tokenizer.eos_token_id) as tracer:
        if vector is not None:
            for step in tracer.iter[:max_new_tokens]:  # step 0 runs the prompt, each later step one new token
                lm.model.layers[layer].output[:, AFTER_FIRST if step == 0 else slice(None)] += vector
        out = tracer.result.save()
    n = len(model.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return model.tokenizer.decode(out[0, n:])
