"""Lesson 7's training recipe, run again: how much of what the lesson measures reproduces?

Trains the recipe of each shipped 1-layer model (3, 2 and 4 heads: ``model.VARIANTS``) with
other seeds (``seed`` and ``data_seed`` = 1000 + seed), adds the first checkpoint the course
shipped (seed 1, trained on an earlier machine: the same recipe and seed gave other weights
there; how far its weights are from the shipped checkpoint's is recorded too), and summarises
every run with ``analysis.run_summary`` on the lesson's own question sets. Writes ``mi_course/addition/addition_replicates.pt`` (a few kB), which lesson 7 reads.

    python benchmarks/addition_replicates.py              # train (1.5-3 min per run, one idle core)
    python benchmarks/addition_replicates.py --from DIR   # summarise runs already trained into DIR
                                                          # as DIR/<variant>_s<seed>.pt

One thread per run, as for the shipped checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import subprocess
from pathlib import Path

import torch

from mi_course.addition import analysis, data
from mi_course.addition import model as addmodel

ROOT = Path(__file__).resolve().parents[1]
OUT = addmodel.HERE / "addition_replicates.pt"
RUNS = [("1layer", 2), ("2heads", 2), ("4heads", 2)]  # (variant, seed) beyond the shipped seed-1 models
EARLIER = ("0f0ee17", "mi_course/addition/addition_1layer.pt")  # the first shipped 3-head checkpoint


def lesson_sets() -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The lesson's question sets: 300 per category, the 2,000-question ablation reference and
    1,000 random questions for the staircase and the loss deltas."""
    random_questions = data.random_tokens(20_000, torch.Generator().manual_seed(0))
    return analysis.category_suite(300), random_questions[:2000], random_questions[2000:3000]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, help="read DIR/<variant>_s<seed>.pt instead of training")
    args = parser.parse_args()
    torch.set_num_threads(1)
    suite, reference, tokens = lesson_sets()
    runs = {}
    for variant, seed in RUNS:
        if args.source:
            model, config, _ = addmodel.load_checkpoint(args.source / f"{variant}_s{seed}.pt")
        else:
            config = dataclasses.replace(addmodel.VARIANTS[variant], seed=seed, data_seed=1000 + seed)
            model, _ = addmodel.train(config)
        assert dataclasses.replace(config, seed=1, data_seed=1001) == addmodel.VARIANTS[variant], config
        runs[f"{variant} seed {seed}"] = analysis.run_summary(model, suite, reference, tokens)
        print(variant, seed, runs[f"{variant} seed {seed}"]["rates"])
    earlier = subprocess.run(["git", "show", ":".join(EARLIER)], cwd=ROOT, capture_output=True, check=True).stdout
    model, config, _ = addmodel.load_checkpoint(io.BytesIO(earlier))
    assert dataclasses.replace(config) == addmodel.VARIANTS["1layer"], config
    runs["1layer seed 1, earlier machine"] = analysis.run_summary(model, suite, reference, tokens)
    shipped = addmodel.load_trained()[0].state_dict()
    earlier_weights = model.state_dict()
    differ = sum(int((earlier_weights[k] != w).sum()) for k, w in shipped.items())
    runs["1layer seed 1, earlier machine"]["weights"] = {  # against the shipped checkpoint: same code and seed
        "differ": differ, "total": sum(w.numel() for w in shipped.values()),
        "largest difference": max(float((earlier_weights[k] - w).abs().max()) for k, w in shipped.items())}
    torch.save(runs, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
