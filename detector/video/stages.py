"""Two helpers that let the video pipeline's stages overlap: decode ahead on one thread, draw and
encode behind on another, while the calling thread runs the model.

PyAV's decoder and encoder, OpenCV's drawing and the inference runtimes release the GIL, so on two
or more cores the stages of consecutive frames run at the same time. Order is kept (one thread per
stage, FIFO queues), the queues are bounded (memory stays a few frames), and an exception in a
stage is raised in the calling thread. Written by hand: ``concurrent.futures`` pools do not keep a
stream's order with bounded memory, and no listed library pipelines PyAV.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["BackgroundSink", "prefetch"]

T = TypeVar("T")
_END = object()


def prefetch(items: Iterable[T], depth: int = 4) -> Iterator[T]:
    """``items``, produced on a background thread up to ``depth`` ahead, in order.

    The producer's exception is raised here when its turn comes. Stopping early (``break``, an
    exception, ``close()``) stops the producer and waits for its thread before returning, so the
    source may be closed right after.
    """
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_END)
        except BaseException as error:  # handed to the consumer, raised there
            buffer.put(_Failure(error))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                buffer.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class BackgroundSink(Generic[T]):
    """Calls ``consume(item)`` for every ``put`` item on a background thread, in order, at most
    ``depth`` items behind. ``close()`` waits for the last one and raises the first exception of
    ``consume`` (``put`` raises it too once it happened, so the producer stops early).

    Example::

        with BackgroundSink(writer.write) as sink:
            for frame in frames:
                sink.put(frame)
    """

    def __init__(self, consume: Callable[[T], None], depth: int = 4) -> None:
        self._consume = consume
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sink", daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is not None:
                continue  # drain: the producer learns of the error at its next put or close
            try:
                self._consume(item)
            except BaseException as error:
                self._error = error

    def put(self, item: T) -> None:
        if self._error is not None:
            self.close()
        self._queue.put(item)

    def close(self) -> None:
        """Wait until every item is consumed; raise the consumer's exception if there was one."""
        if not self._closed:
            self._closed = True
            self._queue.put(_END)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BackgroundSink[T]:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.close()
            return
        # Already failing: stop the thread, keep the original exception.
        if not self._closed:
            self._closed = True
            self._queue.put(_END)
            self._thread.join()
