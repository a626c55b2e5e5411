"""snlt_fast.models: SiamRPN++'s ResNet-50, AlexNet, the neck, and the SNLT model's template/track split."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_helpers import (
    FAST_BACKENDS,
    assert_close_outputs,
    assert_equal_outputs,
    randomize_batchnorm,
    randomized,
    write_word_vectors,
)

from snlt_fast.models import AdjustAllLayer, AlexNetLegacy, ResNet50Atrous, SNLT, build_model
from snlt_fast.models.backbones import SeparableMaxPool2d

WORDS = ["a", "red", "car", "man", "riding", "motorbike", "white", "helmet", "dog"]
SENTENCES = ["a red car", "man riding a motorbike wearing a white helmet"]

# pysot's resnet_atrous with used_layers [2, 3, 4]: (stride, padding, dilation, kernel) of the convs
# whose settings differ from a plain ResNet-50.
RESNET_CONVS = {
    "conv1": (2, 0, 1, 7),
    "layer1.0.conv2": (1, 1, 1, 3),
    "layer1.0.downsample.0": (1, 0, 1, 1),
    "layer2.0.conv2": (2, 0, 1, 3),
    "layer2.0.downsample.0": (2, 0, 1, 3),
    "layer2.3.conv2": (1, 1, 1, 3),
    "layer3.0.conv2": (1, 1, 1, 3),
    "layer3.0.downsample.0": (1, 1, 1, 3),
    "layer3.5.conv2": (1, 2, 2, 3),
    "layer4.0.conv2": (1, 2, 2, 3),
    "layer4.0.downsample.0": (1, 2, 2, 3),
    "layer4.2.conv2": (1, 4, 4, 3),
}


@pytest.fixture(scope="module")
def word_vectors(tmp_path_factory):
    path = tmp_path_factory.mktemp("language") / "vectors.txt"
    write_word_vectors(path, WORDS, dim=24)
    return path


def random_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    return randomized(SNLT(**kwargs))


def crops(batch, size, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def alexnet_model(word_vectors):
    return random_model(backbone="alexnet", language=word_vectors)


@pytest.fixture(scope="module")
def resnet_model(word_vectors):
    return random_model(backbone="resnet50", language=word_vectors)


@settings(max_examples=40)
@given(
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    extra=st.integers(0, 9),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
    special=st.booleans(),
    transposed=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_separable_max_pool_equals_max_pool(kernel, stride, padding, extra, dtype, special, transposed, seed):
    padding = min(padding, kernel // 2)  # max_pool2d's limit
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, kernel + extra, kernel + extra + 1, generator=generator).to(dtype)
    if special:
        x.view(-1)[torch.randint(0, x.numel(), (4,), generator=generator)] = torch.tensor(
            [float("nan"), float("inf"), -float("inf"), -0.0], dtype=dtype
        )
    if transposed:
        x = x.transpose(2, 3)
    pool = SeparableMaxPool2d(kernel, stride, padding)
    expected = torch.nn.MaxPool2d(kernel, stride, padding)(x)
    with torch.no_grad():
        actual = pool(x)
    assert actual.shape == expected.shape and actual.dtype == dtype
    assert torch.equal(actual.isnan(), expected.isnan())
    assert torch.equal(actual.nan_to_num(0.0), expected.nan_to_num(0.0))
    grad_input = x.double().requires_grad_()
    pool(grad_input).sum().backward()  # with autograd it is plain nn.MaxPool2d
    assert grad_input.grad is not None


def test_resnet_layers_follow_siamrpn_plus_plus():
    modules = dict(ResNet50Atrous().named_modules())
    for name, (stride, padding, dilation, kernel) in RESNET_CONVS.items():
        conv = modules[name]
        assert (conv.stride[0], conv.padding[0], conv.dilation[0], conv.kernel_size[0]) == (stride, padding, dilation, kernel), name
    state = ResNet50Atrous().state_dict()
    assert state["layer2.0.downsample.0.weight"].shape == (512, 256, 3, 3)
    assert state["layer4.0.downsample.0.weight"].shape == (2048, 1024, 3, 3)
    assert state["layer3.5.bn3.running_var"].shape == (1024,)
    assert not any(key.startswith("fc.") for key in state)


def test_resnet_feature_sizes():
    backbone = ResNet50Atrous().eval()
    with torch.no_grad():
        for size, side in ((127, 15), (255, 31)):
            features = backbone(crops(1, size))
            assert [tuple(f.shape) for f in features] == [(1, c, side, side) for c in (512, 1024, 2048)]
            assert backbone.feature_size(size) == side


def test_alexnet_is_pysot_alexnetlegacy():
    backbone = AlexNetLegacy().eval()
    state = backbone.state_dict()
    convs = {key.split(".")[1]: value.shape for key, value in state.items() if value.dim() == 4}
    assert convs == {
        "0": (96, 3, 11, 11), "4": (256, 96, 5, 5), "8": (384, 256, 3, 3), "11": (384, 384, 3, 3), "14": (256, 384, 3, 3)
    }
    assert {key.split(".")[1] for key in state if "running_mean" in key} == {"1", "5", "9", "12", "15"}
    with torch.no_grad():
        for size in (127, 255, 271, 287):
            (features,) = backbone(crops(1, size))
            assert features.shape[1] == 256 and features.shape[3] == backbone.feature_size(size)
    assert backbone.feature_size(127) == 6 and backbone.feature_size(287) == 26


def test_neck_crops_templates_to_the_centre_7x7():
    neck = randomize_batchnorm(AdjustAllLayer((4, 6, 8), (3, 3, 3))).eval()
    assert set(neck.state_dict()) >= {"downsample2.downsample.0.weight", "downsample4.downsample.1.running_var"}
    template = [torch.randn(1, c, 15, 15) for c in (4, 6, 8)]
    search = [torch.randn(1, c, 31, 31) for c in (4, 6, 8)]
    with torch.no_grad():
        cropped, full = neck(template), neck(search)
        uncropped = neck.downsample3.downsample(template[1])
    assert [tuple(t.shape) for t in cropped] == [(1, 3, 7, 7)] * 3
    assert [tuple(t.shape) for t in full] == [(1, 3, 31, 31)] * 3
    assert torch.equal(cropped[1], uncropped[:, :, 4:11, 4:11])


@pytest.mark.parametrize(
    "arch, backbone, anchor_num, instance_size, score_size, has_language",
    [
        ("siamrpn_r50_l234", "resnet50", 5, 255, 25, False),
        ("siamrpn_alex", "alexnet", 5, 287, 21, False),
        ("snlt_r50", "resnet50", 15, 255, 25, True),
        ("snlt_alex", "alexnet", 15, 287, 21, True),
    ],
)
def test_architectures_describe_themselves(word_vectors, arch, backbone, anchor_num, instance_size, score_size, has_language):
    overrides = {"language": word_vectors} if has_language else {}
    model = build_model(arch, **overrides)
    assert (model.arch, model.backbone_name, model.anchor_num) == (arch, backbone, anchor_num)
    assert (model.exemplar_size, model.instance_size, model.score_size, model.stride) == (127, instance_size, score_size, 8)
    assert model.has_language == has_language


def test_score_size_matches_the_head_outputs(alexnet_model):
    alexnet_model.template(crops(1, 127))
    for size in (255, 271, 287, 303):
        outputs = alexnet_model.track(crops(1, size))
        assert outputs["cls"].shape[-1] == alexnet_model.score_size_for(size)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_alexnet_track_fast_equals_reference(alexnet_model, backend):
    z, x = crops(2, 127, 1), crops(2, 287, 2)
    with alexnet_model.using_backend(backend):
        alexnet_model.template(z, SENTENCES)
        fast = alexnet_model.track(x)
    with alexnet_model.reference_ops():
        alexnet_model.template(z, SENTENCES)
        reference = alexnet_model.track(x)
    assert fast["cls"].shape == (2, 30, 21, 21) and fast["nl_loc"].shape == (2, 60, 21, 21)
    assert_equal_outputs(fast, reference)


def test_resnet_track_fast_equals_reference_and_forward(resnet_model):
    """B=1 at the real crop sizes: fast == reference == the uncached training forward, bit for bit."""
    z, x = crops(1, 127, 3), crops(1, 255, 4)
    resnet_model.template(z, SENTENCES[1])
    fast = resnet_model.track(x)
    with resnet_model.reference_ops():
        reference = resnet_model.track(x)
    with torch.no_grad():
        uncached = resnet_model(z, x, [SENTENCES[1]])
    assert fast["cls"].shape == (1, 30, 25, 25) and fast["loc"].shape == (1, 60, 25, 25)
    assert_equal_outputs(fast, reference)
    assert_equal_outputs(fast, uncached)


def test_reference_constructor_flag(word_vectors):
    model = SNLT("alexnet", language=None, reference=True)
    assert model.backend == "reference" and model.rpn_head.cls.backend == "reference"
    with pytest.raises(ValueError, match="contradicts"):
        SNLT("alexnet", language=None, reference=True, backend="cpu")


def test_batched_targets_match_one_at_a_time(alexnet_model):
    z, x = crops(3, 127, 5), crops(3, 287, 6)
    sentences = [SENTENCES[0], SENTENCES[1], "a dog"]
    alexnet_model.template(z, sentences)
    batched = alexnet_model.track(x)
    for index in range(3):
        alexnet_model.template(z[index : index + 1], sentences[index])
        single = alexnet_model.track(x[index : index + 1])
        assert_close_outputs(single, {name: value[index : index + 1] for name, value in batched.items()}, 1e-5, 1e-5)


def test_one_template_shared_by_many_search_crops(alexnet_model):
    z, x = crops(1, 127, 7), crops(4, 287, 8)
    state = alexnet_model.template(z, SENTENCES[0])
    shared = alexnet_model.track(x, state)
    alexnet_model.template(z.expand(4, -1, -1, -1).contiguous(), [SENTENCES[0]] * 4)
    repeated = alexnet_model.track(x)
    assert_close_outputs(shared, repeated, 1e-5, 1e-5)


def test_template_without_text_tracks_visually(alexnet_model):
    alexnet_model.template(crops(1, 127))
    assert set(alexnet_model.track(crops(1, 287))) == {"cls", "loc"}


def test_cached_template_is_reused_and_replaceable(alexnet_model):
    first = alexnet_model.template(crops(1, 127, 9), "a red car")
    second = alexnet_model.template(crops(1, 127, 10))
    x = crops(1, 287, 11)
    assert set(alexnet_model.track(x, first)) == {"cls", "loc", "nl_cls", "nl_loc"}
    assert_equal_outputs(alexnet_model.track(x), alexnet_model.track(x, second))


def test_bad_inputs_are_clear_errors(alexnet_model):
    model = SNLT("alexnet", language=None)
    with pytest.raises(RuntimeError, match="call template"):
        model.track(crops(1, 287))
    with pytest.raises(ValueError, match="no language branch"):
        model.template(crops(1, 127), "a red car")
    with pytest.raises(ValueError, match=r"z_crop must be \[B, 3, H, W\]"):
        model.template(torch.randn(3, 127, 127))
    with pytest.raises(TypeError, match="z_crop must be a torch.Tensor"):
        model.template([[0.0]])
    with pytest.raises(TypeError, match="z_crop is torch.float64 but the model is torch.float32"):
        model.template(crops(1, 127).double())
    with pytest.raises(ValueError, match="square"):
        model.template(torch.randn(1, 3, 127, 131))
    with pytest.raises(ValueError, match="too small"):
        model.template(crops(1, 31))
    with pytest.raises(ValueError, match="text holds 1 sentences for a batch of 2"):
        alexnet_model.template(crops(2, 127), ["a red car"])
    with pytest.raises(ValueError, match="text is empty"):
        alexnet_model.template(crops(1, 127), "  ")
    with pytest.raises(TypeError, match="text must be a string or a list of strings"):
        alexnet_model.template(crops(1, 127), 3)
    alexnet_model.template(crops(2, 127))
    with pytest.raises(ValueError, match="x_crop holds 3 search crops but the template holds 2 targets"):
        alexnet_model.track(crops(3, 287))
    with pytest.raises(ValueError, match="backbone must be one of"):
        SNLT("vgg", language=None)
    with pytest.raises(ValueError, match="anchor_num"):
        SNLT("alexnet", language=None, anchor_num=0)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_training_step_gradients_fast_equal_reference(word_vectors, backend):
    """forward + backward through the whole AlexNet SNLT: same gradients on the fast and the reference ops."""
    z, x = crops(2, 127, 12), crops(2, 191, 13)
    gradients = {}
    for name in (backend, "reference"):
        model = random_model(seed=4, backbone="alexnet", language=word_vectors, backend=name).train()
        outputs = model(z, x, SENTENCES)
        loss = sum(output.square().mean() for output in outputs.values())
        loss.backward()
        gradients[name] = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert "language.projection.weight" in gradients["reference"]
    assert gradients[backend].keys() == gradients["reference"].keys()
    for parameter, grad in gradients["reference"].items():
        assert torch.equal(gradients[backend][parameter], grad), parameter


def test_language_pixels_are_the_crop_colours_at_the_alexnet_cell_centres(word_vectors):
    model = SNLT("alexnet", language=word_vectors, anchor_num=5, instance_size=255, width=0.25, hidden=16,
                 language_features="own+pixels").eval()
    assert model.config()["language_features"] == "own+pixels"
    crop = torch.zeros(1, 3, 255, 255)
    cells = model.backbone.feature_size(255)
    receptive_field = 255 - model.stride * (cells - 1)
    centre = (receptive_field - 1) // 2
    # Windows of 7 pixels, 8 apart: one pixel at the centre of cell (row 2, column 5), one in
    # the row between its window and the next (in no window) and one in the next window.
    crop[0, 1, centre + 2 * 8, centre + 5 * 8] = 7 * 7 * 255
    crop[0, 0, centre + 2 * 8 + 4, centre + 5 * 8] = 1.0
    crop[0, 2, centre + 2 * 8 + 5, centre + 5 * 8] = 1.0
    pixels = model._pixels(crop, with_language=True)
    assert pixels.shape == (1, 3, cells, cells) == (1, 3, *model.features(crop)[0].shape[2:])
    lit = (pixels[0] > -1).nonzero().tolist()
    assert lit == [[1, 2, 5], [2, 3, 5]]
    assert float(pixels[0, 1, 2, 5]) == 255 / 127.5 - 1
    assert model._pixels(crop, with_language=False) is None
    outputs = model(crops(2, 127, 1), crops(2, 255, 2), ["a red car", "a dog"])
    assert outputs["nl_cls"].shape == outputs["cls"].shape
    with pytest.raises(ValueError, match="language_features='own\\+pixels' needs the alexnet backbone"):
        SNLT("resnet50", language=word_vectors, language_features="own+pixels")
