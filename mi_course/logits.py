"""What goes in and comes out of a language model (lesson 1's references): tokens and ids,
a prompt's logits ``[pos, vocab]``, the next-token distribution, its top-k, the greedy next
token, and a number answer read after its bare-space token.

Lesson 1's graded exercises ask students to write these themselves: their tests run a
student's answer under ``checks.own_work`` with these functions watched, so calling them
earns nothing there. Later cells and lessons may use them freely.
"""

from __future__ import annotations

import torch


def _ids(model, prompt: str) -> torch.Tensor:
    return model.tokenizer(prompt, return_tensors="pt")["input_ids"].to(model.device)


def tokens_and_ids(model, text: str) -> tuple[list[str], list[int]]:
    """The tokenizer's pieces of ``text`` (as ``tokenize`` shows them, ``'Ġis'``) and their ids."""
    return model.tokenizer.tokenize(text), model.tokenizer(text)["input_ids"]


def prompt_logits(model, prompt: str) -> torch.Tensor:
    """The model's logits ``[pos, vocab]`` for ``prompt`` (batch dimension dropped), without gradients."""
    with torch.no_grad():
        return model.hf(_ids(model, prompt)).logits[0]


def next_token_probs(logits: torch.Tensor) -> torch.Tensor:
    """The distribution ``[vocab]`` over the token after the whole prompt: softmax of the last position."""
    return logits[-1].softmax(dim=-1)


def top_k_tokens(model, probs: torch.Tensor, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most likely tokens of ``probs`` ``[vocab]`` as ``(decoded token, probability)``,
    most likely first (leading spaces kept: ``" Paris"``)."""
    top = torch.topk(probs, k)
    return [(model.tokenizer.decode(int(i)), float(v)) for v, i in zip(top.values, top.indices)]


def predict_next_token(model, prompt: str) -> str:
    """The model's most likely next token after ``prompt``, decoded."""
    return model.tokenizer.decode(int(prompt_logits(model, prompt)[-1].argmax()))


def top_next_tokens(model, prompt: str, k: int = 3) -> list[str]:
    """The ``k`` most likely next tokens after ``prompt``, decoded, most likely first."""
    return [t for t, _ in top_k_tokens(model, next_token_probs(prompt_logits(model, prompt)), k)]


def read_number_answer(model, prompt: str, max_new_tokens: int = 6) -> int | None:
    """Continue ``prompt`` greedily for at most ``max_new_tokens`` tokens, skip bare-space tokens
    before the number, collect the digit tokens that follow up to the first other token, and
    return the number (``None`` when no digit came)."""
    ids = _ids(model, prompt)
    digits = ""
    for _ in range(max_new_tokens):
        with torch.no_grad():
            token = int(model.hf(ids).logits[0, -1].argmax())
        text = model.tokenizer.decode([token])
        ids = torch.cat([ids, torch.tensor([[token]], device=ids.device)], dim=1)
        if text.strip() == "" and not digits:
            continue
        if not text.isdigit():
            break
        digits += text
    return int(digits) if digits else None
