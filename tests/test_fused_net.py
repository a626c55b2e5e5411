"""The fused CPU network (snlt_fast.models.fused_net, csrc/fused_net/): NanoTrack's search
side as one C++ call, against the batch-norm-folded model it is built from, to float
rounding (its sums run in another order, with fused multiply-adds); its layers one by one on
odd shapes; its errors; and the tracker that runs it (precision="fast" on a CPU)."""

from pathlib import Path

import pytest
import torch
from torch import nn

from model_helpers import assert_close_outputs, randomize_batchnorm

from snlt_fast.models import NanoTrack, load_checkpoint
from snlt_fast.models.fused_net import FusedSearchStep, Program, supports
from snlt_fast.nn import fold_batchnorm
from snlt_fast._backends import native_module
from snlt_fast.tracker.fast import plan_fast

WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "nanotrack"


def _crops(batch, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z = torch.rand(batch, 3, 127, 127, generator=generator) * 255
    x = torch.rand(batch, 3, 255, 255, generator=generator) * 255
    return z.contiguous(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)


def _folded(model):
    return fold_batchnorm(model).to(memory_format=torch.channels_last).eval()


def _assert_fused_matches(model, batch, template_batch=None, text=None):
    step = FusedSearchStep(model)
    z, x = _crops(batch)
    template = model.template(z[: template_batch or batch], text)
    expected, got = model.track(x, template), step(x, template)
    assert_close_outputs(got, expected, rtol=1e-4, atol=1e-5)
    return step, x, template


@pytest.mark.parametrize("version", [1, 2, 3])
def test_fused_network_matches_the_folded_model_with_random_weights(version):
    torch.manual_seed(version)
    model = _folded(randomize_batchnorm(NanoTrack(version)))
    _assert_fused_matches(model, batch=2)
    _assert_fused_matches(model, batch=3, template_batch=1)  # one template shared by the crops


@pytest.mark.parametrize("version", [1, 2, 3])
def test_fused_network_matches_the_folded_model_with_the_released_weights(version):
    path = WEIGHTS / f"nanotrackv{version}.pth"
    if not path.exists():
        pytest.skip(f"{path} not found")
    _assert_fused_matches(_folded(load_checkpoint(path)), batch=1)


def test_fused_network_runs_the_language_head(tmp_path):
    from training_helpers import write_word_vectors

    torch.manual_seed(0)
    model = _folded(randomize_batchnorm(NanoTrack(3, language=str(write_word_vectors(tmp_path / "words.txt")))))
    step, x, template = _assert_fused_matches(model, batch=2, text=["the red box", "the small square"])
    assert set(step(x, template)) == {"cls", "loc", "nl_cls", "nl_loc"}


def test_workspace_is_kept_and_outputs_are_the_callers():
    torch.manual_seed(0)
    model = _folded(randomize_batchnorm(NanoTrack(2)))
    step = FusedSearchStep(model)
    z, x = _crops(1)
    template = model.template(z)
    first = step(x, template)
    kept = {name: value.clone() for name, value in first.items()}
    size = step._workspace.numel()
    assert size > 0
    step(torch.flip(x, dims=[3]).contiguous(memory_format=torch.channels_last), template)
    assert step._workspace.numel() == size
    for name in kept:
        assert torch.equal(first[name], kept[name]), f"a second call overwrote the first call's {name}"


# ---------------------------------------------------------------------- layers on odd shapes


def _assert_program_matches(module, emit, x):
    """The program that emit(program) builds, run on x, against module(x)."""
    program = Program()
    out_slot = emit(program)
    search = x.permute(0, 2, 3, 1).contiguous()
    (got,) = native_module().fused_net_run(search, program.weights, program.flat(), [], [out_slot], torch.empty(0))
    with torch.no_grad():
        expected = module(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "layers, channels",
    [
        ([nn.Conv2d(3, 8, 3, 2, 1), nn.Hardswish()], 3),  # the stem
        ([nn.Conv2d(12, 12, 3, 1, 1, groups=12, bias=False), nn.ReLU6()], 12),  # channels not in whole vectors
        ([nn.Conv2d(16, 16, 5, 2, 2, groups=16), nn.ReLU()], 16),  # size 5, stride 2
        ([nn.Conv2d(24, 24, 7, 1, 3, groups=24)], 24),  # a size that is not unrolled
        ([nn.Conv2d(16, 16, 2, 1, 0, groups=16), nn.ReLU6(), nn.Conv2d(16, 5, 1)], 16),  # V3's 2x2 reduction
        ([nn.Conv2d(9, 20, 1, bias=False), nn.Hardsigmoid()], 9),
        ([nn.Conv2d(40, 24, 1), nn.ReLU()], 40),  # point-wise: two vectors of outputs, then one
    ],
)
def test_layers_match_pytorch_on_odd_shapes(layers, channels):
    torch.manual_seed(0)
    sequence = nn.Sequential(*layers).eval()
    _assert_program_matches(sequence, lambda program: program.sequence(sequence, 0), torch.randn(2, channels, 23, 17))


def test_residual_block_matches_pytorch():
    from snlt_fast.models.nanotrack import InvertedResidual

    torch.manual_seed(0)
    block = fold_batchnorm(randomize_batchnorm(InvertedResidual(24, 88, 24, 3, 1, True, True)))
    _assert_program_matches(block, lambda program: program.block(block, 0), torch.randn(1, 24, 13, 11))


# ---------------------------------------------------------------------- errors


def test_unfolded_models_and_unknown_layers_are_refused():
    with pytest.raises(ValueError, match="fold batch-norm first"):
        Program().sequence(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), 0)
    with pytest.raises(ValueError, match="no layer for GELU"):
        Program().sequence(nn.Sequential(nn.Conv2d(3, 4, 1), nn.GELU()), 0)
    with pytest.raises(ValueError, match="cannot fuse"):
        Program().sequence(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.ReLU6()), 0)
    with pytest.raises(ValueError, match="dense or depth-wise"):
        Program().sequence(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), 0)
    with pytest.raises(ValueError, match="float32 on the CPU"):
        FusedSearchStep(NanoTrack(2).double())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda rows: rows[:-1], "integers a row"),
        (lambda rows: [rows[0], 7] + rows[2:], "reads slot 7"),
        (lambda rows: [42] + rows[1:], "unknown op 42"),
        (lambda rows: rows[:3] + [5] + rows[4:], "no weight 5"),
        (lambda rows: rows[:8] + [9] + rows[9:], "unknown activation 9"),
    ],
)
def test_malformed_programs_raise_instead_of_reading_out_of_bounds(change, message):
    program = Program()
    out_slot = program.sequence(nn.Sequential(nn.Conv2d(4, 6, 1), nn.ReLU()), 0)
    x = torch.randn(1, 5, 5, 4)
    with pytest.raises(ValueError, match=message):
        native_module().fused_net_run(x, program.weights, change(program.flat()), [], [out_slot], torch.empty(0))
    with pytest.raises(ValueError, match=r"weight 1 is \[4, 6\] where the map needs"):
        native_module().fused_net_run(torch.randn(1, 5, 5, 3), program.weights, program.flat(), [], [out_slot], torch.empty(0))


# ---------------------------------------------------------------------- in the tracker


def test_fast_plan_runs_nanotrack_on_the_fused_network_and_other_backends_eagerly():
    torch.manual_seed(0)
    model = randomize_batchnorm(NanoTrack(1))
    fast = plan_fast(model).model
    assert isinstance(fast.track, FusedSearchStep) and supports(fast)
    z, x = _crops(1)
    template = fast.template(z)
    with fast.using_backend("reference"):
        checked = fast.track(x, template)
    eager = type(fast).track(fast, x, template)
    assert all(torch.equal(checked[name], eager[name]) for name in eager)
    assert not isinstance(plan_fast(model, compile=True).model.track, FusedSearchStep)


def test_paths_that_share_what_they_write_are_refused():
    program = Program()
    shared = program.sequence(nn.Sequential(nn.Conv2d(4, 4, 1)), 0)
    program.path(shared, [nn.Sequential(nn.Conv2d(4, 4, 1))])
    program.path(shared, [nn.Sequential(nn.Conv2d(4, 4, 1))])
    rows = program.flat()
    x, run = torch.randn(1, 3, 3, 4), native_module().fused_net_run
    assert len(run(x, program.weights, rows, [], [2, 3], torch.empty(0), program.path_starts)) == 2
    reads_other_path = rows[:20] + [rows[20], 2] + rows[22:]  # the second path reads the first's output
    with pytest.raises(ValueError, match="reads slot 2 before any instruction wrote it, or from another path"):
        run(x, program.weights, reads_other_path, [], [3], torch.empty(0), program.path_starts)
    writes_shared = rows[:22] + [shared] + rows[23:]  # the second path overwrites the slot both read
    with pytest.raises(ValueError, match="writes slot 1, which another part"):
        run(x, program.weights, writes_shared, [], [2], torch.empty(0), program.path_starts)
    with pytest.raises(ValueError, match="path starts must be increasing"):
        run(x, program.weights, rows, [], [2], torch.empty(0), [2, 1])
