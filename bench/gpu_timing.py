"""Where the time of a GPU stage goes: per-stage device time, host time, copies, and the GPU's idle time.

`StageTimer` is handed to a component that knows its stages (`GligenBatchPipeline.timer`). Device stages
(`gpu(name)`) are timed with CUDA events recorded on the current stream, so they cost no synchronisation
on the hot path; host stages (`host(name)`) with the wall clock; copies (`copy(name, bytes)`) are counted.
`summary(wall_s)` resolves the events once at the end: busy = the sum of the device stages, idle =
wall - busy (time the GPU had nothing of ours queued: the host was preparing, copying or waiting).
On the CPU (the --tiny check) device stages are timed with the wall clock, as the CPU is the device.

A device stage's event span runs from when the stream reaches its first kernel to when it finishes its
last: a host too slow to launch kernels leaves gaps inside the span that count as busy, so "busy" is an
upper bound of the kernels' own time (a launch-bound stage shows as a per-image time that stops falling
with the batch size, not as idle time).
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager


class StageTimer:
    def __init__(self, device: str):
        self.cuda = str(device).startswith("cuda")
        self._events: list[tuple[str, object, object]] = []
        self._device_s: dict[str, list[float]] = defaultdict(list)
        self._host_s: dict[str, list[float]] = defaultdict(list)
        self._copies: dict[str, list[int]] = defaultdict(list)

    @contextmanager
    def gpu(self, name: str):
        if not self.cuda:
            t = time.perf_counter()
            try:
                yield
            finally:
                self._device_s[name].append(time.perf_counter() - t)
            return
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        try:
            yield
        finally:
            end.record()
            self._events.append((name, start, end))

    @contextmanager
    def host(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self._host_s[name].append(time.perf_counter() - t)

    def copy(self, name: str, nbytes: int) -> None:
        self._copies[name].append(int(nbytes))

    def reset(self) -> None:
        self.__init__("cuda" if self.cuda else "cpu")

    def summary(self, wall_s: float, images: int | None = None) -> dict:
        """Per stage: calls, total ms (and ms per image where `images` is given); busy, idle, copies."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            for name, start, end in self._events:
                self._device_s[name].append(start.elapsed_time(end) / 1000.0)
            self._events.clear()

        def table(d: dict[str, list[float]]) -> dict:
            out = {}
            for name, xs in sorted(d.items()):
                row = {"calls": len(xs), "total_ms": round(1000 * sum(xs), 2)}
                if images:
                    row["ms_per_image"] = round(1000 * sum(xs) / images, 3)
                out[name] = row
            return out

        busy = sum(sum(xs) for xs in self._device_s.values())
        return {
            "clock": "cuda events" if self.cuda else "wall clock (CPU is the device)",
            "wall_ms": round(1000 * wall_s, 2),
            "device_stages": table(self._device_s),
            "host_stages": table(self._host_s),
            "device_busy_ms": round(1000 * busy, 2),
            "device_idle_ms": round(1000 * (wall_s - busy), 2),
            "device_busy_fraction": round(busy / wall_s, 4) if wall_s > 0 else None,
            "copies": {k: {"count": len(v), "bytes": sum(v)} for k, v in sorted(self._copies.items())},
        }
