"""The Grafana dashboards the chart ships (charts/dashboards/*.json): well-formed, portable (a
`datasource` variable of Prometheus type), and querying only series our services export.

What the services export is read from the code, not listed here: every metric class of the
package (a class named `*Metrics` whose constructor takes `registry`, plus the generic gRPC
`ServerMetrics`) is instantiated into a fresh `CollectorRegistry`, and each family's names are
taken as prometheus_client exposes them (`_total`, `_bucket`, `_sum`, `_count`, `_created`)."""

from __future__ import annotations

import ast
import importlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from support.prometheus import (
    dashboard_expressions,
    dashboard_variables,
    iter_panels,
    load_dashboard,
    raw_expressions,
    series_names,
    substitute_variables,
    templating_expressions,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pkg" / "skillfactory"
DASHBOARDS = sorted((ROOT / "charts" / "dashboards").glob("*.json"))
EXPECTED_DASHBOARDS = {"overview", "rollout", "learner", "queue", "reward"}

ANNOUNCED_SERIES = {
    "skillfactory_sampler_groups_pushed_total",
    "skillfactory_sampler_tasks_reclaimed_total",
    "skillfactory_sampler_reward_seconds_bucket",
    "skillfactory_sampler_generate_seconds_bucket",
    "skillfactory_queue_depth",
    "skillfactory_queue_pending",
    "skillfactory_learner_duplicate_groups_total",
    "skillfactory_learner_grad_norm",
    "skillfactory_learner_kl",
    "skillfactory_learner_step_seconds_bucket",
    "skillfactory_learner_step_seconds_sum",
    "skillfactory_learner_step_seconds_count",
    "skillfactory_composer_traces_composed_total",
    "skillfactory_composer_requests_total",
}
"""Series the sampler, learner and composer added for the dashboards: each must be charted."""

SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def metric_classes() -> Iterator[tuple[str, str]]:
    """(module, class) of every `*Metrics` class in the package whose `__init__` takes
    `registry`; found by reading the source, so only those modules are imported."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Metrics"):
                init = next(
                    (
                        f
                        for f in node.body
                        if isinstance(f, ast.FunctionDef) and f.name == "__init__"
                    ),
                    None,
                )
                if init is not None and any(a.arg == "registry" for a in init.args.args):
                    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
                    yield module, node.name


def registry_with_every_metric() -> tuple[CollectorRegistry, list[str]]:
    """One registry holding the generic gRPC series and every discovered metric class's."""
    from skillfactory.serving.metrics import ServerMetrics

    registry = ServerMetrics("any").registry
    found = ["skillfactory.serving.metrics.ServerMetrics"]
    for module, name in metric_classes():
        cls = getattr(importlib.import_module(module), name)
        try:
            cls(registry=registry)
        except TypeError as error:
            raise AssertionError(
                f"{module}.{name}(registry=...) failed ({error}): give its other parameters "
                "defaults, or instantiate it here, so the dashboards test sees its series"
            ) from error
        found.append(f"{module}.{name}")
    return registry, found


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Sample names as prometheus_client exposes the registry's families."""
    names = set()
    for family in registry.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


@pytest.fixture(scope="module")
def exported() -> set[str]:
    registry, _ = registry_with_every_metric()
    return exposed_names(registry)


def referenced_series() -> dict[str, list[str]]:
    """Series name → dashboards whose panels or variables query it."""
    where: dict[str, list[str]] = {}
    for path in DASHBOARDS:
        dashboard = load_dashboard(path)
        for expr in raw_expressions(dashboard) + templating_expressions(dashboard):
            for name in series_names(expr):
                where.setdefault(name, []).append(path.stem)
    return where


REFERENCED = referenced_series()


@pytest.mark.parametrize("name", sorted(REFERENCED))
def test_dashboard_series_is_exported(name: str, exported: set[str]) -> None:
    assert name in exported, (
        f"{name} (in {sorted(set(REFERENCED[name]))}) is exported by no service"
    )


def test_metric_classes_are_found(exported: set[str]) -> None:
    _, found = registry_with_every_metric()
    for cls in ("RewardMetrics", "RolloutMetrics", "LearnerMetrics", "ServerMetrics"):
        assert any(f.endswith(f".{cls}") for f in found), found
    assert "skillfactory_reward_answers_graded_total" in exported
    assert "skillfactory_grpc_request_seconds_bucket" in exported
    assert "skillfactory_learner_runs" in exported
    assert "skillfactory_rollout_batch_rows_bucket" in exported


def test_every_announced_series_is_charted() -> None:
    assert ANNOUNCED_SERIES.issubset(REFERENCED)


def test_expected_dashboards_exist() -> None:
    assert {p.stem for p in DASHBOARDS} == EXPECTED_DASHBOARDS


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_portable_and_well_formed(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] == f"skillfactory-{path.stem}" and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(iter_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel["title"] and panel["gridPos"]["w"] <= 24, panel
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
    # Every variable used resolves (substitution raises KeyError otherwise).
    assert dashboard_expressions(dashboard)


def test_series_names_of_promql() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le, method) (rate(a_bucket{x="b{c} d", y=~"$ns"}'
        "[$__rate_interval]))) / on(x) group_left(y) max without (z) (b_total offset 5m)"
        " or on() vector(1e3) and bool c:recorded"
    )
    assert series_names(expr) == {"a_bucket", "b_total", "c:recorded"}
    assert series_names("sum(rate(x_total[1m])) * 60") == {"x_total"}
    with pytest.raises(ValueError, match="__name__"):
        series_names('{__name__=~"skillfactory_.*"}')


def test_variables_are_substituted_and_unknown_ones_refused() -> None:
    dashboard = {
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {"name": "ns", "type": "query", "includeAll": True, "allValue": ".*"},
            ]
        }
    }
    values = dashboard_variables(dashboard)
    expr = 'rate(x{a=~"$ns", b="${ns:regex}"}[$__rate_interval])'
    assert substitute_variables(expr, values) == 'rate(x{a=~".*", b=".*"}[1m])'
    with pytest.raises(KeyError, match="nope"):
        substitute_variables("x{a='$nope'}", values)


def test_nested_row_panels_are_read() -> None:
    dashboard = {
        "panels": [
            {"type": "timeseries", "targets": [{"expr": "a"}]},
            {"type": "row", "panels": [{"type": "timeseries", "targets": [{"expr": "b"}]}]},
            {"type": "text"},
        ]
    }
    assert raw_expressions(dashboard) == ["a", "b"]
    labelled = {"templating": {"list": [{"type": "query", "query": "label_values(m{a='b'}, l)"}]}}
    assert templating_expressions(labelled) == ["m{a='b'}"]
