"""Webhook targets: https only, no credentials, no inward addresses unless allowed."""

from __future__ import annotations

import ipaddress

import pytest

from workers.alerting.targets import TargetPolicy, UnsafeTarget, check_address, check_url

STRICT = TargetPolicy()


@pytest.mark.parametrize("url", [
    "http://hooks.example.com/x",  # not https
    "ftp://hooks.example.com/x",
    "https:///no-host",
    "https://user:pass@hooks.example.com/x",
    "https://127.0.0.1/x", "https://10.1.2.3/x", "https://192.168.0.5/x", "https://172.16.9.9/x",
    "https://169.254.169.254/latest/meta-data",  # cloud metadata (link-local)
    "https://[::1]/x", "https://[::ffff:127.0.0.1]/x", "https://[fe80::1]/x", "https://0.0.0.0/x",
    "https://224.0.0.1/x",
])
def test_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeTarget):
        check_url(url, STRICT)


def test_public_https_passes_and_development_can_allow_http_and_private() -> None:
    check_url("https://hooks.example.com/finsentry", STRICT)
    check_url("https://93.184.216.34/hook", STRICT)
    dev = TargetPolicy(allow_http=True, allow_private=True)
    check_url("http://127.0.0.1:8080/hook", dev)
    with pytest.raises(UnsafeTarget, match="scheme must be https"):
        check_url("http://93.184.216.34/hook", TargetPolicy(allow_private=True))
    with pytest.raises(UnsafeTarget, match="not a public address"):
        check_address(ipaddress.ip_address("127.0.0.1"), TargetPolicy(allow_http=True))
