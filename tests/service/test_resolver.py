"""Host names as they go on the wire (DNS, Host, TLS name): IDNA 2008, as browsers and httpx."""

from __future__ import annotations

import httpx
import pytest

from service.core.url_policy import Target
from service.resolver import ascii_host
from workers.pinning import pinned_request


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("hooks.example", "hooks.example"),
        ("b\u00fccher.example", "xn--bcher-kva.example"),
        ("B\u00fccher.Example", "xn--bcher-kva.example"),  # mapped (UTS 46), as a browser would
        ("stra\u00dfe.de", "xn--strae-oqa.de"),  # not IDNA 2003's strasse.de: another domain
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
    ],
)
def test_a_host_is_sent_in_the_ascii_form_browsers_use(host: str, expected: str) -> None:
    assert ascii_host(host) == expected


@pytest.mark.parametrize("host", ["b\u00fccher..example", "\u00fc" * 70 + ".example"])
def test_a_name_with_no_ascii_form_is_a_value_error(host: str) -> None:
    with pytest.raises(ValueError, match="not a valid internationalised domain name"):
        ascii_host(host)


def test_a_pinned_request_names_an_internationalised_host_in_ascii() -> None:
    target = Target("https://b\u00fccher.example/hook", "https", "b\u00fccher.example", 443, "93.184.216.34")
    with httpx.Client() as http:
        request = pinned_request(http, target, {"x": "1"}, method="POST", content=b"{}")
    assert request.headers["host"] == "xn--bcher-kva.example"
    assert request.extensions["sni_hostname"] == "xn--bcher-kva.example"
    assert request.url.host == "93.184.216.34"
