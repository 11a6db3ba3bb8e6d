"""URL fetching for the server: which addresses are refused, after DNS resolution and across redirects."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from tests.serve.conftest import image_server, png_bytes
from vestis.serve import fetch
from vestis.serve.fetch import FetchError, fetch_image, is_public


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "2002:7f00:1::1",
        "64:ff9b::a00:1",
        "::",
    ],
)
def test_non_public_addresses(ip):
    assert not is_public(ipaddress.ip_address(ip))


@pytest.mark.parametrize("ip", ["8.8.8.8", "151.101.1.69", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses(ip):
    assert is_public(ipaddress.ip_address(ip))


def _fake_dns(monkeypatch, answers: dict[str, list[str]]):
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in answers[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(fetch.socket, "getaddrinfo", getaddrinfo)


def test_a_name_resolving_to_a_private_address_is_refused(monkeypatch):
    _fake_dns(
        monkeypatch, {"shop.example": ["93.184.216.34", "10.0.0.7"], "meta.example": ["169.254.169.254"]}
    )
    for host, ip in (("shop.example", "10.0.0.7"), ("meta.example", "169.254.169.254")):
        with pytest.raises(FetchError, match=f"{host} resolves to {ip}") as e:
            fetch_image(f"http://{host}/a.png", 2.0, 10_000)
        assert e.value.status == 403


def test_the_connection_goes_to_the_checked_address(monkeypatch):
    """A name resolved once, checked, and connected to by address (no second lookup to rebind)."""
    img = png_bytes()
    with image_server({"/a.png": (200, {"Content-Type": "image/png"}, img, 0)}) as base:
        port = int(base.rsplit(":", 1)[1])
        calls = []
        real = socket.getaddrinfo

        def getaddrinfo(host, p, *args, **kwargs):
            calls.append(host)
            return real("127.0.0.1" if host == "shop.example" else host, p, *args, **kwargs)

        monkeypatch.setattr(fetch.socket, "getaddrinfo", getaddrinfo)
        assert fetch_image(f"http://shop.example:{port}/a.png", 5.0, 100_000, allow_private=True) == img
        assert calls == ["shop.example"]


def test_a_redirect_to_a_private_address_is_refused(monkeypatch):
    """A 'public' server (127.0.0.2, deemed public here) redirecting to 127.0.0.1: the hop is checked too."""
    img = png_bytes()
    with image_server({"/a.png": (200, {"Content-Type": "image/png"}, img, 0)}) as private:
        hop = {"/go": (302, {"Location": f"{private}/a.png", "Content-Length": "0"}, b"", 0)}
        try:
            ctx = image_server(hop, host="127.0.0.2")
            public = ctx.__enter__()
        except OSError as e:
            pytest.skip(f"cannot bind 127.0.0.2 here: {e}")
        try:
            monkeypatch.setattr(fetch, "is_public", lambda ip: str(ip) == "127.0.0.2")
            with pytest.raises(FetchError, match="127.0.0.1 is a loopback") as e:
                fetch_image(f"{public}/go", 5.0, 100_000)
            assert e.value.status == 403
            assert fetch_image(f"{public}/go", 5.0, 100_000, allow_private=True) == img
        finally:
            ctx.__exit__(None, None, None)


def test_unresolvable_and_malformed_urls():
    with pytest.raises(FetchError, match="cannot resolve") as e:
        fetch_image("http://no-such-host.invalid/a.png", 2.0, 1000)
    assert e.value.status == 502
    with pytest.raises(FetchError, match="invalid URL"):
        fetch_image("http://example.com:notaport/a.png", 2.0, 1000)
