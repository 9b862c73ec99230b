"""The ``bibad`` command: run the stage notebooks of a profile with papermill, then build the book.

    bibad run --profile demo [--only 02_finetuning ...] [--from 03] [--set sampling.n_target=100 ...]
    bibad book --profile demo [--no-strict] [--output DIR]
    bibad compute --profile demo [--cells badnets1:0.1 ...]   (train and generate outside the notebooks)
    bibad readme --profile demo      (a finished run's summary into README.md and results/demo/)
    bibad stages

``run`` validates the profile first, then executes ``notebooks/NN_*.ipynb`` in order into
``<run_dir>/executed/`` and stops at the first failing notebook (:mod:`bibad_utils.publish.runner`).
``book`` stages a copy of the book's sources (``_config.yml``, ``_toc.yml``, ``book/``,
``references.bib``) with the executed notebooks in place of the sources listed in ``_toc.yml`` under
``notebooks/``, and runs ``jupyter-book build`` on it with warnings as errors
(:mod:`bibad_utils.publish.book`).

Errors reach the terminal as one line ``error: ...`` with what to do, never a traceback (``--debug``,
before or after the command, shows it). Exit codes: 0 done; 1 a notebook, stage or build failed, a file
is damaged, or the system refused (permission denied, disk full); 2 bad input or state (a parameter that
is not allowed, the run directory locked by another command); 130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from bibad_utils.base import REPO_ROOT
from bibad_utils.config import ConfigError, overrides_from_assignments
from bibad_utils.progress import ENV_THREADS, busy_warning
from bibad_utils.publish.book import build_book
from bibad_utils.publish.notebooks import NOTEBOOKS_DIR, STAGE_TITLES, find_stages, notebook_title
from bibad_utils.publish.runner import run_notebooks
from bibad_utils.publish.runstate import READ_ONLY, run_lock
from bibad_utils.typed_config import load_config

EPILOG = ("exit codes: 0 done; 1 a notebook, stage or build failed, a damaged file, or the system refused "
          "(permission denied, disk full); 2 bad input or state (a parameter not allowed; the run directory "
          "in use by another bibad command); 130 Ctrl-C; 143 SIGTERM. Errors print one line; --debug (before "
          "or after the command) shows the traceback instead.")
DEBUG_HELP = "on an error, show the Python traceback instead of one line"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bibad", description=__doc__.split("\n\n")[0], epilog=EPILOG)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    def add_command(name, **kw):
        """A subcommand that also takes --debug after its name (SUPPRESS: an absent one keeps the global)."""
        p = sub.add_parser(name, epilog=EPILOG, **kw)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        return p

    def common(p):
        p.add_argument("--profile", default="demo", help="a profile name in notebooks/profiles or a YAML path")
        p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY.SUB=VALUE",
                       help="override one parameter (value read as YAML); repeatable")
        p.add_argument("--notebooks-dir", default=str(NOTEBOOKS_DIR), help=argparse.SUPPRESS)

    run = add_command("run", help="execute the stage notebooks of a profile with papermill")
    common(run)
    run.add_argument("--only", nargs="+", metavar="STAGE", help="run only these stages (e.g. 02 or finetuning)")
    run.add_argument("--from", dest="start", metavar="STAGE", help="run this stage and every later one")
    run.add_argument("--log-output", action="store_true", help="stream the notebooks' outputs while they run")
    run.add_argument("--force", action="store_true",
                     help="execute every selected notebook, even those whose executed copy is up to date")
    run.add_argument("--retrain-base", action="store_true",
                     help="pre-train the clean base DM here instead of using the one shipped with the package "
                          "(same as --set pretrain.shipped=false)")
    run.add_argument("--threads", default=None, metavar="N|auto",
                     help="torch threads of the kernels (default: every core, or OMP_NUM_THREADS when set, the same "
                          "count on every run so that the numbers are too; auto: the idle cores, faster on a busy "
                          "machine, but a CPU training's last digits then follow the load)")
    run.add_argument("--progress-interval", type=float, default=30.0, metavar="S",
                     help="without a terminal, print a progress line every S seconds (default 30)")

    book = add_command("book", help="build the HTML book from a profile's executed notebooks")
    common(book)
    book.add_argument("--strict", action=argparse.BooleanOptionalAction, default=True,
                      help="fail on Sphinx warnings and on missing or failed notebooks (default: on)")
    book.add_argument("--output", default=str(REPO_ROOT), help="the HTML goes to OUTPUT/_build/html")
    book.add_argument("--repository-url", default=None, help="the repository the book links to")
    book.add_argument("--no-vendor", dest="vendor", action="store_false",
                      help="do not fetch the offline MathJax/widget scripts when _vendor/ is missing")

    comp = add_command("compute", help="train and generate a profile's cells outside the notebooks "
                       "(e.g. under accelerate launch); the notebooks reuse the cached artifacts")
    common(comp)
    comp.add_argument("--cells", nargs="+", metavar="CELL",
                      help="clean | KIND:P | KIND:P:duplicate (default: every cell of the profile)")
    comp.add_argument("--no-generate", dest="generate", action="store_false", help="train only")

    readme = add_command("readme", help="copy a finished run's teaser and claims table to results/PROFILE/ "
                         "and update the README's results summary")
    common(readme)
    readme.add_argument("--snapshot", action="store_true",
                        help="re-render from the committed results/PROFILE/ alone (the run directory is not here)")

    stages = add_command("stages", help="list the stage notebooks")
    stages.add_argument("--notebooks-dir", default=str(NOTEBOOKS_DIR), help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    """Run one ``bibad`` command; returns its exit code (every expected error as one line on stderr,
    :func:`error_line`; ``--debug`` re-raises it instead)."""
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (Exception, KeyboardInterrupt) as err:
        if args.debug:
            raise
        code, line = error_line(err)
        print(f"error: {line}", file=sys.stderr)
        return code


def error_line(err: BaseException) -> tuple[int, str]:
    """The exit code and one-line message (with the remedy) of an error that ended a command."""
    from bibad_utils.files import DamagedFileError
    from bibad_utils.publish.runstate import RunLocked, Terminated

    store = sys.modules.get("bibad_utils.store")  # its errors can only come from it once it is imported
    if isinstance(err, (ConfigError, RunLocked)):
        return 2, str(err)
    if isinstance(err, Terminated):
        return 143, ("stopped by SIGTERM; a run records where in <run_dir>/executed/run.json, and `bibad run` "
                     "goes on from there")
    if isinstance(err, KeyboardInterrupt):
        return 130, ("interrupted (Ctrl-C); a run records where in <run_dir>/executed/run.json, and `bibad run` "
                     "goes on from there")
    if isinstance(err, DamagedFileError) or (store and isinstance(err, store.DamagedArtifactError)):
        return 1, str(err)
    if isinstance(err, OSError):
        return 1, _os_error_line(err)
    return 1, (f"{type(err).__name__}: {err} (unexpected: run the command again with --debug for the "
               f"traceback, and report it)")


def _os_error_line(err: OSError) -> str:
    """A refused read or write, with what to do about it."""
    what = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{what}: free some disk space (or write the run elsewhere with --set run_dir=PATH) and run again"
    if err.errno in READ_ONLY:
        return (f"{what}: it is not writable by you; make it writable, run as its owner, or write the run "
                f"elsewhere with --set run_dir=PATH")
    return f"{what}: check the path and run again"


def _dispatch(args) -> int:
    """Run the command ``args`` names; returns its exit code (errors propagate to :func:`main`)."""
    if args.command == "stages":
        stages = find_stages(args.notebooks_dir)
        present = {s.stem for s in stages}
        for stem in sorted(present | set(STAGE_TITLES)):
            title = notebook_title(Path(args.notebooks_dir) / f"{stem}.ipynb") if stem in present else None
            state = "" if stem in present else "  (not built yet)"
            print(f"{stem:<18} {title or STAGE_TITLES.get(stem, '')}{state}")
        return 0
    overrides = overrides_from_assignments(args.assignments)
    if args.command == "compute":
        from bibad_utils.parallel import compute
        from bibad_utils.stages import Cell, Study
        study = Study(args.profile, overrides)
        cells = [Cell.parse(c) for c in args.cells] if args.cells else None
        for line in compute(study, cells, args.generate):
            print(line)
        return 0
    if args.command == "readme":
        from bibad_utils.publish.readme import readme_from_snapshot, readme_results  # the analyses: slow to import
        cfg = load_config(args.profile, overrides)
        dest = (readme_from_snapshot(cfg.name, REPO_ROOT) if args.snapshot
                else readme_results(cfg.run_dir, cfg.name, REPO_ROOT))
        print(f"wrote {dest} and README.md")
        return 0
    if args.command == "run":
        if args.retrain_base:
            overrides.setdefault("pretrain", {})["shipped"] = False
        if args.threads is not None:
            if args.threads != "auto" and not (args.threads.isdigit() and int(args.threads) > 0):
                raise ConfigError("--threads", args.threads, "a positive integer or auto")
            os.environ[ENV_THREADS] = args.threads
        note = busy_warning()
        if note:
            print(note, file=sys.stderr)
        return run_notebooks(args.profile, overrides, args.notebooks_dir, args.only, args.start,
                             args.log_output, force=args.force, progress_interval=args.progress_interval)
    cfg = load_config(args.profile, overrides)
    with run_lock(cfg.run_dir, shared=True):  # never while a run writes the notebooks it reads
        return build_book(args.profile, overrides, args.output, args.strict, args.notebooks_dir, args.vendor,
                          args.repository_url)


if __name__ == "__main__":
    sys.exit(main())
