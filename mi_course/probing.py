"""Probing: what is linearly decodable from the residual stream, layer by layer, and
whether the model uses it.

- datasets the course generates (no downloads): addition prompts ``"a + b ="`` with
  labels such as the ones digit of ``a`` or whether the sum carries, and city prompts
  labelled with the city's country;
- :func:`collect_activations`: the residual stream at one position of every prompt,
  after every layer, in batches (``[n_prompts, n_layers, d_model]``);
- linear probes per layer (scikit-learn ``LogisticRegression``) on one seeded split;
- control tasks (Hewitt & Liang 2019): each input *type* gets a random label; a probe
  that learns those too is memorising, and selectivity = task - control accuracy;
- an MLP probe, expressive enough to memorise the control task;
- steering along a probe's direction, the first causal test of what a probe found.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit, train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm  # plain text: a widget is blank once a saved notebook is reopened

from mi_course import architecture

# A few dozen cities the embedded model mostly places in the right country.
CITIES: dict[str, list[str]] = {
    "France": ["Paris", "Lyon", "Marseille", "Toulouse", "Nice", "Bordeaux", "Lille", "Strasbourg", "Nantes"],
    "Italy": ["Rome", "Milan", "Naples", "Turin", "Florence", "Venice", "Bologna", "Genoa", "Palermo"],
    "Germany": ["Berlin", "Munich", "Hamburg", "Frankfurt", "Cologne", "Stuttgart", "Dresden", "Leipzig", "Bremen"],
    "Spain": ["Madrid", "Barcelona", "Seville", "Valencia", "Bilbao", "Malaga", "Granada", "Zaragoza", "Cordoba"],
    "Japan": ["Tokyo", "Osaka", "Kyoto", "Yokohama", "Nagoya", "Sapporo", "Kobe", "Hiroshima", "Fukuoka"],
    "China": ["Beijing", "Shanghai", "Guangzhou", "Shenzhen", "Chengdu", "Wuhan", "Nanjing", "Tianjin", "Hangzhou"],
    "India": ["Mumbai", "Delhi", "Bangalore", "Chennai", "Kolkata", "Hyderabad", "Pune", "Jaipur", "Ahmedabad"],
    "Brazil": ["Rio de Janeiro", "Sao Paulo", "Brasilia", "Salvador", "Recife", "Fortaleza", "Manaus", "Curitiba",
               "Belo Horizonte"],
}

# Contexts that end on the city's last token: probes read the city's own representation.
CITY_CONTEXTS = ["The city of {city}", "I flew to {city}", "My friend lives in {city}", "Welcome to {city}"]

# A prompt whose next token is the country: steering experiments read its output.
COUNTRY_QUESTION = "I flew to {city}, which is in the country of"


@dataclass
class ProbeDataset:
    """Prompts with one label each, and the *type* each prompt is about (its group).

    ``labels[i]`` is an index into ``classes``; ``groups[i]`` names what the prompt is
    about (a city, an operand), which control tasks and honest splits need.
    """

    prompts: list[str]
    labels: np.ndarray
    groups: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.prompts)


def city_dataset(contexts: list[str] | None = None) -> ProbeDataset:
    """Every city of :data:`CITIES` in every context (default :data:`CITY_CONTEXTS`),
    labelled with its country; ``groups`` is the city, which recurs once per context."""
    contexts = contexts or CITY_CONTEXTS
    classes = list(CITIES)
    prompts, labels, groups = [], [], []
    for context in contexts:
        for label, country in enumerate(classes):
            for city in CITIES[country]:
                prompts.append(context.format(city=city))
                labels.append(label)
                groups.append(city)
    return ProbeDataset(prompts, np.array(labels), np.array(groups), classes)


def country_questions(model, country: str) -> tuple[list[str], list[int]]:
    """:data:`COUNTRY_QUESTION` for every city of ``country``, and the index of each city's
    last token in its prompt (the position the city probes were trained on)."""
    prompts = [COUNTRY_QUESTION.format(city=city) for city in CITIES[country]]
    prefix = COUNTRY_QUESTION[:COUNTRY_QUESTION.index("{city}") + len("{city}")]
    positions = []
    for city, prompt in zip(CITIES[country], prompts):
        head = model.tokenizer(prefix.format(city=city), add_special_tokens=False)["input_ids"]
        full = model.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if full[:len(head)] != head:
            raise ValueError(f"{city!r} tokenizes differently inside {prompt!r}.")
        positions.append(len(head) - 1)
    return prompts, positions


def addition_dataset(n: int = 200, seed: int = 0, label: str = "carry") -> ProbeDataset:
    """``n`` distinct prompts ``"a + b ="`` with two-digit ``a`` and ``b`` (all of equal token length).

    ``label``: ``"carry"`` (does the ones column carry: ``a % 10 + b % 10 >= 10``),
    ``"a_ones"`` (the ones digit of ``a``) or ``"b_ones"``. ``groups`` is the pair ``"a+b"``.
    """
    rng = random.Random(seed)
    pairs = rng.sample([(a, b) for a in range(10, 100) for b in range(10, 100)], n)
    if label == "carry":
        values, classes = [int(a % 10 + b % 10 >= 10) for a, b in pairs], ["no carry", "carry"]
    elif label in ("a_ones", "b_ones"):
        values = [(a if label == "a_ones" else b) % 10 for a, b in pairs]
        classes = [str(d) for d in range(10)]
    else:
        raise ValueError(f"Unknown label {label!r}: use 'carry', 'a_ones' or 'b_ones'.")
    prompts = [f"{a} + {b} =" for a, b in pairs]
    return ProbeDataset(prompts, np.array(values), np.array([f"{a}+{b}" for a, b in pairs]), classes)


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each prompt's last real token in a right-padded batch: ``[batch, pos]`` -> ``[batch]``."""
    return attention_mask.long().sum(dim=1) - 1


def collect_activations(model, prompts: list[str], batch_size: int = 32, position: int = -1,
                        progress: bool = True) -> torch.Tensor:
    """The residual stream at one position of each prompt after every layer: ``[n_prompts, n_layers, d_model]``.

    ``acts[:, l]`` is the output of decoder layer ``l``. ``position`` counts from the
    end of each prompt when negative (``-1``: last real token), from its start
    otherwise. Prompts of different lengths are right-padded with an attention mask,
    so padding never changes what is read. Only the chosen position is kept, and the
    forward pass stops after the last layer (no unembedding).
    """
    tok, lm = model.tokenizer, model.nnsight
    chunks = []
    batches = range(0, len(prompts), batch_size)
    for start in tqdm(batches, desc="collecting activations", disable=not progress):
        enc = tok(prompts[start:start + batch_size], return_tensors="pt", padding=True, padding_side="right",
                  add_special_tokens=False)
        last = last_positions(enc.attention_mask)
        pos = last + 1 + position if position < 0 else torch.full_like(last, position)
        if bool((pos < 0).any()) or bool((pos > last).any()):
            raise ValueError(f"position {position} falls outside some prompts of this batch.")
        rows = torch.arange(len(pos))
        inputs = {"input_ids": enc.input_ids.to(model.device), "attention_mask": enc.attention_mask.to(model.device)}
        with lm.trace(inputs) as tracer:
            layers = [layer.output[rows, pos] for layer in lm.model.layers].save()
            tracer.stop()
        chunks.append(torch.stack(layers, dim=1).detach().float().cpu())
    return torch.cat(chunks)


def split_indices(labels, test_size: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, stratified train/test split of ``range(len(labels))``: ``(train_idx, test_idx)``."""
    return train_test_split(np.arange(len(labels)), test_size=test_size, random_state=seed, stratify=labels)


def group_split_indices(groups, test_size: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split in which every group (e.g. a city) lies wholly in train or wholly in test."""
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    train, test = next(splitter.split(np.zeros(len(groups)), groups=np.asarray(groups)))
    return train, test


def make_probe(kind: str = "linear", seed: int = 0):
    """An unfitted probe on standardized features: ``"linear"`` (logistic regression) or ``"mlp"``
    (one hidden layer of 256 ReLUs). Standardizing makes the solver converge on residual
    streams whose norms grow by a factor of ~10 over the layers."""
    if kind == "linear":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    if kind == "mlp":
        return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(256,), alpha=0.0, max_iter=500,
                                                            random_state=seed))
    raise ValueError(f"Unknown probe kind {kind!r}: use 'linear' or 'mlp'.")


def train_probe(features, labels, train_idx, test_idx, kind: str = "linear", seed: int = 0):
    """Fit a probe on ``features[train_idx]`` (``[n, d_model]``); return ``(probe, test_accuracy)``."""
    X = np.asarray(features, dtype=np.float32)
    y = np.asarray(labels)
    probe = make_probe(kind, seed).fit(X[train_idx], y[train_idx])
    return probe, float(probe.score(X[test_idx], y[test_idx]))


def accuracy_by_layer(acts: torch.Tensor, labels, train_idx, test_idx, kind: str = "linear", seed: int = 0,
                      progress: bool = True) -> np.ndarray:
    """Test accuracy of one probe per layer: ``acts`` ``[n, n_layers, d_model]`` -> ``[n_layers]``."""
    layers = range(acts.shape[1])
    return np.array([
        train_probe(acts[:, layer], labels, train_idx, test_idx, kind, seed)[1]
        for layer in tqdm(layers, desc=f"{kind} probes", disable=not progress)
    ])


def control_labels(groups, n_classes: int, seed: int = 0) -> np.ndarray:
    """A control task: every distinct group (input type) gets one random label in ``range(n_classes)``.

    The labels follow the identity of the input, not the property probed, so a probe can
    only learn them by memorising types (Hewitt & Liang 2019).
    """
    groups = np.asarray(groups)
    types = sorted(set(groups.tolist()))
    rng = np.random.default_rng(seed)
    assignment = dict(zip(types, rng.integers(0, n_classes, size=len(types)).tolist()))
    return np.array([assignment[g] for g in groups.tolist()])


def selectivity(task_accuracy, control_accuracy) -> np.ndarray:
    """Task accuracy minus control-task accuracy (per layer when given arrays)."""
    return np.asarray(task_accuracy, dtype=float) - np.asarray(control_accuracy, dtype=float)


def probe_direction(probe, towards: int, away: int | None = None) -> torch.Tensor:
    """The unit vector ``[d_model]`` in the residual stream that a fitted linear probe reads as
    evidence for class ``towards`` (against class ``away``, or against the mean of all classes).

    The probe's weights live in standardized coordinates: dividing by the scaler's
    scale maps them back to residual-stream coordinates.
    """
    scaler, logreg = probe[0], probe[-1]
    coef = torch.tensor(logreg.coef_ / scaler.scale_, dtype=torch.float32)
    if coef.shape[0] == 1:  # binary: one row, pointing to class 1
        direction = coef[0] if towards == 1 else -coef[0]
    else:
        direction = coef[towards] - (coef[away] if away is not None else coef.mean(0))
    return direction / direction.norm()


def steered_logits(model, prompts: list[str], layer: int, direction: torch.Tensor, alpha: float,
                   positions=None) -> torch.Tensor:
    """Next-token logits ``[batch, vocab]`` at each prompt's last token after adding
    ``alpha * direction`` (``[d_model]``) to the output of decoder ``layer`` at ``positions``
    (one index per prompt, counted from its start; default: each prompt's last token)."""
    lm = model.nnsight
    enc = model.tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="right",
                          add_special_tokens=False)
    last = last_positions(enc.attention_mask)
    where = last if positions is None else torch.as_tensor(positions)
    rows = torch.arange(len(last))
    inputs = {"input_ids": enc.input_ids.to(model.device), "attention_mask": enc.attention_mask.to(model.device)}
    with lm.trace(inputs):
        lm.model.layers[layer].output[rows, where] += alpha * direction.to(model.device)
        logits = lm.lm_head.output[rows, last].save()
    return logits.detach().float().cpu()


def steered_logits_many(model, prompts: list[str], layer: int, directions: torch.Tensor, alpha: float,
                        positions) -> torch.Tensor:
    """:func:`steered_logits` for every row of ``directions`` ``[n, d_model]`` -> ``[n, batch, vocab]``.

    The same numbers for less work: the prompts run once up to ``layer`` (an nnsight trace that
    stops there), then only the layers above it run, for all directions in one batch, and only
    each prompt's last token is unembedded.
    """
    hf, lm = model.hf, model.nnsight
    enc = model.tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="right",
                          add_special_tokens=False)
    ids, mask = enc.input_ids.to(model.device), enc.attention_mask.to(model.device)
    batch, T = ids.shape
    n, last = directions.shape[0], last_positions(enc.attention_mask).to(model.device)
    with lm.trace({"input_ids": ids, "attention_mask": mask}) as tracer:
        hidden = lm.model.layers[layer].output.save()  # [batch, pos, d_model]
        tracer.stop()
    rows = torch.arange(n * batch, device=model.device)  # row r * batch + b: direction r, prompt b
    x = hidden.detach().repeat(n, 1, 1)
    x[rows, torch.as_tensor(positions, device=model.device).repeat(n)] += alpha * directions.to(x).repeat_interleave(batch, 0)
    sees = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()[None] & mask.bool()[:, None, :]  # [batch, q, k]
    mask4d = torch.zeros(sees.shape, dtype=x.dtype, device=x.device).masked_fill(~sees, float("-inf"))
    where = torch.arange(T, device=x.device)[None]
    with torch.no_grad():
        for later in range(layer + 1, model.n_layers):  # any architecture (positions, cache argument)
            x = architecture.call_layer(hf, later, x, mask4d.repeat(n, 1, 1)[:, None], where, None)
        logits = hf.lm_head(architecture.final_norm(hf)(x[rows, last.repeat(n)]))  # [n * batch, vocab]
    return logits.reshape(n, batch, -1).float().cpu()
