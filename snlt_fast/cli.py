"""The `snlt` command: `snlt track ...`, `snlt eval ...`, `snlt train ...`.

Each subcommand module provides `add_parser(subparsers)`, which registers its
parser and sets `run=<function(args) -> exit code>` as a default. A subcommand
reports a user error by raising CommandError: it is printed as one line and the
process exits non-zero, never with a traceback.
"""

import argparse
import importlib
import re
import sys

SUBCOMMAND_MODULES = ("snlt_fast.tracker.cli", "snlt_fast.evaluation.cli", "snlt_fast.training.cli", "snlt_fast.datasets.cli", "snlt_fast.demo")


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def one_line(error):
    """An exception's message on one line (KeyError's str() would add quotes; some messages span lines)."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(str(text).split())


def build_parser():
    parser = argparse.ArgumentParser(prog="snlt", description="Siamese Natural Language Tracker, fast and exact.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


# A comma-separated list of numbers whose first is negative ("-5,30,40,20"): no option
# looks like that, but argparse would take it for one and refuse `--box -5,30,40,20`.
_NEGATIVE_LIST = re.compile(r"-\d[\d.eE+-]*(,[\d.eE+-]*)+")


def attach_negative_lists(argv):
    """`--option -5,...` as `--option=-5,...`, which argparse reads as the option's value."""
    joined = []
    for token in argv:
        previous = joined[-1] if joined else ""
        if _NEGATIVE_LIST.fullmatch(token) and previous.startswith("--") and "=" not in previous:
            joined[-1] = f"{previous}={token}"
        else:
            joined.append(token)
    return joined


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(attach_negative_lists(sys.argv[1:] if argv is None else list(argv)))
    try:
        return args.run(args)
    except CommandError as error:
        print(f"snlt {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"snlt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
