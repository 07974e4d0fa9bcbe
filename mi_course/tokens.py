"""Tokens: string pieces, ids, and the answer-token pitfalls (leading spaces, BOS, digits).

For SmolLM2 the tokenizer does *not* prepend BOS (TransformerLens' ``to_tokens``
does), every digit is its own token, and a space before a number is a token of
its own: ``" 385"`` -> ``['Ġ', '3', '8', '5']``.
"""

from __future__ import annotations

import torch


def encode(model, prompts: str | list[str]) -> torch.Tensor:
    """Token ids ``[batch, pos]`` on the model's device (no padding: prompts must have equal length)."""
    tok = model.tokenizer
    batch = [prompts] if isinstance(prompts, str) else list(prompts)
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in batch]
    lengths = {len(i) for i in ids}
    if len(lengths) != 1:
        raise ValueError(
            f"Prompts tokenize to different lengths {sorted(lengths)}; pad them or choose prompts of equal length: "
            + "; ".join(f"{p!r}: {len(i)}" for p, i in zip(batch, ids))
        )
    return torch.tensor(ids, device=model.device)


def str_tokens(model, text: str) -> list[str]:
    """The text split into the model's tokens, as readable strings (``' Paris'``, not ``'ĠParis'``)."""
    tok = model.tokenizer
    return [tok.decode([i]) for i in tok(text, add_special_tokens=False)["input_ids"]]


_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "\\r"}


def token_label(text: str) -> str:
    """A decoded token as figures show it, whitespace made visible: ``" "`` -> ``"␣"``,
    ``" Paris"`` -> ``"␣Paris"``, ``"\\n"`` -> ``"↵"``, a tab -> ``"⇥"``, other control
    characters escaped, the empty string -> ``"∅"``. Every figure that labels tokens uses it,
    so that a predicted bare space is never an empty cell."""
    if text == "":
        return "∅"
    return "".join(_VISIBLE.get(c, c if c.isprintable() else ascii(c)[1:-1]) for c in text)


def token_id(model, text: str) -> int:
    """The id of ``text`` if it is exactly one token (``" Paris"`` and ``"Paris"`` differ); else ValueError."""
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = [model.tokenizer.decode([i]) for i in ids]
        raise ValueError(f"{text!r} is {len(ids)} tokens {pieces}, not one: pick a single-token answer.")
    return ids[0]
