"""What the course costs on this machine: prints figures and writes benchmarks/results.md.

Not a test: no thresholds. Each figure is a median over repeated runs; ratios are
measured side by side in the same run.

    python benchmarks/run.py                 # everything (about 10-15 minutes on 2 cores)
    python benchmarks/run.py --skip-notebooks --repeat 5
    python benchmarks/run.py --prepare       # also time a first-time model preparation (~25 s)
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from mi_course import lens, models, patching  # noqa: E402
from mi_course.course import lesson_names  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ROWS: list[tuple[str, str, str]] = []  # (section, figure, value)


def record(section: str, figure: str, value: str) -> None:
    ROWS.append((section, figure, value))
    print(f"{section:<12} {figure:<58} {value}")


def median_time(fn, repeat: int) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> None:
    record("machine", "platform", platform.platform())
    record("machine", "processor / cores", f"{platform.machine()} / {os.cpu_count()}")
    record("machine", "torch threads", str(torch.get_num_threads()))
    record("machine", "python / torch", f"{platform.python_version()} / {torch.__version__}")


def model_costs(repeat: int, prepare: bool) -> models.CourseModel:
    if prepare:
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mi_course.cli", "prepare"], check=True, capture_output=True,
                           env={**os.environ, "MI_COURSE_CACHE": cache})
            record("model", "first-time preparation (de-quantize + save)", f"{time.perf_counter() - start:.1f} s")

    def warm_load():
        models._load.cache_clear()
        models.load_model()

    record("model", "warm load (cache prepared, in-process)", f"{median_time(warm_load, repeat):.2f} s")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from mi_course import load_model; load_model()"], check=True,
                   capture_output=True)
    record("model", "fresh process: import + load", f"{time.perf_counter() - start:.2f} s")
    model = models.load_model()
    with torch.no_grad():
        model.hf(torch.ones(1, 32, dtype=torch.long))
    record("model", "peak memory (RSS) after load + forward", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return model


def library_overhead(model, repeat: int) -> None:
    import pyvene as pv

    ids = model.tokenizer("The Eiffel Tower is in the city of", return_tensors="pt").input_ids
    last = ids.shape[1] - 1

    def hf():
        with torch.no_grad():
            model.hf(ids)

    def nnsight():
        with model.nnsight.trace(ids):
            model.nnsight.lm_head.output.save()

    def bridge():
        with torch.no_grad():
            model.bridge.run_with_cache(ids)

    config = pv.IntervenableConfig(representations=[pv.RepresentationConfig(15, "block_output", "pos", 1)],
                                   intervention_types=pv.VanillaIntervention)
    intervenable = model.intervenable(config)

    def pyvene():
        with torch.no_grad():
            intervenable({"input_ids": ids}, [{"input_ids": ids}], {"sources->base": ([[[last]]], [[[last]]])})

    base = median_time(hf, repeat * 3)
    record("libraries", f"transformers forward ({ids.shape[1]} tokens)", f"{base * 1000:.0f} ms")
    for name, fn in [("nnsight trace (save logits)", nnsight), ("TransformerBridge run_with_cache (all hooks)", bridge),
                     ("pyvene interchange (source + base forward)", pyvene)]:
        t = median_time(fn, repeat * 3)
        record("libraries", name, f"{t * 1000:.0f} ms = {t / base:.2f}x forward")


def logit_lens_costs(model, repeat: int) -> None:
    for n_tokens in (8, 32, 128):
        ids = torch.randint(100, 40000, (1, n_tokens), generator=torch.Generator().manual_seed(0))

        def forward():
            with torch.no_grad():
                model.hf(ids)

        def lens_all():
            with torch.no_grad():
                lens.lens_grid(model, ids)

        def lens_last():
            with torch.no_grad():
                lens.lens_grid(model, ids, positions=[n_tokens - 1])

        f, a, last = (median_time(fn, repeat) for fn in (forward, lens_all, lens_last))
        record("logit lens", f"{n_tokens} tokens: all layers x all positions", f"{a:.2f} s = {a / f:.1f}x forward")
        record("logit lens", f"{n_tokens} tokens: all layers, last position only", f"{last:.2f} s = {last / f:.1f}x forward")


def patching_costs(model, repeat: int) -> None:
    clean, corrupted = patching.prompt_pair(model, "The capital of France is the city of",
                                            "The capital of Italy is the city of")
    correct, wrong = patching.answer_ids(model, " Paris", " Rome")
    positions = list(range(clean.shape[1]))
    args = (model, clean, corrupted, correct, wrong)
    for n_layers in (5, 10, 30):
        layers = list(range(0, model.n_layers, max(1, model.n_layers // n_layers)))[:n_layers]
        cells = len(layers) * len(positions)
        batched = median_time(lambda: patching.patch_residual_batched(*args, layers, positions), repeat)
        record("patching", f"batched sweep, {len(layers)} layers x {len(positions)} positions ({cells} cells)",
               f"{batched:.2f} s")
        if n_layers == 10:
            loop = median_time(lambda: patching.patch_residual_loop(*args, layers, positions), 1)
            record("patching", f"one forward per cell, same {cells} cells", f"{loop:.2f} s = {loop / batched:.1f}x batched")


def notebook_costs() -> None:
    import nbformat
    from nbclient import NotebookClient

    from mi_course.grading.autograde import autograde

    total = 0.0
    for lesson in lesson_names(ROOT):
        notebook = ROOT / "solutions" / lesson / f"{lesson}.ipynb"
        nb = nbformat.read(notebook, as_version=4)
        start = time.perf_counter()
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(notebook.parent)}}).execute()
        run = time.perf_counter() - start
        total += run
        with tempfile.TemporaryDirectory() as submissions:
            (Path(submissions) / "student").mkdir()
            shutil.copy(notebook, Path(submissions) / "student" / notebook.name)
            start = time.perf_counter()
            autograde(lesson, Path(submissions))
            graded = time.perf_counter() - start
        record("notebooks", f"{lesson}: execute / autograde one submission",
               f"{run:.0f} s / {graded:.0f} s = {graded / run:.2f}x")
    record("notebooks", "whole course (all solution notebooks, executed)", f"{total / 60:.1f} min")


def write_results() -> None:
    lines = ["# Benchmark results", "", f"Run on {time.strftime('%Y-%m-%d')} with `python benchmarks/run.py`"
             f" (HF_HUB_OFFLINE=1, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}).", "",
             "| section | figure | value |", "|---|---|---|"]
    lines += [f"| {s} | {f} | {v} |" for s, f, v in ROWS]
    (ROOT / "benchmarks" / "results.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {ROOT / 'benchmarks' / 'results.md'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--prepare", action="store_true", help="also time a first-time model preparation")
    parser.add_argument("--skip-notebooks", action="store_true")
    args = parser.parse_args()
    machine()
    model = model_costs(args.repeat, args.prepare)
    library_overhead(model, args.repeat)
    logit_lens_costs(model, args.repeat)
    patching_costs(model, args.repeat)
    if not args.skip_notebooks:
        notebook_costs()
    write_results()


if __name__ == "__main__":
    main()
