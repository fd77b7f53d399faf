"""The system's DNS, as the URL policy asks it (core/url_policy.py `Resolver`), and host names
as they go on the wire."""

from __future__ import annotations

import socket

import idna


def ascii_host(host: str) -> str:
    """`host` as DNS, the Host header and TLS know it: an internationalised name in IDNA 2008
    with UTS 46 mapping, as browsers and httpx encode it (`straße.de` is `xn--strae-oqa.de`;
    Python's own codec, IDNA 2003, would give `strasse.de`, another domain). Raises ValueError
    for a name that has no such form."""
    if host.isascii():
        return host
    try:
        return idna.encode(host, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(f"not a valid internationalised domain name ({exc})") from None


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to now, as the URL policy needs them."""
    infos = socket.getaddrinfo(ascii_host(host), port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})
