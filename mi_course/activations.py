"""Activations captured with nnsight: the residual stream after each decoder layer,
attention patterns, and the parameter budget (figures: :mod:`mi_course.plotting`).

With transformers 5 a decoder layer returns a plain tensor ``[batch, pos, d_model]``
(older code indexed ``output[0]``); an attention module still returns a tuple
``(attn_output, attn_weights)``, whose weights are ``None`` unless the model runs eager
attention. Module paths are Llama's on every model (``lm.model.layers[i].self_attn``):
:data:`mi_course.architecture.RENAME` aliases GPT-2's and GPT-NeoX's names to them.

Inside ``with model.nnsight.trace(prompt):`` modules must be read in forward order,
and only ``.save()``d values (a list counts as one value) survive the block.
"""

from __future__ import annotations

import contextlib

import torch

from mi_course import architecture

def residual_stream(model, prompt, position: int | None = None) -> torch.Tensor:
    """The output of every decoder layer for one prompt, in one forward pass.

    ``prompt``: a string or token ids ``[1, pos]``. Returns ``[n_layers, pos, d_model]``,
    or ``[n_layers, d_model]`` at ``position`` (negative positions count from the end).
    Entry ``l`` is layer ``l``'s output, so the last entry is *not* final-normed
    (``output_hidden_states`` ends with the normed one instead).
    """
    lm = model.nnsight
    with lm.trace(prompt):
        if position is None:
            outputs = [layer.output[0] for layer in lm.model.layers].save()
        else:
            outputs = [layer.output[0, position] for layer in lm.model.layers].save()
    return torch.stack([out.detach() for out in outputs])


def change_by_position(model, prompt_a, prompt_b, layer: int) -> torch.Tensor:
    """Norm of the change of decoder layer ``layer``'s output at each position between two prompts
    of the same token length: ``[pos]`` (exactly 0 before the first differing token)."""
    lm = model.nnsight
    with lm.trace(prompt_a):
        a = lm.model.layers[layer].output[0].save()
    with lm.trace(prompt_b):
        b = lm.model.layers[layer].output[0].save()
    return (a - b).detach().norm(dim=-1)


def cosine_by_layer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of two ``[n_layers, d_model]`` stacks, layer by layer: ``[n_layers]``."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


def positions_of(model, text: str, word: str) -> list[int]:
    """Positions of the tokens of ``text`` that read ``word`` once stripped of spaces and
    lower-cased (``" break"`` and ``"Break"`` both match ``"break"``; ``" breaks"`` does not)."""
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = [model.tokenizer.decode([i]).strip().lower() for i in ids]
    return [i for i, piece in enumerate(pieces) if piece == word.strip().lower()]


@contextlib.contextmanager
def hooks(handles):
    """Run the block with PyTorch hooks in place: ``handles`` are what ``register_forward_hook`` and the like
    returned; each is removed after the block, even when it raises."""
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def eager_attention(model):
    """Run ``model`` with eager attention inside the block (so attention modules return
    their weights), then restore the implementation it had. ``load_model`` already loads
    eager (remote models too): then there is nothing to switch."""
    before = model.config._attn_implementation
    if before == "eager":
        yield model
        return
    model.hf.set_attn_implementation("eager")
    try:
        yield model
    finally:
        model.hf.set_attn_implementation(before)


def attention_patterns(model, prompt) -> torch.Tensor:
    """Attention weights of every layer for one prompt: ``[n_layers, head, q, k]``.

    Row ``q`` of a head is a probability distribution over the key positions
    ``k <= q`` (the model is causal).
    """
    with eager_attention(model):
        lm = model.nnsight
        with lm.trace(prompt):
            patterns = [layer.self_attn.output[1][0] for layer in lm.model.layers].save()
    return torch.stack([p.detach() for p in patterns])


def previous_token_scores(patterns: torch.Tensor) -> torch.Tensor:
    """Previous-token score of each head: the attention from each query ``q >= 1`` to ``q - 1``,
    averaged over those queries. ``[..., q, k]`` -> ``[...]`` (e.g. ``[n_layers, head]``)."""
    return patterns.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)


def parameter_budget(hf_model) -> tuple[list[int], list[int], float]:
    """Parameters of each decoder layer's MLP and attention, and the MLP's share of all the
    model's parameters (a weight shared by two modules, like tied embeddings, counted once)."""
    layers = architecture.layers(hf_model)
    mlp = [sum(p.numel() for p in architecture.get(layer, "mlp").parameters()) for layer in layers]
    attn = [sum(p.numel() for p in architecture.attention(layer).parameters()) for layer in layers]
    return mlp, attn, sum(mlp) / sum(p.numel() for p in hf_model.parameters())


def parameter_groups(hf_model) -> dict[str, int]:
    """The model's parameters by kind: embedding (with the unembedding, and GPT-2's position
    embedding), attention, MLP and norms; each shared weight counted once."""
    tied = hf_model.get_output_embeddings().weight is hf_model.get_input_embeddings().weight
    embedding = "embedding (tied with unembedding)" if tied else "embedding and unembedding"
    kind = {}
    for module in hf_model.modules():
        for p in module.parameters(recurse=False):
            kind[id(p)] = "norms" if "Norm" in type(module).__name__ else embedding
    for layer in architecture.layers(hf_model):
        for name, module in (("attention", architecture.attention(layer)), ("MLP", architecture.get(layer, "mlp"))):
            kind.update((id(p), name) for p in module.parameters())
    groups = {embedding: 0, "attention": 0, "MLP": 0, "norms": 0}
    for p in hf_model.parameters():
        groups[kind[id(p)]] += p.numel()
    return groups
