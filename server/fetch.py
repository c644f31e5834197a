"""Fetch a remote image without letting a client reach what the gateway can reach.

Every hop's host is resolved here, every resolved address is checked (loopback, private,
link-local, multicast, reserved and cloud-metadata addresses are refused unless allowed), and
the connection goes to the checked address itself, so DNS rebinding between check and connect
cannot redirect it. Redirects are followed by hand, each one checked again; the body is capped
while it streams.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchError(Exception):
    """A refused or failed fetch; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int
    max_redirects: int
    connect_timeout_s: float
    read_timeout_s: float
    allow_private: bool = False
    allowed_hosts: tuple[str, ...] = ()  # empty = any public host
    # refused even when private hosts are allowed (cloud metadata endpoints by default)
    blocked_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


def _non_public(ip: IPAddress) -> bool:
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


async def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError("dns", f"cannot resolve host {host!r}") from exc
    return sorted({info[4][0] for info in infos})


async def _checked_address(url: httpx.URL, policy: FetchPolicy) -> str:
    host = url.host
    if policy.allowed_hosts and host not in policy.allowed_hosts:
        raise FetchError("host_not_allowed", f"host {host!r} is not on the image host allow-list")
    addresses = await _resolve(host, url.port or (443 if url.scheme == "https" else 80))
    for addr in addresses:
        ip = ipaddress.ip_address(addr)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in policy.blocked_networks):
            raise FetchError("forbidden_address", f"host {host!r} resolves to a blocked address")
        if not policy.allow_private and _non_public(ip):
            raise FetchError("forbidden_address", f"host {host!r} resolves to a non-public address")
    return addresses[0]


async def fetch(client: httpx.AsyncClient, url: str, policy: FetchPolicy) -> tuple[bytes, str | None]:
    """Return the body and its content type, or raise :class:`FetchError`."""
    current = httpx.URL(url)
    for _ in range(policy.max_redirects + 1):
        if current.scheme not in ("http", "https"):
            raise FetchError("scheme", "only http and https image URLs are fetched")
        addr = await _checked_address(current, policy)
        pinned = current.copy_with(host=addr)
        headers = {"Host": current.netloc.decode("ascii")}
        extensions = {"sni_hostname": current.host} if current.scheme == "https" else {}
        request = client.build_request("GET", pinned, headers=headers, extensions=extensions)
        try:
            response = await client.send(request, stream=True, follow_redirects=False)
        except httpx.TimeoutException as exc:
            raise FetchError("timeout", "image fetch timed out") from exc
        except httpx.HTTPError as exc:
            raise FetchError("connect", f"image fetch failed: {type(exc).__name__}") from exc
        try:
            if response.is_redirect:
                location = response.headers.get("location")
                if not location:
                    raise FetchError("redirect", "redirect without a location")
                current = httpx.URL(urljoin(str(current), location))
                continue
            if response.status_code != 200:
                raise FetchError("status", f"image URL answered {response.status_code}")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                raise FetchError("too_large", f"image is larger than {policy.max_bytes} bytes")
            body = bytearray()
            try:
                async for part in response.aiter_bytes():
                    body += part
                    if len(body) > policy.max_bytes:
                        raise FetchError("too_large", f"image is larger than {policy.max_bytes} bytes")
            except httpx.TimeoutException as exc:
                raise FetchError("timeout", "image fetch timed out") from exc
            return bytes(body), response.headers.get("content-type")
        finally:
            await response.aclose()
    raise FetchError("redirects", f"more than {policy.max_redirects} redirects")
