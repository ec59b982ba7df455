"""Checks the Grafana dashboard (docs/grafana/tickmesh.json) and the Prometheus alert rules
(docs/alerts/tickmesh.rules.yml): they load, have the structure Grafana and Prometheus need,
and refer only to metrics that docs/architecture.md documents. The same checks must reject
broken copies.
"""

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs/grafana/tickmesh.json"
RULES = ROOT / "docs/alerts/tickmesh.rules.yml"
ARCHITECTURE = ROOT / "docs/architecture.md"

METRIC_RE = re.compile(r"\btickmesh_[a-z0-9_]+\b")
# Series Prometheus derives from a histogram or summary.
DERIVED_SUFFIXES = ("_bucket", "_sum", "_count")
DATASOURCE_UIDS = {"${datasource}", "$datasource"}
SEVERITIES = {"critical", "warning", "info"}
DURATION_RE = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def documented_metrics(markdown: str) -> set[str]:
    """Metric names in the table rows of every "Metrics" section of the architecture doc."""
    names: set[str] = set()
    in_metrics = False
    for line in markdown.splitlines():
        if line.startswith("#"):
            in_metrics = "metrics" in line.lower()
        elif in_metrics and line.startswith("|"):
            first_cell = line.split("|")[1]
            names.update(METRIC_RE.findall(first_cell))
    return names


def unknown_metrics(expr: str, known: set[str]) -> list[str]:
    out = []
    for name in METRIC_RE.findall(expr):
        base = name
        for suffix in DERIVED_SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in known:
                base = name[: -len(suffix)]
        if base not in known:
            out.append(name)
    return out


def expr_problems(where: str, expr, known: set[str]) -> list[str]:
    if not isinstance(expr, str) or not expr.strip():
        return [f"{where}: empty expression"]
    problems = []
    depth = 0
    for ch in expr:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            break
    if depth != 0 or expr.count("{") != expr.count("}") or expr.count("[") != expr.count("]"):
        problems.append(f"{where}: unbalanced brackets in {expr!r}")
    problems += [f"{where}: undocumented metric {m}" for m in unknown_metrics(expr, known)]
    return problems


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def datasource_uid(ds):
    return ds.get("uid") if isinstance(ds, dict) else ds


def dashboard_problems(dash: dict, known: set[str]) -> list[str]:
    problems = []
    for key in ("title", "uid", "panels", "templating"):
        if key not in dash:
            problems.append(f"dashboard has no {key}")
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        problems.append(f"schemaVersion {dash.get('schemaVersion')!r} is older than 36")
    variables = dash.get("templating", {}).get("list", [])
    if not any(v.get("type") == "datasource" and v.get("query") == "prometheus" and v.get("name") == "datasource"
               for v in variables):
        problems.append("no `datasource` variable of type datasource for prometheus")
    for v in variables:
        if v.get("type") == "query":
            if datasource_uid(v.get("datasource")) not in DATASOURCE_UIDS:
                problems.append(f"variable {v.get('name')}: datasource is not the variable")
            query = v.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            problems += expr_problems(f"variable {v.get('name')}", query, known)
    ids = set()
    for p in all_panels(dash.get("panels", [])):
        name = f"panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            problems.append(f"{name}: duplicate id")
        ids.add(p.get("id"))
        if not isinstance(p.get("gridPos"), dict) or not {"h", "w", "x", "y"} <= p["gridPos"].keys():
            problems.append(f"{name}: no gridPos")
        if p.get("type") == "row":
            continue
        if not p.get("title"):
            problems.append(f"{name}: no title")
        if datasource_uid(p.get("datasource")) not in DATASOURCE_UIDS:
            problems.append(f"{name}: datasource is not ${{datasource}}")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"{name}: no targets")
        ref_ids = [t.get("refId") for t in targets]
        if len(set(ref_ids)) != len(ref_ids) or None in ref_ids:
            problems.append(f"{name}: refIds missing or repeated")
        for t in targets:
            if "datasource" in t and datasource_uid(t["datasource"]) not in DATASOURCE_UIDS:
                problems.append(f"{name} target {t.get('refId')}: datasource is not ${{datasource}}")
            problems += expr_problems(f"{name} target {t.get('refId')}", t.get("expr"), known)
    return problems


def rules_problems(doc, known: set[str]) -> list[str]:
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list) or not doc["groups"]:
        return ["no rule groups"]
    problems = []
    names = set()
    for g in doc["groups"]:
        if not g.get("name") or not g.get("rules"):
            problems.append(f"group {g.get('name')!r}: needs a name and rules")
            continue
        for r in g["rules"]:
            name = r.get("alert")
            where = f"rule {name!r}"
            if not name or "record" in r:
                problems.append(f"{where}: every rule here is an alert with a name")
            if name in names:
                problems.append(f"{where}: duplicate alert name")
            names.add(name)
            problems += expr_problems(where, r.get("expr"), known)
            if "for" in r and not DURATION_RE.match(str(r["for"])):
                problems.append(f"{where}: bad `for` {r['for']!r}")
            if r.get("labels", {}).get("severity") not in SEVERITIES:
                problems.append(f"{where}: severity must be one of {sorted(SEVERITIES)}")
            annotations = r.get("annotations", {})
            for key in ("summary", "description"):
                if not annotations.get(key):
                    problems.append(f"{where}: no {key} annotation")
    return problems


@pytest.fixture(scope="module")
def known():
    names = documented_metrics(ARCHITECTURE.read_text())
    assert "tickmesh_edge_sessions" in names, "the metrics table of docs/architecture.md was not found"
    return names


@pytest.fixture(scope="module")
def dashboard():
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def rules():
    return yaml.safe_load(RULES.read_text())


def test_dashboard_is_well_formed_and_uses_documented_metrics(dashboard, known):
    problems = dashboard_problems(dashboard, known)
    assert not problems, "\n".join(problems)
    assert sum(1 for p in all_panels(dashboard["panels"]) if p["type"] != "row") >= 10


def test_alert_rules_are_well_formed_and_use_documented_metrics(rules, known):
    problems = rules_problems(rules, known)
    assert not problems, "\n".join(problems)


def test_alerts_cover_the_failure_modes(rules):
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    for needle in (
        'event="disconnected"',
        'tickmesh_edge_slow_consumer_total{action="closed"}',
        "tickmesh_edge_ticks_in_total",
        'tickmesh_edge_snapshot_reads_total{source="error"}',
        "tickmesh_ingest_kv_errors_total",
        "tickmesh_edge_session_queue_bytes_bucket",
    ):
        assert needle in exprs, f"no alert watches {needle}"


def first_target(dash):
    return next(p for p in all_panels(dash["panels"]) if p.get("targets"))


def break_metric(dash):
    first_target(dash)["targets"][0]["expr"] = "rate(tickmesh_edge_no_such_metric_total[5m])"


def break_targets(dash):
    first_target(dash)["targets"] = []


def break_datasource(dash):
    first_target(dash)["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}


def break_variable(dash):
    dash["templating"]["list"] = [v for v in dash["templating"]["list"] if v["type"] != "datasource"]


def break_brackets(dash):
    t = first_target(dash)["targets"][0]
    t["expr"] = t["expr"] + ")"


@pytest.mark.parametrize("breakage", [break_metric, break_targets, break_datasource, break_variable, break_brackets])
def test_dashboard_check_rejects_a_broken_copy(dashboard, known, breakage):
    broken = copy.deepcopy(dashboard)
    breakage(broken)
    assert dashboard_problems(broken, known) != []


def test_rules_check_rejects_a_broken_copy(rules, known):
    for mutate in (
        lambda r: r.update(expr="tickmesh_edge_made_up > 0"),
        lambda r: r["labels"].update(severity="page-everyone"),
        lambda r: r["annotations"].pop("summary"),
        lambda r: r.update({"for": "five minutes"}),
    ):
        broken = copy.deepcopy(rules)
        mutate(broken["groups"][0]["rules"][0])
        assert rules_problems(broken, known) != []
    assert rules_problems(yaml.safe_load("groups: []"), known) != []


def test_documented_metrics_come_from_the_metrics_tables_only():
    doc = "# Intro\n`tickmesh_edge_x` in prose\n## Metrics (edge)\n| name |\n|---|\n| `tickmesh_edge_y{code}` | gauge |\n"
    assert documented_metrics(doc) == {"tickmesh_edge_y"}
