"""Fixtures of the proxy tests; they live in `proxy_support`."""

# pytest finds fixtures by name, so these imports are used.
from tests.proxy.proxy_support import (  # noqa: F401
    backend_kind,
    make_proxy,
    moto_server,
    proxy,
)
