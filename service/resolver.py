"""The system's DNS, as the URL policy asks it (core/url_policy.py `Resolver`)."""

from __future__ import annotations

import socket


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to now, as the URL policy needs them."""
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
