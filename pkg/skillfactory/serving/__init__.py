"""The services: the library behind gRPC.

Every service shares `server` (a gRPC server with health, auth, TLS, metrics and graceful
shutdown), `auth` (bearer tokens), `metrics` (Prometheus), `logs` (JSON lines with the run id).
The servicers put the library behind it: `reward`, `rollout` (and `ray_rollout`), `composer`, and
the learner (`learner_api` over `run_controller`, with `learner_metrics`); `reward_client` and
`composer_client` call them. Services in `services/<name>/` only wire these together; no domain
logic lives there. This package's own import loads nothing (grpc loads with `server`).
"""
