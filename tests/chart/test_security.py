"""Issue 15, finding 10 (chart): metrics on the pod address, a token per role, TLS on every gRPC
hop from a Secret (generated, cert-manager or existing), the Ray dashboard reachable by the
operator alone, a Redis password in every mode and on no command line, run limits as values.
What the rendered pods do with it is `test_pod_emulation.py`; here, what is rendered."""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from skillfactory.run_limits import RunLimits

from .test_chart import CHART, CRD_KINDS, KUBE_VERSIONS, SERVICES, helm, kv, render
from .test_wiring import container, find, options, parse, workload

CERT_MANAGER = {
    "tls": {"source": "certManager", "certManager": {"issuerRef": {"name": "team-ca"}}},
}


def certificate(secret: dict[str, Any], key: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(secret["data"][key]))


def test_generated_certificates_chain_to_the_ca_and_name_the_services() -> None:
    docs = render({})
    cas = set()
    for name in SERVICES:
        secret = find(docs, "Secret", f"sf-skillfactory-{name}-tls")
        assert secret["type"] == "kubernetes.io/tls"
        ca, cert = certificate(secret, "ca.crt"), certificate(secret, "tls.crt")
        cas.add(ca.fingerprint(ca.signature_hash_algorithm))  # type: ignore[arg-type]
        cert.verify_directly_issued_by(ca)
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        service = f"sf-skillfactory-{name}"
        assert set(names.get_values_for_type(x509.DNSName)) == {
            service,
            f"{service}.ml",
            f"{service}.ml.svc",
            f"{service}.ml.svc.cluster.local",
            "localhost",
        }
        assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
        assert "BEGIN EC PRIVATE KEY" in base64.b64decode(secret["data"]["tls.key"]).decode()
    assert len(cas) == 1  # one CA for the release
    # The CA's key was used while rendering only: no object holds a second private key per CA.
    keys = [d for d in docs if d["kind"] == "Secret" and "tls.key" in (d.get("data") or {})]
    assert len(keys) == len(SERVICES)


def test_cert_manager_certificates_and_existing_secrets() -> None:
    docs = render(CERT_MANAGER)
    certificates = [d for d in docs if d["kind"] == "Certificate"]
    assert {c["metadata"]["name"] for c in certificates} == {
        f"sf-skillfactory-{n}-tls" for n in SERVICES
    }
    for cert in certificates:
        spec = cert["spec"]
        assert spec["secretName"] == cert["metadata"]["name"]
        assert spec["issuerRef"] == {
            "name": "team-ca",
            "kind": "Issuer",
            "group": "cert-manager.io",
        }
        assert "localhost" in spec["dnsNames"] and spec["ipAddresses"] == ["127.0.0.1"]
    assert not any(d["kind"] == "Secret" and d["metadata"]["name"].endswith("-tls") for d in docs)
    with pytest.raises(helm.HelmError, match="issuerRef"):
        render({"tls": {"source": "certManager"}})

    existing = render({"tls": {"source": "existing"}})
    assert not any(
        d["kind"] in {"Certificate"} or d["metadata"]["name"].endswith("-tls")
        for d in existing
        if d["kind"] in {"Certificate", "Secret"}
    )
    volumes = workload(existing, "reward")["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "tls",
        "secret": {"secretName": "sf-skillfactory-reward-tls", "defaultMode": 0o440},
    } in volumes


@pytest.mark.parametrize(
    "values", [CERT_MANAGER, {"tls": {"enabled": False}}], ids=["cert-manager", "no-tls"]
)
def test_tls_variants_lint_and_validate(values: dict[str, Any]) -> None:
    for kube in KUBE_VERSIONS:
        report = helm.lint(CHART, values, strict=True, kube_version=f"v{kube}")
        assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2]
    for doc in render(values):
        if doc["kind"] not in CRD_KINDS | {"Certificate"}:
            kv.validate(doc, KUBE_VERSIONS[-1], strict=True)


def test_without_tls_nothing_mentions_it() -> None:
    docs = render({"tls": {"enabled": False}})
    for name in SERVICES:
        c = container(docs, name)
        assert not any(a.startswith("--tls") for a in c["args"]), name
        assert not any(m["name"] == "tls" for m in c["volumeMounts"]), name


def test_run_limits_reach_the_learner_and_zero_sets_none() -> None:
    c = container(
        render({"learner": {"limits": {"maxSteps": 300, "maxEpochs": 2.5, "maxTokens": 0}}}),
        "learner",
    )
    params = parse(c["args"]).params
    limits = RunLimits(
        max_steps=params["max_steps"],
        max_problems=params["max_problems"],
        max_tokens=params["max_tokens"],
        max_samples=params["max_samples"],
        max_epochs=params["max_epochs"],
        max_spec_bytes=params["max_spec_bytes"],
    )
    assert limits == RunLimits(300, 100_000, None, 64, 2.5, 1_048_576)
    assert "max-tokens" not in options(c)


def test_extra_submitter_tokens_are_generated_and_accepted_by_the_learner_alone() -> None:
    docs = render({"auth": {"submitters": ["submitter.alice", "submitter.bob"]}})
    tokens = find(docs, "Secret", "sf-skillfactory-tokens")["data"]
    assert {"submitter.alice", "submitter.bob"} <= set(tokens)
    assert len({base64.b64decode(v) for v in tokens.values()}) == len(tokens)  # all distinct
    for name in SERVICES:
        volumes = workload(docs, name)["spec"]["template"]["spec"]["volumes"]
        keys = {i["key"] for v in volumes if v["name"] == "tokens" for i in v["secret"]["items"]}
        assert ("submitter.alice" in keys) == (name == "learner"), name


def test_an_external_redis_gets_a_generated_password_too() -> None:
    docs = render(
        {"redis": {"enabled": False, "external": {"url": "redis://redis.example:6379/0"}}}
    )
    secret = find(docs, "Secret", "sf-skillfactory-redis")
    assert len(base64.b64decode(secret["data"]["password"])) == 32
    assert not any(d["kind"] == "StatefulSet" and "redis" in d["metadata"]["name"] for d in docs)


def test_metrics_bind_every_interface_of_the_pod() -> None:
    docs = render({})
    for name in SERVICES:
        assert options(container(docs, name))["metrics-host"] == "0.0.0.0", name


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tls": {"source": "self-signed"}}, "/tls/source"),
        ({"tls": {"certManager": {"duration": "90d"}}}, "/tls/certManager/duration"),
        ({"auth": {"submitters": ["alice"]}}, "/auth/submitters"),
        ({"auth": {"token": "x"}}, "token"),
        ({"learner": {"limits": {"maxSteps": -1}}}, "/learner/limits/maxSteps"),
        ({"learner": {"limits": {"maxRuns": 1}}}, "maxRuns"),
        ({"reward": {"healthPort": "health"}}, "/reward/healthPort"),
        ({"redis": {"port": 0}}, "/redis/port"),
        ({"learner": {"token": {"existingSecret": "x"}}}, "token"),
    ],
)
def test_schema_refuses_broken_security_values(values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match=message):
        chart.validate_schema(values)


def test_a_health_port_equal_to_another_port_is_refused() -> None:
    with pytest.raises(helm.HelmError, match="must differ"):
        render({"reward": {"healthPort": 50051}})
