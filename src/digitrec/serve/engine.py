"""The inference thread: runs the model off the event loop, batching concurrent requests.

Every request hands its image to one dedicated thread through a queue. The thread takes
whatever is waiting (up to ``max_batch`` images), prepares the small raw images itself (decoding
a few-kB PNG costs less than another thread hop under the GIL), and runs one forward pass for
all of them. Under load many single-image requests share a pass, while a lone request never
waits for company (no batching delay). PyTorch releases the GIL inside its kernels, so the
event loop keeps accepting and parsing requests while a pass runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from digitrec.infer.recogniser import Prediction, Recogniser

__all__ = ["InferenceThread"]

@dataclass
class _Job:
    future: asyncio.Future[list[Prediction]]
    loop: asyncio.AbstractEventLoop
    images: np.ndarray | None = None  # (N, 28, 28) float32 in [0, 1], already prepared
    source: Any = None  # or one raw image for the thread to prepare


def _settle(future: asyncio.Future, result: list[Prediction] | None, error: BaseException | None) -> None:
    # Runs on the event loop; the request may have timed out and cancelled its future meanwhile.
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class InferenceThread:
    """One inference thread per server process, with opportunistic micro-batching."""

    def __init__(
        self,
        recogniser: Recogniser,
        prepare: Callable[[Any], np.ndarray],
        *,
        max_batch: int = 64,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.recogniser = recogniser
        self.max_batch = max_batch
        self._prepare = prepare  # raw image -> (28, 28); raises for unusable images (or ones to decode elsewhere)
        self._on_batch = on_batch  # called with (images, seconds) after every forward pass
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """True while the inference thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the inference thread if it is not running (again after :meth:`stop`)."""
        with self._lock:
            if not self.running:
                self._thread = threading.Thread(target=self._run, name="digitrec-inference", daemon=True)
                self._thread.start()

    async def _submit(self, job_kwargs: dict[str, Any]) -> list[Prediction]:
        # Started on demand: an app can serve without its lifespan having run (ASGI test clients).
        # Checked before taking the lock: this runs on every request.
        if not self.running:
            self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Prediction]] = loop.create_future()
        self._queue.put(_Job(future, loop, **job_kwargs))
        return await future

    async def predict(self, images: np.ndarray) -> list[Prediction]:
        """Predictions for prepared images (N, 28, 28)."""
        return await self._submit({"images": images})

    async def predict_source(self, source: Any) -> Prediction:
        """The prediction for one raw image, prepared on the inference thread (keep it small)."""
        (prediction,) = await self._submit({"source": source})
        return prediction

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the queued work and end the thread."""
        with self._lock:
            thread = self._thread
            if thread is None or not thread.is_alive():
                return
            self._queue.put(None)
        thread.join(timeout)

    def _take_batch(self, first: _Job) -> tuple[list[_Job], bool]:
        """The first job plus whatever else is already queued, up to max_batch images."""
        jobs, count = [first], 1 if first.images is None else len(first.images)
        while count < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            count += 1 if job.images is None else len(job.images)
        return jobs, False

    def _reply(self, job: _Job, result: list[Prediction] | None, error: BaseException | None) -> None:
        # RuntimeError: that event loop has closed, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            job.loop.call_soon_threadsafe(_settle, job.future, result, error)

    def _run_batch(self, jobs: list[_Job]) -> None:
        ready: list[tuple[_Job, np.ndarray]] = []
        for job in jobs:
            if job.images is not None:
                ready.append((job, job.images))
                continue
            try:
                ready.append((job, self._prepare(job.source)[None]))
            except Exception as exc:  # that request's problem alone (usually an ImageError)
                self._reply(job, None, exc)
        if not ready:
            return
        start = time.perf_counter()
        try:
            predictions = self.recogniser.predict_arrays(np.concatenate([images for _, images in ready]))
        except Exception as exc:  # reported to every waiting request; never kills the thread
            for job, _ in ready:
                self._reply(job, None, exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(predictions), time.perf_counter() - start)
        offset = 0
        for job, images in ready:
            self._reply(job, predictions[offset : offset + len(images)], None)
            offset += len(images)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            jobs, stop = self._take_batch(first)
            self._run_batch(jobs)
            if stop:
                break
