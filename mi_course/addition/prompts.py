"""Few-shot arithmetic prompts for a pretrained LLM (lesson 6): generation by category,
reading the answer, digit-level targets and accuracy by category, and the interchange
interventions of part 3 (the hypotheses a one-operand interchange tests, and a batched
pyvene interchange read as digit probabilities).

A prompt is ``"122 + 125 = 247; 161 + 224 ="``: ``n_shots`` solved examples, then the
question. For SmolLM2 (and Llama-3 tokenizers) every digit is its own token and a space
before a number is a separate bare-space token ``'Ġ'``: after ``" ="`` the model first
predicts ``' '``, then one token per answer digit. So

- :func:`read_answer` skips that space before reading digits;
- :func:`digit_targets` appends ``" " + answer`` and gives, for each answer digit, its
  token id and the position whose logits predict it (the token *before* the digit).

Prompts of one category share their shots and their digit count, so they tokenize to the
same length and run as one batch with no padding. Tokenizers that group digits (Llama 3
groups up to three) give digit *groups* as targets instead of single digits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from mi_course.tokens import encode

OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b}


@dataclass(frozen=True)
class ArithmeticPrompt:
    """One question ``a op b`` asked after ``shots`` (pairs solved in the prompt itself)."""

    a: int
    b: int
    shots: tuple[tuple[int, int], ...] = ()
    op: str = "+"

    @property
    def answer(self) -> int:
        return OPERATIONS[self.op](self.a, self.b)

    @property
    def text(self) -> str:
        """``"s1 + t1 = u1; ...; a + b ="`` (no trailing space: the model predicts it)."""
        solved = [f"{x} {self.op} {y} = {OPERATIONS[self.op](x, y)}; " for x, y in self.shots]
        return "".join(solved) + f"{self.a} {self.op} {self.b} ="


def has_carry(a: int, b: int) -> bool:
    """True when some column of ``a + b`` sums to 10 or more."""
    while a or b:
        if a % 10 + b % 10 >= 10:
            return True
        a, b = a // 10, b // 10
    return False


def _operand(rng: random.Random, n_digits: int) -> int:
    """A random number with exactly ``n_digits`` digits (0..9 for one digit)."""
    return rng.randint(0 if n_digits == 1 else 10 ** (n_digits - 1), 10**n_digits - 1)


def sample_pairs(n_digits: int, carry: bool | None, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """``n`` distinct seeded pairs of ``n_digits``-digit numbers, with a carry, without, or either (``None``)."""
    rng = random.Random(seed)
    pairs: list[tuple[int, int]] = []
    for _ in range(1000 * n):
        pair = (_operand(rng, n_digits), _operand(rng, n_digits))
        if (carry is None or has_carry(*pair) == carry) and pair not in pairs:
            pairs.append(pair)
            if len(pairs) == n:
                return pairs
    raise ValueError(f"Could not find {n} distinct {n_digits}-digit pairs with carry={carry}.")


def shot_pairs(n_digits: int, n_shots: int, seed: int = 0) -> list[tuple[int, int]]:
    """Seeded solved examples whose sums keep ``n_digits`` digits, so every shot has the same token length."""
    rng = random.Random(10_000 + seed)
    shots = []
    while len(shots) < n_shots:
        a, b = _operand(rng, n_digits), _operand(rng, n_digits)
        if a and b and a + b < 10**n_digits:
            shots.append((a, b))
    return shots


def category_prompts(n_digits: int, carry: bool | None, n_shots: int, n: int, seed: int = 0) -> list[ArithmeticPrompt]:
    """``n`` prompts of one category (digit count, carry or not, number of shots); all share the same shots,
    so they tokenize to the same length."""
    shots = tuple(shot_pairs(n_digits, n_shots, seed))
    return [ArithmeticPrompt(a, b, shots) for a, b in sample_pairs(n_digits, carry, n, seed)]


def read_answer(continuation: str) -> int | None:
    """The number at the start of a generated continuation, after at most one bare space
    (``" 385; 12"`` -> 385); ``None`` when it does not start with a digit."""
    text = continuation[1:] if continuation.startswith(" ") else continuation
    digits = ""
    for char in text:
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits else None


def greedy_continuations(model, texts: list[str], n_tokens: int) -> list[str]:
    """Greedy continuations of ``n_tokens`` tokens for prompts of equal token length, as text.

    One batch ``[batch, pos]``; the tokens the prompts share at the start (the shots) run once
    and their keys and values are reused by every row; then one token per step (KV cache).
    """
    ids = encode(model, texts)
    shared = int((ids == ids[:1]).all(0).long().cumprod(0).sum())
    shared = min(shared, ids.shape[1] - 1)
    cache = None
    if shared:
        cache = model.hf(ids[:1, :shared], use_cache=True).cache
        cache.batch_repeat_interleave(ids.shape[0])
    out = model.hf(ids[:, shared:], cache=cache, use_cache=True)
    new = []
    for step in range(n_tokens):
        token = out.logits[:, -1].argmax(-1, keepdim=True)  # [batch, 1]
        new.append(token)
        if step < n_tokens - 1:
            out = model.hf(token, cache=out.cache, use_cache=True)
    tokens = torch.cat(new, 1)
    return [model.tokenizer.decode(row) for row in tokens]


def exact_match(model, prompts: list[ArithmeticPrompt]) -> list[bool]:
    """Whether greedy decoding gives each prompt's exact answer (prompts of equal token length)."""
    n_tokens = max(len(str(p.answer)) for p in prompts) + 2  # space, digits, one more to see the end
    continuations = greedy_continuations(model, [p.text for p in prompts], n_tokens)
    return [read_answer(c) == p.answer for c, p in zip(continuations, prompts)]


def accuracy_by_category(model, categories: dict[str, list[ArithmeticPrompt]]) -> dict[str, float]:
    """Exact-match accuracy of each category's prompts: ``{name: fraction correct}``."""
    return {name: sum(exact_match(model, prompts)) / len(prompts) for name, prompts in categories.items()}


def digit_token_ids(model) -> list[int]:
    """Token ids of ``"0"`` .. ``"9"`` (each digit is one token)."""
    return [int(encode(model, str(d))[0, 0]) for d in range(10)]


def digit_targets(model, text: str, answer: int) -> tuple[torch.Tensor, list[int], list[int]]:
    """Teacher-forced ids of ``text + " " + answer`` ``[1, pos]``, the token id of each answer digit,
    and the position whose logits predict each digit (the position just before it).

    The first digit is predicted at the bare-space token, *not* at the prompt's last token
    (``" ="``, which predicts the space).
    """
    prompt_len = encode(model, text).shape[1]
    ids = encode(model, f"{text} {answer}")
    digits = ids[0, prompt_len + 1 :].tolist()
    return ids, digits, list(range(prompt_len, prompt_len + len(digits)))


def interchange_hypotheses(base: ArithmeticPrompt, source: ArithmeticPrompt) -> dict[str, int]:
    """The answer each hypothesis predicts when an activation of ``source`` (which differs from
    ``base`` in one operand) is patched into ``base``: ``"ignored"`` (the base's answer),
    ``"operand"`` (computed with the source's operand) and ``"copied"`` (the source's operand
    itself), in that order."""
    if source.a != base.a:
        operand, computed = source.a, OPERATIONS[base.op](source.a, base.b)
    else:
        operand, computed = source.b, OPERATIONS[base.op](base.a, source.b)
    return {"ignored": base.answer, "operand": computed, "copied": operand}


def interchange_rows(model, rows, layer: int, component: str = "block_output") -> torch.Tensor:
    """Digit probabilities ``[len(rows), 10]`` at the last position after a pyvene interchange at
    ``layer``: row ``i`` runs ``rows[i] = (base_text, source_text, position)`` with ``component``'s
    output at ``position`` taken from the source run (one batched call; texts of equal length)."""
    import pyvene

    config = pyvene.IntervenableConfig(representations=[pyvene.RepresentationConfig(layer, component, "pos", 1)],
                                       intervention_types=pyvene.VanillaIntervention)
    bases = encode(model, [b for b, _, _ in rows])
    sources = encode(model, [s for _, s, _ in rows])
    where = [[p] for _, _, p in rows]
    _, out = model.intervenable(config)({"input_ids": bases}, [{"input_ids": sources}], {"sources->base": ([where], [where])})
    return out.logits[:, -1, digit_token_ids(model)].softmax(-1).detach()
