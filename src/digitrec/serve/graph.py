"""The served model's ONNX graph for the drawing page: fetched once from the recogniser, kept with its ETag."""

from __future__ import annotations

import hashlib
import threading

from digitrec.errors import DigitrecError, first_line
from digitrec.infer.recogniser import Recogniser

__all__ = ["GraphCache"]


class GraphCache:
    """The recogniser's graph bytes and their ETag, or why there is none; asked for at most once.

    Exporting takes PyTorch seconds, so a missing graph is remembered as well: a page that keeps
    asking gets the same 404 at once instead of a new export attempt each time.
    """

    def __init__(self, recogniser: Recogniser) -> None:
        self._recogniser = recogniser
        self._lock = threading.Lock()  # two first requests at once export once
        self._done = False
        self._graph: bytes | None = None
        self._etag = ""
        self._reason = ""

    @property
    def ready(self) -> bool:
        """Whether :meth:`get` answers without work (already fetched or known missing)."""
        return self._done

    def get(self) -> tuple[bytes, str] | str:
        """``(graph, etag)``, or the one-line reason there is no graph. Blocks on the first call."""
        with self._lock:
            if not self._done:
                try:
                    graph = self._recogniser.onnx_graph()
                except (DigitrecError, OSError) as exc:
                    self._reason = f"no ONNX graph for this model: {first_line(exc)}"
                else:
                    self._graph = graph
                    self._etag = '"' + hashlib.sha256(graph).hexdigest()[:32] + '"'
                self._done = True
        return (self._graph, self._etag) if self._graph is not None else self._reason
