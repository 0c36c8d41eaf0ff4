"""Pieces the command line's verbs share: a progress bar and argparse types."""

from __future__ import annotations

import argparse
import sys


def progress_bar(total: int | None, label: str, unit: str = "it", **options):
    """A progress bar on stderr (tqdm): done/total, rate and time left."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit=unit, file=sys.stderr, dynamic_ncols=True, **options)


def at_least(low: int):
    """An argparse type: an integer >= ``low``, else a one-line usage error saying so."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse
