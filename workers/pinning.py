"""A request to the address the URL policy checked, never to what DNS answers a moment later."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import httpx

from service.core.url_policy import Target
from service.resolver import ascii_host


def pinned_request(
    http: httpx.Client | httpx.AsyncClient,
    target: Target,
    headers: dict[str, str],
    method: str = "GET",
    content: bytes | None = None,
) -> httpx.Request:
    """The request to `target`'s checked address, with the URL's own Host and TLS name."""
    parts = urlsplit(target.url)
    address = f"[{target.address}]" if ":" in target.address else target.address
    default_port = 443 if target.scheme == "https" else 80
    # The name as it goes on the wire: the same ASCII form the policy's resolver looked up.
    name = ascii_host(target.host)
    host = f"[{name}]" if ":" in name else name
    host_header = host if target.port == default_port else f"{host}:{target.port}"
    pinned = urlunsplit((parts.scheme, f"{address}:{target.port}", parts.path or "/", parts.query, ""))
    extensions = {"sni_hostname": name} if target.scheme == "https" else {}
    return http.build_request(
        method, pinned, headers={"Host": host_header, **headers}, content=content, extensions=extensions
    )
