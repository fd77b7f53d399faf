"""Connections the sandbox breaks on purpose: a transfer cut short, a create answer lost on the way.

ASGI gives an app no way to close a connection before it answers: an app that raises, or returns,
without starting its response gets a 500 from the server. Once the status line and headers are out,
raising makes uvicorn close the connection, and the client sees the body cut off. So a lost answer is
the status line and headers of the real answer, then the connection closed before a byte of its body:
httpx raises RemoteProtocolError, as for a server that hangs up without answering.
"""

from __future__ import annotations

import logging

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class TransferCut(Exception):
    """Raised inside a response to cut its connection (the truncate and stall faults, a lost answer)."""


class _QuietCuts(logging.Filter):
    # A cut connection is the fault working as intended, not an error worth a traceback in the log.
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], TransferCut))


logging.getLogger("uvicorn.error").addFilter(_QuietCuts())


class LostAnswer(Response):
    """`answer`'s status line and headers, then the connection closed with none of its body."""

    def __init__(self, answer: Response) -> None:
        super().__init__(status_code=answer.status_code)
        self.raw_headers = answer.raw_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        raise TransferCut("create answer lost")
