"""The download URL policy: which URLs a download may fetch. Pure: the resolver is a parameter.

A URL must be http(s), its host on the allow-list, and every address the host resolves to
public, unless the address's network is explicitly allowed (the sandbox on 127.0.0.0/8 in
dev and tests). The address that passed the check is the one connected to, so a DNS answer
that changes between check and connect cannot smuggle in a private address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from service.errors import HostUnresolved, UnsafeURL

# The Kie file hosts seen in kie-api.md §9.
DEFAULT_ALLOWED_HOSTS: Final = (
    "tempfile.aiquickdraw.com",
    "file.aiquickdraw.com",
    "musicfile.api.box",
    "cdn1.suno.ai",
)
METADATA_ADDRESSES: Final = frozenset({"169.254.169.254", "fd00:ec2::254", "100.100.100.200"})
NAT64_NETWORKS: Final = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
STANDARD_PORTS: Final = frozenset({80, 443})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class Target:
    """A URL that passed the policy, and the address to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str


@dataclass(frozen=True)
class Policy:
    """`allowed_hosts` None: any host (webhook subscribers), its addresses still checked. The
    two names are the settings a refusal points to."""

    allowed_hosts: frozenset[str] | None
    allowed_networks: tuple[Network, ...] = ()
    hosts_setting: str = "DOWNLOAD_ALLOWED_HOSTS"
    networks_setting: str = "DOWNLOAD_ALLOWED_NETWORKS"

    @classmethod
    def build(cls, hosts: Iterable[str], networks: Iterable[str]) -> Policy:
        return cls(
            frozenset(h.strip().lower() for h in hosts if h.strip()),
            tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks if n.strip()),
        )

    @classmethod
    def any_public_host(cls, networks: Iterable[str], networks_setting: str) -> Policy:
        allowed = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks if n.strip())
        return cls(None, allowed, networks_setting=networks_setting)

    def check(self, url: str, resolve: Resolver) -> Target:
        """Raises UnsafeURL naming the rule the URL breaks."""
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            hostname = parts.hostname
        except ValueError as exc:  # an unbalanced bracket, a port past 65535
            raise UnsafeURL(f"the URL cannot be parsed: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise UnsafeURL(f"scheme {parts.scheme or 'none'!r} is not http or https")
        host = (hostname or "").lower().rstrip(".")
        if not host:
            raise UnsafeURL("the URL has no host")
        if parts.username or parts.password:
            raise UnsafeURL("URLs with credentials are not fetched")
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            raise UnsafeURL(f"host {host!r} is not in {self.hosts_setting}")
        try:
            addresses = [ipaddress.ip_address(a) for a in resolve(host, port)]
        except (OSError, ValueError) as exc:
            raise HostUnresolved(f"host {host!r} does not resolve: {exc}") from None
        if not addresses:
            raise HostUnresolved(f"host {host!r} resolves to no address")
        for address in addresses:
            self._check_address(host, address)
            if port not in STANDARD_PORTS and not self._is_allowed_network(address):
                raise UnsafeURL(f"port {port} is not 80 or 443 (only listed networks may use others)")
        return Target(url, parts.scheme, host, port, str(addresses[0]))

    def _is_allowed_network(self, address: Address) -> bool:
        return any(address in network for network in self.allowed_networks)

    def _check_address(self, host: str, address: Address) -> None:
        if self._is_allowed_network(address):
            return
        embedded = embedded_ipv4(address)
        if embedded is not None:
            # An IPv4 address carried inside IPv6 (mapped, NAT64, 6to4, Teredo) is judged as itself.
            self._check_address(host, embedded)
        if str(address) in METADATA_ADDRESSES:
            raise UnsafeURL(f"host {host!r} resolves to the metadata address {address}")
        if not address.is_global or address.is_multicast:
            kind = next(
                (
                    name
                    for name in ("loopback", "link_local", "private", "reserved")
                    if getattr(address, f"is_{name}")
                ),
                "non-public",
            )
            raise UnsafeURL(
                f"host {host!r} resolves to {kind.replace('_', '-')} address {address}, "
                f"not in {self.networks_setting}"
            )


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in network for network in NAT64_NETWORKS):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
