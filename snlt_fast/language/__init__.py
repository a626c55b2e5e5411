"""Language encoders for the SNL-RPN: sentence embeddings and the language kernels made from them."""

from snlt_fast.language.encoders import (
    MINILM,
    SentenceEncoder,
    TransformerEncoder,
    WordVectorEncoder,
    build_encoder,
    minilm_encoder,
)
from snlt_fast.language.kernels import LanguageKernels

__all__ = [
    "MINILM",
    "LanguageKernels",
    "SentenceEncoder",
    "TransformerEncoder",
    "WordVectorEncoder",
    "build_encoder",
    "minilm_encoder",
]
