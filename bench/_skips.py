"""Skips for benchmarks whose inputs this machine lacks."""

import pytest

from snlt_fast.language.encoders import MINILM_MISSING, MINILM_PACKAGE


def skip_without_minilm():
    """The default sentence encoder's package, which a GPU machine's image may lack."""
    return pytest.importorskip(MINILM_PACKAGE, reason=MINILM_MISSING)
