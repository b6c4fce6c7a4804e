"""The one way a service opens a channel to another: TLS verified against a CA when given one,
else plaintext (loopback, `skillfactory up`).

    channel = open_channel("reward:50051", tls_ca=Path("/var/run/skillfactory/tls/ca.crt"))

With a CA the server must present a certificate it signed, valid for the host name dialled (the
chart's certificates name each Service, and localhost and 127.0.0.1 for port-forwards); a server
without TLS, or with another CA's certificate, fails the call with UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc


def open_channel(
    address: str, tls_ca: Path | None = None, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A channel to `address` (HOST:PORT): TLS trusting `tls_ca` (PEM), or plaintext."""
    if tls_ca is None:
        return grpc.insecure_channel(address, options=list(options))
    credentials = grpc.ssl_channel_credentials(root_certificates=tls_ca.read_bytes())
    return grpc.secure_channel(address, credentials, options=list(options))
