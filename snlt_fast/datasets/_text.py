"""Readers for the small text files of tracking benchmarks.

Box files hold one `x,y,w,h` line per frame; the separators vary between
datasets and even within one file (OTB's BlurCar1 mixes tabs and a space), so
commas, tabs and spaces are all accepted. Files separated by commas only or by
whitespace only (nearly all result files) go through numpy's C parser in one
call; mixed files, and files that parser rejects, are walked line by line,
which also names a wrong line.
"""

import io
import warnings
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np


class AnnotationError(ValueError):
    """A dataset or results file that exists but cannot be read as expected."""


def read_text(path, what):
    """The text of `path` (a path, or a zipfile.Path inside an archive), or FileNotFoundError
    saying which `what` file is missing, or AnnotationError naming the file it cannot read."""
    path = path if isinstance(path, zipfile.Path) else Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except UnicodeDecodeError as error:
        raise AnnotationError(
            f"{path}: not a UTF-8 text file (byte {error.start} is {error.object[error.start:error.start + 1]!r})"
            + ("; it is a zip archive: unzip it" if error.object[:2] == b"PK" else "")
        ) from None
    except (IsADirectoryError, PermissionError, zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise AnnotationError(f"{path}: cannot be read ({error.__class__.__name__}: {error})") from None


def parse_numbers(text, source, columns):
    """(n, columns) float64 array from text with one row of `columns` numbers a line.

    Blank lines are skipped. A line with the wrong count or a token that is not a
    number is an AnnotationError naming `source` and the 1-based line number.
    """
    # The common cases, commas only or whitespace only, go through numpy's C parser.
    if "," not in text or ("\t" not in text and " " not in text):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an empty file: reported by the caller
                values = np.loadtxt(
                    io.StringIO(text), delimiter="," if "," in text else None, comments=None, ndmin=2, dtype=np.float64
                )
            if values.shape[1] == columns:
                return values
        except ValueError:
            pass
    return _parse_lines(text, source, columns)


def _parse_lines(text, source, columns):
    """Line by line, with any mix of commas, tabs and spaces; errors name the line."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.replace(",", " ").split()
        if not tokens:
            continue
        if len(tokens) != columns:
            raise AnnotationError(f"{source}:{number}: expected {columns} numbers, got {len(tokens)}: {line.strip()!r}")
        try:
            rows.append([float(token) for token in tokens])
        except ValueError:
            bad = next(token for token in tokens if not _is_number(token))
            raise AnnotationError(f"{source}:{number}: {bad!r} is not a number: {line.strip()!r}") from None
    return np.array(rows, dtype=np.float64).reshape(len(rows), columns)


def _is_number(token):
    try:
        float(token)
    except ValueError:
        return False
    return True


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
    """Non-empty stripped lines of a name list, in order; duplicates, and a list without
    names (an empty file), are an error."""
    names = [line.strip() for line in read_text(path, what).splitlines() if line.strip()]
    if not names:
        raise AnnotationError(f"{path}: {what} is empty")
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
