"""The serving layer every service shares: a gRPC server with health, auth, TLS, metrics and
graceful shutdown (`server`), bearer tokens (`auth`), Prometheus series (`metrics`), JSON logs
(`logs`), and the servicers that put the library behind it (`reward`).

Services in `services/<name>/` only wire these together; no domain logic lives there.
"""

from skillfactory.serving.server import ServiceServer, ServingConfig

__all__ = ["ServiceServer", "ServingConfig"]
