"""Progress bars for the converters and training, on stderr so stdout stays machine-readable."""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], description: str, *, total: int | None = None) -> Iterator[T]:
    from rich.console import Console
    from rich.progress import track

    console = Console(stderr=True)
    # a bar redrawn into a log file is noise; off a terminal, say what runs and nothing more
    if not sys.stderr.isatty():
        print(f"{description} ...", file=sys.stderr, flush=True)
        yield from items
        return
    yield from track(items, description=description, total=total, console=console, transient=True)
