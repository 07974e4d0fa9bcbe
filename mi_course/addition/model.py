"""The 1-layer, 3-head addition transformer: its config, how it is built (TransformerLens'
native bridge, so the hook names are the familiar ``blocks.0.attn.hook_pattern`` ...),
a short training loop with the loss on the answer tokens only, and checkpoints.

``load_trained()`` loads the checkpoint shipped with the package, which
``train(AdditionConfig())`` produced (one CPU thread; same seed and thread count
give the same weights); ``load_trained(2)`` the 2-layer model that
``train(AdditionConfig(n_layers=2))`` produced. ``python -m mi_course.addition.model 1 2``
retrains and overwrites both.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mi_course.addition import data

CHECKPOINTS = {1: Path(__file__).with_name("addition_1layer.pt"), 2: Path(__file__).with_name("addition_2layer.pt")}


@dataclasses.dataclass
class AdditionConfig:
    """Everything that decides the trained weights (with the thread count)."""

    n_layers: int = 1
    d_model: int = 64
    n_heads: int = 3
    d_head: int = 16
    d_mlp: int = 256
    seed: int = 1  # initialisation
    data_seed: int = 1001  # training batches
    steps: int = 5000
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    warmup: int = 100  # linear warm-up steps, then cosine decay to 0
    log_every: int = 10  # history keeps the mean of every ``log_every`` steps


def build_model(config: AdditionConfig):
    """A freshly initialised ``TransformerBridge`` (LayerNorm, ReLU MLP, learned positions)."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources.native import boot

    return boot(
        TransformerBridgeConfig(
            n_layers=config.n_layers, n_heads=config.n_heads, d_model=config.d_model, d_head=config.d_head,
            d_mlp=config.d_mlp, n_ctx=data.N_CTX, d_vocab=data.D_VOCAB, act_fn="relu",
            normalization_type="LN", seed=config.seed,
        )
    )


def answer_logits(logits: torch.Tensor) -> torch.Tensor:
    """Logits ``[batch, 18, 12]`` -> the 6 that predict the answer digits ``[batch, 6, 12]``
    (position p predicts token p + 1, so positions 11..16)."""
    return logits[:, data.PREDICT_POSITIONS]


def answer_losses(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each answer digit: ``[batch, 6]`` from logits ``[batch, 18, 12]``."""
    log_probs = answer_logits(logits).log_softmax(-1)
    return -log_probs.gather(-1, data.answers(tokens)[..., None])[..., 0]


def _lr_factor(step: int, config: AdditionConfig) -> float:
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def _subtask_losses(losses: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean loss of the column digits (answer digits 1..5) per sub-task BA, UC1, US9: ``[3]``."""
    labels = data.column_labels(tokens)
    column_losses = losses[:, 1:]
    return torch.stack([
        column_losses[labels[name]].mean() if labels[name].any() else torch.tensor(float("nan"))
        for name in ("BA", "UC1", "US9")
    ])


def train(config: AdditionConfig | None = None, progress: bool = True):
    """Train from scratch; returns ``(model, history)``. ``history`` holds ``step`` ``[n]``,
    ``digit_loss`` ``[n, 6]`` (per answer digit) and ``subtask_loss`` ``[n, 3]`` (BA, UC1, US9),
    each the mean over ``log_every`` steps, and ``seconds``. Set one thread
    (``torch.set_num_threads(1)``) to reproduce the shipped checkpoint."""
    config = config or AdditionConfig()
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=config.betas)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    batches = data.training_batches(config.batch_size, config.data_seed)
    digit_rows, subtask_rows, digit_acc, subtask_acc = [], [], [], []
    start = time.perf_counter()
    bar = tqdm(range(config.steps), desc="training", disable=not progress)
    for step in bar:
        tokens = next(batches)
        losses = answer_losses(model(tokens), tokens)
        loss = losses.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        digit_acc.append(losses.detach().mean(0))
        subtask_acc.append(_subtask_losses(losses.detach(), tokens))
        if len(digit_acc) == config.log_every:
            digit_rows.append(torch.stack(digit_acc).mean(0))
            subtask_rows.append(torch.stack(subtask_acc).nanmean(0))
            digit_acc, subtask_acc = [], []
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    history = {
        "step": torch.arange(len(digit_rows)) * config.log_every + config.log_every,
        "digit_loss": torch.stack(digit_rows),
        "subtask_loss": torch.stack(subtask_rows),
        "seconds": time.perf_counter() - start,
    }
    return model.eval(), history


def save_checkpoint(model, config: AdditionConfig, history: dict, path: Path | str) -> None:
    """Write weights, config and training history to ``path`` (about 0.3 MB)."""
    torch.save({"config": dataclasses.asdict(config), "state_dict": model.state_dict(),
                "history": history}, path)


def load_checkpoint(path: Path | str):
    """Read a checkpoint: returns ``(model, config, history)`` with the model in eval mode."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    fields = dict(saved["config"])
    fields["betas"] = tuple(fields["betas"])
    config = AdditionConfig(**fields)
    model = build_model(config)
    model.load_state_dict(saved["state_dict"])
    return model.eval(), config, saved["history"]


def load_trained(n_layers: int = 1):
    """A model shipped with the course, trained by ``train(AdditionConfig(n_layers=n_layers))``:
    ``(model, config, history)``."""
    path = CHECKPOINTS[n_layers]
    if not path.is_file():
        raise FileNotFoundError(f"{path.name} was not installed with mi_course.addition; reinstall the course "
                                f"package, or train it yourself: train(AdditionConfig(n_layers={n_layers}))")
    return load_checkpoint(path)


if __name__ == "__main__":
    # Regenerate the shipped checkpoints: python -m mi_course.addition.model [n_layers ...]
    import sys

    torch.set_num_threads(1)
    for n_layers in [int(a) for a in sys.argv[1:]] or [1]:
        config = AdditionConfig(n_layers=n_layers)
        trained, history = train(config)
        save_checkpoint(trained, config, history, CHECKPOINTS[n_layers])
        print(f"wrote {CHECKPOINTS[n_layers]} ({history['seconds']:.0f} s)")
