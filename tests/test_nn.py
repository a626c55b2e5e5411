"""snlt_fast.nn: pysot-compatible DepthwiseXCorr, the SNL-RPN level, the three-level fused head."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_helpers import (
    FAST_BACKENDS,
    assert_close_outputs,
    assert_equal_outputs,
    depthwise_xcorr,
    multi_level,
    randomized,
    snl_level,
)

import snlt_fast.nn.correlation as correlation
from snlt_fast.nn import CONV2D, DepthwiseXCorr, MultiSNLRPN, SNLRPN, set_backend, using_backend

# pysot's DepthwiseXCorr(in, hidden, out): every parameter and buffer with its shape.
PYSOT_DEPTHWISE_XCORR = {
    "conv_kernel.0.weight": ("hidden", "in", 3, 3),
    "conv_kernel.1.weight": ("hidden",),
    "conv_kernel.1.bias": ("hidden",),
    "conv_kernel.1.running_mean": ("hidden",),
    "conv_kernel.1.running_var": ("hidden",),
    "conv_kernel.1.num_batches_tracked": (),
    "conv_search.0.weight": ("hidden", "in", 3, 3),
    "conv_search.1.weight": ("hidden",),
    "conv_search.1.bias": ("hidden",),
    "conv_search.1.running_mean": ("hidden",),
    "conv_search.1.running_var": ("hidden",),
    "conv_search.1.num_batches_tracked": (),
    "head.0.weight": ("hidden", "hidden", 1, 1),
    "head.1.weight": ("hidden",),
    "head.1.bias": ("hidden",),
    "head.1.running_mean": ("hidden",),
    "head.1.running_var": ("hidden",),
    "head.1.num_batches_tracked": (),
    "head.3.weight": ("out", "hidden", 1, 1),
    "head.3.bias": ("out",),
}


def expected_shapes(table, **sizes):
    return {key: tuple(sizes.get(d, d) for d in shape) for key, shape in table.items()}


def state_shapes(module):
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def random_head(head_class, *args, seed=0, **kwargs):
    torch.manual_seed(seed)
    return randomized(head_class(*args, **kwargs))


def level_inputs(batch, channels, template, search, levels, seed=0, template_batch=None):
    generator = torch.Generator().manual_seed(seed)
    z = [torch.randn(template_batch or batch, channels, template, template, generator=generator) for _ in range(levels)]
    x = [torch.randn(batch, channels, search, search, generator=generator) for _ in range(levels)]
    text = [torch.randn(batch, channels, generator=generator) for _ in range(levels)]
    return z, x, text


def test_depthwise_xcorr_has_pysot_parameter_names_and_shapes():
    module = DepthwiseXCorr(12, 20, 10)
    assert state_shapes(module) == expected_shapes(PYSOT_DEPTHWISE_XCORR, **{"in": 12, "hidden": 20, "out": 10})


def test_snlrpn_keys_are_pysot_depthwise_rpn_keys_plus_language_heads():
    visual = SNLRPN(anchor_num=5, in_channels=8, hidden=8, language=False)
    expected = {f"{branch}.{key}" for branch in ("cls", "loc") for key in PYSOT_DEPTHWISE_XCORR}
    assert set(visual.state_dict()) == expected
    language = SNLRPN(anchor_num=5, in_channels=8, hidden=8)
    nl_keys = set(language.state_dict()) - expected
    assert {key.split(".")[0] for key in nl_keys} == {"nl_cls_head", "nl_loc_head"}
    assert language.state_dict()["nl_cls_head.0.weight"].shape == (8, 8, 5, 5)
    assert language.state_dict()["nl_loc_head.3.weight"].shape == (20, 8, 1, 1)


def test_own_language_features_add_a_language_search_conv_and_leave_the_visual_outputs():
    generator = torch.Generator().manual_seed(3)
    shared = SNLRPN(anchor_num=5, in_channels=8, hidden=8, nl_kernel_size=3).eval()
    own = SNLRPN(anchor_num=5, in_channels=8, hidden=8, nl_kernel_size=3, language_features="own").eval()
    assert set(own.state_dict()) - set(shared.state_dict()) == {
        f"nl_conv_search.{key}" for key in ("0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked")
    }
    assert (shared.language_features, own.language_features) == ("shared", "own")
    own.load_state_dict(shared.state_dict(), strict=False)
    z, x, text = level_inputs(2, 8, 6, 10, 1, seed=4)
    with torch.no_grad():
        own.nl_conv_search[0].weight.copy_(torch.randn(own.nl_conv_search[0].weight.shape, generator=generator))
        first, second = shared(z, x, text), own(z, x, text)
        for name in ("cls", "loc"):
            assert torch.equal(first[name], second[name])
        # The language outputs read the branch's own features: they follow its weights.
        assert not torch.equal(first["nl_cls"], second["nl_cls"])
        own.nl_conv_search[0].weight.copy_(own.cls.conv_search[0].weight)
        own.nl_conv_search[1].load_state_dict(own.cls.conv_search[1].state_dict())
        assert torch.equal(own(z, x, text)["nl_cls"], first["nl_cls"])
    visual = SNLRPN(in_channels=8, hidden=8, language=False, language_features="own")
    assert "nl_conv_search.0.weight" not in visual.state_dict() and visual.language_features == "shared"
    pixels = SNLRPN(in_channels=8, hidden=8, language_features="own+pixels")
    assert pixels.language_features == "own+pixels" and pixels.nl_conv_search[0].in_channels == 8 + 3
    with pytest.raises(ValueError, match="language_features must be one of shared, own, own\\+pixels; got 'mine'"):
        SNLRPN(in_channels=8, hidden=8, language_features="mine")


def test_multi_snlrpn_keys():
    head = MultiSNLRPN(anchor_num=15, in_channels=(8, 8, 8))
    keys = set(head.state_dict())
    for name in ("cls_weight", "loc_weight", "nl_cls_weight", "nl_loc_weight"):
        assert head.state_dict()[name].shape == (3,)
    assert {key.split(".")[0] for key in keys} == {"rpn2", "rpn3", "rpn4", "cls_weight", "loc_weight", "nl_cls_weight", "nl_loc_weight"}
    assert head.state_dict()["rpn3.cls.head.3.weight"].shape == (30, 8, 1, 1)
    visual = MultiSNLRPN(anchor_num=5, in_channels=(8, 8, 8), language=False)
    assert {key.split(".")[0] for key in visual.state_dict()} == {"rpn2", "rpn3", "rpn4", "cls_weight", "loc_weight"}


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@settings(max_examples=6)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 6),
    template=st.integers(3, 6),
    extra=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
def test_depthwise_xcorr_fast_equals_reference_and_pysot(backend, batch, channels, template, extra, seed):
    module = random_head(DepthwiseXCorr, channels, channels + 1, 4, seed=seed)
    z, x, _ = level_inputs(batch, channels, template, template + extra, 1, seed)
    with torch.no_grad():
        with using_backend(module, backend):
            fast = module(z[0], x[0])
        with using_backend(module, "reference"):
            reference = module(z[0], x[0])
        pysot = depthwise_xcorr(z[0], x[0], module.state_dict(), "")
    assert torch.equal(fast, reference)
    torch.testing.assert_close(fast, pysot, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@settings(max_examples=5)
@given(
    batch=st.integers(1, 3),
    shared_template=st.booleans(),
    text=st.booleans(),
    anchor_num=st.integers(1, 3),
    extra=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_multi_snlrpn_fast_equals_reference_and_published(backend, batch, shared_template, text, anchor_num, extra, seed):
    """Bit for bit against the reference ops; within float tolerance of pysot's / the published formulation."""
    head = random_head(MultiSNLRPN, anchor_num, (4, 5, 3), seed=seed)
    template_batch = 1 if shared_template else batch
    sizes = [(7, 11 + extra)] * 3
    z, x, language = [], [], []
    for level, channels in enumerate((4, 5, 3)):
        zs, xs, ls = level_inputs(batch, channels, *sizes[level], 1, seed + level, template_batch)
        z += zs
        x += xs
        language += ls
    language = language if text else None
    with torch.no_grad():
        with using_backend(head, backend):
            fast = head(z, x, language)
        with using_backend(head, "reference"):
            reference = head(z, x, language)
        published = multi_level([zf.expand(batch, -1, -1, -1) for zf in z], x, head.state_dict(), "", language)
    assert set(fast) == ({"cls", "loc", "nl_cls", "nl_loc"} if text else {"cls", "loc"})
    assert fast["cls"].shape == (batch, 2 * anchor_num, 5 + extra, 5 + extra)
    assert fast["loc"].shape == (batch, 4 * anchor_num, 5 + extra, 5 + extra)
    assert_equal_outputs(fast, reference)
    assert_close_outputs(fast, published)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_single_level_head_fast_equals_reference_and_published(backend):
    head = random_head(SNLRPN, 3, 6, 6, nl_kernel_size=4, seed=3)
    z, x, language = level_inputs(2, 6, 6, 12, 1, seed=3)
    with torch.no_grad():
        with using_backend(head, backend):
            fast = head(z[0], x[0], language[0])
        with using_backend(head, "reference"):
            reference = head(z, x, language)
        published = snl_level(z[0], x[0], head.state_dict(), "", language[0])
    assert fast["nl_cls"].shape == fast["cls"].shape == (2, 6, 7, 7)
    assert_equal_outputs(fast, reference)
    assert_close_outputs(fast, published)


def test_unweighted_fusion_is_the_mean():
    head = random_head(MultiSNLRPN, 2, (4, 4), weighted=False, language=False)
    assert not any(name.endswith("_weight") and "." not in name for name in head.state_dict())
    z, x, _ = level_inputs(1, 4, 5, 9, 2)
    with torch.no_grad():
        fused = head(z, x)
        per_level = [level(zf, xf) for level, zf, xf in zip(head.levels(), z, x)]
    torch.testing.assert_close(fused["cls"], (per_level[0]["cls"] + per_level[1]["cls"]) / 2, rtol=0, atol=0)


class CorrelationCalls:
    def __init__(self, monkeypatch):
        self.pairs = []
        original = correlation.xcorr_depthwise_many

        def counting(searches, kernels, **kwargs):
            self.pairs.append(len(searches))
            return original(searches, kernels, **kwargs)

        monkeypatch.setattr(correlation, "xcorr_depthwise_many", counting)


@pytest.mark.parametrize("text", [True, False])
def test_one_correlation_call_per_frame(monkeypatch, text):
    """3 levels x 2 branches x 2 modalities in one xcorr_depthwise_many call; the text-free path does half."""
    calls = CorrelationCalls(monkeypatch)
    head = random_head(MultiSNLRPN, 1, (3, 3, 3))
    z, x, language = level_inputs(2, 3, 5, 9, 3)
    state = head.template(z, language if text else None)
    with torch.no_grad():
        head.track(x, state)
    assert calls.pairs == [12 if text else 6]


def test_text_free_path_runs_no_language_head():
    head = random_head(MultiSNLRPN, 1, (3, 3, 3))
    called = []
    for level in head.levels():
        for module in (level.nl_cls_head, level.nl_loc_head):
            module.register_forward_hook(lambda *args: called.append(1))
    z, x, _ = level_inputs(1, 3, 5, 9, 3)
    with torch.no_grad():
        outputs = head(z, x)
    assert set(outputs) == {"cls", "loc"} and not called


def test_conv2d_backend_is_pysot_formulation_and_close():
    head = random_head(MultiSNLRPN, 2, (4, 4, 4))
    z, x, language = level_inputs(2, 4, 5, 10, 3)
    with torch.no_grad():
        with using_backend(head, CONV2D):
            baseline = head(z, x, language)
        fast = head(z, x, language)
    assert_close_outputs(fast, baseline)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_training_gradients_fast_equal_reference(backend):
    """Forward + backward of the head at a training batch: every gradient bit for bit as on the reference ops."""
    z, x, language = level_inputs(3, 4, 5, 9, 3, seed=5)
    language = [kernel.requires_grad_() for kernel in language]
    gradients = {}
    for name in (backend, "reference"):
        head = random_head(MultiSNLRPN, 2, (4, 4, 4), seed=5).train()
        set_backend(head, name)
        outputs = head(z, x, language)
        loss = sum((output * torch.linspace(-1, 1, output.numel()).reshape(output.shape)).sum() for output in outputs.values())
        grads = torch.autograd.grad(loss, [*head.parameters(), *language])
        gradients[name] = grads
    for fast, reference in zip(gradients[backend], gradients["reference"]):
        assert torch.equal(fast, reference)


def test_backend_validation_and_restore():
    head = MultiSNLRPN(1, (3, 3, 3))
    with pytest.raises(ValueError, match="backend must be one of"):
        set_backend(head, "fastest")
    set_backend(head, "reference")
    with using_backend(head, CONV2D):
        assert all(level.cls.backend == CONV2D for level in head.levels()) and head.backend == CONV2D
    assert head.backend == "reference" and head.rpn3.loc.backend == "reference"


def test_feature_count_mismatch_is_a_clear_error():
    head = MultiSNLRPN(1, (3, 3, 3))
    z, x, language = level_inputs(1, 3, 5, 9, 3)
    with pytest.raises(ValueError, match=r"z_fs must hold one feature map per level \(3\), got 2 entries"):
        head.template(z[:2])
    visual = MultiSNLRPN(1, (3, 3, 3), language=False)
    with pytest.raises(ValueError, match="no language branch"):
        visual.template(z, language)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_every_dtype_fast_equals_reference(backend, dtype):
    head = random_head(MultiSNLRPN, 2, (3, 3, 3), seed=7).to(dtype)
    z, x, language = (
        [t.to(dtype) for t in group] for group in level_inputs(2, 3, 5, 10, 3, seed=7)
    )
    with torch.no_grad():
        try:
            with using_backend(head, "reference"):
                reference = head(z, x, language)
        except RuntimeError as error:  # e.g. a CPU convolution torch lacks for this dtype
            pytest.skip(f"torch cannot run the head's convolutions in {dtype} here: {error}")
        with using_backend(head, backend):
            fast = head(z, x, language)
    assert all(output.dtype == dtype for output in fast.values())
    assert_equal_outputs(fast, reference)


def test_gradcheck_through_the_head_in_float64():
    head = random_head(SNLRPN, 1, 2, 2, nl_kernel_size=3, seed=8).double()
    z, x, language = (
        [t.double().requires_grad_() for t in group] for group in level_inputs(1, 2, 5, 7, 1, seed=8)
    )

    def outputs(z_f, x_f, language_kernel):
        return tuple(head(z_f, x_f, language_kernel).values())

    assert torch.autograd.gradcheck(outputs, (z[0], x[0], language[0]))
