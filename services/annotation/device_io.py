"""Work handed between the device and the host without stopping either, and where the time goes.

On a GPU, results leave the device through pinned host buffers with non-blocking copies, each followed
by an event: the host waits for that event only (never `torch.cuda.synchronize`), so the device keeps
running whatever was queued after it (the next chunk's encoder). Uploads go the same way. Host work
(image resizing, mask clean-up, RLE) runs in a thread pool while the device computes; OpenCV and numpy
release the GIL. On the CPU the device *is* the host: a copy to the host is the tensor itself, the
"pool" runs each job when it is submitted, and the same code runs in order.

`StepTimer` records each step: device steps between two events on their stream (the wall clock on the
CPU), host steps by the wall clock of the thread that ran them, the copies each way with their bytes,
and the device's idle time, the wall time of the run less the union of its device steps.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


def is_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def to_device(array, device, dtype=None) -> torch.Tensor:
    """A small host array on `device` without stopping the host: on a GPU through pinned memory with a
    non-blocking copy (a copy from pageable memory would first wait for everything queued before it)."""
    t = torch.as_tensor(np.asarray(array))
    if dtype is not None:
        t = t.to(dtype)
    if not is_cuda(device):
        return t
    return t.pin_memory().to(device, non_blocking=True)


class InlineExecutor:
    """The `Executor.submit` of a pool without threads: the job runs at once (the CPU device, where
    device work and host work share the same cores)."""

    def submit(self, fn, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - handed to whoever asks for the result, as a pool does
            future.set_exception(e)
        return future

    def shutdown(self, wait: bool = True) -> None:
        pass


def host_pool(threads: int, device) -> ThreadPoolExecutor | InlineExecutor:
    """Threads for host work beside the device: `threads` > 0 that many, 0 none (inline), < 0 automatic
    (none on the CPU, else up to 8 of the machine's cores)."""
    if threads < 0:
        threads = 0 if not is_cuda(device) else min(8, max(1, (os.cpu_count() or 2) - 1))
    if threads == 0:
        return InlineExecutor()
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="annotation-host")


@dataclass
class Pending:
    """A tensor on its way to the host: `wait()` blocks until its copy's event has passed (not the
    whole device) and returns the host tensor."""

    tensor: torch.Tensor
    event: Any = None

    def wait(self) -> torch.Tensor:
        if self.event is not None:
            self.event.synchronize()
        return self.tensor

    def numpy(self) -> np.ndarray:
        return self.wait().numpy()


@dataclass
class _Step:
    name: str
    start: Any
    end: Any


@dataclass
class StepTimer:
    """Per-step times of one run on `device` (see the module docstring)."""

    device: torch.device
    device_steps: list[_Step] = field(default_factory=list)
    host_s: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        self.device = torch.device(self.device)
        self.cuda = self.device.type == "cuda"
        self.t0 = time.perf_counter()
        self.origin = self._mark() if self.cuda else None

    def _mark(self, stream=None):
        ev = torch.cuda.Event(enable_timing=True)
        ev.record(stream)
        return ev

    @contextmanager
    def device_step(self, name: str, stream=None):
        """Time the device work queued inside the block (on `stream`, default the current one)."""
        if self.cuda:
            start = self._mark(stream)
            yield
            self.device_steps.append(_Step(name, start, self._mark(stream)))
        else:
            t = time.perf_counter()
            yield
            self.device_steps.append(_Step(name, t, time.perf_counter()))

    @contextmanager
    def host_step(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add_host(name, time.perf_counter() - t)

    def add_host(self, name: str, seconds: float) -> None:
        with self._lock:
            self.host_s[name] = self.host_s.get(name, 0.0) + seconds

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + int(n)

    def summary(self) -> dict[str, Any]:
        """Every figure of the run; call once its results are on the host (its events have passed)."""
        wall = time.perf_counter() - self.t0
        intervals = []
        for s in self.device_steps:
            if self.cuda:
                s.end.synchronize()
                a = self.origin.elapsed_time(s.start) / 1e3
                b = self.origin.elapsed_time(s.end) / 1e3
            else:
                a, b = s.start - self.t0, s.end - self.t0
            intervals.append((s.name, a, b))
        per_step: dict[str, float] = {}
        for name, a, b in intervals:
            per_step[name] = per_step.get(name, 0.0) + (b - a)
        busy, reach = 0.0, float("-inf")
        for _, a, b in sorted(intervals, key=lambda x: x[1]):  # union: steps on two streams may overlap
            if b > reach:
                busy += b - max(a, reach)
                reach = b
        return {
            "wall_s": round(wall, 6),
            "device_s": {k: round(v, 6) for k, v in per_step.items()},
            "device_busy_s": round(busy, 6),
            "device_idle_s": round(max(wall - busy, 0.0), 6),
            "host_s": {k: round(v, 6) for k, v in self.host_s.items()},
            **{k: v for k, v in sorted(self.counts.items())},
        }


class Transfers:
    """Copies between the host and `device`, counted on a `StepTimer`; a side stream for device work
    that must not wait behind the main stream (packing a chunk's windows while the next chunk encodes)."""

    def __init__(self, device, timer: StepTimer | None = None):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.timer = timer
        self._side = None

    @property
    def side(self):
        if self._side is None and self.cuda:
            self._side = torch.cuda.Stream(self.device)
        return self._side

    def _count(self, direction: str, t: torch.Tensor) -> None:
        if self.timer is not None:
            self.timer.count(f"{direction}_copies")
            self.timer.count(f"{direction}_bytes", t.numel() * t.element_size())

    def to_host(self, t: torch.Tensor, stream=None) -> Pending:
        """Start copying `t` to the host (into pinned memory, non-blocking, on `stream`)."""
        if not self.cuda:
            return Pending(t)
        stream = stream or torch.cuda.current_stream(self.device)
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        with torch.cuda.stream(stream):
            host.copy_(t, non_blocking=True)
            event = torch.cuda.Event()
            event.record(stream)
        self._count("d2h", t)
        return Pending(host, event)

    def pin(self, array: np.ndarray) -> torch.Tensor:
        """A host tensor of `array` ready for a non-blocking upload (pinned on a GPU machine)."""
        t = torch.from_numpy(np.ascontiguousarray(array))
        return t.pin_memory() if self.cuda else t

    def upload(self, t: torch.Tensor | np.ndarray) -> torch.Tensor:
        """`t` on the device; from pinned memory the copy does not block the host."""
        if isinstance(t, np.ndarray):
            t = self.pin(t)
        if not self.cuda:
            return t
        self._count("h2d", t)
        return t.to(self.device, non_blocking=t.is_pinned())

    @contextmanager
    def on_side_stream(self, after=None):
        """Queue the block's device work on the side stream, after the main stream's work queued so far
        (`after`: an event to wait for instead). The CPU runs it in place."""
        if not self.cuda:
            yield None
            return
        main = torch.cuda.current_stream(self.device)
        if after is None:
            self.side.wait_stream(main)
        else:
            self.side.wait_event(after)
        with torch.cuda.stream(self.side):
            yield self.side

    def mark(self, stream=None):
        """An event after the work queued so far on `stream` (None on the CPU)."""
        if not self.cuda:
            return None
        ev = torch.cuda.Event()
        ev.record(stream)
        return ev


@dataclass
class DeviceRun:
    """What one annotation run shares between its steps: the timer, the transfers, the host pool."""

    device: torch.device
    pool: Any
    timer: StepTimer = None  # type: ignore[assignment]
    transfers: Transfers = None  # type: ignore[assignment]

    def __post_init__(self):
        self.device = torch.device(self.device)
        self.timer = self.timer or StepTimer(self.device)
        self.transfers = self.transfers or Transfers(self.device, self.timer)
