"""Output files that are either complete or absent, never half written; and a check for
truncated JPEG frames, which OpenCV decodes without a word (the missing part grey)."""

import contextlib
import glob
import os
import tempfile
from pathlib import Path


def _new_file_mode():
    """The mode open() gives a new file under the current umask (mkstemp's files are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _remove_stale_temporaries(path):
    """Delete the temporary files of `path` that a killed writer left (SIGKILL skips the
    clean-up below); mkstemp names them `.<stem>.<8 random characters>.partial<suffix>`."""
    pattern = f".{glob.escape(path.stem)}.{'?' * 8}.partial{glob.escape(path.suffix)}"
    for stale in path.parent.glob(pattern):
        stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`, with the same suffix (writers such as
    OpenCV's pick the format by it); it replaces `path` only if the block succeeds.
    A killed writer leaves no `path`, and the next write of `path` removes its temporary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".partial{path.suffix}")
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, _new_file_mode())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_text_atomic(path, text):
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def is_truncated_jpeg(path):
    """Whether a JPEG file (it starts with FF D8) lacks the end-of-image marker (FF D9) at
    its end: it was cut short. The marker cannot occur inside the compressed data (an FF
    there is followed by 00 or a restart number), so a look at the last bytes is enough."""
    path = Path(path)
    if path.suffix.lower() not in (".jpg", ".jpeg"):
        return False
    with open(path, "rb") as handle:
        if handle.read(2) != b"\xff\xd8":
            return False  # not a JPEG at all: the decoder says so
        handle.seek(max(0, path.stat().st_size - 32))
        return b"\xff\xd9" not in handle.read()
