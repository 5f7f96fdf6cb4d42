"""Webhook targets an attacker cannot point inward (server-side request forgery).

A URL must be https (http only when allowed, for development) with a host and no credentials. Its
addresses are checked when the connection is made, on the very address connected to, so a name that
resolves to a public address at configuration time and to 127.0.0.1 later (DNS rebinding) is still
refused. Loopback, private, link-local (cloud metadata), multicast, reserved and unspecified addresses
are refused unless private targets are allowed. Redirects are never followed (see delivery).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import urllib.request
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from config.settings import TargetPolicy


class UnsafeTarget(ValueError):
    """A webhook URL or address that the policy refuses."""


def check_url(url: str, policy: TargetPolicy) -> None:
    parts = urlsplit(url)
    allowed = {"https", "http"} if policy.allow_http else {"https"}
    if parts.scheme not in allowed:
        raise UnsafeTarget(f"{url!r}: scheme must be {' or '.join(sorted(allowed))}")
    if not parts.hostname:
        raise UnsafeTarget(f"{url!r}: no host")
    if parts.username or parts.password:
        raise UnsafeTarget(f"{url!r}: credentials in the URL are not allowed (use the signing secret)")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return  # a name: checked on each connection
    check_address(literal, policy)


def check_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address, policy: TargetPolicy) -> None:
    if policy.allow_private:
        return
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if (address.is_loopback or address.is_private or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified):
        raise UnsafeTarget(f"address {address} is not a public address (loopback, private, link-local or reserved)")


def guarded_socket(host: str, port: int, timeout: float | None, policy: TargetPolicy) -> socket.socket:
    """Resolve, check every address before using it, and connect to the first that answers."""
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        check_address(ipaddress.ip_address(sockaddr[0]), policy)
        sock = socket.socket(family, kind, proto)
        if timeout is not None:
            sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as err:
            sock.close()
            last = err
    raise last or OSError(f"{host}: no address")


class _GuardedHTTP(http.client.HTTPConnection):
    def __init__(self, *args: Any, policy: TargetPolicy, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.policy = policy

    def connect(self) -> None:
        self.sock = guarded_socket(self.host, self.port, self.timeout, self.policy)


class _GuardedHTTPS(http.client.HTTPSConnection):
    def __init__(self, *args: Any, policy: TargetPolicy, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.policy = policy

    def connect(self) -> None:
        sock = guarded_socket(self.host, self.port, self.timeout, self.policy)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: TargetPolicy):
        super().__init__()
        self.policy = policy

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(partial(_GuardedHTTP, policy=self.policy), req)  # type: ignore[arg-type]


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: TargetPolicy):
        super().__init__(context=ssl.create_default_context())
        self.policy = policy

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(partial(_GuardedHTTPS, policy=self.policy), req,  # type: ignore[arg-type]
                            context=self._context)  # type: ignore[attr-defined]


def opener(policy: TargetPolicy) -> urllib.request.OpenerDirector:
    """No proxies from the environment (they would bypass the checks), no redirects, guarded sockets."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect,
                                       _HTTPHandler(policy), _HTTPSHandler(policy))
