"""5-digit addition questions for a tiny transformer: the token format, a seeded
generator (with extra sum-9 digit pairs), and the per-column sub-task labels of
Quirke & Barez, "Understanding Addition in Transformers" (ICLR 2024).

A question is 18 tokens: ``x0 x1 x2 x3 x4 + y0 y1 y2 y3 y4 = a0 a1 a2 a3 a4 a5``
(most significant digit first; ``+`` is token 10 and ``=`` token 11). Column ``c``
(0..4) holds the digit pair at positions ``c`` and ``6 + c``; the answer digit
``a[c + 1]`` is that column's sum digit and ``a0`` the final carry.

Sub-tasks per column ``c`` (boolean tensors of shape ``[batch, 5]``):

- ``MC1`` (make carry 1): ``x_c + y_c >= 10``
- ``MS9`` (make sum 9): ``x_c + y_c == 9``
- ``BA`` (base add): no carry comes into column ``c``: ``a[c+1] = (x_c + y_c) % 10``
- ``UC1`` (use carry 1): a carry comes in and the pair is not a sum 9
- ``US9`` (use sum 9): a carry comes in and the pair sums to 9, so the carry passes on

BA, UC1 and US9 partition the columns. A question's *category* is its hardest
column: ``BA`` (no carries), ``UC1``, ``US9`` (single sum-9 carries), or
``cascade2``..``cascade4`` (that many US9 columns in a row).
"""

from __future__ import annotations

import torch

N_DIGITS = 5
PLUS = 10
EQUALS = 11
D_VOCAB = 12
N_CTX = 3 * N_DIGITS + 3  # 18
EQUALS_POSITION = 2 * N_DIGITS + 1  # 11: the "=" (the question is complete from position 10 on)
ANSWER_START = 2 * N_DIGITS + 2  # 12: position of the first answer token
# logits at position p predict the token at p + 1: answer tokens 12..17 come from positions 11..16
PREDICT_POSITIONS = list(range(ANSWER_START - 1, N_CTX - 1))
CATEGORIES = ["BA", "UC1", "US9", "cascade2", "cascade3", "cascade4"]

# The seed notebook's hand-picked questions, grouped as it labelled them.
SEED_QUESTIONS = {
    "BA": [(12345, 33333), (33333, 12345), (45762, 33113), (888, 11111)],
    "UC1": [(15, 45), (25, 55), (35, 59), (40035, 40049), (5025, 5059), (15, 65)],
    "simple US9": [
        (55, 45), (45, 55), (45, 59), (35, 69), (25, 79), (15, 85), (15, 88),
        (15508, 14508), (14508, 15508), (24533, 25933), (23533, 26933), (32500, 7900),
        (31500, 8500), (5500, 4500), (4500, 5500), (10880, 41127), (41127, 10880),
    ],
    "2-level US9": [(555, 445), (3340, 6660), (8880, 1120), (1120, 8880), (123, 877), (877, 123),
                    (321, 679), (679, 321)],
    "3-level US9": [(5555, 4445), (3340, 6660), (8880, 1120), (1234, 8766), (4321, 5679)],
    "4-level US9": [(44445, 55555), (33334, 66666), (88888, 11112), (12345, 87655), (54321, 45679)],
}


def to_digits(numbers: torch.Tensor) -> torch.Tensor:
    """``[batch]`` integers in 0..99999 -> ``[batch, 5]`` digits, most significant first."""
    powers = 10 ** torch.arange(N_DIGITS - 1, -1, -1)
    return (numbers.long()[:, None] // powers) % 10


def from_digits(digits: torch.Tensor) -> torch.Tensor:
    """``[batch, n]`` digits (most significant first) -> ``[batch]`` integers."""
    n = digits.shape[-1]
    powers = 10 ** torch.arange(n - 1, -1, -1)
    return (digits.long() * powers).sum(-1)


def make_tokens(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Operand digits ``[batch, 5]`` each -> full question-and-answer tokens ``[batch, 18]``."""
    total = from_digits(x) + from_digits(y)
    answer = (total[:, None] // 10 ** torch.arange(N_DIGITS, -1, -1)) % 10
    batch = x.shape[0]
    plus = torch.full((batch, 1), PLUS)
    equals = torch.full((batch, 1), EQUALS)
    return torch.cat([x.long(), plus, y.long(), equals, answer], dim=1)


def questions_to_tokens(pairs: list[tuple[int, int]]) -> torch.Tensor:
    """``[(a, b), ...]`` -> tokens ``[len(pairs), 18]`` for the questions ``a + b``."""
    a = torch.tensor([p[0] for p in pairs])
    b = torch.tensor([p[1] for p in pairs])
    return make_tokens(to_digits(a), to_digits(b))


def tokens_to_string(tokens: torch.Tensor) -> str:
    """One question ``[18]`` -> ``"12345+33333=045678"``."""
    symbols = {PLUS: "+", EQUALS: "="}
    return "".join(symbols.get(int(t), str(int(t))) for t in tokens)


def operands(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens ``[batch, 18]`` -> the operand digits ``x``, ``y``, each ``[batch, 5]``."""
    return tokens[:, :N_DIGITS], tokens[:, N_DIGITS + 1 : 2 * N_DIGITS + 1]


def answers(tokens: torch.Tensor) -> torch.Tensor:
    """Tokens ``[batch, 18]`` -> the answer digits ``[batch, 6]``."""
    return tokens[:, ANSWER_START:]


def random_tokens(batch_size: int, generator: torch.Generator, enrich: float = 0.0) -> torch.Tensor:
    """A batch of random questions ``[batch, 18]``; each digit pair is replaced by a pair
    summing to 9 with probability ``enrich`` (sum-9 pairs make the rare US9 cases)."""
    x = torch.randint(0, 10, (batch_size, N_DIGITS), generator=generator)
    y = torch.randint(0, 10, (batch_size, N_DIGITS), generator=generator)
    if enrich > 0:
        swap = torch.rand(batch_size, N_DIGITS, generator=generator) < enrich
        y = torch.where(swap, 9 - x, y)
    return make_tokens(x, y)


def training_batches(batch_size: int, seed: int, enrich_every: int = 5, enrich: float = 0.2):
    """Endless seeded training batches ``[batch, 18]``, as in the paper: one batch in
    ``enrich_every`` has a fraction ``enrich`` of its digit pairs set to sum to 9."""
    generator = torch.Generator().manual_seed(seed)
    step = 0
    while True:
        yield random_tokens(batch_size, generator, enrich if step % enrich_every == 0 else 0.0)
        step += 1


def column_labels(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-column sub-task labels: ``{"MC1", "MS9", "BA", "UC1", "US9"}`` -> bool ``[batch, 5]``
    (see the module docstring), computed from the operands of ``tokens`` ``[batch, 18]``."""
    x, y = operands(tokens)
    pair = x + y
    carry_in = torch.zeros_like(pair, dtype=torch.bool)
    for c in range(N_DIGITS - 2, -1, -1):
        carry_in[:, c] = pair[:, c + 1] + carry_in[:, c + 1].long() >= 10
    ms9 = pair == 9
    return {"MC1": pair >= 10, "MS9": ms9, "BA": ~carry_in, "UC1": carry_in & ~ms9, "US9": carry_in & ms9}


def cascade_depth(tokens: torch.Tensor) -> torch.Tensor:
    """The longest run of consecutive US9 columns per question: ``[batch]`` ints in 0..4."""
    us9 = column_labels(tokens)["US9"].long()
    run = torch.zeros_like(us9[:, 0])
    best = torch.zeros_like(run)
    for c in range(N_DIGITS):
        run = (run + 1) * us9[:, c]
        best = torch.maximum(best, run)
    return best


def category_index(tokens: torch.Tensor) -> torch.Tensor:
    """Each question's category as an index into ``CATEGORIES``: ``[batch]`` ints."""
    depth = cascade_depth(tokens)
    any_uc1 = column_labels(tokens)["UC1"].any(-1).long()
    return torch.where(depth >= 2, depth + 1, torch.where(depth == 1, 2, any_uc1))


def question_category(tokens: torch.Tensor) -> list[str]:
    """Each question's category (one of ``CATEGORIES``) for tokens ``[batch, 18]``."""
    return [CATEGORIES[i] for i in category_index(tokens).tolist()]


def carry_distance(tokens: torch.Tensor) -> torch.Tensor:
    """How far right of its own column each answer digit must look to know its carry:
    ``[batch, 6]`` ints. For answer digit ``k`` (own column ``k - 1``; the leading digit's
    "column" is -1) it is ``j - (k - 1)`` for the first column ``j`` to the right whose
    pair does not sum to 9 (that pair decides the carry); 5 counts as the end."""
    x, y = operands(tokens)
    not9 = (x + y) != 9
    batch = tokens.shape[0]
    out = torch.zeros(batch, N_DIGITS + 1, dtype=torch.long)
    for k in range(N_DIGITS + 1):
        decider = torch.full((batch,), N_DIGITS)
        for j in range(N_DIGITS - 1, k - 1, -1):
            decider = torch.where(not9[:, j], torch.tensor(j), decider)
        out[:, k] = decider - (k - 1)
    return out


def digit_carries(tokens: torch.Tensor) -> torch.Tensor:
    """The carry each answer digit receives: bool ``[batch, 6]`` (for the leading digit, the
    carry out of column 0, which is that digit itself)."""
    carry_in = ~column_labels(tokens)["BA"]
    return torch.cat([answers(tokens)[:, :1] == 1, carry_in], dim=1)


def category_tokens(category: str, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` random questions ``[n, 18]`` of one category (from ``CATEGORIES``), drawn by
    rejection from questions rich in sum-9 pairs (so the rare cascades are found quickly)."""
    if category not in CATEGORIES:
        raise ValueError(f"Unknown category {category!r}; choose from {CATEGORIES}")
    generator = torch.Generator().manual_seed(seed)
    enrich = 0.0 if category in ("BA", "UC1") else 0.5
    found, count = [], 0
    while count < n:
        candidates = random_tokens(4096, generator, enrich)
        keep = category_index(candidates) == CATEGORIES.index(category)
        found.append(candidates[keep])
        count += int(keep.sum())
    return torch.cat(found)[:n]
