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

import copy
import functools
import random
from dataclasses import dataclass

import torch

from mi_course.activations import hooks
from mi_course.tokens import encode

OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b}


@dataclass(frozen=True)
class ArithmeticPrompt:
    """One question ``a op b`` asked after ``shots`` (pairs solved in the prompt itself, with ``shot_op``,
    by default the question's own operation)."""

    a: int
    b: int
    shots: tuple[tuple[int, int], ...] = ()
    op: str = "+"
    shot_op: str | None = None

    @property
    def answer(self) -> int:
        return OPERATIONS[self.op](self.a, self.b)

    @property
    def text(self) -> str:
        """``"s1 + t1 = u1; ...; a + b ="`` (no trailing space: the model predicts it)."""
        op = self.shot_op or self.op
        solved = [f"{x} {op} {y} = {OPERATIONS[op](x, y)}; " for x, y in self.shots]
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


def exact_match_prompts(model, prompts: list[ArithmeticPrompt]) -> list[bool]:
    """Whether greedy decoding gives each prompt's exact answer (prompts of equal token length): generated
    continuations, read by :func:`read_answer` (the small adder's :func:`mi_course.addition.analysis.exact_match`
    reads the argmax of its tokens instead)."""
    n_tokens = max(len(str(p.answer)) for p in prompts) + 2  # space, digits, one more to see the end
    continuations = greedy_continuations(model, [p.text for p in prompts], n_tokens)
    return [read_answer(c) == p.answer for c, p in zip(continuations, prompts)]


def accuracy_by_prompt_set(model, prompt_sets: dict[str, list[ArithmeticPrompt]]) -> dict[str, float]:
    """Exact-match accuracy of each named list of prompts (:func:`exact_match_prompts`): ``{name: fraction correct}``."""
    return {name: sum(exact_match_prompts(model, prompts)) / len(prompts) for name, prompts in prompt_sets.items()}


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


HYPOTHESES = ("base", "operand", "result", "copied")
VERDICTS = HYPOTHESES + ("other",)


def interchange_hypotheses(base: ArithmeticPrompt, source: ArithmeticPrompt, operand: str = "first") -> dict[str, int]:
    """The answer each hypothesis predicts when an activation of ``source`` is patched into ``base``:
    ``"base"`` (the patch changes nothing: the base's answer), ``"operand"`` (it carries the source's
    ``operand``, ``"first"`` or ``"second"``, which the model combines with the base's other operand),
    ``"result"`` (it carries the source's answer) and ``"copied"`` (the model outputs the patched operand
    itself), in that order. A pair that differs in both operands can give four different answers."""
    if operand not in ("first", "second"):
        raise ValueError(f"operand is 'first' or 'second', got {operand!r}")
    first = operand == "first"
    computed = OPERATIONS[base.op](source.a, base.b) if first else OPERATIONS[base.op](base.a, source.b)
    return {"base": base.answer, "operand": computed, "result": source.answer, "copied": source.a if first else source.b}


def separating_pairs(model, n: int, seed: int = 0, shots=((7, 2),)) -> list[tuple[ArithmeticPrompt, ArithmeticPrompt]]:
    """``n`` seeded (base, source) pairs of one-digit sums below 10 whose operands both differ, chosen so that
    :func:`interchange_hypotheses` gives six different digits over both operands (base, source, the two mixed
    sums ``a' + b`` and ``a + b'``, and the two source operands), and the model answers the base, the source
    and both mixed questions right (read at the bare space ending ``text + " "``; one batched forward per
    model and shots, kept for the next call)."""
    solved = _solved_sums(model, tuple(shots))
    candidates = [(ArithmeticPrompt(a, b, shots), ArithmeticPrompt(c, d, shots))
                  for (a, b) in sorted(solved) for (c, d) in sorted(solved)
                  if {(c, b), (a, d)} <= solved and len({a + b, c + b, a + d, c + d, c, d}) == 6]
    return random.Random(seed).sample(candidates, n)


def shared_prefix_forward(model, ids: torch.Tensor, **kwargs):
    """``model.hf(ids, use_cache=True, **kwargs)`` for rows of equal length ``[batch, pos]`` that share their first
    tokens (the shots): the shared tokens run once, their keys and values serve every row, the rest runs batched.
    Forward hooks see two calls: the shared tokens ``[1, k, ...]``, then the rest ``[batch, pos - k, ...]``;
    returns the second call's output (its cache holds every position), and ``k``."""
    shared = min(int((ids == ids[:1]).all(0).long().cumprod(0).sum()), ids.shape[1] - 1)
    cache = None
    if shared:
        cache = model.hf(ids[:1, :shared], use_cache=True).cache
        cache.batch_repeat_interleave(ids.shape[0])
    return model.hf(ids[:, shared:], cache=cache, use_cache=True, **kwargs), shared


def top_digits(model, texts: list[str]) -> list[int]:
    """The top digit at the last position of each text (texts of equal token length; shared shots run once)."""
    out, _ = shared_prefix_forward(model, encode(model, texts), logits_to_keep=1)
    return out.logits[:, -1, digit_token_ids(model)].argmax(-1).tolist()


@functools.lru_cache(maxsize=4)
def _solved_sums(model, shots: tuple) -> frozenset[tuple[int, int]]:
    """The one-digit pairs ``(a, b)`` with ``a + b < 10`` whose sum the model answers right after ``shots``."""
    sums = [(a, b) for a in range(10) for b in range(10) if a + b < 10]
    top = top_digits(model, [ArithmeticPrompt(a, b, shots).text + " " for a, b in sums])
    return frozenset(ab for ab, t in zip(sums, top) if t == sum(ab))


def operator_candidates(shots=((7, 2),)) -> list[tuple[ArithmeticPrompt, ArithmeticPrompt]]:
    """Every (``a + b``, ``a - b``) pair of one-digit numbers ``a >= b >= 1`` whose answers start with different
    digits, both after the same addition ``shots``: the two texts differ in the operator token only."""
    return [(ArithmeticPrompt(a, b, shots), ArithmeticPrompt(a, b, shots, op="-", shot_op="+"))
            for a in range(1, 10) for b in range(1, a + 1) if first_digit(a + b) != a - b]


def first_digit_right(model, questions: list[ArithmeticPrompt]) -> list[bool]:
    """Whether the model's top digit after ``text + " "`` is each question's first answer digit (one forward;
    questions of equal token length)."""
    top = top_digits(model, [q.text + " " for q in questions])
    return [t == first_digit(q.answer) for t, q in zip(top, questions)]


def operator_pairs(model, shots=((7, 2),)) -> list[tuple[ArithmeticPrompt, ArithmeticPrompt]]:
    """The :func:`operator_candidates` the model answers right both ways (first digit)."""
    pairs = operator_candidates(shots)
    right = first_digit_right(model, [q for pair in pairs for q in pair])
    return [pair for pair, plus, minus in zip(pairs, right[0::2], right[1::2]) if plus and minus]


def first_digit(number: int) -> int:
    """The first digit of a non-negative number: the one the bare space's position predicts."""
    return int(str(number)[0])


def verdicts(probs: torch.Tensor, hypotheses: list[dict[str, int]]) -> list[str]:
    """The hypothesis whose digit is each row's top digit (``"other"`` if none): ``probs [n, 10]``, one dict
    of predicted answers per row (their first digits count)."""
    names = []
    for top, hyp in zip(probs.argmax(-1).tolist(), hypotheses):
        names.append(next((k for k, v in hyp.items() if first_digit(v) == top), "other"))
    return names


def verdict_counts(probs: torch.Tensor, hypotheses: list[dict[str, int]], names=VERDICTS) -> torch.Tensor:
    """How many rows follow each of ``names``: ``probs [..., n, 10]`` -> counts ``[..., len(names)]``."""
    flat = probs.reshape(-1, *probs.shape[-2:])
    counts = [[verdicts(p, hypotheses).count(k) for k in names] for p in flat]
    return torch.tensor(counts).reshape(*probs.shape[:-2], len(names))


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


COMPONENTS = ("block_output", "attention_output", "mlp_output", "heads")


def _component(model, layer: int, kind: str) -> torch.nn.Module:
    """The module whose output pyvene calls ``kind`` at ``layer`` (for ``"heads"``: ``o_proj``, whose input
    holds the query heads' outputs side by side)."""
    block = model.hf.model.layers[layer]
    return {"block_output": block, "mlp_output": block.mlp, "attention_output": block.self_attn,
            "heads": block.self_attn.o_proj}[kind]


@functools.lru_cache(maxsize=3)
def _runs(model, bases: tuple[str, ...], sources: tuple[str, ...]) -> dict:
    """One forward of bases and sources (their shared shots once), kept by forward hooks: ``"in"`` the residual
    entering each layer ``[n_layers + 1, n, pos, d_model]`` (bases; the last entry leaves the last layer),
    ``"mlp"`` the bases' MLP outputs ``[n_layers, n, pos, d_model]``, each of ``COMPONENTS``'s outputs on the
    sources (``"heads"``: ``o_proj``'s input) ``[n_layers, n, pos, d_model]``, and ``"cache"`` the bases' keys
    and values."""
    inner, n = model.hf.model, len(bases)
    saved = {key: [] for key in ("in", "mlp") + COMPONENTS}
    rows = {"in": slice(None, n), "mlp": slice(None, n)}  # the bases' rows; components: the sources' rows

    def keep(key, is_input=False):
        def hook(module, args, out=None):
            saved[key].append(args[0] if is_input else (out[0] if isinstance(out, tuple) else out))
        return hook

    handles = [inner.embed_tokens.register_forward_hook(keep("in"))]
    for layer in range(model.n_layers):
        handles += [_component(model, layer, "heads").register_forward_pre_hook(keep("heads", True)),
                    _component(model, layer, "attention_output").register_forward_hook(keep("attention_output")),
                    inner.layers[layer].mlp.register_forward_hook(keep("mlp_output")),
                    inner.layers[layer].mlp.register_forward_hook(keep("mlp")),
                    inner.layers[layer].register_forward_hook(keep("block_output")),
                    inner.layers[layer].register_forward_hook(keep("in"))]
    ids = encode(model, list(bases) + list(sources))
    with hooks(handles):
        out, shared = shared_prefix_forward(model, ids, logits_to_keep=1)
    out.cache.batch_select_indices(torch.arange(n))

    def joined(key, values):  # the shared tokens' run (first half, one row) joined to the rest's, per layer
        half = len(values) // 2 if shared else 0
        whole = [torch.cat([p.expand(len(ids), -1, -1), r], 1) for p, r in zip(values[:half], values[half:])] or values
        return torch.stack(whole)[:, rows.get(key, slice(n, None))].detach()

    return {"cache": out.cache, **{key: joined(key, values) for key, values in saved.items()}}


# Defined in file: lessons/06_addition_llm/06_addition_llm.ipynb (part 3: the course's sweeps behind exercises 8-10)
def patch_digit_probs(model, bases: list[str], sources: list[str], layers, positions, component: str = "block_output",
                      heads=None, freeze_mlps: bool = False) -> torch.Tensor:
    """Digit probabilities at the last position of each base text, with ``component``'s output at ``positions``
    (patched together) of one layer taken from its source text's run: ``[len(layers), n, 10]`` for ``n`` texts
    of equal token length. With ``heads``, one query head's slice of the attention's ``o_proj`` input is
    patched at a time: ``[len(layers), len(heads), n, 10]``. With ``freeze_mlps`` (attention or heads), every
    MLP from the patched layer on keeps its base output at the last position, so what is left of the effect is
    the part that does not go through them.

    Computes only what a patch changes (as :func:`mi_course.patching.patch_residual_cached`): one forward of
    bases and sources (kept for the next call on the same texts) holds every layer's residual, component outputs
    and keys and values; a patch at layer L then runs only layers L.. on the positions from the first patched
    one, attending to the bases' cached keys and values before it (one pass through the layers for the whole
    sweep: the rows patched at layer L join it there). Exercises 7, 9 and 10 make the same patches
    with pyvene and nnsight on whole prompts (tests/test_addition_prompts.py compares them).
    """
    kind = "heads" if heads is not None else component
    if kind not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS[:3]}, got {component!r}")
    if freeze_mlps and kind not in ("heads", "attention_output"):
        raise ValueError("freeze_mlps holds the MLPs after an attention patch: patch attention_output or heads")
    runs, inner = _runs(model, tuple(bases), tuple(sources)), model.hf.model
    n, length = len(bases), runs["in"].shape[2]
    positions = sorted(p % length for p in positions)
    start, at = positions[0], [p - positions[0] for p in positions]
    order = sorted(range(len(layers)), key=lambda i: layers[i])  # rows join the pass at their own layer
    group = n * (1 if heads is None else len(heads))  # rows per patched layer: pair i, head j is row i * heads + j
    joined = [group * sum(layers[i] <= l for i in order) for l in range(model.n_layers)]  # rows running layer l
    d_head = getattr(model.config, "head_dim", None) or model.config.hidden_size // model.config.num_attention_heads
    repeat = group // n

    def patch(layer, first):  # a hook that puts the source's values in at ``layer``, rows ``first`` on
        source = runs[kind][layer][:, positions].repeat_interleave(repeat, 0)  # [group, k, d_model]

        def hook(module, args, out=None):
            x = (args[0] if kind == "heads" else out[0] if isinstance(out, tuple) else out).clone()
            if kind == "heads":
                for j, h in enumerate(heads):
                    cols = slice(h * d_head, (h + 1) * d_head)
                    x[first + j:first + group:repeat, at, cols] = source[j::repeat, :, cols]
                return (x,)
            x[first:first + group, at] = source
            return (x,) + tuple(out[1:]) if isinstance(out, tuple) else x
        module = _component(model, layer, kind)
        return module.register_forward_pre_hook(hook) if kind == "heads" else module.register_forward_hook(hook)

    def frozen(layer):  # a hook that keeps the base's MLP output at the last position in every running row
        def hook(module, args, out):
            x = out.clone()
            x[:, -1] = runs["mlp"][layer][:, -1].repeat_interleave(repeat, 0).repeat(len(x) // group, 1)
            return x
        return inner.layers[layer].mlp.register_forward_hook(hook)

    cache = None
    if start:  # the bases' keys and values before ``start``, one copy per running row (each layer appends to its own)
        cache = copy.copy(runs["cache"])
        cache.layers = [copy.copy(cached) for cached in cache.layers]
        for l, cached in enumerate(cache.layers):
            keep = lambda t: t[..., :start, :].repeat_interleave(repeat, 0).repeat(max(joined[l], group) // group, 1, 1, 1)
            cached.keys, cached.values = keep(cached.keys)[: joined[l]], keep(cached.values)[: joined[l]]
    mask = torch.full((length - start, length), float("-inf"), device=runs["in"].device).triu(start + 1)[None, None]
    position_embeddings = inner.rotary_emb(runs["in"][0], torch.arange(start, length, device=mask.device)[None])
    x = runs["in"][0][:0, start:]
    handles = [patch(layers[i], k * group) for k, i in enumerate(order)]
    handles += [frozen(l) for l in range(layers[order[0]], model.n_layers) if freeze_mlps]
    with hooks(handles):
        for l in range(layers[order[0]], model.n_layers):
            new = [runs["in"][l][:, start:].repeat_interleave(repeat, 0) for i in order if layers[i] == l]
            x = torch.cat([x, *new])  # rows patched at layer l start from the base's residual entering it
            x = inner.layers[l](x, attention_mask=mask, position_embeddings=position_embeddings, cache=cache)
    digits = digit_token_ids(model)  # only the digits' logits: the whole vocabulary would cost more than the sweep
    head = model.hf.lm_head
    logits = torch.nn.functional.linear(inner.norm(x[:, -1]), head.weight[digits], None if head.bias is None else head.bias[digits])
    probs = logits.softmax(-1).reshape(len(layers), n, repeat, 10).permute(0, 2, 1, 3)  # [layers (sorted), heads, n, 10]
    probs = probs[torch.tensor(order).argsort()].detach()
    return probs[:, 0] if heads is None else probs


def follow_rates(model, pairs, operand: str, position: int, layers, component: str = "block_output") -> torch.Tensor:
    """Share of ``pairs`` (base, source ``ArithmeticPrompt``s) whose patched answer follows each of ``VERDICTS``
    when ``component``'s output at ``position`` of each layer comes from the source: ``[len(layers), 5]``
    (each row sums to 1). The texts end with the bare space, so the last position predicts the answer."""
    probs = patch_digit_probs(model, [b.text + " " for b, _ in pairs], [s.text + " " for _, s in pairs],
                              layers, [position], component)
    return verdict_counts(probs, [interchange_hypotheses(b, s, operand) for b, s in pairs]) / len(pairs)


def operator_rates(model, pairs, layer: int, groups) -> torch.Tensor:
    """Share of operator ``pairs`` (``a + b``, ``a - b``) answered with the source's (one-digit) answer when the
    residual stream after layer ``layer`` is patched from the source at each group of positions at once:
    ``[len(groups)]``."""
    return operator_table(model, pairs, [layer], groups)[:, 0]


def operator_table(model, pairs, layers, groups) -> torch.Tensor:
    """:func:`operator_rates` for several layers at once: ``[len(groups), len(layers)]``."""
    bases, sources = [b.text + " " for b, _ in pairs], [s.text + " " for _, s in pairs]
    wanted = torch.tensor([s.answer for _, s in pairs])
    return torch.stack([(patch_digit_probs(model, bases, sources, layers, group).argmax(-1).cpu() == wanted).float().mean(-1)
                        for group in groups])
