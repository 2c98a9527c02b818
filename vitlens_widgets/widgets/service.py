"""The kernel as a data service: answers the explorer's typed requests from the trace on screen.

Knows nothing of traits or rendering: the widget hands it the current trace, and
:meth:`ExplorerService.answer` turns one message into one reply (header and binary
buffers). It never raises: anything wrong becomes an error reply with the request's id
(a request for another image than the one shown, too), and an unexpected failure is
also logged with its traceback.

Thread-safe: JupyterLab may deliver widget messages to a kernel subshell, so requests can
be answered in another thread than the one that changes the trace (a cell setting a trait).
A lock makes each answer describe one trace: its numbers, image and version agree.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..engine.lens import Lens
from ..engine.trace import RankIndex, Trace
from .heap import trim_heap
from .payload import metric_slices, token_memories
from .protocol import (
    Limits,
    LogitsRequest,
    MemoriesRequest,
    Ping,
    ProtocolError,
    Request,
    SlicesRequest,
    error_reply,
    parse_request,
    request_id,
)
from .specs import METRIC_SPECS, SITE_SPECS

logger = logging.getLogger(__name__)

LOGITS_TABLE_BYTES = 32 * 2**20  # largest logits table a view may hold (ViT-B/16: 10 MB); above it, classes one by one

# A RankIndex sorts every token's logits once, about the cost of 40 single-class ranks for 1000 classes.
# It is built at once for a request of this many classes (or all of them), but never in a single class's
# path, where it would make one interaction wait (160 ms for ViT-B/16 on 2 cores): that class is ranked
# directly (3-5 ms for ViT-B/16) while the index is built in a background thread for the classes after it.
RANK_INDEX_MIN_CLASSES = 32
RANK_INDEX_BYTES = 32 * 2**20  # largest index held (int16 ranks; ViT-B/16's residual stream: 5 MB)

Reply = tuple[dict[str, Any], list[Any]]


class ExplorerService:
    """Answers ``slices``, ``logits``, ``memories`` and ``ping`` requests for one trace at a time.

    Example:
        >>> service = ExplorerService(lens)
        >>> service.show(lens.trace(image), image=0, version=1)
        >>> header, buffers = service.answer({"kind": "slices", "id": 7, "image": 0, "site": "resid",
        ...                                   "metric": "logit", "classes": [3]})
    """

    def __init__(self, lens: Lens):
        self.lens = lens
        self.limits = Limits(lens.num_classes, lens.depth, lens.tokens.n_tokens)
        self.trace: Trace | None = None
        self.base_trace: Trace | None = None
        self.image = 0
        self.version = 0
        self._rank_index: tuple[str, RankIndex] | None = None  # of the trace on screen, one site at a time
        self._building: tuple[Trace, str] | None = None  # the index a background thread is sorting
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vitlens-rank-index")
        self._memory_classes: dict[tuple[int, str], np.ndarray] = {}  # (block, kind) -> memories' top classes
        self._lock = threading.Lock()

    def show(self, trace: Trace, image: int, version: int, base: Trace | None = None) -> None:
        """Answer from now on for ``trace`` (image ``image`` of the gallery, trace ``version``); ``base``:
        the same image unperturbed, for ``base`` requests (``trace`` itself by default)."""
        with self._lock:
            self.trace, self.image, self.version = trace, image, version
            self.base_trace = trace if base is None else base
            self._rank_index = self._building = None

    def clear_cache(self) -> None:
        """Forget derived tables (rank index, memory projections); the trace's own caches are the trace's."""
        with self._lock:
            self._rank_index = self._building = None
            self._memory_classes.clear()

    def answer(self, content: Any) -> Reply:
        with self._lock:
            return self._answer(content)

    def _answer(self, content: Any) -> Reply:
        try:
            return self._reply(parse_request(content, self.limits))
        except ValueError as err:  # ProtocolError, and the engine's own checks
            return error_reply(content, str(err)), []
        except Exception as err:  # a bug, or torch failing: the view still gets its answer
            kind = content.get("kind") if isinstance(content, dict) else None
            logger.exception("internal error while answering %s request %s", kind, request_id(content))
            return error_reply(content, f"internal error while answering {kind}: {type(err).__name__}: {err}"), []

    def _reply(self, request: Request) -> Reply:
        if isinstance(request, Ping):
            return {"kind": "pong", "id": request.id}, []
        if self.trace is None:
            raise ProtocolError("no image is traced yet")
        if request.image != self.image:
            raise ProtocolError(f"the kernel is showing image {self.image}, not image {request.image}")
        if isinstance(request, SlicesRequest):
            return self._slices(request)
        if isinstance(request, LogitsRequest):
            return self._logits(request)
        return self._memories(request)

    def _header(self, kind: str, request_id: int, **fields: Any) -> dict[str, Any]:
        return {"kind": kind, "id": request_id, "image": self.image, "version": self.version, **fields}

    def _slices(self, request: SlicesRequest) -> Reply:
        classes = list(request.classes)
        if request.base:
            data = metric_slices(self.base_trace, request.site, request.metric, classes)
        else:
            ranked = METRIC_SPECS[request.metric].ranked
            index = self._rank_index_for(request.site, len(classes)) if ranked else None
            data = metric_slices(self.trace, request.site, request.metric, classes, index)
        header = self._header(
            "slices",
            request.id,
            site=request.site,
            metric=request.metric,
            classes=classes,
            rows=int(data.shape[1]),
            tokens=int(data.shape[2]),
            base=request.base,
        )
        return header, [memoryview(np.ascontiguousarray(data, dtype=np.float32))]

    def _rank_index_for(self, site: str, n_classes: int) -> RankIndex | None:
        """The site's :class:`RankIndex` when it is held, or built now for a request of many classes;
        for a single class, ``None`` (rank it directly) and the index is built in the background."""
        if self._rank_index is not None and self._rank_index[0] == site:
            return self._rank_index[1]
        rows, tokens, classes = self.trace.logits(site).shape
        if rows * tokens * classes * 2 > RANK_INDEX_BYTES:
            return None  # too large to hold: every class is ranked directly
        if n_classes < min(RANK_INDEX_MIN_CLASSES, classes):
            self._build_in_background(site)
            return None
        self._rank_index = (site, self.trace.rank_index(site))
        return self._rank_index[1]

    def _build_in_background(self, site: str) -> None:
        """Sort the site's logits in another thread (numpy lets go of the GIL), without the lock held,
        and keep the index if the trace on screen is still the one it was built for."""
        trace = self.trace
        if self._is_building(trace, site):
            return
        self._building = (trace, site)

        def build() -> None:
            index = trace.rank_index(site)
            with self._lock:
                if self.trace is trace and self._is_building(trace, site):
                    self._rank_index = (site, index)
                    self._building = None
            trim_heap()  # the sort's temporaries were freed in this thread's arena

        self._builder.submit(build)

    def _is_building(self, trace: Trace, site: str) -> bool:
        return self._building is not None and self._building[0] is trace and self._building[1] == site

    def _logits(self, request: LogitsRequest) -> Reply:
        """Rows ``start:stop`` of every class logit of a site, with each token's log-partition, so the view
        derives any class's slice itself; declined when the whole table is larger than :data:`LOGITS_TABLE_BYTES`."""
        logits = self.trace.logits(request.site)
        if logits.nbytes > LOGITS_TABLE_BYTES:
            raise ProtocolError(
                f"{logits.nbytes / 2**20:.0f} MiB of logits is too much to send: classes come one by one"
            )
        sent = slice(request.start, request.stop)
        chunk = np.ascontiguousarray(logits[sent], dtype=np.float32)
        # the site's when held (top-k computed it), else the chunk's rows only: never 25 ms for one ViT-B/16 chunk
        log_partition = np.ascontiguousarray(self.trace.log_partition(request.site, rows=sent))
        rows, tokens, classes = logits.shape
        header = self._header(
            "logits",
            request.id,
            site=request.site,
            start=request.start,
            stop=request.stop,
            rows=rows,
            tokens=tokens,
            classes=classes,
        )
        return header, [memoryview(chunk), memoryview(log_partition)]

    def _memories(self, request: MemoriesRequest) -> Reply:
        """The most activated memories of one token at one block, and the classes each one writes."""
        kind = SITE_SPECS[request.site].memories
        memories = token_memories(self.lens, self.trace, request.token, request.layer, kind, self._memory_classes)
        header = self._header(
            "memories",
            request.id,
            token=request.token,
            layer=request.layer,
            memory_kind=kind,
            memories=[int(m) for m in memories["memory"]],
            classes=memories["classes"].astype(int).tolist(),
        )
        return header, [memoryview(memories["coefficient"].astype(np.float32))]

    @property
    def table_rows_per_message(self) -> int:
        """Rows of a logits table per message, so one message stays near 1 MB (ViT-B/16: one row); 0 when
        the residual stream's table is above :data:`LOGITS_TABLE_BYTES`, so the view never asks for one."""
        tokens, classes = self.limits.n_tokens, self.limits.num_classes
        if (self.limits.depth + 1) * tokens * classes * 4 > LOGITS_TABLE_BYTES:
            return 0
        return max(1, 2**20 // (tokens * classes * 4))
