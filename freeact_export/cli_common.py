"""What every freeact-export command module shares: the parser, its argument types, settings from arguments."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from freeact_export.api import UserError

PROG = "freeact-export"


def formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


class Parser(argparse.ArgumentParser):
    """argparse with a usage error as one line (argparse prints the whole usage block before it)."""

    def error(self, message: str):
        message = " ".join(message.split())
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def int_at_least(low: int, what: str = ""):
    """An argparse type: a whole number >= low (a count, a length), refused in one line otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}{what} (got {value})")
        return value

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


COUNT = int_at_least(1)
SEED = int_at_least(0, " (a seed is a non-negative whole number)")
SEQLEN = int_at_least(2, " (a window predicts each token from the ones before it)")


def port(text: str) -> int:
    """An argparse type: a TCP port, 1..65535."""
    value = int_at_least(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in 1..65535 (got {value})")
    return value


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0 (got {text})")
    return value


def require_folder(path: str, what: str) -> Path:
    """An input folder that must exist (checked when the command runs, not at parse time, so that
    documented example lines parse anywhere)."""
    folder = Path(path)
    if not folder.exists():
        raise UserError(f"{path} does not exist; give {what}")
    if not folder.is_dir():
        raise UserError(f"{path} is a file, not a folder; give {what}")
    return folder


def settings(factory, *args, **fields):
    """Build a settings object; its validation errors become one-line user errors (api.checked)."""
    from freeact_export.api import checked

    return checked(factory, *args, **fields)


def group_size(text: str) -> int:
    """An argparse type: 'channel' (0) or an even group size >= 2."""
    if text == "channel":
        return 0
    value = int_at_least(2, " (or 'channel' for one scale per output channel)")(text)
    if value % 2:
        raise argparse.ArgumentTypeError(f"must be even: two INT4 codes share a byte (got {value})")
    return value


def add_rounding(p: argparse.ArgumentParser) -> None:
    """The weight rounding flags of 'quantize' and the ONNX-in path."""
    p.add_argument("--clip-search", action=argparse.BooleanOptionalAction, default=None,
                   help="search each weight row's (group's) clip for the least rounding error, as QuaRot's w_clip")
    p.add_argument("--code-range", choices=["symmetric", "full"], default=None,
                   help="INT4 weight codes: symmetric ±7, or full: all 16 codes, the extreme on -8 "
                        "(ONNX Runtime's rule)")
    p.add_argument("--act-order", action=argparse.BooleanOptionalAction, default=None,
                   help="+gptq: quantize columns in order of decreasing Hessian diagonal")
    p.add_argument("--group-size", type=group_size, metavar="G",
                   help="w4a16: inputs per weight scale, or 'channel' (default: 128, or the largest power of "
                        "two below it that divides the input: 64 for 576)")


def rounding(args: argparse.Namespace):
    from freeact_export import api

    return api.rounding_settings(args.method, args.bits, args.clip_search, args.code_range, args.act_order,
                                 args.group_size)
