"""Reverse-engineering the addition model: accuracy by question category (rates with their
Wilson intervals), the attention "staircase" and the head roles it implies, attention by
category and before the question is complete (the seed's "murk"), head ablation and the
paper's three head claims, the seed's loss-delta metric for models with 2, 3 or 4 heads,
activation patching between questions that differ in one digit, a logit lens of the single
layer, each head's direct logit attribution, and accuracy by how far away a digit's carry is
decided.

All functions take the ``TransformerBridge`` from :mod:`mi_course.addition.model` and
question tokens ``[batch, 18]`` from :mod:`mi_course.addition.data`.
"""

from __future__ import annotations

import dataclasses

import torch

from mi_course.addition import data
from mi_course.addition.model import answer_logits, answer_losses
from mi_course.steering import wilson

Z_HOOK = "blocks.0.attn.hook_z"  # [batch, pos, head, d_head]
PATTERN_HOOK = "blocks.0.attn.hook_pattern"  # [batch, head, query, key]
ROLE_NAMES = {0: "same column (base add)", 1: "one column right (carry)", 2: "two columns right (sum-9 carry)"}


@torch.no_grad()
def predict(model, tokens: torch.Tensor, fwd_hooks=(), chunk: int = 2000) -> torch.Tensor:
    """The model's answer digits ``[batch, 6]`` (argmax at positions 11..16). With the true
    earlier digits as input this equals greedy generation whenever all six are right. Without
    hooks, large batches run ``chunk`` questions at a time (faster on a CPU; hooks may hold
    per-question values, so with hooks the batch runs whole)."""
    if fwd_hooks:
        return answer_logits(model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks))).argmax(-1)
    return torch.cat([answer_logits(model(part)).argmax(-1) for part in tokens.split(chunk)])


def exact_match(model, tokens: torch.Tensor, fwd_hooks=()) -> torch.Tensor:
    """Whether all six answer digits are right: bool ``[batch]``."""
    return (predict(model, tokens, fwd_hooks) == data.answers(tokens)).all(-1)


def accuracy_by_category(model, tokens: torch.Tensor, fwd_hooks=()) -> dict[str, float]:
    """Exact-match accuracy per category (``data.CATEGORIES``, NaN where absent) and ``"all"``."""
    correct = exact_match(model, tokens, fwd_hooks).float()
    index = data.category_index(tokens)
    result = {"all": correct.mean().item()}
    for i, name in enumerate(data.CATEGORIES):
        mask = index == i
        result[name] = correct[mask].mean().item() if mask.any() else float("nan")
    return result


def category_suite(n: int = 300, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n`` questions of each category: ``{category: tokens [n, 18]}``."""
    return {name: data.category_tokens(name, n, seed + i) for i, name in enumerate(data.CATEGORIES)}


def suite_accuracy(model, suite: dict[str, torch.Tensor], fwd_hooks=()) -> dict[str, float]:
    """Exact-match accuracy on each category's questions in ``suite``."""
    return {name: exact_match(model, tokens, fwd_hooks).float().mean().item() for name, tokens in suite.items()}


def seed_question_table(model) -> list[dict]:
    """The seed notebook's hand-picked questions: one row per question with the seed's group,
    the category computed here, the true and the model's answer, and whether it is right."""
    rows = []
    for group, pairs in data.SEED_QUESTIONS.items():
        tokens = data.questions_to_tokens(pairs)
        predicted = predict(model, tokens)
        for (a, b), t, p, cat in zip(pairs, tokens, predicted, data.question_category(tokens)):
            rows.append({"group": group, "question": f"{a}+{b}", "category": cat, "answer": a + b,
                         "model": int(data.from_digits(p[None])[0]), "correct": bool((p == data.answers(t[None])[0]).all())})
    return rows


def attention_to_columns(pattern: torch.Tensor) -> torch.Tensor:
    """Attention pattern ``[batch, head, 18, 18]`` -> attention from each answer-predicting
    position (11..16) to each operand column (digit x_c plus digit y_c): ``[batch, head, 6, 5]``."""
    rows = pattern[:, :, data.PREDICT_POSITIONS]
    return rows[..., : data.N_DIGITS] + rows[..., data.N_DIGITS + 1 : 2 * data.N_DIGITS + 1]


@torch.no_grad()
def staircase(model, tokens: torch.Tensor) -> torch.Tensor:
    """Mean attention from answer digit k's predicting position to column c: ``[head, 6, 5]``."""
    _, cache = model.run_with_cache(tokens, names_filter=PATTERN_HOOK)
    return attention_to_columns(cache[PATTERN_HOOK]).mean(0)


def offset_attention(table: torch.Tensor, max_offset: int = 3) -> torch.Tensor:
    """From a staircase ``[head, 6, 5]``: each head's mean attention to the column ``o`` places
    right of the predicted digit's own column (``o`` = -1..max_offset): ``[head, max_offset + 2]``.
    Answer digit k's own column is k - 1; only (digit, column) pairs inside the question count."""
    offsets = range(-1, max_offset + 1)
    out = torch.zeros(table.shape[0], len(offsets))
    for i, o in enumerate(offsets):
        cells = [(k, k - 1 + o) for k in range(6) if 0 <= k - 1 + o < data.N_DIGITS]
        out[:, i] = torch.stack([table[:, k, c] for k, c in cells]).mean(0)
    return out


def head_roles(table: torch.Tensor) -> dict[int, int]:
    """``{offset: head}``: for offsets 0, 1, 2 (same column, one right, two right), the head
    whose attention is highest at that offset, from a staircase ``[head, 6, 5]``."""
    by_offset = offset_attention(table)[:, 1:4]  # offsets 0, 1, 2
    return {o: int(by_offset[:, o].argmax()) for o in range(3)}


@torch.no_grad()
def mean_z(model, tokens: torch.Tensor) -> torch.Tensor:
    """Each head's mean output ``hook_z`` per position over ``tokens``: ``[18, head, d_head]``."""
    _, cache = model.run_with_cache(tokens, names_filter=Z_HOOK)
    return cache[Z_HOOK].mean(0)


def ablation_hook(head: int, replacement: torch.Tensor | None = None):
    """A forward hook (name, fn) replacing ``head``'s ``hook_z`` by ``replacement`` ``[18, d_head]``
    (mean ablation), or by zeros when ``replacement`` is None (zero ablation)."""

    def hook(z, hook):
        z = z.clone()
        z[:, :, head] = 0.0 if replacement is None else replacement
        return z

    return (Z_HOOK, hook)


def ablation_table(model, suite: dict[str, torch.Tensor], reference: torch.Tensor, mode: str = "mean") -> dict:
    """Exact match per category with each head ablated (``mode`` "mean" over ``reference`` tokens
    or "zero"): ``{"none": {...}, 0: {...}, 1: {...}, ...}`` of ``suite_rates`` dicts (``Rate``s)."""
    means = mean_z(model, reference) if mode == "mean" else None
    table = {"none": suite_rates(model, suite)}
    for head in range(model.cfg.n_heads):
        hook = ablation_hook(head, None if means is None else means[:, head])
        table[head] = suite_rates(model, suite, [hook])
    return table


# The paper's three head claims, as testable predictions about ablating the head with each
# attention offset: the category it should break, and the categories it should leave intact.
CLAIMS = {
    0: ("BA", ()),  # the same-column head does the base add: without it, even BA questions fail
    1: ("UC1", ("BA",)),  # the one-right head makes the carry: UC1 fails, BA survives
    2: ("US9", ("BA", "UC1")),  # the two-right head makes the sum-9 carry: US9 fails, BA and UC1 survive
}


def claim_verdicts(table: dict, roles: dict[int, int], broken: float = 0.5, intact: float = 0.9) -> dict[int, dict]:
    """Judge each claim on an ``ablation_table``: it holds when ablating the head with that
    offset leaves the target category below ``broken`` accuracy and every spared category at
    ``intact`` or more (measured shares). Returns ``{offset: {"head", "target", "accuracy",
    "spared", "holds"}}`` with the accuracies as ``Rate``s."""
    result = {}
    for offset, (target, spared) in CLAIMS.items():
        acc = table[roles[offset]]
        spared_acc = {name: acc[name] for name in spared}
        holds = acc[target].p < broken and all(r.p >= intact for r in spared_acc.values())
        result[offset] = {"head": roles[offset], "target": target, "accuracy": acc[target],
                          "spared": spared_acc, "holds": holds}
    return result


def one_digit_pairs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` random (clean, corrupt) question pairs whose operand x differs in one column:
    clean ``[n, 18]``, corrupt ``[n, 18]`` and the changed column ``[n]``."""
    generator = torch.Generator().manual_seed(seed)
    clean = data.random_tokens(n, generator, enrich=0.3)
    x, y = data.operands(clean)
    column = torch.randint(0, data.N_DIGITS, (n,), generator=generator)
    shift = torch.randint(1, 10, (n,), generator=generator)
    x2 = x.clone()
    x2[torch.arange(n), column] = (x[torch.arange(n), column] + shift) % 10
    return clean, data.make_tokens(x2, y), column


@torch.no_grad()
def patch_head(model, clean: torch.Tensor, corrupt: torch.Tensor, head: int, k: int) -> torch.Tensor:
    """Activation patching of one head at one answer position: the model's answer digit ``k``
    ``[batch]`` on the ``clean`` questions when ``head``'s ``hook_z`` at position 11 + k (the
    position that predicts digit k) is replaced by its value in the ``corrupt`` run."""
    pos = data.PREDICT_POSITIONS[k]
    _, cache = model.run_with_cache(corrupt, names_filter=Z_HOOK)
    source = cache[Z_HOOK]

    def hook(z, hook):
        z = z.clone()
        z[:, pos, head] = source[:, pos, head]
        return z

    return predict(model, clean, [(Z_HOOK, hook)])[:, k]


@torch.no_grad()
def patching_table(model, clean: torch.Tensor, corrupt: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
    """Activation patching, one head at one position: for every answer digit k whose true
    value differs between ``clean`` and ``corrupt``, copy head h's ``hook_z`` at position
    11 + k from the corrupt run into the clean run and check whether digit k becomes the
    corrupt answer. Returns the success rate ``[head, 3]`` by offset = changed column - (k - 1)
    (0: the digit's own column, 1: one right, 2: two right); NaN where no case."""
    _, cache = model.run_with_cache(corrupt, names_filter=Z_HOOK)
    corrupt_z = cache[Z_HOOK]
    differs = data.answers(clean) != data.answers(corrupt)  # [batch, 6]
    offset = column[:, None] - (torch.arange(6)[None] - 1)  # [batch, 6]
    n_heads = corrupt_z.shape[2]
    hits = torch.zeros(n_heads, 3)
    counts = torch.zeros(3)
    for o in range(3):
        counts[o] = (differs & (offset == o)).sum()
    for head in range(n_heads):
        for k in range(6):
            pos = data.PREDICT_POSITIONS[k]

            def hook(z, hook, head=head, pos=pos):
                z = z.clone()
                z[:, pos, head] = corrupt_z[:, pos, head]
                return z

            predicted = predict(model, clean, [(Z_HOOK, hook)])[:, k]
            flipped = (predicted == data.answers(corrupt)[:, k]) & differs[:, k]
            for o in range(3):
                hits[head, o] += (flipped & (offset[:, k] == o)).sum()
    return hits / counts


@torch.no_grad()
def logit_lens(model, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per answer digit accuracy ``[6]`` when the unembedding (with the final LayerNorm) reads
    the residual after attention only (``resid_mid``) or after attention + MLP (``resid_post``)."""
    names = ["blocks.0.hook_resid_mid", "blocks.0.hook_resid_post"]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    truth = data.answers(tokens)
    result = {}
    for label, name in zip(["attention only", "attention + MLP"], names):
        logits = model.unembed(model.ln_final(cache[name]))
        result[label] = (answer_logits(logits).argmax(-1) == truth).float().mean(0)
    return result


def carry_distance_rates(model, tokens: torch.Tensor, max_distance: int = 6) -> list[list["Rate"]]:
    """Digit accuracy by ``data.carry_distance`` (1..max_distance) and by the carry the digit
    receives, as ``Rate``s: ``rates[carry][distance - 1]`` (carry 0 or 1; n = 0 where no digit)."""
    correct = predict(model, tokens) == data.answers(tokens)
    distance = data.carry_distance(tokens)
    carries = data.digit_carries(tokens)
    return [[rate(correct[(distance == d) & (carries == bool(carry))]) for d in range(1, max_distance + 1)]
            for carry in (0, 1)]


def accuracy_by_carry_distance(model, tokens: torch.Tensor, max_distance: int = 6) -> torch.Tensor:
    """Digit accuracy by ``data.carry_distance`` (columns 1..max_distance) and by the carry the
    digit receives: ``[2, max_distance]`` (row 0: carry 0, row 1: carry 1), NaN where no digit."""
    return torch.tensor([[r.p for r in row] for row in carry_distance_rates(model, tokens, max_distance)])


# --- Rates with their uncertainty ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rate:
    """A rate measured on a sample: ``k`` successes of ``n``, with its 95% Wilson interval."""

    k: int
    n: int

    @property
    def p(self) -> float:
        return self.k / self.n if self.n else float("nan")

    @property
    def low(self) -> float:
        return wilson(self.k, self.n)[0]

    @property
    def high(self) -> float:
        return wilson(self.k, self.n)[1]

    def __str__(self) -> str:
        return f"{self.p:.1%} ({self.k}/{self.n}, 95% CI {self.low:.1%}-{self.high:.1%})"


def rate(correct: torch.Tensor) -> Rate:
    """A bool (or 0/1) tensor of outcomes ``[n]`` -> its ``Rate``."""
    return Rate(int(correct.sum()), int(correct.numel()))


def category_rates(model, tokens: torch.Tensor, fwd_hooks=()) -> dict[str, Rate]:
    """Exact match on ``tokens`` ``[batch, 18]`` per category (``data.CATEGORIES``; n = 0 where
    absent) and ``"all"``, as ``Rate``s."""
    correct = exact_match(model, tokens, fwd_hooks)
    index = data.category_index(tokens)
    result = {"all": rate(correct)}
    for i, name in enumerate(data.CATEGORIES):
        result[name] = rate(correct[index == i])
    return result


def suite_rates(model, suite: dict[str, torch.Tensor], fwd_hooks=()) -> dict[str, Rate]:
    """Exact match on each category's questions in ``suite``, as ``Rate``s."""
    return {name: rate(exact_match(model, tokens, fwd_hooks)) for name, tokens in suite.items()}


# --- Attention by category, and the "murk" before the question is complete -------------------


def category_offsets(model, suite: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each head's mean attention by column offset (``offset_attention``, offsets -1..3) on each
    category's questions: ``{category: [head, 5]}``."""
    return {name: offset_attention(staircase(model, tokens)) for name, tokens in suite.items()}


@torch.no_grad()
def question_share(model, tokens: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """Share of each head's attention, from each answer-predicting position (11..16), that goes
    to the question before ``=`` (keys 0..10): ``[head, 6]``, mean over ``tokens``; the rest goes
    to ``=`` and the answer digits already written."""
    name = f"blocks.{layer}.attn.hook_pattern"
    _, cache = model.run_with_cache(tokens, names_filter=name)
    return cache[name][:, :, data.PREDICT_POSITIONS, : data.EQUALS_POSITION].sum(-1).mean(0)


@torch.no_grad()
def murk_hooks(model, reference: torch.Tensor, positions) -> list:
    """Hooks that mean-ablate everything the model computes at ``positions`` (the attention and MLP
    outputs of every layer there, replaced by their means over ``reference`` ``[n, 18]``): what a
    position adds to the residual before the question is complete. The token and position
    embeddings stay."""
    positions = list(positions)
    names = [f"blocks.{l}.hook_{part}_out" for l in range(model.cfg.n_layers) for part in ("attn", "mlp")]
    _, cache = model.run_with_cache(reference, names_filter=lambda n: n in names)
    hooks = []
    for name in names:
        mean = cache[name][:, positions].mean(0)

        def hook(act, hook, mean=mean):
            act = act.clone()
            act[:, positions] = mean
            return act

        hooks.append((name, hook))
    return hooks


# --- 2, 3 and 4 heads: staircase clarity and the seed's ablation metric ----------------------


def staircase_clarity(table: torch.Tensor) -> torch.Tensor:
    """How much of each head's attention sits on its single best column offset (the maximum of
    ``offset_attention``, offsets -1..3), from a staircase ``[head, 6, 5]``: ``[head]``; a clean
    stair is near 1, a head that spreads over two offsets is near 0.5."""
    return offset_attention(table).max(-1).values


def head_offsets(table: torch.Tensor) -> list[int]:
    """Each head's best column offset (-1..3) from a staircase ``[head, 6, 5]``."""
    return [int(i) - 1 for i in offset_attention(table).argmax(-1)]


@torch.no_grad()
def mean_answer_loss(model, tokens: torch.Tensor, fwd_hooks=()) -> float:
    """The training loss: mean cross-entropy of the 6 answer digits over ``tokens`` ``[batch, 18]``."""
    logits = model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks)) if fwd_hooks else model(tokens)
    return answer_losses(logits, tokens).mean().item()


def loss_deltas(model, tokens: torch.Tensor, heads=None) -> torch.Tensor:
    """The seed's ablation metric: for each entry of ``heads`` (a head, or a tuple of heads ablated
    together; default: each head alone), ``100 * (L - L_ablated) / L`` where ``L`` is the mean
    answer-digit loss on ``tokens`` and the heads' ``hook_z`` is zeroed (the seed zeroed their
    values, the same thing). Positive: the loss went *down*. Returns ``[len(heads)]``."""
    heads = [(h,) for h in range(model.cfg.n_heads)] if heads is None else [h if isinstance(h, tuple) else (h,) for h in heads]
    base = mean_answer_loss(model, tokens)
    deltas = [100 * (base - mean_answer_loss(model, tokens, [ablation_hook(h) for h in group])) / base for group in heads]
    return torch.tensor(deltas)


# --- Direct logit attribution of each head --------------------------------------------------


@torch.no_grad()
def head_logit_attribution(model, tokens: torch.Tensor) -> torch.Tensor:
    """Each head's *direct* effect on each answer digit (1-layer model): its output at the
    predicting position through the final LayerNorm (its scale frozen at this run's) and the
    unembedding, as the correct digit's logit minus the mean logit of the 10 digits. ``[head, 6]``,
    mean over ``tokens`` ``[batch, 18]``."""
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in (Z_HOOK, "ln_final.hook_scale"))
    z = cache[Z_HOOK][:, data.PREDICT_POSITIONS]  # [batch, 6, head, d_head]
    out = torch.einsum("bkhd,hdm->bkhm", z, model.blocks[0].attn.W_O)
    out = out - out.mean(-1, keepdim=True)  # the LayerNorm's centring is linear
    out = out / cache["ln_final.hook_scale"][:, data.PREDICT_POSITIONS, None]
    digit_logits = (out * model.ln_final._original_component.weight) @ model.W_U[:, :10]  # [batch, 6, head, 10]
    correct = digit_logits.gather(-1, data.answers(tokens)[:, :, None, None].expand(-1, -1, z.shape[2], 1))[..., 0]
    return (correct - digit_logits.mean(-1)).mean(0).T


def run_summary(model, suite: dict[str, torch.Tensor], reference: torch.Tensor, tokens: torch.Tensor) -> dict:
    """What lesson 7 measures on one trained model, to compare runs of the recipe: ``rates``
    (``{category: (k, n)}`` on ``suite``), ``offsets`` and ``clarity`` (per head, from the
    staircase on ``tokens``), ``claims`` (``claim_verdicts`` of the mean-ablation table over
    ``reference``: per offset, the target's accuracy, the spared accuracies and the verdict;
    ``None`` when the heads do not take the three offsets one each) and ``deltas`` (the seed's
    ``loss_deltas`` on ``tokens``, each head alone, then each pair of heads)."""
    table = staircase(model, tokens)
    roles = head_roles(table)
    heads = model.cfg.n_heads
    pairs = [(a, b) for a in range(heads) for b in range(a + 1, heads)]
    claims = None
    if sorted(roles.values()) == list(range(3)) and heads == 3:
        verdicts = claim_verdicts(ablation_table(model, suite, reference, "mean"), roles)
        claims = {o: {"accuracy": v["accuracy"].p, "spared": {k: r.p for k, r in v["spared"].items()}, "holds": v["holds"]}
                  for o, v in verdicts.items()}
    return {
        "rates": {name: (r.k, r.n) for name, r in suite_rates(model, suite).items()},
        "offsets": head_offsets(table),
        "clarity": staircase_clarity(table).tolist(),
        "claims": claims,
        "deltas": loss_deltas(model, tokens).tolist(),
        "pair_deltas": dict(zip(pairs, loss_deltas(model, tokens, pairs).tolist())),
    }
