"""``kvinject <command>``: the tools around an lm-eval run.

``python -m kvinject <lm_eval arguments>`` (and ``kvinject-lm-eval``) still run lm-eval itself.
Each command lives in ``kvinject/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; only the invoked command's module is imported, so ``kvinject --help`` is instant.
Flags are snake_case, as lm-eval's (``--model_args``, ``--output_path``, ``--batch_size``). A user error
(a bad flag value, a missing folder: ``UsageError``) exits 2 with one line, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "report": "leaderboards, adaptation curves and per-problem JSON from lm-eval output folders",
    "single": "analyse one problem (original and alternative text) and print a readable summary",
    "analyze": "the original study's flags (--dataset --limit --injection_points ...) run through lm-eval",
    "prm": "(deprecated, kept for comparison with the original study) score reasoning steps with a PRM judge",
    "train": "fine-tune a model to follow mid-generation updates on a training split of an adaptation task",
    "compare": "paired comparison (B - A) of two runs, or two injection points of one run, on their shared docs",
    "study": "run a list of lm-eval runs from a YAML file, resumably, then the report and the comparisons",
}


def _top_parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:<9}{text}" for name, text in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="kvinject",
        description="Tools around kvinject's lm-eval runs. Run an evaluation with `lm_eval --model kvinject ...`.",
        epilog=f"commands:\n{listing}\n\n`kvinject <command> --help` gives a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="command")
    return parser


class CommandParser(argparse.ArgumentParser):
    """argparse with its errors on one line (``kvinject report: error: argument --digits: ...``), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def main(argv: list[str] | None = None) -> int:
    """Run ``kvinject <command> ...`` (``argv``: default sys.argv[1:]); the exit status, 2 for a usage error."""
    from kvinject.commands import UsageError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _top_parser().parse_args(argv[:1])  # prints the help, or names the unknown command, and exits
    name = argv[0]
    module = importlib.import_module(f"kvinject.commands.{name}")
    parser = CommandParser(prog=f"kvinject {name}", description=COMMANDS[name])
    module.add_arguments(parser)
    try:
        return int(module.run(parser.parse_args(argv[1:])) or 0)
    except UsageError as error:
        print(f"kvinject {name}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
