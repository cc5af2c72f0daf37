"""The machine a run executes on: device choice, environment record, memory measurement, the processes of a
distributed run (rank, world size, sums across ranks), and the signals that ask a run to stop."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import platform
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist

import replab

log = logging.getLogger("replab.system")


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an explicit device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but CUDA is not available here: use --device auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps was asked for but MPS is not available here: use --device auto or cpu")
    return device


def git_commit() -> str | None:
    """The commit of the replab source tree (with ``-dirty`` if it has uncommitted changes), if it is a checkout."""
    root = Path(replab.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def _cpuinfo(field: str) -> str | None:
    """The value of the first ``field`` line of /proc/cpuinfo (None where there is none, or no such file)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1]
    except OSError:
        pass
    return None


def cpu_name() -> str:
    name = _cpuinfo("model name")
    return name.strip() if name is not None else platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where unknown)."""
    return set((_cpuinfo("flags") or "").split())


def native_bf16_cpu() -> bool | None:
    """Whether the CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16); None where unknown."""
    flags = cpu_flags()
    if not flags:
        return None
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def native_bf16_cuda(device: torch.device) -> bool:
    """Whether the GPU computes in bf16 natively (compute capability 8.0+: A100, L4, H100; and ROCm GPUs). Older
    ones (T4, V100) only emulate it, much more slowly: ``torch.cuda.is_bf16_supported()`` says yes to those too."""
    return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8


def choose_amp(device: torch.device) -> tuple[str, str]:
    """The ``--amp`` precision to train with on ``device``, and the reason, in one line.

    ``bf16`` where the GPU computes in bf16 natively (fp32's range: no loss scaling); else ``fp16`` where it has fp16
    tensor cores (compute capability 7.x: V100, T4; the trainer scales the loss with a ``GradScaler``); else ``none``
    (fp32): GPUs without tensor cores, the CPU (bf16 there pays only with bf16 instructions, not for every model,
    and replab's CPU runs are fp32) and MPS.
    """
    if device.type != "cuda":
        return "none", f"no CUDA GPU (device {device.type}): fp32"
    major, minor = torch.cuda.get_device_capability(device)
    gpu = f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"
    if native_bf16_cuda(device):
        return "bf16", f"{gpu} computes in bf16 natively: bf16 autocast, with fp32's range (no loss scaling)"
    if major >= 7:
        return "fp16", (f"{gpu} has no native bf16 (it needs 8.0+) but fp16 tensor cores: fp16 autocast, the loss "
                        "scaled by a GradScaler so that small gradients do not underflow")
    return "none", f"{gpu} has neither bf16 nor fp16 tensor cores: fp32"


def cpu_capability() -> str | None:
    """The vector instructions PyTorch's CPU kernels use here (``AVX2``, ``AVX512``, ...; None where unknown): two
    CPUs of one name can differ in it, and so in speed and in the last digits of results."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return None


SPEED_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "THP_MEM_ALLOC_ENABLE")


def environment(device: torch.device) -> dict:
    """Versions, machine and device, as recorded next to every run's metrics. On the CPU the device name carries the
    kernels' vector instructions (``AMD EPYC, AVX512``), so that runs on different CPUs of one name stay apart."""
    capability, cpu = cpu_capability(), cpu_name()
    info = {
        "replab_version": replab.__version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_threads": torch.get_num_threads(),
        "cpu_capability": capability,
        "device": str(device),
        "device_name": f"{cpu}, {capability}" if capability else cpu,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "hostname": platform.node(),
        # the settings of the environment that change speed (threads, OpenMP's waiting, huge pages for PyTorch's
        # CPU allocations), those that are set
        "environment_variables": {k: os.environ[k] for k in SPEED_VARIABLES if k in os.environ},
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["device_name"] = props.name
        info["device_memory_mb"] = round(props.total_memory / 2**20)
    elif device.type == "mps":
        info["device_name"] = "Apple MPS"
    return info


def resident_memory_mb() -> float:
    """Resident set size of this process, in MiB (Linux /proc; falls back to the peak from ``resource``)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def release_free_memory(device: torch.device) -> None:
    """Give memory that no tensor uses back to the system, and restart the peak counters, before a run starts.

    A grid trains its runs one after another in one process. Without this, a run's memory figures would include
    the previous run's freed memory: glibc keeps freed heap pages resident (``malloc_trim`` returns them), and
    PyTorch's CUDA allocator keeps its cached blocks and its peak since process start.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
            pass


class _NvmlProcessMemory:
    """Device memory used by this process as nvidia-smi shows it, through NVML (``nvidia-ml-py``), if available."""

    def __init__(self, device: torch.device):
        import pynvml  # an optional dependency (pip install replab[gpu]), NVIDIA machines only: imported when used

        pynvml.nvmlInit()
        self.nvml = pynvml
        index = device.index if device.index is not None else torch.cuda.current_device()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.pid = os.getpid()

    def __call__(self) -> float | None:
        for process in self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
            if process.pid == self.pid and process.usedGpuMemory is not None:
                return process.usedGpuMemory / 2**20
        return None


class MemoryMonitor:
    """Samples memory in a background thread; ``steady()`` marks the end of warm-up.

    CPU: resident memory of the process. CUDA: device memory of the process through NVML (what nvidia-smi shows),
    else ``torch.cuda.memory_reserved``; plus ``max_memory_allocated``/``memory_reserved`` from PyTorch.
    Averages count only samples taken after warm-up ("steady state").
    """

    def __init__(self, device: torch.device, interval: float = 0.2):
        self.device = device
        self.interval = interval
        self.source = "rss"
        self._read = resident_memory_mb
        if device.type == "cuda":
            try:
                self._read = _NvmlProcessMemory(device)
                self.source = "nvml"
                if self._read() is None:  # NVML does not list this process: a container's own PIDs (Colab)
                    raise LookupError("this process is not among NVML's")
            except Exception:  # no NVML library or no permission: PyTorch's own view of the device
                self._read = lambda: torch.cuda.memory_reserved(device) / 2**20
                self.source = "torch_reserved"
        self._samples: list[float] = []
        self._steady = False
        self._paused = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> MemoryMonitor:
        self._thread = threading.Thread(target=self._run, name="replab-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        if self._paused:
            return
        value = self._read()
        if value is not None and self._steady:
            with self._lock:
                self._samples.append(value)

    @contextlib.contextmanager
    def paused(self):
        """No samples inside the block: work between epochs that is not training (an LSTM's text sample)."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def steady(self) -> None:
        """Warm-up is over: samples from now on count towards the steady-state mean."""
        self._steady = True

    def epoch_report(self) -> dict:
        """Mean and peak of the samples since the last report (then starts a new window)."""
        self.sample()
        with self._lock:
            samples, self._samples = self._samples, []
        report = {
            "source": self.source,
            "steady_mean_mb": round(sum(samples) / len(samples), 1) if samples else None,
            "peak_mb": round(max(samples), 1) if samples else None,
            "samples": len(samples),
        }
        if self.source == "rss":
            report["peak_mb"] = round(max([resident_memory_mb(), *samples]), 1)
        if self.device.type == "cuda":
            report["max_allocated_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
            report["reserved_mb"] = round(torch.cuda.memory_reserved(self.device) / 2**20, 1)
        return report


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class Stopwatch:
    """Wall-clock seconds, synchronising the device first so asynchronous GPU work is counted."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start = self._now()

    def _now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def elapsed(self) -> float:
        return self._now() - self.start


class Distributed:
    """Rank and world size (1 process unless launched by torchrun), and sums across ranks."""

    def __init__(self, device_type: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world_size > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        keys = sorted(totals)
        values = torch.stack([totals[k].detach().double() for k in keys])
        if self.enabled:
            values = values.to("cpu") if dist.get_backend() == "gloo" else values
            dist.all_reduce(values)
        return dict(zip(keys, values.tolist(), strict=True))

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is true on any rank (collective: every rank calls it at the same point; ``device``: the
        rank's training device, where NCCL needs the tensor)."""
        if not self.enabled:
            return flag
        return self.sum({"flag": torch.tensor(float(flag), device=device)})["flag"] > 0


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (``kill``, a scheduler preempting the job, ``torchrun`` passing either on)
    turned into a request to stop at the next safe point, for the ``with`` block.

    The first signal only sets ``received`` (its name, e.g. ``"SIGTERM"``) and logs what will happen; the trainer
    polls it and stops after the current step with a checkpoint, so nothing trained is lost. A second signal, a
    second or more later, raises ``KeyboardInterrupt`` (with the signal's name) at once, as Python's default Ctrl-C
    does. Only the main thread can install signal handlers: elsewhere this does nothing. A signal the process
    ignores (``SIG_IGN``: a shell's background jobs ignore SIGINT) stays ignored. The earlier handlers are
    restored on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    # A repeat sooner than this is the first request delivered twice, not a second one: a terminal's Ctrl-C reaches
    # torchrun's workers directly and once more through torchrun, which passes its signals on.
    SAME_REQUEST_SECONDS = 1.0

    def __init__(self):
        self.received: str | None = None
        self._received_at = 0.0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                previous = signal.getsignal(number)
                if previous is not signal.SIG_IGN:
                    self._previous[number] = signal.SIG_DFL if previous is None else previous  # None: set from C
                    signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, _frame) -> None:
        now = time.monotonic()
        if self.received is not None:
            if now - self._received_at < self.SAME_REQUEST_SECONDS:
                return
            raise KeyboardInterrupt(signal.Signals(number).name)
        self.received, self._received_at = signal.Signals(number).name, now
        log.info("%s received: stopping after the current step, with a checkpoint to --resume from (send it "
                    "again to stop at once)", self.received)

    def __exit__(self, *exc) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()
