"""The trainer's commands of the `gradwatch` CLI: train, presets, lesson, inspect, diagnose,
import-tensorboard.

`gradwatch.cli` composes these with the dashboard's commands. Bad input of any kind ends with one line
on stderr and exit code 2, before anything is created. Exit codes: 0 done, 1 a run failed (NaN/Inf
halt) or an internal error, 2 bad input, 130 stopped (Ctrl-C or SIGTERM; the run is marked stopped).
`train` prints the run folder as its last line. Torch is imported only by the commands that train.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

from .options import OPTIONS, OPTIONS_BY_NAME, OptionsError
from .presets import PRESETS, resolve

PROG = "gradwatch"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad command-line input; the message is printed as one line."""


class CommandParser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 2) instead of printing usage and exiting."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: error: {message}")


# ---- parsers -------------------------------------------------------------------------------------
def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    """Every training option as --name-with-dashes VALUE (underscores accepted too)."""
    group = parser.add_argument_group("training options (each overrides the preset)")
    for option in OPTIONS:
        flags = [f"--{option.name.replace('_', '-')}"]
        if "_" in option.name:
            flags.append(f"--{option.name}")
        extra = {"nargs": "?", "const": "true"} if option.kind is bool else {}
        default = "none" if option.default is None else option.default
        # The valid values in the help (argparse's own choices= would refuse "none" and the
        # underscore spellings that Option.parse accepts, with a less helpful message).
        metavar = "{" + ",".join(map(str, option.choices)) + "}" if option.choices else "VALUE"
        group.add_argument(*flags, dest=f"opt_{option.name}", default=argparse.SUPPRESS, metavar=metavar,
                           help=f"{option.help} (default {default})", **extra)


def add_commands(commands) -> None:
    """Add the trainer's subcommands to an argparse subparsers object (see gradwatch.cli)."""
    train = commands.add_parser("train", help="train one run (a preset and/or options)", allow_abbrev=False)
    train.add_argument("--preset", help="start from a preset (see `presets`)")
    train.add_argument("--logdir", default="logs", help="folder for run folders (default logs)")
    train.add_argument("--name", help="run name (default: the preset's name, else 'run')")
    train.add_argument("--job-id", "--job_id", dest="job_id", help=argparse.SUPPRESS)
    train.add_argument("--quiet", action="store_true", help="print only the run folder")
    _add_option_flags(train)

    commands.add_parser("presets", help="list the presets", allow_abbrev=False)

    lesson = commands.add_parser("lesson", help="run the lesson suite and print the comparison table",
                                 allow_abbrev=False)
    lesson.add_argument("--data", help="path to Tweets.csv (default data/Tweets.csv if present, else built-in)")
    lesson.add_argument("--logdir", default="logs", help="folder for run folders (default logs)")
    lesson.add_argument("--epochs", help="epochs for every preset (default: each preset's own)")
    lesson.add_argument("--limit", help="use a stratified subset of N tweets (quick runs)")
    lesson.add_argument("--threads", help="CPU threads for PyTorch (default: PyTorch's own)")
    lesson.add_argument("--seed", help="random seed for every run (default 0)")
    lesson.add_argument("--only", help="comma-separated presets to run (default: the whole suite)")
    lesson.add_argument("--markdown", help="also write the table and claims as Markdown to this file")
    lesson.add_argument("--quiet", action="store_true", help="no per-epoch progress")

    for name, what in (("inspect", "summarise a run folder"), ("diagnose", "diagnose a run folder")):
        sub = commands.add_parser(name, help=what, allow_abbrev=False)
        sub.add_argument("run_dir", metavar="RUN_DIR")
        sub.add_argument("--cache", default=None, metavar="DIR",
                         help="where a remote run (LOGDIR_URL/RUN_ID) is imported (default: $GRADWATCH_CACHE or a "
                              "per-user cache folder)")
        sub.add_argument("--json", action="store_true", help="print JSON")

    ls = commands.add_parser("ls", help="list the runs of a logdir (local, or a URL: file://, s3://, ...)",
                             allow_abbrev=False)
    ls.add_argument("logdir", metavar="LOGDIR")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.add_argument("--cache", default=None, metavar="DIR", help="where a remote logdir is imported")
    sync = commands.add_parser("sync", allow_abbrev=False,
                               help="copy runs between logdirs (upload an offline run; fetch a teammate's)")
    sync.add_argument("src", metavar="SRC", help="logdir to copy from (a path or a URL)")
    sync.add_argument("dst", metavar="DST", help="logdir to copy to (a path or a URL); runs it holds are skipped")
    sync.add_argument("--cache", default=None, metavar="DIR", help="where a remote SRC is imported first")
    tb = commands.add_parser("import-tensorboard", allow_abbrev=False,
                             help="turn TensorBoard event files (scalars, histograms) into run folders")
    tb.add_argument("tb_logdir", metavar="TB_LOGDIR", help="a TensorBoard logdir (each folder of event files is a run)")
    tb.add_argument("--logdir", default="logs", help="folder for the new run folders (default logs)")


def unknown_flags_message(unknown: list[str]) -> str:
    flags = [u for u in unknown if u.startswith("-")]
    if not flags:
        return f"unexpected argument {unknown[0]!r} (options are given as --name VALUE)"
    flag = flags[0].split("=", 1)[0]
    name = flag.lstrip("-").replace("-", "_")
    valid = ["preset", "logdir", "name", "quiet", *OPTIONS_BY_NAME]
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean --{close[0].replace('_', '-')}?)" if close else ""
    return (f"unknown option {flag}{hint}; valid options: "
            + ", ".join(f"--{v.replace('_', '-')}" for v in valid))


def _option_overrides(args: argparse.Namespace) -> dict:
    return {key[4:]: value for key, value in vars(args).items() if key.startswith("opt_")}


# ---- commands ------------------------------------------------------------------------------------
def cmd_presets(args) -> int:
    width = max(map(len, PRESETS))
    for preset in PRESETS.values():
        print(f"{preset.name.ljust(width)}  [{preset.group}] {preset.summary}")
    return EXIT_OK


def _check_logdir(logdir: str) -> None:
    path = Path(logdir)
    if path.exists() and not path.is_dir():
        raise UsageError(f"invalid --logdir {logdir!r}: it exists and is not a directory")


def _check_data_path(options: dict) -> None:
    """A missing Tweets.csv fails here, before torch is imported (the data package checks the rest)."""
    path = options.get("data")
    if options["dataset"] == "tweets" and path is not None and not Path(path).is_file():
        raise UsageError(f"invalid --data {path!r}: no such file (give the path of a Tweets.csv file, or leave "
                         "--data out to use data/Tweets.csv or the built-in dataset)")


def _check_run_name(name: str | None) -> None:
    if name is None:
        return
    from .runlog import schema

    if not schema.RUN_NAME_PATTERN.match(name):
        raise UsageError(f"invalid --name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
                         "letter or digit (no spaces or path separators)")


def _result_line(outcome) -> str:
    r = outcome.results
    if outcome.status != "finished" or not r:
        return f"{outcome.status}: {outcome.error or ''}".rstrip(": ")
    parts = [f"{r['epochs_run']} epochs ({r['stop_reason']})",
             f"best val loss {r['best_val_loss']:.4f} at epoch {r['best_epoch']}",
             f"final val loss {r['val_loss']:.4f}" + (" (best weights restored)" if r.get("restored_best") else ""),
             f"test accuracy {r['test_accuracy']:.4f}", f"macro-F1 {r['test_macro_f1']:.4f}"]
    return "finished: " + ", ".join(parts)


def cmd_train(args) -> int:
    options = resolve(args.preset, _option_overrides(args))
    _check_logdir(args.logdir)
    _check_run_name(args.name)
    _check_data_path(options)
    from .train import prepare, train_setup
    from .train.interrupt import sigterm_as_keyboard_interrupt

    with sigterm_as_keyboard_interrupt():
        try:
            setup = prepare(options)
        except KeyboardInterrupt:
            print(f"{PROG} train: interrupted before the run started (nothing created)", file=sys.stderr)
            return EXIT_STOPPED
        if not args.quiet:
            print(f"data: {setup.data.descriptor.summary()}", file=sys.stderr)
        outcome = train_setup(setup, preset=args.preset, logdir=args.logdir, name=args.name, job_id=args.job_id,
                              quiet=args.quiet)
    if outcome.status != "finished":
        print(f"{PROG} train: run {outcome.status}: {outcome.error}", file=sys.stderr)
    elif not args.quiet:
        print(_result_line(outcome))
    print(outcome.run_path)
    return {"finished": EXIT_OK, "stopped": EXIT_STOPPED}.get(outcome.status, EXIT_FAILED)


def _lesson_overrides(args, preset: str) -> dict:
    overrides = {}
    dataset = PRESETS[preset].overrides.get("dataset", "tweets")
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.threads is not None:
        overrides["threads"] = args.threads
    if args.seed is not None:
        overrides["seed"] = args.seed
    if dataset == "tweets":
        if args.data is not None:
            overrides["data"] = args.data
        if args.limit is not None:
            overrides["limit"] = args.limit
    return overrides


def cmd_lesson(args) -> int:
    from .train import lesson

    names = lesson.suite_presets([n.strip() for n in args.only.split(",") if n.strip()] if args.only else None)
    planned = {name: resolve(name, _lesson_overrides(args, name)) for name in names}  # validate all first
    if args.limit is not None:
        OPTIONS_BY_NAME["limit"].parse(args.limit)
    _check_logdir(args.logdir)
    for options in planned.values():
        _check_data_path(options)
    from .train import prepare, train_setup
    from .train.interrupt import sigterm_as_keyboard_interrupt

    runs, cache = {}, {}
    with sigterm_as_keyboard_interrupt():
        for name, options in planned.items():
            key = _data_key(options)
            try:
                setup = prepare(options, cache.get(key))
            except KeyboardInterrupt:
                print(f"{PROG} lesson: interrupted", file=sys.stderr)
                return EXIT_STOPPED
            cache = {key: setup.data}  # consecutive presets mostly share their data
            print(f"== {name}: {PRESETS[name].summary}", file=sys.stderr, flush=True)
            outcome = train_setup(setup, preset=name, logdir=args.logdir, name=name, quiet=args.quiet)
            print(f"   {outcome.status}: {outcome.run_path}" + (f" ({outcome.error})" if outcome.error else ""),
                  file=sys.stderr, flush=True)
            if outcome.status == "stopped":
                print(f"{PROG} lesson: interrupted; runs so far are in {args.logdir}", file=sys.stderr)
                return EXIT_STOPPED
            runs[name] = lesson.summarize(outcome.run_path, name)
    claims = lesson.check_claims(runs)
    print(lesson.format_table(runs))
    print()
    print("The lesson's claims (about the presets at full length; shortened runs leave the regularisation "
          "claims unchecked):")
    print(lesson.format_claims(claims))
    if args.markdown:
        Path(args.markdown).write_text(
            "## Runs\n\n" + lesson.markdown_table(runs) + "\n\n## Claims\n\n" + lesson.markdown_claims(claims) + "\n",
            encoding="utf-8")
    return EXIT_OK


def _data_key(options: dict) -> tuple:
    names = ("dataset", "data", "seed", "min_freq", "max_vocab", "max_len", "stopwords", "representation",
             "augment_rate", "augment_copies", "limit")
    return tuple(options[n] for n in names)


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, default=str))


def check_run_dir(run_dir: str, cache: str | None = None) -> str:
    """RUN_DIR as a local run folder: itself, or a remote LOGDIR_URL/RUN_ID imported into the cache."""
    from .runlog import remote, schema, stores

    # A folder holding run.sqlite is read where it is (a finished run copied anywhere); a URL, or a run
    # published as segments to a network filesystem, is imported first.
    if not (Path(run_dir) / schema.DB_FILENAME).is_file() and stores.classify(run_dir).remote:
        return str(remote.local_run_dir(run_dir, cache))
    if not Path(run_dir).is_dir():
        raise UsageError(f"invalid RUN_DIR {run_dir!r}: not a directory (give a run folder under logs/, "
                         "or LOGDIR_URL/RUN_ID)")
    return run_dir


def cmd_inspect(args) -> int:
    run_dir = check_run_dir(args.run_dir, args.cache)
    from .inspect_run import format_summary, summarize_run

    summary = summarize_run(run_dir)
    _print_json(summary) if args.json else print(format_summary(summary))
    return EXIT_OK


def cmd_diagnose(args) -> int:
    run_dir = check_run_dir(args.run_dir, args.cache)
    from .diagnose import diagnose_run, format_report

    result = diagnose_run(run_dir)
    _print_json(result) if args.json else print(format_report(result))
    return EXIT_OK


def cmd_import_tensorboard(args) -> int:
    from .tb_import import import_tensorboard

    for path in import_tensorboard(args.tb_logdir, args.logdir):
        print(path)
    return EXIT_OK


def cmd_ls(args) -> int:
    from .runlog import remote

    rows = remote.run_rows(args.logdir, args.cache)
    _print_json(rows) if args.json else print(remote.format_rows(rows))
    return EXIT_OK


def cmd_sync(args) -> int:
    from .runlog import remote

    for run_id in remote.sync(args.src, args.dst, args.cache):
        print(run_id)
    return EXIT_OK


COMMANDS = {"train": cmd_train, "presets": cmd_presets, "lesson": cmd_lesson, "inspect": cmd_inspect,
            "diagnose": cmd_diagnose, "import-tensorboard": cmd_import_tensorboard, "ls": cmd_ls, "sync": cmd_sync}


def bad_input_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input (exit 2). Imported lazily: some modules need torch."""
    errors: list[type[BaseException]] = [UsageError, OptionsError]
    from gradwatch.data import DatasetError

    from .runlog.reader import RunLogError
    from .tb_import import TensorBoardImportError

    errors += [DatasetError, RunLogError, TensorBoardImportError]
    if "torch" in sys.modules:
        from .models import ModelError
        from .run import RunSetupError

        errors += [ModelError, RunSetupError]
    return tuple(errors)
