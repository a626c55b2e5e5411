"""Shared by the nn / models / language / checkpoint tests: independent pysot-style
computations (F.conv2d grouped correlation, functional BN), and small local language
models that the tests create on the fly."""

import torch
import torch.nn.functional as F
from torch import nn

from snlt_fast import available_backends

FAST_BACKENDS = [backend for backend in available_backends("cpu") if backend != "reference"]


def randomize_batchnorm(module, generator=None):
    """Random BN statistics and affine weights, so that eval-mode BN is not the identity."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.normal_(0, 0.1, generator=generator)
                layer.running_var.uniform_(0.5, 1.5, generator=generator)
                layer.weight.uniform_(0.5, 1.5, generator=generator)
                layer.bias.normal_(0, 0.1, generator=generator)
    return module



def randomized(module):
    """`module` in eval mode with random BN statistics and its heads' level weights away from uniform."""
    randomize_batchnorm(module)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("_weight"):  # cls_weight, nl_loc_weight, ...: the level-fusion weights
                parameter.normal_()
    return module.eval()

def pysot_xcorr(search, kernel):
    """pysot.core.xcorr.xcorr_depthwise, restated."""
    batch, channels = kernel.shape[:2]
    flat = search.reshape(1, batch * channels, search.shape[2], search.shape[3])
    out = F.conv2d(flat, kernel.reshape(batch * channels, 1, kernel.shape[2], kernel.shape[3]), groups=batch * channels)
    return out.reshape(batch, channels, out.shape[2], out.shape[3])


def _bn(x, state, prefix):
    return F.batch_norm(
        x, state[prefix + "running_mean"], state[prefix + "running_var"], state[prefix + "weight"],
        state[prefix + "bias"], training=False, eps=1e-5,
    )


def conv_bn_relu(x, state, prefix):
    """Sequential(conv(bias=False), BN, ReLU) from a state dict's `prefix`0. and `prefix`1. entries."""
    return F.relu(_bn(F.conv2d(x, state[prefix + "0.weight"]), state, prefix + "1."))


def prediction_head(x, state, prefix):
    """Sequential(conv, BN, ReLU, 1x1 conv with bias) from a state dict."""
    x = conv_bn_relu(x, state, prefix)
    return F.conv2d(x, state[prefix + "3.weight"], state[prefix + "3.bias"])


def depthwise_xcorr(z, x, state, prefix):
    """pysot's DepthwiseXCorr.forward from its state dict entries under `prefix`."""
    kernel = conv_bn_relu(z, state, prefix + "conv_kernel.")
    search = conv_bn_relu(x, state, prefix + "conv_search.")
    return prediction_head(pysot_xcorr(search, kernel), state, prefix + "head.")


def snl_level(z, x, state, prefix, language_kernel=None):
    """One SNL-RPN level the way the published SNLT computes it (DepthwiseRPN with nl heads)."""
    outputs = {"cls": depthwise_xcorr(z, x, state, prefix + "cls."), "loc": depthwise_xcorr(z, x, state, prefix + "loc.")}
    if language_kernel is not None:
        kernel = language_kernel.reshape(language_kernel.shape[0], -1, 1, 1)
        for branch in ("cls", "loc"):
            search = conv_bn_relu(x, state, f"{prefix}{branch}.conv_search.")
            outputs["nl_" + branch] = prediction_head(pysot_xcorr(search, kernel), state, f"{prefix}nl_{branch}_head.")
    return outputs


def weighted_levels(per_level, weight):
    """pysot MultiRPN's weighted_avg with softmax weights."""
    weight = F.softmax(weight, 0)
    total = 0
    for index in range(len(per_level)):
        total += per_level[index] * weight[index]
    return total


def multi_level(z_fs, x_fs, state, prefix, language_kernels=None):
    """pysot's MultiRPN (weighted), and the published MultiNLRPN when language kernels are given."""
    levels = [
        snl_level(z, x, state, f"{prefix}rpn{index + 2}.", None if language_kernels is None else language_kernels[index])
        for index, (z, x) in enumerate(zip(z_fs, x_fs))
    ]
    return {name: weighted_levels([level[name] for level in levels], state[f"{prefix}{name}_weight"]) for name in levels[0]}


def assert_close_outputs(actual, expected, rtol=1e-4, atol=1e-5):
    """Close up to float32 reordering: `atol` is relative to the output's largest magnitude
    (sums of many terms cancel, so single elements can carry the rounding of the large ones)."""
    assert actual.keys() == expected.keys()
    for name in expected:
        scale = max(1.0, expected[name].abs().max().item())
        torch.testing.assert_close(
            actual[name], expected[name], rtol=rtol, atol=atol * scale, msg=lambda m: f"{name}: {m}"
        )


def assert_equal_outputs(actual, expected):
    assert actual.keys() == expected.keys()
    for name in expected:
        assert torch.equal(actual[name], expected[name]), f"{name} differs"


def write_word_vectors(path, words, dim, seed=0):
    """A GloVe-format file of random vectors; returns {word: tensor} as written (float32 text round trip)."""
    generator = torch.Generator().manual_seed(seed)
    vectors = {}
    with open(path, "w", encoding="utf-8") as out:
        for word in words:
            vector = torch.randn(dim, generator=generator)
            text = " ".join(f"{value:.6f}" for value in vector.tolist())
            out.write(f"{word} {text}\n")
            vectors[word] = torch.tensor([float(v) for v in text.split(" ")], dtype=torch.float32)
    return vectors


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "car", "man", "on", "bike", "white", "helmet", "the", "dog", "running"]


def make_tiny_bert(directory, hidden=768, seed=0):
    """A one-layer BERT with a 16-word vocabulary saved as a local Hugging Face directory."""
    import transformers

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(TINY_VOCAB) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(str(directory))
    config = transformers.BertConfig(
        vocab_size=len(TINY_VOCAB), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=32, max_position_embeddings=32,
    )
    transformers.BertModel(config).eval().save_pretrained(str(directory))
    return directory


def mean_token_states(directory, sentence):
    """The published SNLT sentence embedding: BERT's last hidden states averaged over the tokens."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    model = transformers.AutoModel.from_pretrained(str(directory)).eval()
    tokens = tokenizer([sentence], return_tensors="pt")
    with torch.no_grad():
        return model(**tokens)[0].mean(dim=1)
