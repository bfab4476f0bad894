"""Fixtures of the proxy tests; they live in `proxy_support`."""

from proxy_support import (  # noqa: F401  (pytest finds fixtures by name)
    backend_kind,
    make_proxy,
    moto_server,
    proxy,
)
