"""Readers for the small text files of tracking benchmarks.

Box files hold one `x,y,w,h` line per frame; the separators vary between
datasets and even within one file (OTB's BlurCar1 mixes tabs and a space), so
commas, tabs and spaces are all accepted. Parsing is one vectorised conversion
of the whole file; only when that fails is the file walked line by line, to name
the line that is wrong.
"""

from collections import Counter
from pathlib import Path

import numpy as np


class AnnotationError(ValueError):
    """A dataset or results file that exists but cannot be read as expected."""


def read_text(path, what):
    """The text of `path`, or FileNotFoundError saying which `what` file is missing."""
    path = Path(path)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except (IsADirectoryError, UnicodeDecodeError) as error:
        raise AnnotationError(f"{path}: cannot be read as a text file ({error.__class__.__name__})") from None


def parse_numbers(text, source, columns):
    """(n, columns) float64 array from text with one row of `columns` numbers a line.

    Blank lines are skipped. A line with the wrong count or a token that is not a
    number is an AnnotationError naming `source` and the 1-based line number.
    """
    lines = text.splitlines()
    rows = sum(1 for line in lines if line.strip())
    try:
        values = np.array(text.replace(",", " ").split(), dtype=np.float64)
    except ValueError:
        values = None
    if values is not None and values.size == rows * columns:
        return values.reshape(rows, columns)
    for number, line in enumerate(lines, start=1):
        tokens = line.replace(",", " ").split()
        if not tokens:
            continue
        if len(tokens) != columns:
            raise AnnotationError(f"{source}:{number}: expected {columns} numbers, got {len(tokens)}: {line.strip()!r}")
        for token in tokens:
            try:
                float(token)
            except ValueError:
                raise AnnotationError(f"{source}:{number}: {token!r} is not a number: {line.strip()!r}") from None
    raise AssertionError("unreachable: the line-by-line walk finds what the bulk parse rejected")


def read_boxes(path, what="box file"):
    """(n, 4) float64 boxes `x, y, w, h` from a file with one box a line."""
    boxes = parse_numbers(read_text(path, what), Path(path), 4)
    if len(boxes) == 0:
        raise AnnotationError(f"{path}: no boxes in {what}")
    return boxes


def read_flags(path, what="flag file"):
    """(n,) bool from a file of 0/1 flags, one per frame, separated by commas or whitespace."""
    text = read_text(path, what)
    tokens = text.replace(",", " ").split()
    bad = next((token for token in tokens if token not in ("0", "1")), None)
    if bad is not None:
        number = next(n for n, line in enumerate(text.splitlines(), 1) if bad in line.replace(",", " ").split())
        raise AnnotationError(f"{path}:{number}: expected flags 0 or 1, got {bad!r}")
    return np.array(tokens, dtype=np.int8).astype(bool)


def read_names(path, what="name list"):
    """Non-empty stripped lines of a name list, in order; duplicates are an error."""
    names = [line.strip() for line in read_text(path, what).splitlines() if line.strip()]
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise AnnotationError(f"{path}: {repeated[0]!r} is listed twice")
    return names


def first_line(path, what):
    """The first non-empty line of a text file, stripped (a sentence file)."""
    for line in read_text(path, what).splitlines():
        if line.strip():
            return line.strip()
    raise AnnotationError(f"{path}: {what} is empty")
