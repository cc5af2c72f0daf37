"""Memory measurement hygiene (a run's memory figures must not include what an earlier run freed), and what a run
records of its machine."""

import ctypes.util
import gc
import os
import signal
import sys

import pytest
import torch

import replab.system
from replab.system import (
    MemoryMonitor,
    StopSignals,
    choose_amp,
    environment,
    release_free_memory,
    resident_memory_mb,
)

GLIBC = sys.platform.startswith("linux") and "libc.so.6" in (ctypes.util.find_library("c") or "")


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_freed_heap_memory_leaves_the_resident_set():
    # 80 KB tensors sit below glibc's mmap threshold, so they live on the heap; the tensor allocated after them
    # keeps the heap's top in use, so free() alone cannot shrink it and the freed pages stay resident.
    tensors = [torch.ones(20_000) for _ in range(4_000)]  # about 305 MiB
    pin = torch.ones(20_000)
    allocated = resident_memory_mb()
    del tensors
    gc.collect()
    release_free_memory(torch.device("cpu"))
    assert allocated - resident_memory_mb() > 0.8 * 4_000 * 20_000 * 4 / 2**20
    assert pin.sum() == 20_000


def test_cuda_caches_and_peaks_are_reset(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append(("reset_peak", device)))
    device = torch.device("cuda", 1)
    release_free_memory(device)
    assert calls == ["empty_cache", ("reset_peak", device)]
    calls.clear()
    release_free_memory(torch.device("cpu"))
    assert calls == []


def test_the_cpu_device_name_carries_the_kernels_vector_instructions():
    env = environment(torch.device("cpu"))
    capability = torch.backends.cpu.get_cpu_capability()
    assert env["cpu_capability"] == capability
    assert env["device_name"] == f"{env['cpu']}, {capability}"


def test_stop_signals_turn_the_first_signal_into_a_request_and_leave_an_ignored_signal_ignored():
    previous = {number: signal.getsignal(number) for number in StopSignals.SIGNALS}
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job started by a script
    try:
        with StopSignals() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.received is None
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.received == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) == previous[signal.SIGTERM]
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _fake_gpu(monkeypatch, name: str, capability: tuple[int, int], hip: str | None = None) -> torch.device:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.version, "hip", hip)
    return torch.device("cuda", 0)


@pytest.mark.parametrize(("name", "capability", "amp"), [
    ("NVIDIA A100-SXM4-40GB", (8, 0), "bf16"),
    ("NVIDIA L4", (8, 9), "bf16"),
    ("NVIDIA H100 80GB HBM3", (9, 0), "bf16"),
    ("Tesla T4", (7, 5), "fp16"),
    ("Tesla V100-SXM2-16GB", (7, 0), "fp16"),
    ("Tesla P100-PCIE-16GB", (6, 0), "none"),
])
def test_choose_amp_follows_the_gpus_native_precisions(monkeypatch, name, capability, amp):
    chosen, reason = choose_amp(_fake_gpu(monkeypatch, name, capability))
    assert chosen == amp
    assert name in reason and f"compute capability {capability[0]}.{capability[1]}" in reason
    assert ("GradScaler" in reason) == (amp == "fp16")


def test_choose_amp_bf16_on_rocm_and_fp32_off_cuda(monkeypatch):
    assert choose_amp(_fake_gpu(monkeypatch, "AMD Instinct MI250X", (9, 0), hip="6.0"))[0] == "bf16"
    for device in (torch.device("cpu"), torch.device("mps")):
        amp, reason = choose_amp(device)
        assert amp == "none" and "fp32" in reason and device.type in reason


@pytest.mark.parametrize(("seen", "source"), [(1234.5, "nvml"), (None, "torch_reserved")])
def test_gpu_memory_comes_from_nvml_only_where_it_lists_this_process(monkeypatch, seen, source):
    """NVML inside a container (Colab) lists no process of ours: PyTorch's reserved memory is measured instead."""
    monkeypatch.setattr(replab.system, "_NvmlProcessMemory", lambda device: (lambda: seen))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 512 * 2**20)
    monitor = MemoryMonitor(torch.device("cuda", 0))
    assert monitor.source == source
    assert monitor._read() == (seen if seen is not None else 512.0)


def test_environment_records_the_speed_variables_that_are_set(monkeypatch):
    from replab.system import SPEED_VARIABLES, environment

    for name in SPEED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")
    recorded = environment(torch.device("cpu"))["environment_variables"]
    assert recorded == {"OMP_WAIT_POLICY": "PASSIVE", "THP_MEM_ALLOC_ENABLE": "1"}
