"""The transfer log: one entry per file GET/HEAD, written when its body is finished or cut off, and the
response that streams a file body while counting what it hands to the connection.

Entries are kept in the order their requests arrived, up to a cap; past it the oldest are forgotten and
counted in `dropped`, so a long soak run cannot grow the sandbox without bound.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sandbox.cuts import TransferCut
from sandbox.media import Media


@dataclass
class Transfer:
    """One file request. `bytes` counts file bytes handed to the connection (0 for HEAD, 304 and errors);
    `complete` is true only when the whole file or the whole requested range went out."""

    at: float
    task_id: str
    name: str
    method: str
    range: str | None
    status: int = 0
    bytes: int = 0
    complete: bool = False
    fault: str | None = None
    seq: int = field(default=0, repr=False)

    def view(self) -> dict[str, Any]:
        shown = asdict(self)
        del shown["seq"]
        return shown


class TransferLog:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.dropped = 0
        self._entries: list[Transfer] = []
        self._seq = itertools.count()

    def begin(self, task_id: str, name: str, method: str, range_header: str | None) -> Transfer:
        """A transfer starting now; it enters the log once `record`ed."""
        return Transfer(time.time(), task_id, name, method, range_header, seq=next(self._seq))

    def record(self, transfer: Transfer) -> None:
        # Transfers finish out of order (a stalled one last); the log stays in the order they began.
        bisect.insort(self._entries, transfer, key=lambda entry: entry.seq)
        if len(self._entries) > self.cap:
            del self._entries[0]
            self.dropped += 1

    def view(self, task_id: str | None = None) -> dict[str, Any]:
        entries = [e.view() for e in self._entries if task_id is None or e.task_id == task_id]
        return {"transfers": entries, "dropped": self.dropped}


class FileBody(Response):
    """Streams bytes [start, end) of `media`; calls `on_done` with the transfer when the body ends, however
    it ends.

    `cut_at` (truncate, stall) stops the body there; a stall then holds the connection `stall_s` seconds,
    or until the client goes. A client that disconnects mid-body is noticed between chunks.
    """

    def __init__(
        self,
        media: Media,
        span: tuple[int, int],
        status_code: int,
        headers: dict[str, str],
        transfer: Transfer,
        on_done: Callable[[Transfer], None],
        cut_at: int | None = None,
        stall_s: float = 0.0,
    ) -> None:
        super().__init__(status_code=status_code, headers=headers)
        self.media, self.span, self.cut_at, self.stall_s = media, span, cut_at, stall_s
        self.transfer, self.on_done = transfer, on_done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()
        listener = asyncio.get_running_loop().create_task(_watch_disconnect(receive, gone))
        self.transfer.status = self.status_code
        try:
            start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            await send(start)
            await self._send_body(send, gone)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            self.on_done(self.transfer)

    async def _send_body(self, send: Send, gone: asyncio.Event) -> None:
        start, end = self.span
        for piece in self.media.chunks(start, end if self.cut_at is None else self.cut_at):
            # uvicorn drops writes to a closed connection silently: look before every chunk, and
            # yield so that the disconnect can be seen at all.
            await asyncio.sleep(0)
            if gone.is_set():
                return
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            self.transfer.bytes += len(piece)
        if self.cut_at is not None:
            if self.transfer.fault == "stall":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), self.stall_s)
            raise TransferCut(self.transfer.fault)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.transfer.complete = True


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()
