"""Induction heads and attention circuits (lesson 8).

Two models. The embedded SmolLM2 (30 layers, 9 query heads, rotary positions), where
induction heads are *found* on repeated random tokens and *ablated*; and a 2-layer
attention-only transformer trained here on sequences with repeats, where one is watched
forming and its circuit is *read from the weights* (QK, OV, K-composition).

Repeated sequences are ``[BOS, r_1 .. r_T, r_1 .. r_T]`` (``1 + 2T`` tokens): the token at
``q > T`` occurred before at ``q - T``, so an induction head attends from ``q`` to
``q - T + 1`` (the token that followed it) and predicts that token.

``load_toy()`` loads the 2-layer model shipped with the course, which ``train_toy(ToyConfig())``
produced on one CPU thread (same seed, same thread count, same weights);
``python -m mi_course.circuits`` retrains it and overwrites the checkpoint.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from mi_course import architecture
from mi_course.activations import hooks

CHECKPOINT = Path(__file__).with_name("induction_2layer.pt")


# --- repeated random tokens and the induction score ---------------------------------------------


def repeated_tokens(bos: int, batch: int, half: int, seed: int, low: int = 1000, high: int = 20000) -> torch.Tensor:
    """``[batch, 1 + 2 * half]`` ids: BOS, then ``half`` random ids in ``[low, high)``, repeated."""
    random = torch.randint(low, high, (batch, half), generator=torch.Generator().manual_seed(seed))
    return torch.cat([torch.full((batch, 1), bos), random, random], dim=1)


def induction_score(pattern: torch.Tensor, half: int) -> torch.Tensor:
    """Mean attention from each second-half query ``q`` (``half + 1 .. 2 * half``) to
    ``q - half + 1``: ``[..., head, q, k]`` -> ``[..., head]`` (leading dims kept)."""
    queries = torch.arange(half + 1, 2 * half + 1)
    return pattern[..., queries, queries - half + 1].mean(-1)


def previous_token_score(pattern: torch.Tensor) -> torch.Tensor:
    """Mean attention from each query ``q >= 1`` to ``q - 1``: ``[..., head, q, k]`` -> ``[..., head]``."""
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)


def token_losses(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each next token: logits ``[batch, pos, vocab]``, ids ``[batch, pos]``
    -> ``[batch, pos - 1]`` (entry ``i`` is the loss of predicting token ``i + 1``)."""
    log_probs = logits[:, :-1].log_softmax(-1)
    return -log_probs.gather(-1, ids[:, 1:, None])[..., 0]


def half_losses(losses: torch.Tensor, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss on the first copy (tokens ``1 .. half``) and on the second copy from its second
    token on (``half + 2 .. 2 * half``; its first token is not predictable): two floats as
    tensors, from ``[batch, 2 * half]`` losses of :func:`token_losses`."""
    return losses[:, :half].mean(), losses[:, half + 1:].mean()


def attention_patterns(model, ids: torch.Tensor, ablate=()) -> torch.Tensor:
    """Attention of every head of the embedded model, with the ``(layer, head)`` in ``ablate``
    zero-ablated: ``[batch, pos]`` -> ``[batch, layer, head, q, k]``."""
    with hooks(_zero_heads(model, [list(ablate)], ids.shape[0])), torch.no_grad():
        out = model.hf(ids, output_attentions=True)
    return torch.stack(out.attentions, dim=1)


def _zero_heads(model, head_sets, rows: int) -> list:
    """Forward pre-hooks on ``o_proj`` zeroing, in the ``rows`` batch rows of set ``r`` (rows
    ``r * rows ..``), the slice of each of its heads; returns the hook handles."""
    d_head, layers = architecture.heads(model.config)[2], architecture.layers(model.hf)

    def ablate(layer):
        def hook(module, args):
            x = args[0].clone()  # [batch, pos, n_heads * d_head]: the query heads' outputs side by side
            for r, heads in enumerate(head_sets):
                for h in [h for l, h in heads if l == layer]:
                    x[r * rows:(r + 1) * rows, :, h * d_head:(h + 1) * d_head] = 0.0
            return (x,)

        return hook

    used = sorted({l for heads in head_sets for l, _ in heads})
    return [architecture.out_proj(layers[l]).register_forward_pre_hook(ablate(l)) for l in used]


def ablated_losses(model, ids: torch.Tensor, head_sets, half: int, sets_per_batch: int = 8) -> torch.Tensor:
    """First- and second-copy loss (as :func:`half_losses`) with each set of ``(layer, head)``
    zero-ablated (the head's slice of ``o_proj``'s input set to 0 at every position):
    ``ids [batch, 1 + 2 * half]`` -> ``[len(head_sets), 2]``. Each set runs as its own copy of
    ``ids``, ``sets_per_batch`` sets per forward."""
    head_sets = [list(s) for s in head_sets]
    n, out = ids.shape[0], []
    for start in range(0, len(head_sets), sets_per_batch):
        chunk = head_sets[start:start + sets_per_batch]
        big = ids.repeat(len(chunk), 1)
        with hooks(_zero_heads(model, chunk, n)), torch.no_grad():
            losses = token_losses(model.hf(big).logits, big).reshape(len(chunk), n, -1)
        out.append(torch.stack([losses[:, :, :half].mean((1, 2)), losses[:, :, half + 1:].mean((1, 2))], dim=-1))
    return torch.cat(out)


# --- the 2-layer attention-only model -----------------------------------------------------------


@dataclasses.dataclass
class ToyConfig:
    """Everything that decides the trained weights (with the thread count)."""

    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    d_head: int = 16
    d_vocab: int = 64  # token 0 is BOS
    n_ctx: int = 48
    seed: int = 0  # initialisation
    data_seed: int = 1000  # training batches
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    log_every: int = 25
    eval_half: int = 20  # the repeated sequences the induction score is logged on


def build_toy(config: ToyConfig):
    """A freshly initialised attention-only ``TransformerBridge`` (learned positions, no LayerNorm)."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources.native import boot

    return boot(TransformerBridgeConfig(
        n_layers=config.n_layers, n_heads=config.n_heads, d_model=config.d_model, d_head=config.d_head,
        n_ctx=config.n_ctx, d_vocab=config.d_vocab, attn_only=True, normalization_type=None,
        act_fn="relu", seed=config.seed))


def toy_batch(config: ToyConfig, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Training data: ``(tokens [batch, n_ctx], repeated [batch, n_ctx - 1])``. Each row is BOS and
    random tokens in which one random span (length 6..23, random start) is repeated right after
    itself; ``repeated[i]`` marks the losses (of predicting token ``i + 1``) a copy can predict."""
    tokens = torch.randint(1, config.d_vocab, (batch, config.n_ctx), generator=generator)
    tokens[:, 0] = 0
    repeated = torch.zeros(batch, config.n_ctx - 1, dtype=torch.bool)
    lengths = torch.randint(6, (config.n_ctx - 1) // 2 + 1, (batch,), generator=generator)
    for i, length in enumerate(lengths.tolist()):
        start = int(torch.randint(1, config.n_ctx - 2 * length + 1, (1,), generator=generator))
        tokens[i, start + length:start + 2 * length] = tokens[i, start:start + length]
        repeated[i, start + length:start + 2 * length - 1] = True  # predicting tokens start+length+1 ..
    return tokens, repeated


def toy_eval_tokens(config: ToyConfig, batch: int = 32, seed: int = 7) -> torch.Tensor:
    """``[batch, 1 + 2 * eval_half]`` repeated random tokens in the toy vocabulary (BOS = 0)."""
    return repeated_tokens(0, batch, config.eval_half, seed, low=1, high=config.d_vocab)


def train_toy(config: ToyConfig | None = None, progress: bool = True):
    """Train from scratch; returns ``(model, history)``. ``history`` holds, every ``log_every``
    steps: ``step`` ``[n]``, ``loss`` ``[n]`` (training loss), ``loss_repeated`` / ``loss_other``
    ``[n]`` (on the tokens a copy predicts / the others), ``induction`` and ``previous``
    ``[n, n_layers, n_heads]`` (scores on :func:`toy_eval_tokens`), ``seconds`` (wall clock) and
    ``cpu_seconds`` (this process's CPU time)."""
    from tqdm import tqdm  # plain text: a widget is blank once a saved notebook is reopened

    config = config or ToyConfig()
    model = build_toy(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.data_seed)
    evaluation = toy_eval_tokens(config)
    rows = {k: [] for k in ("step", "loss", "loss_repeated", "loss_other", "induction", "previous")}
    window = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in tqdm(range(1, config.steps + 1), desc="training", disable=not progress):
        tokens, repeated = toy_batch(config, config.batch_size, generator)
        losses = token_losses(model(tokens), tokens)
        loss = losses.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        window.append((loss.item(), losses[repeated].mean().item(), losses[~repeated].mean().item()))
        if step % config.log_every == 0:
            means = torch.tensor(window).mean(0)
            window = []
            pattern = toy_patterns(model, evaluation)
            rows["step"].append(step)
            rows["loss"].append(float(means[0]))
            rows["loss_repeated"].append(float(means[1]))
            rows["loss_other"].append(float(means[2]))
            rows["induction"].append(induction_score(pattern, config.eval_half).mean(0))
            rows["previous"].append(previous_token_score(pattern).mean(0))
    history = {k: torch.tensor(v) if k != "induction" and k != "previous" else torch.stack(v) for k, v in rows.items()}
    history["seconds"] = time.perf_counter() - start
    history["cpu_seconds"] = time.process_time() - cpu_start
    return model.eval(), history


def toy_patterns(model, tokens: torch.Tensor) -> torch.Tensor:
    """Attention of the toy model: ``[batch, pos]`` -> ``[batch, layer, head, q, k]``."""
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("attn.hook_pattern"))
    return torch.stack([cache[f"blocks.{l}.attn.hook_pattern"] for l in range(model.cfg.n_layers)], dim=1)


def save_toy(model, config: ToyConfig, history: dict, path: Path | str = CHECKPOINT) -> None:
    """Write weights, config and training log to ``path``."""
    torch.save({"config": dataclasses.asdict(config), "state_dict": model.state_dict(), "history": history}, path)


def load_toy(path: Path | str = CHECKPOINT):
    """The shipped 2-layer model: ``(model, config, history)``, the model in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path.name} was not installed with mi_course; reinstall the course package, "
                                "or train it yourself: python -m mi_course.circuits")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    config = ToyConfig(**saved["config"])
    model = build_toy(config)
    model.load_state_dict(saved["state_dict"])
    return model.eval().requires_grad_(False), config, saved["history"]


# --- reading the toy model's circuits from its weights ------------------------------------------


def full_ov(model, layer: int, head: int):
    """The full OV circuit ``W_E W_V W_O W_U`` of one head, over the ordinary tokens (BOS dropped):
    a ``FactoredMatrix`` ``[d_vocab - 1, d_vocab - 1]``; entry ``[s, t]`` is how much attending to
    token ``s`` raises the logit of token ``t`` (biases and the direct path left out)."""
    return model.W_E[1:] @ model.OV[layer, head] @ model.W_U[:, 1:]


def ov_copying_score(model, layer: int, head: int) -> float:
    """Fraction of ordinary tokens ``s`` whose own logit is the one the head's full OV circuit
    raises most (the row's argmax is on the diagonal); chance is ``1 / (d_vocab - 1)``."""
    matrix = full_ov(model, layer, head).AB
    return float((matrix.argmax(-1) == torch.arange(matrix.shape[0])).float().mean())


def positional_qk(model, layer: int, head: int) -> torch.Tensor:
    """Attention scores from position embeddings alone, ``W_pos W_Q W_K^T W_pos^T / sqrt(d_head)``,
    with the future masked: ``[n_ctx, n_ctx]`` (query, key), ``-inf`` above the diagonal."""
    scores = (model.W_pos @ model.QK[layer, head] @ model.W_pos.T).AB / model.cfg.d_head ** 0.5
    return scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))


def composition_score(left, right) -> float:
    """``||left @ right||_F / (||left||_F ||right||_F)`` of two matrices (tensors or
    ``FactoredMatrix``, ``[a, b]`` and ``[b, c]``): 1 when ``right`` reads exactly what ``left``
    writes, about ``1 / sqrt(b)``-ish for unrelated random matrices."""
    def dense(m):
        return m.AB if hasattr(m, "AB") else m
    left, right = dense(left), dense(right)
    return float(torch.linalg.matrix_norm(left @ right) / torch.linalg.matrix_norm(left) / torch.linalg.matrix_norm(right))


def k_composition_scores(model) -> torch.Tensor:
    """K-composition of every layer-0 head (writer, its OV) with every layer-1 head (reader,
    its keys: ``W_K W_Q^T``): ``[n_heads (layer 0), n_heads (layer 1)]``."""
    n = model.cfg.n_heads
    return torch.tensor([[composition_score(model.OV[0, a], model.QK[1, b].T) for b in range(n)] for a in range(n)])


def random_composition_scores(model, n: int = 200, seed: int = 0) -> torch.Tensor:
    """Composition scores of ``n`` pairs of random heads shaped like the model's (Gaussian
    ``W_V, W_O, W_Q, W_K`` of rank ``d_head``): the baseline for :func:`k_composition_scores`."""
    from transformer_lens import FactoredMatrix

    generator = torch.Generator().manual_seed(seed)
    d, k = model.cfg.d_model, model.cfg.d_head

    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    return torch.tensor([composition_score(FactoredMatrix(randn(d, k), randn(k, d)),
                                           FactoredMatrix(randn(d, k), randn(k, d)).T) for _ in range(n)])


def llama_k_composition(model, reader: tuple[int, int]) -> torch.Tensor:
    """K-composition of every head in the layers below ``reader = (layer, head)`` with it, in a
    Llama-family model (grouped-query attention: query head ``h`` reads key/value head
    ``h // (n_heads / n_kv_heads)``; the reader's RMSNorm gain is folded into its ``W_Q, W_K``;
    rotary positions are left out): ``[layer, n_heads]`` scores, as :func:`composition_score`."""
    config, layers = model.config, model.hf.model.layers
    n_heads, d = config.num_attention_heads, config.head_dim
    group = n_heads // config.num_key_value_heads
    layer, head = reader
    attn, gain = layers[layer].self_attn, layers[layer].input_layernorm.weight
    w_q = gain[:, None] * attn.q_proj.weight[head * d:(head + 1) * d].T                  # [d_model, d]
    w_k = gain[:, None] * attn.k_proj.weight[head // group * d:(head // group + 1) * d].T  # [d_model, d]
    kq_norm = torch.linalg.matrix_norm(w_k @ w_q.T)
    scores = torch.zeros(layer, n_heads)
    for l in range(layer):
        a = layers[l].self_attn
        w_v = a.v_proj.weight.reshape(-1, d, config.hidden_size).repeat_interleave(group, 0)  # [head, d, d_model]
        w_o = a.o_proj.weight.T.reshape(n_heads, d, config.hidden_size)                      # [head, d, d_model]
        ov = w_v.transpose(1, 2) @ w_o                                                       # [head, d_model, d_model]
        scores[l] = torch.linalg.matrix_norm(ov @ w_k @ w_q.T) / torch.linalg.matrix_norm(ov) / kq_norm
    return scores


if __name__ == "__main__":
    # Regenerate the shipped checkpoint: python -m mi_course.circuits
    torch.set_num_threads(1)
    trained, log = train_toy(ToyConfig())
    save_toy(trained, ToyConfig(), log)
    print(f"wrote {CHECKPOINT} ({log['seconds']:.0f} s)")
