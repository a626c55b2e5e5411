"""snlt_fast.models.load_checkpoint / save_checkpoint on state dicts with the real key names and shapes.

Each foreign checkpoint is built here from its published key layout with random
values; the loaded model's outputs are checked against an independent computation
straight from that state dict (pysot's / the published formulation, F.conv2d).
"""

import pytest
import torch
import torch.nn.functional as F
from model_helpers import (
    assert_close_outputs,
    assert_equal_outputs,
    conv_bn_relu,
    depthwise_xcorr,
    make_tiny_bert,
    multi_level,
    prediction_head,
    pysot_xcorr,
    weighted_levels,
    write_word_vectors,
)

from snlt_fast.models import SNLT, CheckpointError, ResNet50Atrous, load_checkpoint, save_checkpoint

HIDDEN = 256
ALEXNET_CONVS = {0: (96, 3, 11), 4: (256, 96, 5), 8: (384, 256, 3), 11: (384, 384, 3), 14: (256, 384, 3)}
ALEXNET_BNS = {1: 96, 5: 256, 9: 384, 12: 384, 15: 256}


def random_tensor(shape, generator, kind="weight"):
    if kind == "running_var":
        return torch.rand(shape, generator=generator) + 0.5
    if kind == "num_batches_tracked":
        return torch.tensor(7)
    # He-scaled conv weights keep activations of order 1 through the deep backbone.
    scale = (2.0 / (shape[1] * shape[2] * shape[3])) ** 0.5 if len(shape) == 4 else 0.1
    return torch.randn(shape, generator=generator) * scale + (1.0 if kind == "bn_weight" else 0.0)


def bn_entries(prefix, channels, generator):
    return {
        prefix + "weight": random_tensor((channels,), generator, "bn_weight"),
        prefix + "bias": random_tensor((channels,), generator),
        prefix + "running_mean": random_tensor((channels,), generator),
        prefix + "running_var": random_tensor((channels,), generator, "running_var"),
        prefix + "num_batches_tracked": random_tensor((), generator, "num_batches_tracked"),
    }


def head_entries(prefix, out_channels, kernel_size, generator):
    """Sequential(conv kernel_size, BN, ReLU, conv 1x1 with bias) as in pysot / SNLT."""
    entries = {prefix + "0.weight": random_tensor((HIDDEN, HIDDEN, kernel_size, kernel_size), generator)}
    entries.update(bn_entries(prefix + "1.", HIDDEN, generator))
    entries[prefix + "3.weight"] = random_tensor((out_channels, HIDDEN, 1, 1), generator)
    entries[prefix + "3.bias"] = random_tensor((out_channels,), generator)
    return entries


def conv_bn_entries(prefix, in_channels, kernel_size, generator):
    entries = {prefix + "0.weight": random_tensor((HIDDEN, in_channels, kernel_size, kernel_size), generator)}
    entries.update(bn_entries(prefix + "1.", HIDDEN, generator))
    return entries


def pysot_depthwise_rpn(prefix, anchor_num, generator):
    """pysot DepthwiseRPN keys: {cls,loc}.{conv_kernel,conv_search,head}.*"""
    entries = {}
    for branch, outputs in (("cls", 2 * anchor_num), ("loc", 4 * anchor_num)):
        entries.update(conv_bn_entries(f"{prefix}{branch}.conv_kernel.", HIDDEN, 3, generator))
        entries.update(conv_bn_entries(f"{prefix}{branch}.conv_search.", HIDDEN, 3, generator))
        entries.update(head_entries(f"{prefix}{branch}.head.", outputs, 1, generator))
    return entries


def resnet_entries(prefix, generator):
    # The key layout of pysot's resnet50 backbone (checked layer by layer in test_models).
    return {
        prefix + key: random_tensor(tuple(value.shape), generator, _kind(key))
        for key, value in ResNet50Atrous().state_dict().items()
    }


def _kind(key):
    for kind in ("running_var", "num_batches_tracked"):
        if key.endswith(kind):
            return kind
    return "bn_weight" if ".bn" in key and key.endswith("weight") or "downsample.1.weight" in key else "weight"


def neck_entries(prefix, generator):
    entries = {}
    for level, channels in zip((2, 3, 4), (512, 1024, 2048)):
        entries[f"{prefix}downsample{level}.downsample.0.weight"] = random_tensor((HIDDEN, channels, 1, 1), generator)
        entries.update(bn_entries(f"{prefix}downsample{level}.downsample.1.", HIDDEN, generator))
    return entries


def pysot_neck(features, state, prefix):
    out = []
    for level, feature in zip((2, 3, 4), features):
        feature = conv_bn_relu_free(feature, state, f"{prefix}downsample{level}.downsample.")
        if feature.shape[3] < 20:
            left = (feature.shape[3] - 7) // 2
            feature = feature[:, :, left : left + 7, left : left + 7]
        out.append(feature)
    return out


def conv_bn_relu_free(x, state, prefix):
    x = F.conv2d(x, state[prefix + "0.weight"])
    return F.batch_norm(
        x, state[prefix + "1.running_mean"], state[prefix + "1.running_var"], state[prefix + "1.weight"],
        state[prefix + "1.bias"], training=False,
    )


# --------------------------------------------------------------------------- pysot SiamRPN AlexNet


def pysot_alexnet_state(seed=0, anchor_num=5):
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for index, (out_channels, in_channels, kernel) in ALEXNET_CONVS.items():
        state[f"backbone.features.{index}.weight"] = random_tensor((out_channels, in_channels, kernel, kernel), generator)
        state[f"backbone.features.{index}.bias"] = random_tensor((out_channels,), generator)
    for index, channels in ALEXNET_BNS.items():
        state.update(bn_entries(f"backbone.features.{index}.", channels, generator))
    state.update(pysot_depthwise_rpn("rpn_head.", anchor_num, generator))
    return state


def pysot_alexnet_features(crop, state):
    """pysot's AlexNetLegacy.forward from the state dict."""

    def conv_bn(x, index, stride=1):
        x = F.conv2d(x, state[f"backbone.features.{index}.weight"], state[f"backbone.features.{index}.bias"], stride)
        bn = f"backbone.features.{index + 1}."
        return F.batch_norm(
            x, state[bn + "running_mean"], state[bn + "running_var"], state[bn + "weight"], state[bn + "bias"], False
        )

    x = F.relu(F.max_pool2d(conv_bn(crop, 0, stride=2), 3, 2))
    x = F.relu(F.max_pool2d(conv_bn(x, 4), 3, 2))
    x = F.relu(conv_bn(x, 8))
    x = F.relu(conv_bn(x, 11))
    return conv_bn(x, 14)


def crops(batch, size, seed):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_pysot_alexnet_checkpoint_matches_pysot_computation(tmp_path):
    state = pysot_alexnet_state()
    path = tmp_path / "siamrpn_alex_dwxcorr.pth"
    torch.save({"epoch": 20, "state_dict": {"module." + k: v for k, v in state.items()}}, path)
    model = load_checkpoint(path)
    assert (model.arch, model.anchor_num, model.score_size, model.has_language) == ("siamrpn_alex", 5, 21, False)
    assert not model.training
    z, x = crops(2, 127, 1), crops(2, 287, 2)
    model.template(z)
    outputs = model.track(x)
    with torch.no_grad():
        z_f, x_f = pysot_alexnet_features(z, state), pysot_alexnet_features(x, state)
        expected = {"cls": depthwise_xcorr(z_f, x_f, state, "rpn_head.cls."), "loc": depthwise_xcorr(z_f, x_f, state, "rpn_head.loc.")}
    assert outputs["cls"].shape == (2, 10, 21, 21)
    assert_close_outputs(outputs, expected)
    with pytest.raises(ValueError, match="no language branch"):
        model.template(z, "a red car")


def test_pysot_alexnet_layer_layout_loads_the_same(tmp_path):
    """pysot's non-legacy AlexNet names the same layers backbone.layer1..5."""
    state = pysot_alexnet_state(seed=1)
    offsets = {0: "layer1.0", 1: "layer1.1", 4: "layer2.0", 5: "layer2.1", 8: "layer3.0", 9: "layer3.1", 11: "layer4.0", 12: "layer4.1", 14: "layer5.0", 15: "layer5.1"}
    layered = {}
    for key, value in state.items():
        if key.startswith("backbone.features."):
            index, tail = key.removeprefix("backbone.features.").split(".", 1)
            key = f"backbone.{offsets[int(index)]}.{tail}"
        layered[key] = value
    first, second = load_checkpoint(state), load_checkpoint(layered)
    z, x = crops(1, 127, 3), crops(1, 255, 4)
    first.template(z)
    second.template(z)
    assert_equal_outputs(first.track(x), second.track(x))


# --------------------------------------------------------------------------- pysot SiamRPN++ ResNet-50


@pytest.fixture(scope="module")
def pysot_r50_state():
    generator = torch.Generator().manual_seed(2)
    state = resnet_entries("backbone.", generator)
    state.update(neck_entries("neck.", generator))
    for level in (2, 3, 4):
        state.update(pysot_depthwise_rpn(f"rpn_head.rpn{level}.", 5, generator))
    state["rpn_head.cls_weight"] = torch.randn(3, generator=generator)
    state["rpn_head.loc_weight"] = torch.randn(3, generator=generator)
    return state


def test_pysot_r50_checkpoint_matches_pysot_computation(pysot_r50_state):
    # Old pysot checkpoints predate BatchNorm's num_batches_tracked: it may be absent.
    state = {k: v for k, v in pysot_r50_state.items() if not k.endswith("num_batches_tracked")}
    model = load_checkpoint(state, arch="siamrpn_r50_l234")
    assert (model.arch, model.anchor_num, model.instance_size, model.score_size) == ("siamrpn_r50_l234", 5, 255, 25)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items())
    z, x = crops(1, 127, 5), crops(1, 175, 6)
    model.template(z)
    outputs = model.track(x)
    with torch.no_grad():
        z_fs = pysot_neck(model.backbone(z), state, "neck.")
        x_fs = pysot_neck(model.backbone(x), state, "neck.")
        expected = multi_level(z_fs, x_fs, state, "rpn_head.")
    assert outputs["cls"].shape == (1, 10, model.score_size_for(175), model.score_size_for(175))
    assert_close_outputs(outputs, expected)


# --------------------------------------------------------------------------- published SNLT


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "bert-base-uncased-tiny")


@pytest.fixture(scope="module")
def published_state(tiny_bert):
    """A published SNLT checkpoint: module. prefixes, adjustment_layer, nl_multi_rpn, bert_model."""
    import transformers

    generator = torch.Generator().manual_seed(3)
    state = resnet_entries("backbone.", generator)
    state.update(neck_entries("adjustment_layer.", generator))
    for level in (2, 3, 4):
        prefix = f"nl_multi_rpn.l{level}_rpn."
        for branch, outputs in (("cls", 30), ("reg", 60)):
            state.update(conv_bn_entries(f"{prefix}{branch}_conv_kernel.", HIDDEN, 3, generator))
            state.update(conv_bn_entries(f"{prefix}{branch}_conv_search.", HIDDEN, 3, generator))
            state.update(head_entries(f"{prefix}{branch}_head.", outputs, 1, generator))
            state.update(head_entries(f"{prefix}nl_{branch}_head.", outputs, 5, generator))
    for name in ("cls", "loc", "nl_cls", "nl_loc"):
        state[f"nl_multi_rpn.{name}_weight"] = torch.randn(3, generator=generator)
    bert = transformers.AutoModel.from_pretrained(str(tiny_bert)).state_dict()
    # Different weights from the directory's, to see that the checkpoint's are the ones used.
    for key, value in bert.items():
        state["nl_multi_rpn.bert_model." + key] = value + 0.01 * torch.randn(value.shape, generator=generator)
    state["nl_multi_rpn.bert_model.embeddings.position_ids"] = torch.arange(32)[None]  # older transformers
    return {"module." + key: value for key, value in state.items()}


def published_forward(z, x, sentence, state, bert_directory):
    """The published SNLT network, step by step from its own key names."""
    import transformers

    state = {key.removeprefix("module."): value for key, value in state.items()}
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(bert_directory))
    bert = transformers.AutoModel.from_pretrained(str(bert_directory)).eval()
    prefix = "nl_multi_rpn.bert_model."
    bert.load_state_dict({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix) and "position_ids" not in k})
    with torch.no_grad():
        embeds = bert(**tokenizer([sentence], return_tensors="pt"))[0].mean(dim=1)
        backbone = ResNet50Atrous().eval()
        backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")})
        z_fs = pysot_neck(backbone(z), state, "adjustment_layer.")
        x_fs = pysot_neck(backbone(x), state, "adjustment_layer.")
        outputs = {"cls": [], "reg": [], "nl_cls": [], "nl_reg": []}
        for index, (z_f, x_f) in enumerate(zip(z_fs, x_fs)):
            prefix = f"nl_multi_rpn.l{index + 2}_rpn."
            nl_kernel = embeds[:, 256 * index : 256 * (index + 1)].reshape(1, 256, 1, 1)
            for branch in ("cls", "reg"):
                kernel = conv_bn_relu(z_f, state, f"{prefix}{branch}_conv_kernel.")
                search = conv_bn_relu(x_f, state, f"{prefix}{branch}_conv_search.")
                outputs[branch].append(prediction_head(pysot_xcorr(search, kernel), state, f"{prefix}{branch}_head."))
                nl = prediction_head(pysot_xcorr(search, nl_kernel), state, f"{prefix}nl_{branch}_head.")
                outputs["nl_" + branch].append(nl)
    weights = {"cls": "cls", "reg": "loc", "nl_cls": "nl_cls", "nl_reg": "nl_loc"}
    return {
        ours: weighted_levels(outputs[theirs], state[f"nl_multi_rpn.{ours}_weight"])
        for theirs, ours in weights.items()
    }


def test_published_snlt_checkpoint_matches_published_computation(published_state, tiny_bert):
    model = load_checkpoint(published_state, arch="snlt_r50", language=str(tiny_bert))
    assert (model.arch, model.anchor_num, model.has_language) == ("snlt_r50", 15, True)
    assert model.language.projection is None  # the published 768 -> 3 x 256 slices
    sentence = "a man on a red bike"
    z, x = crops(1, 127, 7), crops(1, 175, 8)
    model.template(z, sentence)
    outputs = model.track(x)
    expected = published_forward(z, x, sentence, published_state, tiny_bert)
    assert outputs["nl_cls"].shape == (1, 30, model.score_size_for(175), model.score_size_for(175))
    assert_close_outputs(outputs, {name: expected[name] for name in ("cls", "loc", "nl_cls", "nl_loc")})


def test_published_snlt_needs_its_tokenizer_or_visual_only(published_state):
    with pytest.raises(CheckpointError, match="language='/path/to/bert-base-uncased'"):
        load_checkpoint(published_state)
    visual = load_checkpoint(published_state, language=False)
    assert (visual.has_language, visual.anchor_num, visual.arch) == (False, 15, "siamrpn_r50_l234")


def test_published_snlt_rejects_an_encoder_of_another_width(published_state, tmp_path):
    path = tmp_path / "vectors.txt"
    write_word_vectors(path, ["a", "car"], dim=16)
    with pytest.raises(CheckpointError, match="768-d bert-base-uncased embeddings"):
        load_checkpoint(published_state, language=str(path))


# --------------------------------------------------------------------------- strictness and errors


def test_unexpected_missing_and_mis_shaped_keys_are_listed():
    state = pysot_alexnet_state()
    state["rpn_head.cls.extra.weight"] = torch.zeros(1)
    del state["backbone.features.4.weight"]
    state["backbone.features.8.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(state)
    message = str(error.value)
    assert "unexpected keys: rpn_head.cls.extra.weight" in message
    assert "missing keys: backbone.features.4.weight" in message
    assert "mis-shaped keys: backbone.features.8.bias (checkpoint (3,), model (384,))" in message


def test_layout_and_arch_errors(tmp_path):
    with pytest.raises(CheckpointError, match="layout not recognised.*first keys are conv1.weight"):
        load_checkpoint({"conv1.weight": torch.zeros(1)})
    siammask = {"backbone.conv1.weight": torch.zeros(1), "rpn_head.cls.conv_kernel.0.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="layout not recognised"):
        load_checkpoint(siammask)  # pysot's SiamMask: one ResNet level, not a model here
    with pytest.raises(CheckpointError, match="arch='snlt_r50' was asked for, but the checkpoint holds a pysot SiamRPN AlexNet"):
        load_checkpoint(pysot_alexnet_state(), arch="snlt_r50")
    with pytest.raises(ValueError, match="arch must be one of"):
        load_checkpoint(pysot_alexnet_state(), arch="siamrpn_vgg")
    with pytest.raises(CheckpointError, match="has no language branch"):
        load_checkpoint(pysot_alexnet_state(), language="minilm")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth")
    with pytest.raises(TypeError, match="source must be"):
        load_checkpoint(3)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_checkpoint(tmp_path / "list.pth")


class TrainingConfig:
    """Stands for the config objects some training scripts pickle next to the weights."""


def test_checkpoints_pickling_objects_need_trust(tmp_path):
    path = tmp_path / "with_config.pth"
    torch.save({"state_dict": pysot_alexnet_state(), "cfg": TrainingConfig()}, path)
    with pytest.raises(CheckpointError, match="trusted=True"):
        load_checkpoint(path)
    assert load_checkpoint(path, trusted=True).arch == "siamrpn_alex"


# --------------------------------------------------------------------------- our format


@pytest.mark.parametrize("language_features", ["shared", "own"])
def test_our_format_round_trip(tmp_path, language_features):
    vectors = tmp_path / "vectors.txt"
    write_word_vectors(vectors, ["a", "red", "car"], dim=20)
    torch.manual_seed(0)
    model = SNLT("alexnet", language=str(vectors), anchor_num=3, instance_size=255, language_features=language_features).eval()
    path = save_checkpoint(model, tmp_path / "model.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth", "vectors.txt"]  # nothing half-written left
    loaded = load_checkpoint(path, arch="snlt_alex", backend="reference")
    assert loaded.config() == model.config() and loaded.backend == "reference"
    z, x = crops(1, 127, 9), crops(1, 255, 10)
    model.template(z, "a red car")
    loaded.template(z, "a red car")
    assert_equal_outputs(model.track(x), loaded.track(x))
    visual = load_checkpoint(path, language=False)
    assert not visual.has_language and visual.anchor_num == 3
    with pytest.raises(CheckpointError, match="arch='snlt_r50'"):
        load_checkpoint(path, arch="snlt_r50")


def test_our_format_keeps_encoder_weights_only_when_fine_tuned(tmp_path, tiny_bert):
    torch.manual_seed(1)
    model = SNLT("alexnet", language=str(tiny_bert)).eval()
    frozen_path = save_checkpoint(model, tmp_path / "frozen.pth")
    assert not any(k.startswith("language.encoder.") for k in torch.load(frozen_path)["state_dict"])
    model.language.encoder.unfreeze()
    with torch.no_grad():
        model.language.encoder.model.embeddings.word_embeddings.weight.add_(0.5)
    tuned_path = save_checkpoint(model, tmp_path / "tuned.pth")
    tuned = load_checkpoint(tuned_path)
    assert torch.equal(
        tuned.language.encoder.model.embeddings.word_embeddings.weight,
        model.language.encoder.model.embeddings.word_embeddings.weight,
    )
    partial = dict(torch.load(tuned_path))
    partial["state_dict"] = {k: v for k, v in partial["state_dict"].items() if "encoder.model.pooler" not in k}
    with pytest.raises(CheckpointError, match="missing keys: language.encoder.model.pooler"):
        load_checkpoint(partial)
