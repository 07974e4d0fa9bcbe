"""What the course costs on this machine: prints figures and writes benchmarks/results.md.

Not a test: no thresholds. Each figure is a median over repeated runs; ratios are
measured side by side in the same run.

    python benchmarks/run.py                 # everything (about 15-20 minutes on 2 cores)
    python benchmarks/run.py --skip-notebooks --repeat 5
    python benchmarks/run.py --prepare       # also time a first-time model preparation (~25 s)
    python benchmarks/run.py --only patching # one section (several: --only lens patching); its rows
                                             # replace that section's rows in results.md, the rest stay
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
RESULTS = ROOT / "benchmarks" / "results.md"
SECTIONS = ("model", "libraries", "lens", "patching", "notebooks")  # "machine" is always recorded
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


def side_by_side(fns: dict, repeat: int) -> dict:
    """Median wall time of each of ``fns`` (name -> function): one warm-up run each, then ``repeat``
    rounds that run every function once, so that a slower stretch of the machine hits them all alike."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


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
    """One forward per cell (the loop) vs many patched runs per forward (batched) vs only what each
    patch changes (cached), on the same cells, side by side; then how batched and cached scale with
    the number of cells."""
    def sweep(pair, answers, layers, positions, fns=("loop", "batched", "cached")):
        layers, positions = list(layers), list(positions)
        metric = patching.logit_diff_metric(*patching.answer_ids(model, *answers))
        args = (model, *patching.prompt_pair(model, *pair), metric, layers, positions)
        funcs = {"loop": patching.patch_residual_loop, "batched": patching.patch_residual_batched,
                 "cached": patching.patch_residual_cached}
        t = side_by_side({name: lambda f=funcs[name]: f(*args) for name in fns}, repeat)
        return t, f"{len(layers)} layers x {len(positions)} positions ({len(layers) * len(positions)} cells)"

    capital = ("The capital of France is the city of", "The capital of Italy is the city of"), (" Paris", " Rome")
    for n_layers in (5, 10, 30):  # every position of the 8-token pair
        layers = range(0, model.n_layers, model.n_layers // n_layers)
        if n_layers == 10:
            t, cells = sweep(*capital, layers, range(8))
            record("patching", f"8-token pair, {cells}: loop / batched / cached",
                   f"{t['loop']:.2f} s / {t['batched']:.2f} s / {t['cached']:.2f} s")
            record("patching", "same cells, speed-up over the loop: batched / cached",
                   f"{t['loop'] / t['batched']:.1f}x / {t['loop'] / t['cached']:.1f}x")
        else:
            t, cells = sweep(*capital, layers, range(8), fns=("batched", "cached"))
            record("patching", f"8-token pair, {cells}: batched / cached",
                   f"{t['batched']:.2f} s / {t['cached']:.2f} s = {t['batched'] / t['cached']:.1f}x")

    # lesson 5's pair (14 tokens), positions from the first difference (S2) to the end, as the lesson sweeps them
    ioi = (("When John and Mary went to the store, John gave a drink to",
            "When John and Mary went to the store, Mary gave a drink to"), (" Mary", " John"))
    clean, corrupted = patching.prompt_pair(model, *ioi[0])
    positions = range(patching.first_difference(clean, corrupted), clean.shape[1])
    t, cells = sweep(*ioi, range(0, model.n_layers, 2), positions)
    record("patching", f"lesson 5 pair, {cells}: loop / batched / cached",
           f"{t['loop']:.2f} s / {t['batched']:.2f} s / {t['cached']:.2f} s")
    record("patching", "same cells, speed-up over the loop: batched / cached",
           f"{t['loop'] / t['batched']:.1f}x / {t['loop'] / t['cached']:.1f}x")
    t, cells = sweep(*ioi, range(model.n_layers), positions, fns=("batched", "cached"))
    record("patching", f"lesson 5 full sweep, {cells}: batched / cached",
           f"{t['batched']:.2f} s / {t['cached']:.2f} s = {t['batched'] / t['cached']:.1f}x")


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process and its ended, waited-for descendants (the kernels)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def notebook_costs() -> None:
    """Each solution notebook executed, then autograded as one submission (sandboxed kernel): wall
    time, and CPU time, which a busy machine inflates far less than wall time."""
    import nbformat
    from nbclient import NotebookClient

    from mi_course.grading.autograde import autograde

    total = 0.0
    for lesson in lesson_names(ROOT):
        notebook = ROOT / "solutions" / lesson / f"{lesson}.ipynb"
        nb = nbformat.read(notebook, as_version=4)
        start, cpu = time.perf_counter(), _cpu_seconds()
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(notebook.parent)}}).execute()
        run, run_cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        total += run
        with tempfile.TemporaryDirectory() as submissions:
            (Path(submissions) / "student").mkdir()
            shutil.copy(notebook, Path(submissions) / "student" / notebook.name)
            start, cpu = time.perf_counter(), _cpu_seconds()
            autograde(lesson, Path(submissions))
            graded, graded_cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        record("notebooks", f"{lesson}: execute / autograde one submission (wall)",
               f"{run:.0f} s / {graded:.0f} s = {graded / run:.2f}x")
        record("notebooks", f"{lesson}: execute / autograde one submission (CPU)",
               f"{run_cpu:.0f} s / {graded_cpu:.0f} s = {graded_cpu / run_cpu:.2f}x")
    load = os.getloadavg()[0]
    record("notebooks", "whole course (all solution notebooks, executed)", f"{total / 60:.1f} min")
    record("notebooks", "load average (1 min) at the end of this section", f"{load:.1f}")


def write_results(only: list[str] | None) -> None:
    """Write the table to results.md; with ``only``, replace just those sections' rows (and the machine's)."""
    date, command = time.strftime("%Y-%m-%d"), " ".join(["python benchmarks/run.py", *sys.argv[1:]])
    rows, header = ROWS, (f"Run on {date} with `{command}` (HF_HUB_OFFLINE=1, "
                          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}).")
    if only:  # the other sections' rows stay as the last run wrote them, in their order
        text = RESULTS.read_text().splitlines()
        old = [tuple(cell.strip() for cell in line.split("|")[1:4]) for line in text[6:] if line.startswith("| ")]
        fresh = {r[0] for r in ROWS}
        rows = [r for s in dict.fromkeys(r[0] for r in old + ROWS) for r in (ROWS if s in fresh else old) if r[0] == s]
        base, *notes = text[2].split(" Rows of ")  # keep the notes of sections not re-measured now
        notes = [n for n in notes if not set(n.split(" re-measured")[0].split(", ")) & set(only)]
        header = " Rows of ".join([base, *notes, f"{', '.join(only)} re-measured on {date} with `{command}`."])
    lines = ["# Benchmark results", "", header, "", "| section | figure | value |", "|---|---|---|"]
    lines += [f"| {s} | {f} | {v} |" for s, f, v in rows]
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--prepare", action="store_true", help="also time a first-time model preparation")
    parser.add_argument("--skip-notebooks", action="store_true")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    args = parser.parse_args()
    run = set(args.only or SECTIONS) - ({"notebooks"} if args.skip_notebooks else set())
    machine()
    model = model_costs(args.repeat, args.prepare) if "model" in run else models.load_model()
    if "libraries" in run:
        library_overhead(model, args.repeat)
    if "lens" in run:
        logit_lens_costs(model, args.repeat)
    if "patching" in run:
        patching_costs(model, args.repeat)
    if "notebooks" in run:
        notebook_costs()
    write_results(args.only)


if __name__ == "__main__":
    main()
