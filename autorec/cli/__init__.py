"""The ``autorec`` command line.

::

    autorec datasets list | download NAME [--dir DIR] | info NAME
    autorec train --model NAME (--dataset NAME | --ratings FILE) --out DIR [--set key=value ...]
                  [--protocol none] [--checkpoint FILE [--resume]] [--overwrite]
    autorec tune --model NAME (--dataset NAME | --ratings FILE) --out DIR --space KEY=VALUES ...
    autorec evaluate RUN/model.pt [--json]
    autorec recommend RUN/model.pt --k 10 --out recs.parquet [--users FILE] [--history FILE]
    autorec demo [--quick]

The paper-table benchmarks are not part of the library: ``python benchmarks/paper_tables.py``
in a checkout of the repository.

Exit status: 0 success, 1 runtime failure, 2 usage error. Errors are one line on stderr
(``autorec <command>: error: ...``); ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import sys
import warnings

from .options import UsageError, device_name, non_negative_int, positive_int

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def main(argv=None) -> int:
    """Run the command line; returns the exit status (the console script exits with it).

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``sys.argv[1:]`` by default.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:  # answered before the parser (and pandas, for its choices) loads
        from .._version import __version__

        print(f"autorec {__version__}")
        return 0
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.argv = argv
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return int(exc.code or 0)
    prog = f"autorec {args.command}"
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        try:
            return int(args.func(args) or 0)
        except UsageError as exc:
            if args.debug:
                raise
            print(f"{prog}: error: {_one_line(exc)} (see '{prog} --help')", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # every runtime failure: one line, no traceback
            if args.debug:
                raise
            known = isinstance(exc, (ValueError, OSError, RuntimeError, ImportError, TypeError,
                                     ArithmeticError))
            text = _one_line(exc) if known else f"{type(exc).__name__}: {_one_line(exc)}"
            print(f"{prog}: error: {text}" + ("" if known else " (--debug shows the traceback)"),
                  file=sys.stderr)
            return 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from .._version import __version__
    from ..datasets.movielens import DATASETS
    from ..models import MODEL_NAMES as MODELS
    from ..protocols import PROTOCOLS
    from . import commands, demo

    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks instead of one-line errors")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars or notes on stderr")
    device = _Parser(add_help=False)
    device.add_argument("--device", metavar="DEVICE", type=device_name,
                        help="auto, cpu, cuda or cuda:N for the models that take a device "
                             "(default: the model's own, 'auto' for torch models)")

    parser = _Parser(prog="autorec", description="AutoRec and autoencoder recommenders, "
                     "MovieLens benchmarks, batched top-k export.")
    # own actions, not common's: a default set here would be shared with every subcommand
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes on stderr")
    parser.add_argument("--version", action="version", version=f"autorec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    def add(name, help_, func, parents=(), **kw):
        p = sub.add_parser(name, help=help_, description=help_, parents=[common, *parents], **kw)
        p.set_defaults(func=func)
        return p

    # datasets
    ds = add("datasets", "list, download or describe the MovieLens datasets", commands.cmd_datasets)
    ds_sub = ds.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    p = ds_sub.add_parser("list", help="the registered datasets and whether they are here", parents=[common])
    p.add_argument("--dir", help="also look in this folder")
    p = ds_sub.add_parser("download", help="download and verify an archive", parents=[common])
    p.add_argument("name", choices=list(DATASETS), metavar="NAME", help=", ".join(DATASETS))
    p.add_argument("--dir", help="store it here (default: the user cache)")
    p.add_argument("--force", action="store_true", help="download even when already present")
    p = ds_sub.add_parser("info", help="registry facts, location and citation", parents=[common])
    p.add_argument("name", choices=list(DATASETS), metavar="NAME", help=", ".join(DATASETS))
    p.add_argument("--json", action="store_true", help="print JSON")

    # train
    p = add("train", "train a model under an evaluation protocol and save it", commands.cmd_train,
            parents=[device])
    p.add_argument("--model", required=True, choices=list(MODELS), metavar="NAME", help=", ".join(MODELS))
    _data_options(p, DATASETS, required=True)
    _protocol_options(p, PROTOCOLS)
    _set_option(p)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for model.pt, config.json, history.csv, metrics.json; written "
                        "whole when training ends (refused if it holds files, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an --out folder that holds files")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="torch models: write a checkpoint to FILE after every epoch (outside --out)")
    p.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint FILE when it exists (bit-exact on CPU)")

    # tune
    p = add("tune", "search hyperparameters on the validation part (never test), re-fit the best",
            commands.cmd_tune, parents=[device],
            epilog="Spaces: --space 'l2=[100,300,1000]' (values), --space lr=1e-4..1e-2:log, "
                   "--space hidden=100..600 (ranges: need Optuna). The folder gets trials.jsonl "
                   "(run the same command again to resume), trials.csv, best.json and the best "
                   "model (model.pt, config.json: 'autorec evaluate DIR/model.pt' scores it on test).")
    p.add_argument("--model", required=True, choices=list(MODELS), metavar="NAME", help=", ".join(MODELS))
    _data_options(p, DATASETS, required=True)
    _protocol_options(p, PROTOCOLS)
    p.add_argument("--space", action="append", required=True, metavar="KEY=VALUES",
                   help="searched parameter, repeatable: KEY=[v1,v2] or KEY=LOW..HIGH[:log]")
    _set_option(p)
    p.add_argument("--trials", type=positive_int, metavar="N",
                   help="trials in all (default: the whole grid; needed for ranges)")
    p.add_argument("--metric", default="auto",
                   help="validation metric: auto (rmse for rating models, else ndcg@100), rmse, "
                        "mae, ndcg@K, recall@K, ...")
    p.add_argument("--sampler", default="auto", choices=("auto", "grid", "tpe", "random"),
                   help="auto: the grid for value lists, Optuna's TPE for ranges")
    p.add_argument("--timeout", type=float, metavar="S", help="start no new trial after S seconds")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the search and the best model")
    p.add_argument("--overwrite", action="store_true", help="start over in an --out that holds files")

    # evaluate
    p = add("evaluate", "test metrics of a trained model (Markdown table or JSON)", commands.cmd_evaluate,
            parents=[device])
    p.add_argument("model_file", metavar="MODEL_FILE", help="a model.pt written by 'autorec train'")
    _data_options(p, DATASETS, required=False,
                  note="default: the data and split in config.json next to MODEL_FILE")
    _protocol_options(p, PROTOCOLS)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    # recommend
    p = add("recommend", "write the top-k items of every user to CSV, Parquet or JSON lines",
            commands.cmd_recommend, parents=[device],
            epilog="Every item a user rated is excluded: by default the whole data set of the "
                   "training run is rebuilt from config.json (all its ratings, not only the "
                   "training part, whatever their value), or the --history file is read; "
                   "--include-seen turns this off.")
    p.add_argument("model_file", metavar="MODEL_FILE", help="a model.pt written by 'autorec train'")
    p.add_argument("--k", type=positive_int, default=10, help="items per user (default 10)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="output file: .csv, .csv.gz, .parquet, .jsonl (or --format)")
    p.add_argument("--format", choices=("csv", "parquet", "jsonl"), help="override the extension")
    p.add_argument("--users", metavar="FILE", help="raw user ids to export, one per line")
    p.add_argument("--history", metavar="FILE",
                   help="ratings CSV of the users' histories (new users are folded in); default: "
                        "all the data of the training run, rebuilt from config.json")
    _csv_options(p)
    p.add_argument("--num-shards", type=positive_int, default=1, metavar="N",
                   help="split the users into N contiguous parts ...")
    p.add_argument("--shard", type=non_negative_int, default=0, metavar="I",
                   help="... and write part I, to FILE with -part-0000I-of-0000N before the extension")
    p.add_argument("--batch-size", type=positive_int, metavar="N", help="users scored at once")
    p.add_argument("--titles", action="store_true", help="add a title column (MovieLens)")
    p.add_argument("--include-seen", action="store_true",
                   help="do not exclude the items the users rated")
    p.add_argument("--no-download", action="store_true", help="never download a dataset")

    # demo
    p = add("demo", "train and evaluate seven models on MovieLens 100K (synthetic fallback)",
            demo.cmd_demo)
    p.add_argument("--dataset", default="ml-100k", choices=list(DATASETS), metavar="NAME",
                   help="MovieLens dataset (default ml-100k)")
    p.add_argument("--data-dir", metavar="DIR", help="folder with the archive (else $AUTOREC_DATA, cache)")
    p.add_argument("--quick", action="store_true", help="smaller settings: about a minute")
    p.add_argument("--no-download", action="store_true", help="never download; synthetic data if absent")
    p.add_argument("--synthetic", action="store_true", help="use the built-in synthetic data")
    p.add_argument("--seed", type=int, default=0, help="split and model seed (default 0)")
    return parser


def _data_options(p, datasets, required: bool, note: str | None = None) -> None:
    group = p.add_argument_group("data", note)
    source = group.add_mutually_exclusive_group(required=required)
    source.add_argument("--dataset", choices=list(datasets), metavar="NAME", help=", ".join(datasets))
    source.add_argument("--ratings", metavar="FILE", help="ratings CSV, one rating per line")
    group.add_argument("--data-dir", metavar="DIR", help="folder with the MovieLens archive")
    group.add_argument("--no-download", action="store_true", help="never download a dataset")
    _csv_options(group)


def _csv_options(p) -> None:
    p.add_argument("--sep", default=",", help="field separator of CSV input (',' 'tab' '::'; default ',')")
    p.add_argument("--user", default="user", metavar="COL", help="user id column (default 'user')")
    p.add_argument("--item", default="item", metavar="COL", help="item id column (default 'item')")
    p.add_argument("--rating", default="rating", metavar="COL",
                   help="rating column (default 'rating'; 'none': implicit feedback)")
    p.add_argument("--timestamp", metavar="COL", help="timestamp column (optional)")
    p.add_argument("--no-header", action="store_true",
                   help="the file has no header; columns are user, item, rating[, timestamp]")


def _set_option(p) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="model parameter (JSON value, of the default's type), repeatable: "
                        "--set hidden=300 --set lr=1e-3")


def _protocol_options(p, protocols) -> None:
    group = p.add_argument_group("evaluation protocol")
    group.add_argument("--protocol", choices=[*protocols, "none"],
                       help="default: autorec for rating models, per-user for ranking models; "
                            "none: train on all the data (no test part), for production top-k")
    group.add_argument("--seed", type=int, default=0, help="split seed, and model seed (default 0)")
    group.add_argument("--threshold", type=float, metavar="T",
                       help="ranking protocols keep ratings > T (default 3.5 on star ratings)")
    group.add_argument("--split", action="append", default=[], metavar="KEY=VALUE",
                       help="other protocol parameters, e.g. --split test_size=0.2")


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    return " ".join(text.split())


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"autorec: warning: {_one_line(Warning(message))}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
