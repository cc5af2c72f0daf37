"""Memory measurement hygiene (a run's memory figures must not include what an earlier run freed), and what a run
records of its machine."""

import ctypes.util
import gc
import os
import signal
import sys

import pytest
import torch

from replab.system import StopSignals, environment, release_free_memory, resident_memory_mb

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
