"""The `fvq` command: serve and score (stream/cli.py), eval (train/evaluate.py), export (export/cli.py).

Each subcommand's arguments are added, and its module imported, only when that subcommand is on the command
line (or its --help is asked for): `fvq serve` never imports train or export.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from fvq.extras import COMMAND_EXTRA, MissingExtraError, extra_for_module, install_line, require_extra
from stream import cli as serving  # light: it imports the serving layer only when a subcommand runs


class LazySubcommand(argparse.ArgumentParser):
    """A subcommand's parser that adds its arguments (importing the module that owns them) when first used; one
    that needs an extra checks first that the extra is installed (MissingExtraError names it)."""

    def __init__(self, *args, add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
                 extra: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._add_arguments = add_arguments
        self._extra = extra

    def _ready(self) -> None:
        if self._extra is not None:
            require_extra(self._extra, f"`{self.prog}`")
        if self._add_arguments is not None:
            add, self._add_arguments = self._add_arguments, None
            add(self)

    def parse_known_args(self, args=None, namespace=None):
        self._ready()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._ready()
        return super().format_usage()

    def format_help(self) -> str:
        self._ready()
        return super().format_help()


def _eval(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("root", type=Path)
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--bundle", type=Path)
    ev.add_argument("--baselines", action="store_true", help="also BRISQUE, NIQE and the signal mean")
    ev.add_argument("--diagnosis", action="store_true",
                    help="also the diagnosis benchmark: does the dimension that falls, and the alert, name the "
                         "distortion (each clip against its clean reference; ladders on unseen content)")
    ev.set_defaults(func=cmd_eval)


def _export(ex: argparse.ArgumentParser) -> None:
    from export.cli import add_arguments

    ex.add_argument("checkpoint", type=Path)
    ex.add_argument("--out", type=Path, required=True)
    add_arguments(ex)  # --eval-root, --precision, ...
    ex.set_defaults(func=cmd_export)


def cmd_eval(args: argparse.Namespace) -> int:
    from train.evaluate import main as eval_main

    return eval_main(args)


def cmd_export(args: argparse.Namespace) -> int:
    from export.cli import main as export_main

    return export_main(args)


# name, help, the function that adds the subcommand's arguments (and sets its `func`)
SUBCOMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = [
    ("serve", serving.SERVE_HELP, serving.add_serve_arguments),
    ("score", serving.SCORE_HELP, serving.add_score_arguments),
    ("eval", "SRCC/PLCC/KRCC of the model and baselines on an FVQ-20K-format folder", _eval),
    ("export", "export a checkpoint to a deployable bundle", _export),
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fvq", description=serving.DESCRIPTION)
    serving.add_common_arguments(p)
    sub = p.add_subparsers(dest="command", required=True, parser_class=LazySubcommand)
    for name, help_, add_arguments in SUBCOMMANDS:
        sub.add_parser(name, help=help_, add_arguments=add_arguments, extra=COMMAND_EXTRA.get(name))
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        try:
            return serving.run(args)
        except ValueError as exc:
            from engines.bundle import BundleError

            if not isinstance(exc, BundleError):
                raise
            return serving.refuse_bundle(exc)
    except MissingExtraError as exc:
        return _refuse_missing(str(exc))
    except ModuleNotFoundError as exc:  # an optional module some path needs (a torch bundle, TensorRT, Ray)
        command = next((a for a in (sys.argv[1:] if argv is None else argv) if a in COMMAND_EXTRA), None)
        extra = extra_for_module(exc.name, command)
        top = (exc.name or "").split(".")[0]
        if extra is None or importlib.util.find_spec(top) is not None:  # installed, but broken: not an extra's job
            raise
        return _refuse_missing(f"{top} is not installed (it comes with the {extra} extra): {install_line(extra)}")


def _refuse_missing(line: str) -> int:
    """The one line a command says when an extra it needs is not installed (exit code 2)."""
    print(f"fvq: {line}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
