"""Helpers shared by the benchmark suites."""

import torch


def synchronized(function, device):
    """`function`, made to wait for the GPU before it returns so that timings include the device work."""
    if torch.device(device).type != "cuda":
        return function

    def run():
        result = function()
        torch.cuda.synchronize()
        return result

    return run
