"""The download URL policy: allow-listed hosts, public addresses, explicit exceptions."""

from __future__ import annotations

import re

import pytest

from service.core.url_policy import Policy
from service.errors import HostUnresolved, UnsafeURL

DNS = {
    "tempfile.aiquickdraw.com": ["104.18.1.1"],
    "evil.example": ["104.18.1.2"],
    "rebind.aiquickdraw.com": ["10.0.0.5"],
    "meta.aiquickdraw.com": ["169.254.169.254"],
    "mixed.aiquickdraw.com": ["104.18.1.3", "127.0.0.1"],
    "v6.aiquickdraw.com": ["::1"],
    "localhost": ["127.0.0.1"],
    "127.0.0.1": ["127.0.0.1"],
}
HOSTS = [
    *("tempfile.aiquickdraw.com", "rebind.aiquickdraw.com", "meta.aiquickdraw.com", "mixed.aiquickdraw.com"),
    *("v6.aiquickdraw.com", "localhost", "127.0.0.1"),
]


def resolve(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise OSError("Name or service not known")
    return DNS[host]


STRICT = Policy.build(HOSTS, [])
SANDBOX = Policy.build(HOSTS, ["127.0.0.0/8"])


def test_an_allowed_public_host_passes_with_its_address() -> None:
    target = STRICT.check("https://tempfile.aiquickdraw.com/s/a.mp3", resolve)
    assert (target.host, target.port, target.address) == ("tempfile.aiquickdraw.com", 443, "104.18.1.1")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "scheme 'file'"),
        ("ftp://tempfile.aiquickdraw.com/a.mp3", "scheme 'ftp'"),
        ("https://evil.example/a.mp3", "not in DOWNLOAD_ALLOWED_HOSTS"),
        ("http://169.254.169.254/latest/meta-data/", "not in DOWNLOAD_ALLOWED_HOSTS"),
        ("https://rebind.aiquickdraw.com/a.mp3", "private address 10.0.0.5"),
        ("https://meta.aiquickdraw.com/a.mp3", "metadata address 169.254.169.254"),
        ("https://mixed.aiquickdraw.com/a.mp3", "loopback address 127.0.0.1"),
        ("https://v6.aiquickdraw.com/a.mp3", "loopback address ::1"),
        ("http://127.0.0.1:8090/files/a.mp3", "loopback address 127.0.0.1"),
        ("https://user:pw@tempfile.aiquickdraw.com/a.mp3", "credentials"),
        ("https:///a.mp3", "no host"),
    ],
)
def test_refused_urls_say_why(url: str, reason: str) -> None:
    with pytest.raises(UnsafeURL, match=re.escape(reason)):
        STRICT.check(url, resolve)


def test_a_listed_network_admits_the_local_sandbox() -> None:
    assert SANDBOX.check("http://127.0.0.1:8090/files/a.mp3", resolve).address == "127.0.0.1"
    with pytest.raises(UnsafeURL, match=r"private address 10\.0\.0\.5"):
        SANDBOX.check("https://rebind.aiquickdraw.com/a.mp3", resolve)


def test_an_unresolvable_host_is_a_passing_failure_not_a_refusal() -> None:
    policy = Policy.build(["nowhere.aiquickdraw.com"], [])
    with pytest.raises(HostUnresolved, match="does not resolve"):
        policy.check("https://nowhere.aiquickdraw.com/a.mp3", resolve)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("64:ff9b::a9fe:a9fe", "metadata address 169.254.169.254"),
        ("::ffff:10.0.0.5", "private address 10.0.0.5"),
        ("2002:7f00:1::1", "loopback address 127.0.0.1"),
    ],
)
def test_ipv4_carried_inside_ipv6_is_judged_as_itself(address: str, reason: str) -> None:
    policy = Policy.build(["wrapped.aiquickdraw.com"], [])
    with pytest.raises(UnsafeURL, match=re.escape(reason)):
        policy.check("https://wrapped.aiquickdraw.com/a.mp3", lambda host, port: [address])


def test_a_trailing_dot_names_the_same_allowed_host() -> None:
    assert STRICT.check("https://tempfile.aiquickdraw.com./a.mp3", resolve).host == "tempfile.aiquickdraw.com"


def test_only_standard_ports_unless_the_network_is_listed() -> None:
    with pytest.raises(UnsafeURL, match="port 6379"):
        STRICT.check("https://tempfile.aiquickdraw.com:6379/", resolve)
    assert SANDBOX.check("http://127.0.0.1:8090/files/a.mp3", resolve).port == 8090
