"""The compose stack's monitoring files, checked offline (issue 11): Prometheus's config and
alert rules by promtool (with the rules' own unit tests), Grafana's provisioning and
dashboard by loading them, and every metric they name against what the services really
expose on `/metrics`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The counter's worker and the mailer's dispatcher hold metrics of their own beside the
# HTTP apps: imported, as a running service imports them (signing's come with its app).
import groundswell_counter.entrypoints.worker  # noqa: F401
import groundswell_mailer.entrypoints.dispatcher  # noqa: F401
import httpx
import pytest
import yaml
from groundswell_counter.adapters.counts_view import CountsView
from groundswell_counter.config import CounterSettings
from groundswell_counter.entrypoints.http import create_api
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.entrypoints.http import create_app as create_mailer
from groundswell_sharing.config import SharingSettings
from groundswell_sharing.entrypoints.http import create_app as create_sharing
from groundswell_signing.config import SigningSettings
from groundswell_signing.entrypoints.http.app import create_app as create_signing
from groundswell_stack.reconcile import Drift, prometheus_text
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "deploy" / "compose"
PROMETHEUS = COMPOSE / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "rules" / "groundswell.yml"
RULES_TESTS = PROMETHEUS / "rules-test.yml"
GRAFANA = COMPOSE / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "groundswell.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "groundswell.yml"

# Series Prometheus makes itself, not the services.
PROMETHEUS_OWN = {"up"}
METRIC = re.compile(r"\b(groundswell_[a-z0-9_]+|up)\b")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
}


TOKEN = "monitoring-test-admin-token-0123456789abc"


def _counter() -> ASGIApp:
    settings = CounterSettings()
    return create_api(settings, CountsView(settings.kafka_bootstrap_servers, "counts"), {})


# Each service's own app factory; no start-up is needed to serve /metrics.
SERVICES: dict[str, Callable[[], ASGIApp]] = {
    "signing": lambda: create_signing(SigningSettings(ADMIN_TOKEN=TOKEN)),
    "counter": _counter,
    "mailer": lambda: create_mailer(MailerSettings()),
    "sharing": lambda: create_sharing(SharingSettings(ADMIN_TOKEN=TOKEN)),
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = (
            "promtool is not installed (apt-get install prometheus; "
            "deploy/ci/ensure-debian-package.sh does it as root)"
        )
        if os.environ.get("CI") == "true" and os.geteuid() == 0:
            pytest.fail(reason + ": CI runs as root, so .ci/run should have")
        pytest.skip(reason)
    return found


def run_promtool(*args: str) -> str:
    done = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD.read_text())
    assert isinstance(document, dict)
    return document


def dashboard_exprs() -> list[str]:
    return [t["expr"] for panel in dashboard()["panels"] for t in panel["targets"]]


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


async def exposed_metrics() -> set[str]:
    """Sample names the services' real `/metrics` can carry, scraped from each service's
    own app (their metrics modules imported, as in a running service), plus the
    reconcile job's textfile as `groundswell-stack reconcile` writes it."""
    texts = []
    for name, make in SERVICES.items():
        transport = httpx.ASGITransport(app=make())
        async with httpx.AsyncClient(transport=transport, base_url="http://svc.test") as client:
            response = await client.get("/metrics")
            assert response.status_code == 200, name
            texts.append(response.text)
    texts.append(prometheus_text(2, [Drift("a-petition", "signatures", 3, 4)]))
    names: set[str] = set()
    for text in texts:
        for family in text_string_to_metric_families(text):
            names.add(family.name)
            names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
            names.update(sample.name for sample in family.samples)
    return names


def test_prometheus_config_and_rules_pass_promtool() -> None:
    out = run_promtool("check", "config", str(CONFIG))
    assert "1 rule files found" in out
    out = run_promtool("check", "rules", str(RULES))
    assert "10 rules found" in out


def test_alert_rules_fire_as_their_unit_tests_say() -> None:
    out = run_promtool("test", "rules", str(RULES_TESTS))
    assert "SUCCESS" in out


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule's expression (it has no bare
    expression check)."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": expr}
                    for n, expr in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    out = run_promtool("check", "rules", str(path))
    assert f"{len(dashboard_exprs())} rules found" in out


def test_the_required_alerts_exist() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {rule["alert"]: rule for group in groups for rule in group["rules"]}
    assert {
        "ConsumerLagGrowing",
        "DeadLettersWritten",
        "OutboxBacklogOld",
        "CountDrift",
        "HighServerErrorRate",
    } <= set(alerts)
    assert alerts["ConsumerLagGrowing"]["for"] == "2m"
    assert "> 30" in alerts["OutboxBacklogOld"]["expr"]
    assert 'status=~"5.."' in alerts["HighServerErrorRate"]["expr"]


def test_prometheus_scrapes_the_services_the_relay_and_the_reconcile_job() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert targets == {
        "signing:8001",
        "counter:8002",
        "mailer:8003",
        "sharing:8004",
        "signing-relay:8005",
        "reconcile-exporter:9100",
    }
    # Every target is a service compose runs.
    compose = yaml.safe_load((CONFIG.parents[3] / "docker-compose.yml").read_text())
    assert {t.split(":")[0] for t in targets} <= set(compose["services"])


def test_grafana_provisioning_points_at_the_dashboard_and_the_datasource() -> None:
    [source] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/compose/grafana/dashboards:{provider['options']['path']}:ro" in mounts

    document = dashboard()
    assert document["uid"] and document["title"] and isinstance(document["schemaVersion"], int)
    panels = document["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        assert panel["type"] in {"timeseries", "stat", "gauge", "table"}, panel["title"]
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"]
            assert METRIC.search(target["expr"]), target["expr"]
    titles = " ".join(p["title"].lower() for p in panels)
    for wanted in ("signatures", "accepted vs counted", "freshness", "lag", "emails", "errors"):
        assert wanted in titles, wanted


async def test_every_metric_named_by_the_dashboard_and_rules_is_exposed() -> None:
    exposed = await exposed_metrics()
    named = {m for expr in [*dashboard_exprs(), *rule_exprs()] for m in METRIC.findall(expr)}
    missing = sorted(named - exposed - PROMETHEUS_OWN)
    assert not missing, f"named by the dashboard or the rules, exposed by no service: {missing}"
    # And the check has teeth: the names it found are the ones the issue asks for.
    assert {
        "groundswell_consumer_lag_messages",
        "groundswell_dlq_events_total",
        "groundswell_events_handled_total",
        "groundswell_outbox_oldest_age_seconds",
        "groundswell_mailer_emails_total",
        "groundswell_counter_stream_listeners",
        "groundswell_reconcile_drifts",
        "groundswell_http_requests_total",
    } <= named
