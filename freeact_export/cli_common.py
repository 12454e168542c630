"""What every freeact-export command module shares: the help formatter, settings from arguments."""

from __future__ import annotations

import argparse

from freeact_export.errors import UserError

PROG = "freeact-export"


def formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def settings(factory, *args, **fields):
    """Build a settings object; its validation errors become one-line user errors."""
    try:
        return factory(*args, **fields)
    except ValueError as err:
        raise UserError(str(err)) from None
