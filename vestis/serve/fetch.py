"""Image URLs fetched for the server: http(s) only, a deadline, a size cap, and never to loopback, private,
link-local or other non-public addresses unless allowed.

The host name is resolved here, every address it resolves to is checked, and the connection goes to a
checked address (so a second DNS answer cannot swap in another one); redirects are followed by hand and
each hop is checked the same way. Proxies from the environment are not used."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from urllib.parse import urljoin, urlsplit

from vestis import __version__


class FetchError(Exception):
    """A URL that could not be used; ``status`` is the HTTP status the server answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _size(n: int) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n} bytes"


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for a globally routable unicast address (not loopback, private, link-local, shared, reserved,
    multicast or unspecified; an IPv4-mapped or 6to4/NAT64-embedded IPv6 address is judged by its IPv4)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            return is_public(ip.sixtofour)
        if ip in ipaddress.ip_network("64:ff9b::/96"):
            return is_public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int, allow_private: bool) -> list[tuple]:
    """``getaddrinfo`` answers for host:port (TCP), all of them checked; raises FetchError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise FetchError(f"cannot resolve host {host!r}: {e}", 502) from e
    if not infos:
        raise FetchError(f"cannot resolve host {host!r}", 502)
    if not allow_private:
        for *_, addr in infos:
            ip = ipaddress.ip_address(addr[0].split("%")[0])
            if not is_public(ip):
                what = f"{host} is" if host == str(ip) else f"{host} resolves to {ip},"
                raise FetchError(
                    f"refused: {what} a loopback, private or link-local address "
                    "(the server's operator can allow these with --allow-private-urls)",
                    403,
                )
    return infos


def _connect(infos: list[tuple], timeout: float) -> socket.socket:
    last: OSError | None = None
    for family, socktype, proto, _, addr in infos:
        sock = socket.socket(family, socktype, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
            return sock
        except OSError as e:
            sock.close()
            last = e
    raise last or OSError("no address to connect to")


class _Pinned(http.client.HTTPConnection):
    """An HTTP connection to one checked address (the Host header still names the host)."""

    def __init__(self, host, port, infos, timeout, tls: ssl.SSLContext | None):
        super().__init__(host, port, timeout=timeout)
        self._infos, self._tls = infos, tls

    def connect(self):
        sock = _connect(self._infos, self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host) if self._tls else sock


def fetch_image(
    url: str, timeout: float, max_bytes: int, allow_private: bool = False, max_redirects: int = 5
) -> bytes:
    """GET an image URL under the rules above; ``timeout`` bounds the whole fetch. Raises :class:`FetchError`
    (status 400 bad URL, 403 refused address, 413 too large, 415 not an image, 502 failed, 504 timed out)."""
    deadline = time.monotonic() + timeout
    for _ in range(max_redirects + 1):
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise FetchError(f"unsupported URL scheme {scheme!r}: only http and https are accepted", 400)
        try:
            host, port = parts.hostname, parts.port or (443 if scheme == "https" else 80)
        except ValueError as e:  # a port that is not a number
            raise FetchError(f"invalid URL: {e}", 400) from e
        if not host:
            raise FetchError("invalid URL: no host", 400)
        infos = resolve(host, port, allow_private)
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError("download failed: timed out", 504)
        tls = ssl.create_default_context() if scheme == "https" else None
        conn = _Pinned(host, port, infos, left, tls)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("GET", path, headers={"User-Agent": f"vestis/{__version__}", "Accept": "image/*"})
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise FetchError(f"download failed: HTTP {resp.status} without a Location", 502)
                url = urljoin(url, location)
                continue
            if resp.status != 200:
                raise FetchError(f"download failed: HTTP {resp.status} {resp.reason}", 502)
            return _read_image(resp, conn.sock, max_bytes, deadline)
        except FetchError:
            raise
        except TimeoutError as e:
            raise FetchError("download failed: timed out", 504) from e
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise FetchError(f"download failed: {e or type(e).__name__}", 502) from e
        finally:
            conn.close()
    raise FetchError(f"download failed: more than {max_redirects} redirects", 502)


def _read_image(resp: http.client.HTTPResponse, sock, max_bytes: int, deadline: float) -> bytes:
    ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if ctype and not ctype.startswith("image/") and ctype != "application/octet-stream":
        raise FetchError(f"not an image (content-type {ctype})", 415)
    too_large = FetchError(f"download larger than {_size(max_bytes)}", 413)
    length = resp.getheader("Content-Length") or ""
    if length.isdigit() and int(length) > max_bytes:
        raise too_large
    chunks, total = [], 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError("download failed: timed out", 504)
        if sock is not None:
            sock.settimeout(left)  # each read ends by the deadline, however slowly the bytes drip in
        chunk = resp.read1(min(1 << 16, max_bytes + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise too_large
    return b"".join(chunks)
