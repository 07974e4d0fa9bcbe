"""The 1-layer, 3-head addition transformer: its config, how it is built (TransformerLens'
native bridge, so the hook names are the familiar ``blocks.0.attn.hook_pattern`` ...),
a short training loop with the loss on the answer tokens only, and checkpoints.

``load_trained()`` loads the checkpoint shipped with the package, which
``train(AdditionConfig())`` produced (one CPU thread: on one machine, the same seed and
thread count give the same weights; another machine's arithmetic can end elsewhere);
``load_trained(2)`` the 2-layer model and ``load_trained(n_heads=2)`` / ``(n_heads=4)``
the 1-layer models with 2 and 4 heads, each made by the same recipe with that one field
changed (``VARIANTS``). Beside each checkpoint, ``load_log`` reads its training log: the
loss of every step per answer digit and per sub-task and column.

``python -m mi_course.addition.model 1layer 2layer 2heads 4heads`` retrains and overwrites
them (about 1.5-3 minutes each on one idle core).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm  # plain text: no widget left blank in a saved notebook

from mi_course.addition import data

HERE = Path(__file__).parent
TASKS = ("BA", "UC1", "US9")  # the column sub-tasks, in the order of every per-task tensor


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


VARIANTS = {
    "1layer": AdditionConfig(),
    "2layer": AdditionConfig(n_layers=2),
    "2heads": AdditionConfig(n_heads=2),
    "4heads": AdditionConfig(n_heads=4),
}
CHECKPOINTS = {name: HERE / f"addition_{name}.pt" for name in VARIANTS}
LOGS = {name: HERE / f"addition_{name}_log.pt" for name in VARIANTS}
REPLICATES = HERE / "addition_replicates.pt"  # written by benchmarks/addition_replicates.py


def variant_name(n_layers: int = 1, n_heads: int = 3) -> str:
    """The ``VARIANTS`` key of a shipped model: ``(1, 3)`` -> ``"1layer"``, ``(1, 4)`` -> ``"4heads"``."""
    for name, config in VARIANTS.items():
        if (config.n_layers, config.n_heads) == (n_layers, n_heads):
            return name
    raise ValueError(f"No shipped model has {n_layers} layer(s) and {n_heads} heads: {list(VARIANTS)}")


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


def task_digit_loss(losses: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean loss per sub-task and column digit: ``losses`` ``[batch, 6]`` (from ``answer_losses``)
    and ``tokens`` ``[batch, 18]`` -> ``[3, 5]``: row ``TASKS`` (BA, UC1, US9), column ``c`` the
    answer digit ``a[c + 1]`` averaged over the questions whose column ``c`` has that sub-task;
    NaN where the batch has none."""
    labels = data.column_labels(tokens)
    masks = torch.stack([labels[name] for name in TASKS]).float()  # [3, batch, 5]
    return (masks * losses[None, :, 1:]).sum(1) / masks.sum(1)  # 0 / 0 = NaN where no case


def task_digit_counts(tokens: torch.Tensor) -> torch.Tensor:
    """How many questions of ``tokens`` ``[batch, 18]`` have each sub-task in each column: ``[3, 5]``."""
    labels = data.column_labels(tokens)
    return torch.stack([labels[name].sum(0) for name in TASKS])


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
    each the mean over ``log_every`` steps, and ``seconds``; and ``per_step``, the training log
    of every step (see ``load_log``), which ``save_checkpoint`` writes to a file of its own.
    Set one thread (``torch.set_num_threads(1)``) to reproduce the shipped checkpoint."""
    config = config or AdditionConfig()
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=config.betas)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    batches = data.training_batches(config.batch_size, config.data_seed)
    digit_rows, subtask_rows, digit_acc, subtask_acc = [], [], [], []
    per_step = {"digit_loss": [], "task_loss": [], "task_count": []}
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
        per_step["digit_loss"].append(digit_acc[-1])
        per_step["task_loss"].append(task_digit_loss(losses.detach(), tokens))
        per_step["task_count"].append(task_digit_counts(tokens))
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
        "per_step": {
            "step": torch.arange(1, config.steps + 1, dtype=torch.int16),
            "digit_loss": torch.stack(per_step["digit_loss"]).half(),  # [steps, 6]
            "task_loss": torch.stack(per_step["task_loss"]).half(),  # [steps, 3, 5], NaN: no case
            "task_count": torch.stack(per_step["task_count"]).to(torch.uint8),  # [steps, 3, 5]
        },
    }
    return model.eval(), history


def save_checkpoint(model, config: AdditionConfig, history: dict, path: Path | str, log_path: Path | str | None = None) -> None:
    """Write weights, config and training history to ``path`` (about 0.3 MB), and the per-step
    training log (``history["per_step"]``, if any) to ``log_path`` (about 0.3 MB)."""
    history = dict(history)
    per_step = history.pop("per_step", None)
    torch.save({"config": dataclasses.asdict(config), "state_dict": model.state_dict(),
                "history": history}, path)
    if per_step is not None and log_path is not None:
        torch.save({"config": dataclasses.asdict(config), **per_step}, log_path)


def load_checkpoint(path: Path | str):
    """Read a checkpoint: returns ``(model, config, history)`` with the model in eval mode."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    fields = dict(saved["config"])
    fields["betas"] = tuple(fields["betas"])
    config = AdditionConfig(**fields)
    model = build_model(config)
    model.load_state_dict(saved["state_dict"])
    return model.eval(), config, saved["history"]


def _shipped(paths: dict, n_layers: int, n_heads: int) -> Path:
    name = variant_name(n_layers, n_heads)
    path = paths[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path.name} was not installed with mi_course.addition; reinstall the course "
                                f"package, or train it yourself: python -m mi_course.addition.model {name}")
    return path


def load_trained(n_layers: int = 1, n_heads: int = 3):
    """A model shipped with the course, trained by ``train(AdditionConfig(n_layers=n_layers,
    n_heads=n_heads))``: ``(model, config, history)``."""
    return load_checkpoint(_shipped(CHECKPOINTS, n_layers, n_heads))


def load_log(n_layers: int = 1, n_heads: int = 3) -> dict:
    """The training log of a shipped model, one row per step: ``step`` ``[steps]``, ``digit_loss``
    ``[steps, 6]`` (mean loss of each answer digit over the batch), ``task_loss`` ``[steps, 3, 5]``
    (``task_digit_loss`` of the batch: sub-task ``TASKS`` x column, NaN where the batch had no
    case) and ``task_count`` ``[steps, 3, 5]`` (how many cases), all float32, and ``config``."""
    saved = torch.load(_shipped(LOGS, n_layers, n_heads), map_location="cpu", weights_only=True)
    return {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in saved.items()}


def load_replicates() -> dict:
    """Summaries of other training runs of the shipped recipes (other seeds, and the first 3-head
    checkpoint the course shipped), made by ``benchmarks/addition_replicates.py``:
    ``{run name: analysis.run_summary(...)}``."""
    return torch.load(REPLICATES, map_location="cpu", weights_only=True)


def main(names: list[str]) -> None:
    """Retrain the shipped models ``names`` (keys of ``VARIANTS``) and overwrite their checkpoints and logs."""
    torch.set_num_threads(1)
    for name in names:
        config = VARIANTS[name]
        trained, history = train(config)
        save_checkpoint(trained, config, history, CHECKPOINTS[name], LOGS[name])
        print(f"wrote {CHECKPOINTS[name].name} and {LOGS[name].name} ({history['seconds']:.0f} s)")


if __name__ == "__main__":
    # Regenerate the shipped checkpoints: python -m mi_course.addition.model [1layer 2layer 2heads 4heads]
    import sys

    main(sys.argv[1:] or ["1layer"])
