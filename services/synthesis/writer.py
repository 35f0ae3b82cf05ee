"""Encoding and storing rendered scenes off the GPU's critical path.

PNG encoding and storage writes take a large share of a batch's time on a fast GPU; done inline they
leave the GPU idle between batches. `SceneWriter` runs them in a small thread pool while the renderer
goes on with the next batch. It is bounded (the renderer pauses when too many scenes wait), and
`finish` waits for every write and says which scenes landed: the stage marks only those done and returns
(which acks the task, `acks_late`) only after all of them landed, so a process that dies mid-task loses
nothing: its message is redelivered, and the scenes whose image exists are skipped.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait

from dreammask.shared.masks import png_bytes


class SceneWriter:
    def __init__(self, store, threads: int = 2, max_pending: int = 16):
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="synthesis-writer")
        self._slots = threading.BoundedSemaphore(max(1, max_pending))
        self._futures: list[tuple[str, Future]] = []

    def submit(self, scene_id: str, record_key: str, record, image_key: str, image) -> None:
        """Queue one scene's writes; blocks while `max_pending` scenes are still waiting or writing."""
        self._slots.acquire()
        try:
            future = self._pool.submit(self._write, record_key, record, image_key, image)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append((scene_id, future))

    def _write(self, record_key: str, record, image_key: str, image) -> None:
        data = png_bytes(image)
        # Record first, image last: the image is the idempotency marker, so a crash between the two
        # re-renders the scene rather than leaving an image without provenance.
        self.store.put_json(record_key, record)
        self.store.put_bytes(image_key, data, "image/png")

    def landed(self) -> list[str]:
        """Scenes whose writes already finished without error (does not wait)."""
        return [sid for sid, f in self._futures if f.done() and f.exception() is None]

    def finish(self) -> tuple[list[str], list[tuple[str, BaseException]]]:
        """Wait for every queued write; (scenes that landed, [(scene, error), ...] for those that did not)."""
        wait([f for _, f in self._futures])
        self._pool.shutdown(wait=True)
        landed, errors = [], []
        for sid, f in self._futures:
            err = f.exception()
            if err is None:
                landed.append(sid)
            else:
                errors.append((sid, err))
        return landed, errors
