"""Where precision="fast" gets its speed: the search-side `track` step of each network,
one step of the mode at a time, against the exact step (the baseline), at batch 1.

Rows: exact (the model as given); batch-norm folded; folded + channels-last weights and
crops; + bfloat16 autocast (AMX / AVX-512 BF16 CPUs compute it; elsewhere oneDNN emulates
it, and the row shows what that costs); + torch.compile (inductor, frozen weights; the
compile time is recorded as extra_info); for NanoTrack, the fused network instead
(snlt_fast.models.fused_net: one C++ call for the whole step). The tracker's "fast" keeps the steps that are
faster on the machine it runs on (snlt_fast.tracker.fast); bench_tracker.py and
bench_nanotrack.py time the whole per-frame step.
"""

import time

import pytest
import torch

from bench._skips import skip_without_minilm
from bench._timing import synchronized

from snlt_fast.models import NanoTrack, build_model
from snlt_fast.models.fused_net import FusedSearchStep
from snlt_fast.nn import fold_batchnorm
from snlt_fast.tracker.fast import cpu_computes_bfloat16

SENTENCE = "man riding a motorbike wearing a white helmet"
NETWORKS = {"alexnet": ("snlt_alex", 287), "resnet50": ("snlt_r50", 255), "nanotrack_v2": (None, 255)}
STEPS = (
    "exact",
    "folded",
    "folded + channels-last",
    "folded + channels-last + bf16",
    "folded + channels-last + compile",
    "folded + channels-last + fused network",
)
ROUNDS = {"alexnet": 10, "resnet50": 4, "nanotrack_v2": 60}
_MODELS = {}


def _model(network):
    if network not in _MODELS:
        torch.manual_seed(0)
        arch, _ = NETWORKS[network]
        if arch is None:
            model = NanoTrack(2)
        else:
            skip_without_minilm()
            model = build_model(arch)
        # Batch-norm statistics away from (0, 1), as a trained network's are.
        for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            norm.running_var.uniform_(0.5, 1.5)
        _MODELS[network] = model.eval()
    return _MODELS[network]


def _crops(model, instance_size, memory_format):
    generator = torch.Generator().manual_seed(0)
    template = torch.rand(1, 3, 127, 127, generator=generator) * 255
    search = torch.rand(1, 3, instance_size, instance_size, generator=generator) * 255
    return template.contiguous(memory_format=memory_format), search.contiguous(memory_format=memory_format)


@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("step", STEPS)
def test_fast_mode_steps(benchmark, network, step):
    arch, instance_size = NETWORKS[network]
    if "fused network" in step and arch is not None:
        pytest.skip("the fused network runs NanoTrack models")
    model = _model(network)
    benchmark.group = f"fast mode steps: {network} track B=1 cpu (the exact step is the baseline)"
    benchmark.extra_info["impl"] = step
    if step == "exact":
        benchmark.extra_info["baseline"] = True
    if "bf16" in step:
        benchmark.extra_info["cpu_computes_bf16"] = cpu_computes_bfloat16()
    memory_format = torch.channels_last if "channels-last" in step else torch.contiguous_format
    variant = model if step == "exact" else fold_batchnorm(model).to(memory_format=memory_format)
    template, search = _crops(variant, instance_size, memory_format)
    text = SENTENCE if model.has_language else None
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in step)
    with torch.no_grad(), autocast:
        state = variant.template(template, text)
        track = FusedSearchStep(variant) if "fused network" in step else variant.track
        run = lambda: track(search, state)  # noqa: E731
        if "compile" in step:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
            compiled = torch.compile(run, dynamic=False)
            start = time.perf_counter()
            compiled()
            benchmark.extra_info["compile_s"] = round(time.perf_counter() - start, 1)
            run = compiled
        benchmark.pedantic(synchronized(run, "cpu"), rounds=ROUNDS[network], iterations=1, warmup_rounds=2)
