"""meddiffusion.devices: device resolution and precision choices."""

import pytest
import torch

from meddiffusion.devices import autocast, resolve_device, set_threads


def test_auto_picks_cpu_without_gpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_request_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        resolve_device("cuda")


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="expected auto, cpu, cuda"):
        resolve_device("tpu")


def test_fp32_is_a_noop_and_bf16_autocasts_matmul():
    a = torch.randn(8, 8)
    with autocast(torch.device("cpu"), "fp32"):
        assert (a @ a).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert (a @ a).dtype == torch.bfloat16


def test_auto_precision_on_cpu_stays_fp32_unless_model_validated():
    a = torch.randn(4, 4)
    with autocast(torch.device("cpu"), "auto", cpu_bf16_ok=False):
        assert (a @ a).dtype == torch.float32


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ValueError, match="fp16 autocast is not supported on the CPU"):
        autocast(torch.device("cpu"), "fp16")


def test_threads():
    old = torch.get_num_threads()
    try:
        assert set_threads(1) == 1
        with pytest.raises(ValueError):
            set_threads(-2)
    finally:
        torch.set_num_threads(old)
