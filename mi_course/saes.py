"""Sparse autoencoders (Bricken et al. 2023) on the embedded model's residual stream.

An SAE maps an activation ``x`` ``[..., d_model]`` to latents
``f = ReLU((x - b_dec) @ W_enc + b_enc)`` ``[..., d_sae]`` and back to
``x_hat = f @ W_dec + b_dec``. It is trained to reconstruct ``x`` while few latents fire:
``|x - x_hat|^2 + l1 * sum_j f_j |W_dec[j]|`` (the L1 penalty weighted by each decoder
row's norm, so the SAE cannot shrink ``f`` and grow ``W_dec`` to dodge it).

The corpus is offline: docstrings of Python's standard library, read from its source files
(no import, no network). ``load_trained()`` loads the SAE shipped with the package;
``python -m mi_course.saes`` collects the activations and retrains it (about 3 + 3 minutes of
CPU time on one thread; 8 + 10 minutes of wall time on a busy shared 2-core machine).
"""

from __future__ import annotations

import ast
import dataclasses
import sysconfig
import time
from pathlib import Path

import torch

from mi_course import architecture
from mi_course.activations import hooks

CHECKPOINT = Path(__file__).with_name("sae_layer12.pt")
MASSIVE = 10  # activations with a norm over 10x the median are attention sinks, not text: not trained on


@dataclasses.dataclass
class SAEConfig:
    """Everything that decides the trained SAE (with the Python version, whose standard library
    is the corpus, and the thread count)."""

    layer: int = 12  # residual stream after decoder layer 12 (of 30)
    d_sae: int = 1024
    context: int = 64  # tokens per sequence; position 0 (a huge-norm "attention sink") is dropped
    n_sequences: int = 640  # training sequences, ~40k tokens
    heldout_every: int = 10  # every 10th docstring is held out of training
    l1_coeff: float = 3.0  # in units where the mean |x| is sqrt(d_model)
    lr: float = 1e-3
    steps: int = 2500
    batch_size: int = 256
    seed: int = 0


class SAE(torch.nn.Module):
    """``W_enc`` ``[d_model, d_sae]``, ``b_enc`` ``[d_sae]``, ``W_dec`` ``[d_sae, d_model]``,
    ``b_dec`` ``[d_model]``. ``forward(x)`` -> ``(latents, reconstruction)``."""

    def __init__(self, d_model: int, d_sae: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(d_sae, d_model, generator=g)
        W_dec = 0.1 * W_dec / W_dec.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(W_dec)
        self.W_enc = torch.nn.Parameter(W_dec.T.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_model))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latents = self.encode(x)
        return latents, self.decode(latents)


def sae_loss(sae: SAE, x: torch.Tensor, l1_coeff: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(latents [batch, d_sae], reconstruction [batch, d_model], loss)``: the loss is the mean over
    the batch of ``|x - x_hat|^2 + l1_coeff * sum_j f_j |W_dec[j]|``."""
    latents, x_hat = sae(x)
    mse = ((x - x_hat) ** 2).sum(-1)
    l1 = (latents * sae.W_dec.norm(dim=1)).sum(-1)
    return latents, x_hat, (mse + l1_coeff * l1).mean()


def variance_explained(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of the variance of ``x`` ``[n, d]`` that ``x_hat`` ``[n, d]`` explains:
    ``1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2``."""
    return 1 - float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def docstring_corpus() -> list[str]:
    """Docstrings (>= 200 characters) of the standard library's modules, classes and functions,
    read with ``ast`` from the source files in sorted order (tests and idlelib left out)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if parts[0] in ("site-packages", "test", "idlelib", "lib2to3") or "tests" in parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 200:
                    texts.append(doc)
    return texts


def split_corpus(texts: list[str], every: int) -> tuple[list[str], list[str]]:
    """``(training, held_out)``: every ``every``-th text is held out."""
    return [t for i, t in enumerate(texts) if i % every], texts[::every]


def sequences(tokenizer, texts: list[str], context: int, n: int) -> torch.Tensor:
    """The first ``n`` texts with at least ``context`` tokens, cut to ``context``: ``[n, context]``."""
    rows = []
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        if len(ids) >= context:
            rows.append(ids[:context])
            if len(rows) == n:
                break
    return torch.tensor(rows)


class _Stop(Exception):
    pass


def residuals(hf_model, ids: torch.Tensor, layer: int, batch: int = 16) -> torch.Tensor:
    """The residual stream after decoder layer ``layer`` for ``ids`` ``[n, pos]``:
    ``[n, pos, d_model]`` (the layers above ``layer`` are not run)."""
    saved = []

    def grab(module, inputs, output):
        saved.append(output[0] if isinstance(output, tuple) else output)
        raise _Stop

    with hooks([architecture.layers(hf_model)[layer].register_forward_hook(grab)]), torch.no_grad():
        for start in range(0, len(ids), batch):
            try:
                architecture.backbone(hf_model)(ids[start:start + batch])
            except _Stop:
                pass
    return torch.cat(saved)


def spliced_losses(model, ids: torch.Tensor, sae: SAE, layer: int) -> tuple[float, float]:
    """Next-token loss of ``ids`` ``[batch, pos]`` with the clean activations and with the SAE's
    reconstruction replacing the output of decoder layer ``layer`` (nnsight): ``(clean, spliced)``.
    Position 0 is left alone (the SAE never saw it: its norm is ~100x the others')."""
    lm = model.nnsight
    with torch.no_grad():
        with lm.trace(ids):
            clean = lm.output.logits.save()
        with lm.trace(ids):
            acts = lm.model.layers[layer].output
            acts[:, 1:] = sae(acts[:, 1:])[1]
            spliced = lm.output.logits.save()
    return next_token_loss(clean, ids), next_token_loss(spliced, ids)


def next_token_loss(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """Mean cross-entropy of every next-token prediction: ``logits`` ``[batch, pos, vocab]``, ``ids`` ``[batch, pos]``."""
    return float(torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()))


def steered_probability(model, ids: torch.Tensor, direction: torch.Tensor, layer: int,
                        token_ids: torch.Tensor) -> torch.Tensor:
    """Add ``direction`` ``[d_model]`` to the output of decoder layer ``layer`` at the last position
    of ``ids`` ``[batch, pos]`` (nnsight) and return the next-token probability mass on
    ``token_ids``: ``[batch]``."""
    lm = model.nnsight
    with torch.no_grad(), lm.trace(ids):
        lm.model.layers[layer].output[:, -1] += direction
        logits = lm.output.logits[:, -1].save()
    return logits.softmax(-1)[:, token_ids].sum(-1)


def train_sae(acts: torch.Tensor, config: SAEConfig) -> tuple[SAE, dict]:
    """Train on ``acts`` ``[n, d_model]`` (already scaled to mean norm ``sqrt(d_model)``) with Adam:
    returns the SAE and a log (every 50 steps: ``step``, ``mse``, ``l0``, ``fve``)."""
    g = torch.Generator().manual_seed(config.seed)
    sae = SAE(acts.shape[1], config.d_sae, config.seed).to(acts.device)
    with torch.no_grad():
        sae.b_dec.copy_(acts.median(0).values)
    optimizer = torch.optim.Adam(sae.parameters(), lr=config.lr)
    warmup = config.steps // 20
    log = {"step": [], "mse": [], "l0": [], "fve": []}
    for step in range(config.steps):
        x = acts[torch.randint(len(acts), (config.batch_size,), generator=g).to(acts.device)]
        coeff = config.l1_coeff * min(1.0, (step + 1) / warmup)  # L1 warm-up avoids early dead latents
        latents, x_hat, loss = sae_loss(sae, x, coeff)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == config.steps - 1:
            log["step"].append(step)
            log["mse"].append(float(((x - x_hat) ** 2).sum(-1).mean().detach()))
            log["l0"].append(float((latents > 0).float().sum(-1).mean()))
            log["fve"].append(variance_explained(x, x_hat.detach()))
    return sae.eval(), log


def collect(model, config: SAEConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training activations ``[n_tokens, d_model]`` (position 0 dropped), the training
    sequences ``[n_sequences, context]`` and the held-out ones ``[n_heldout, context]``."""
    train_texts, heldout_texts = split_corpus(docstring_corpus(), config.heldout_every)
    ids = sequences(model.tokenizer, train_texts, config.context, config.n_sequences)
    heldout = sequences(model.tokenizer, heldout_texts, config.context, 10_000)
    acts = residuals(model.hf, ids, config.layer)[:, 1:].flatten(0, 1)
    return acts, ids, heldout


def fit_and_save(acts: torch.Tensor, ids: torch.Tensor, heldout: torch.Tensor, config: SAEConfig,
                 path: Path | str = CHECKPOINT) -> dict:
    """Train on ``acts`` (on their device), fold the activation scale into the biases (the saved
    SAE reads raw activations; ``W_enc``, ``W_dec`` are unchanged) and save weights, config, log,
    the training and held-out sequences and each latent's top contexts."""
    start = time.perf_counter()
    norms = acts.norm(dim=-1)
    typical = norms < MASSIVE * norms.median()  # a few more attention sinks (norm ~150x) are left out
    scale = acts.shape[1] ** 0.5 / norms[typical].mean()
    sae, log = train_sae(acts[typical] * scale, config)
    with torch.no_grad():  # f/scale = ReLU((x - b_dec/scale) W_enc + b_enc/scale); x_hat = (f/scale) W_dec + b_dec/scale
        sae.b_enc /= scale
        sae.b_dec /= scale
        latents = torch.cat([sae.encode(acts[s:s + 4096]) for s in range(0, len(acts), 4096)])
        latents[~typical] = 0
        kept = latents[typical]
        log |= {"scale": float(scale), "train_seconds": time.perf_counter() - start,
                "fires_per_latent": (kept > 0).sum(0).cpu(),
                "train_fve": variance_explained(acts[typical], sae.decode(kept)),
                "train_l0": float((kept > 0).float().sum(-1).mean()), "n_tokens": int(typical.sum()),
                "n_massive": int((~typical).sum())}
        values, rows = latents.topk(8, dim=0)
    torch.save({"config": dataclasses.asdict(config), "d_model": acts.shape[1],
                "state_dict": {k: v.half().cpu() for k, v in sae.state_dict().items()}, "log": log,
                "tokens": ids.int(), "heldout": heldout.int(), "top_values": values.T.half().cpu(),
                "top_rows": rows.T.int().cpu()}, path)
    return log


def load_trained(path: Path | str = CHECKPOINT) -> tuple[SAE, SAEConfig, dict]:
    """The shipped SAE: ``(sae, config, extra)``; ``extra`` holds ``log``, the training ``tokens``
    ``[n_seq, context]``, the ``heldout`` sequences (every held-out docstring long enough) and per latent ``top_values``/``top_rows`` ``[d_sae, 8]``, rows indexing the
    training tokens with position 0 dropped (row r is sequence ``r // (context - 1)``, position
    ``r % (context - 1) + 1``)."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    config = SAEConfig(**saved["config"])
    sae = SAE(saved["d_model"], config.d_sae)
    sae.load_state_dict({k: v.float() for k, v in saved["state_dict"].items()})
    extra = {"log": saved["log"], "tokens": saved["tokens"].long(), "heldout": saved["heldout"].long(),
             "top_values": saved["top_values"].float(),
             "top_rows": saved["top_rows"].long()}
    return sae.eval(), config, extra


if __name__ == "__main__":
    # Regenerate the shipped SAE: python -m mi_course.saes
    from mi_course import load_model

    torch.set_num_threads(1)
    config = SAEConfig()
    start = time.perf_counter()
    acts, ids, heldout = collect(load_model(), config)
    print(f"collected {len(acts)} activations in {time.perf_counter() - start:.0f} s")
    result = fit_and_save(acts, ids, heldout, config)
    print(f"wrote {CHECKPOINT} (trained in {result['train_seconds']:.0f} s; variance explained "
          f"{result['train_fve']:.3f}, L0 {result['train_l0']:.1f})")
