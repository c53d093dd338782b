"""Tables on the terminal: columns padded to fit, text left and numbers right."""

from __future__ import annotations


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]],
                left: int | None = None) -> None:
    """The first `left` columns (all, by default) are text; the rest are numbers, set right."""
    left = len(header) if left is None else left
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        cells = [cell.ljust(width) if i < left else cell.rjust(width)
                 for i, (cell, width) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells).rstrip())
