"""The chart wires the distributed mode: the rendered command lines parse with the CLI's own parser,
the learner and the rollouts name the Redis, reward and composer Services the chart renders (and
those Services select the pods and ports that serve), both sides of the queue agree on its
options, every service shares the one token Secret, and the learner, the composer and the
rollouts mount the same shared claim at the same path (the rollouts read-only)."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from skillfactory.cli import app

from .test_chart import ALL_OFF, ALL_ON, CASES, CHART, SERVICES, component, helm, render

TOKENS_DIR = "/var/run/skillfactory/tokens"
CLIENT_TOKEN = "/var/run/skillfactory/client/token"
ACCEPTS = {
    "learner": {"admin", "submitter"},
    "rollout": {"learner"},
    "reward": {"rollout"},
    "composer": {"learner"},
}
"""The tokens each service accepts (docs/security.md)."""
SENDS = {"learner": "learner", "rollout": "rollout"}
"""The token each service that calls another sends."""


def workload(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(
        d for d in docs if d["kind"] in {"Deployment", "StatefulSet"} and component(d) == name
    )


def container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (c,) = workload(docs, name)["spec"]["template"]["spec"]["containers"]
    return dict(c)


def options(c: dict[str, Any]) -> dict[str, str]:
    """The container's `--name=value` arguments (the chart passes every option that way)."""
    return dict(a.removeprefix("--").split("=", 1) for a in c["args"] if a.startswith("--"))


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions In/NotIn) matches `labels`."""
    match = selector.get("matchLabels", {})
    if not all(labels.get(k) == v for k, v in match.items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        if expr["operator"] == "In" and value not in expr["values"]:
            return False
        if expr["operator"] == "NotIn" and value in expr["values"]:
            return False
    return True


def parse(args: list[str]) -> Any:
    """Parse `args` with the CLI's own parser for the command they name (types, ranges, choices
    and required options checked) without running it; the parsed context."""
    command: Any = typer.main.get_command(app)
    rest = list(args)
    ctx = command.context_class(command, info_name="skillfactory")
    while hasattr(command, "get_command"):  # a group (typer ships its own click)
        name, *rest = rest
        sub = command.get_command(ctx, name)
        assert sub is not None, f"no command {name!r}"
        command = sub
        ctx = command.context_class(command, info_name=name, parent=ctx)
    return command.make_context(command.name, rest, parent=ctx.parent)


def resolves_to_service(docs: list[dict[str, Any]], address: str, target: str) -> None:
    """`address` (HOST:PORT) is a rendered Service whose port forwards to the gRPC container port
    of the `target` component's pods, which its selector matches."""
    host, port = address.rsplit(":", 1)
    service = find(docs, "Service", host)
    assert service["spec"]["type"] == "ClusterIP" and "clusterIP" not in service["spec"]
    forwards = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    pod = workload(docs, target)["spec"]["template"]
    assert selects({"matchLabels": service["spec"]["selector"]}, pod["metadata"]["labels"])
    (c,) = pod["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    serving = "redis" if target == "redis" else "grpc"
    assert forwards[int(port)] == serving and serving in named, (address, target)


@pytest.mark.parametrize("case", list(CASES))
def test_command_lines_parse_with_the_cli(case: str) -> None:
    docs = render(CASES[case])
    for name in SERVICES:
        if name == "composer" and case == "all-off":
            continue
        ctx = parse(container(docs, name)["args"])
        assert ctx.params["host"] == "0.0.0.0" and ctx.params["metrics_host"] == "0.0.0.0", name
        assert str(ctx.params["tokens_dir"]) == TOKENS_DIR and ctx.params["token_file"] is None
        assert ctx.params["insecure_no_auth"] is False, name
        assert ctx.params["tls_cert"] is not None and ctx.params["tls_key"] is not None, name
        client = ctx.params["client_token_file"]
        assert (str(client) if client else None) == (CLIENT_TOKEN if name in SENDS else None)
        assert (ctx.params["tls_ca"] is not None) == (name in SENDS), name
    rollout = parse(container(docs, "rollout")["args"]).params
    assert rollout["redis_url"] and rollout["reward"] and rollout["samplers"] >= 1


@pytest.mark.parametrize("case", list(CASES))
def test_learner_and_rollouts_name_the_rendered_services(case: str) -> None:
    docs = render(CASES[case])
    learner, rollout = options(container(docs, "learner")), options(container(docs, "rollout"))

    # Redis: the chart's Service (selecting the Redis pod's redis port) or the external URL.
    assert learner["redis-url"] == rollout["redis-url"]
    if case == "all-off":
        assert learner["redis-url"] == ALL_OFF["redis"]["external"]["url"]
    else:
        url = learner["redis-url"]
        assert url.startswith("redis://") and url.endswith("/0")
        resolves_to_service(docs, url.removeprefix("redis://").removesuffix("/0"), "redis")

    # Both sides of the queue agree on its options.
    for key in ("claim-idle-ms", "stream-prefix"):
        assert learner[key] == rollout[key], key
    if case == "all-on":
        assert learner["claim-idle-ms"] == "30000" and learner["stream-prefix"] == "team-a"
        assert rollout["samplers"] == "4" and rollout["tasks-per-call"] == "2"
        assert rollout["model"] == "/shared/models/base"
    else:
        assert "model" not in rollout  # the rollout tasks name the run's model folder

    resolves_to_service(docs, rollout["reward"], "reward")
    if case == "all-off":
        assert "composer" not in learner  # the learner composes in process
    else:
        resolves_to_service(docs, learner["composer"], "composer")


@pytest.mark.parametrize("case", list(CASES))
def test_redis_password_and_tokens_come_from_secrets(case: str) -> None:
    docs = render(CASES[case])
    for name in ("learner", "rollout"):
        # A password in every mode: the chart's Redis and an external one (generated Secret).
        ref = env(container(docs, name))["SKILLFACTORY_REDIS_PASSWORD"]["secretKeyRef"]
        assert ref == {"name": "sf-skillfactory-redis", "key": "password"}, name
        assert ref["key"] in find(docs, "Secret", ref["name"])["data"]
        if case != "all-off":
            redis = env(container(docs, "redis"))["REDIS_PASSWORD"]["secretKeyRef"]
            assert ref == redis, name
    tokens = find(docs, "Secret", "sf-skillfactory-tokens")
    assert set(tokens["data"]) == {"admin", "submitter", "learner", "rollout"}
    for name in SERVICES:
        if name == "composer" and case == "all-off":
            continue
        c = container(docs, name)
        pod = workload(docs, name)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        accepted = volumes["tokens"]["secret"]
        assert accepted["secretName"] == "sf-skillfactory-tokens"
        assert {i["key"] for i in accepted["items"]} == ACCEPTS[name], name
        assert mounts["tokens"] == {"name": "tokens", "mountPath": TOKENS_DIR, "readOnly": True}
        if name in SENDS:
            (item,) = volumes["client-token"]["secret"]["items"]
            assert item == {"key": SENDS[name], "path": "token"}, name
            assert mounts["client-token"]["readOnly"] is True
        else:
            assert "client-token" not in volumes, name
        tls = volumes["tls"]["secret"]["secretName"]
        assert tls == f"sf-skillfactory-{name}-tls" and mounts["tls"]["readOnly"] is True
        assert set(find(docs, "Secret", tls)["data"]) == {"ca.crt", "tls.crt", "tls.key"}
        if name not in ("learner", "rollout"):  # the queue's users alone get the Redis password
            assert not any("TOKEN" in e or "PASSWORD" in e for e in env(c)), name
        assert "SKILLFACTORY_TOKEN" not in env(c), name  # files, never an env value
        # Nothing secret on a command line.
        assert not any(v in " ".join(c["args"]) for v in tokens["data"].values()), name


def test_redis_gets_its_password_from_a_config_on_stdin_never_a_command_line() -> None:
    redis = container(render({}), "redis")
    assert "args" not in redis
    sh, flag, script = redis["command"]
    assert (sh, flag) == ("/bin/sh", "-c")
    assert script.splitlines()[0] == "exec redis-server - <<EOF"
    assert 'requirepass "$REDIS_PASSWORD"' in script.splitlines()
    assert "--requirepass" not in script and "$(REDIS_PASSWORD)" not in script


def shared_mounts(docs: list[dict[str, Any]], name: str) -> tuple[str, dict[str, Any]]:
    """(claim name, mount) of the component's shared volume."""
    pod = workload(docs, name)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    (c,) = pod["containers"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
    return volume["persistentVolumeClaim"]["claimName"], mount


@pytest.mark.parametrize(
    ("values", "claim", "path"),
    [
        ({}, "sf-skillfactory-shared", "/shared"),
        (ALL_ON, "sf-skillfactory-shared", "/shared"),
        (ALL_OFF, "team-shared", "/shared"),
        ({"shared": {"mountPath": "/mnt/sf"}}, "sf-skillfactory-shared", "/mnt/sf"),
    ],
)
def test_one_shared_claim_at_one_path(values: dict[str, Any], claim: str, path: str) -> None:
    docs = render(values)
    users = ["learner", "rollout"]
    if values.get("composer", {}).get("enabled", True):
        users.append("composer")
    for name in users:
        assert shared_mounts(docs, name) == (
            claim,
            {
                "name": "shared",
                "mountPath": path,
                **({"readOnly": True} if name == "rollout" else {}),
            },
        ), name
    for name in ("reward", "redis"):  # they need no share
        if name == "redis" and values is ALL_OFF:
            continue
        volumes = workload(docs, name)["spec"]["template"]["spec"]["volumes"]
        assert not any(
            v.get("persistentVolumeClaim", {}).get("claimName") == claim for v in volumes
        )

    claims = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    if values is ALL_OFF:
        assert claims == []  # shared.existingClaim: nothing created
    else:
        (pvc,) = claims
        assert pvc["metadata"]["name"] == claim
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
        keep = pvc["metadata"].get("annotations", {}).get("helm.sh/resource-policy")
        assert keep == (None if values is ALL_ON else "keep")
        if values is ALL_ON:
            assert pvc["spec"]["storageClassName"] == "nfs"

    # Everything the rollouts and the composer must find is under the mount.
    learner = container(docs, "learner")
    assert options(learner)["weights-dir"] == f"{path}/weights"
    assert learner["workingDir"] == path  # a relative output_dir lands on the share
    learner_env = env(learner)
    for var in ("HF_HOME", "SKILLFACTORY_CACHE"):
        assert learner_env[var].startswith(f"{path}/"), var
    if "composer" in users:
        assert options(container(docs, "composer"))["data-root"] == path


def test_only_the_queue_users_reach_redis() -> None:
    docs = render(ALL_ON)
    (rule,) = find(docs, "NetworkPolicy", "sf-skillfactory-redis")["spec"]["ingress"]
    (peer,) = rule["from"]
    admitted = {
        name
        for name in (*SERVICES, "redis")
        if selects(
            peer["podSelector"], workload(docs, name)["spec"]["template"]["metadata"]["labels"]
        )
    }
    assert admitted == {"learner", "rollout"}
    composer = find(docs, "NetworkPolicy", "sf-skillfactory-composer")
    learner_labels = workload(docs, "learner")["spec"]["template"]["metadata"]["labels"]
    grpc = options(container(docs, "composer"))["port"]
    assert any(
        selects(p["podSelector"], learner_labels)
        and {"port": int(grpc), "protocol": "TCP"} in r["ports"]
        for r in composer["spec"]["ingress"]
        for p in r["from"]
        if "podSelector" in p
    )


def test_notes_give_the_output_dir_rule() -> None:
    with helm.Chart.load(CHART) as chart:
        notes = chart.render({"shared": {"mountPath": "/mnt/sf"}}, name="sf", namespace="ml")[
            "skillfactory/templates/NOTES.txt"
        ]
    assert "output_dir must lie under /mnt/sf" in notes
    assert "/mnt/sf/weights/<run>/<epoch>/v<version>" in notes
    assert "claim sf-skillfactory-shared" in notes
