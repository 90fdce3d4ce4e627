"""The provisioned Grafana dashboards and data source, checked as files: what Grafana needs to load
them and what keeps them consistent (the numbers they show: tests/integration/test_grafana_panels.py).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
DASHBOARDS = {p.name: json.loads(p.read_text()) for p in DASHBOARD_FILES}
UID = "spanmeter-clickhouse"
PLUGIN = "grafana-clickhouse-datasource"


def _builder():
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILDER = _builder()


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # a collapsed row keeps its panels inside
    return out


def targets(dashboard: dict[str, Any]):
    for p in panels(dashboard):
        for t in p.get("targets", []):
            yield p, t


def data_links(dashboard: dict[str, Any]):
    for p in panels(dashboard):
        config = p.get("fieldConfig", {})
        for link in config.get("defaults", {}).get("links", []):
            yield p, link
        for o in config.get("overrides", []):
            for prop in o["properties"]:
                if prop["id"] == "links":
                    for link in prop["value"]:
                        yield p, link


def test_dashboards_are_the_builders_output():
    assert [p.name for p in DASHBOARD_FILES] == sorted(BUILDER.DASHBOARDS)
    assert BUILDER.main(["--check"]) == 0, "run: python grafana/build_dashboards.py"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_header(name):
    d = DASHBOARDS[name]
    assert d["schemaVersion"] == BUILDER.SCHEMA_VERSION == 41  # Grafana 12 (the pinned image)
    assert re.fullmatch(r"[a-z0-9-]{1,40}", d["uid"])
    assert d["title"] and d["tags"] == ["spanmeter"]
    assert "id" not in d or d["id"] is None  # provisioned by uid
    assert d["time"] == {"from": "now-30d", "to": "now"}


def test_dashboard_uids_and_titles_are_unique():
    uids = [d["uid"] for d in DASHBOARDS.values()]
    titles = [d["title"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_and_target_uses_the_provisioned_data_source(name):
    d = DASHBOARDS[name]
    for p in panels(d):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": PLUGIN, "uid": UID}, p["title"]
        assert p["targets"], p["title"]
    for p, t in targets(d):
        assert t["datasource"] == {"type": PLUGIN, "uid": UID}, p["title"]
        assert t["editorType"] == "sql" and t["rawSql"].strip(), p["title"]
        assert t["format"] in (0, 1) and t["queryType"] == {0: "timeseries", 1: "table"}[t["format"]], p["title"]
        assert t["pluginVersion"] == BUILDER.PLUGIN_VERSION
    for p in panels(d):
        refs = [t["refId"] for t in p.get("targets", [])]
        assert all(refs) and len(set(refs)) == len(refs), p["title"]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == {"type": PLUGIN, "uid": UID}, v["name"]
    for p, link in data_links(d):
        if "internal" in link:
            assert link["internal"]["datasourceUid"] == UID, p["title"]
            query = link["internal"]["query"]
            assert query["datasource"]["uid"] == UID and query["rawSql"].strip() and query["refId"]
        else:
            target = re.match(r"/d/([a-z0-9-]+)/", link["url"])
            assert target and target.group(1) in {x["uid"] for x in DASHBOARDS.values()}, link["url"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_sql_names_only_defined_variables_and_unqualified_tables(name):
    d = DASHBOARDS[name]
    defined = {v["name"] for v in d["templating"]["list"]}
    sqls = [t["rawSql"] for _, t in targets(d)] + [v["query"] for v in d["templating"]["list"] if v["type"] == "query"]
    sqls += [link["internal"]["query"]["rawSql"] for _, link in data_links(d) if "internal" in link]
    for sql in sqls:
        for m in re.finditer(r"\$\{?(\w+)", sql):
            var = m.group(1)
            if var.startswith("__"):
                continue  # macros ($__timeFilter, ...) and built-ins (${__value.raw})
            assert var in defined, f"{name}: ${var} is not a variable of the dashboard"
        # The data source's defaultDatabase decides the database: never hard-code it.
        assert not re.search(r"\bspanmeter\.", sql), sql
        # Rollups are summed with GROUP BY, never read with FINAL; only the rates (prices, a
        # ReplacingMergeTree) are, as their view price_rates reads them.
        assert sql.count("FINAL") == len(re.findall(r"\bprices FINAL\b", sql)), sql


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panel_ids_unique_and_layout_without_overlaps(name):
    d = DASHBOARDS[name]
    ps = panels(d)
    ids = [p["id"] for p in ps]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(set(ids)) == len(ids)
    boxes = []
    for p in ps:
        g = p["gridPos"]
        assert set(g) == {"h", "w", "x", "y"} and all(isinstance(v, int) for v in g.values()), p["title"]
        assert g["w"] >= 1 and g["h"] >= 1 and g["x"] >= 0 and g["y"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] == "row":
            assert (g["x"], g["w"], g["h"]) == (0, 24, 1), p["title"]
        boxes.append((p["title"], g))
    for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
        overlap = a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]
        assert not overlap, f"{name}: {ta!r} overlaps {tb!r}"
    # No holes: each panel's top touches the panel (or the dashboard's top) above it.
    for title, g in boxes:
        if g["y"] > 0:
            above = [b for _, b in boxes if b["y"] + b["h"] == g["y"] and b["x"] < g["x"] + g["w"] and g["x"] < b["x"] + b["w"]]
            assert above, f"{name}: a gap above {title!r}"


def test_user_detail_variable_and_trace_link():
    d = DASHBOARDS["user-detail.json"]
    (user,) = [v for v in d["templating"]["list"] if v["name"] == "user"]
    assert user["type"] == "query" and not user["multi"] and not user["includeAll"]
    for p, t in targets(d):
        assert "${user:singlequote}" in t["rawSql"], p["title"]  # quoted and escaped, never raw
    links = [link for p, link in data_links(d) if p["title"] == "Calls"]
    assert [link["internal"]["query"]["format"] for link in links] == [3]  # the plugin's trace format
    assert "'${__value.raw}'" in links[0]["internal"]["query"]["rawSql"]


def test_datasource_provisioning():
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml").read_text())
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    assert ds["type"] == PLUGIN and ds["uid"] == UID and ds["name"] == BUILDER.DATASOURCE_NAME
    j = ds["jsonData"]
    assert j["defaultDatabase"] == "spanmeter"
    assert (j["protocol"], j["port"]) in (("http", 8123), ("native", 9000))
    # The read-only user and its password come from the environment, never from the file.
    assert j["username"] == "${SPANMETER_CLICKHOUSE_READER_USER}"
    assert ds["secureJsonData"]["password"] == "${SPANMETER_CLICKHOUSE_READER_PASSWORD}"
    assert j["traces"]["defaultDatabase"] == "otel" and j["traces"]["defaultTable"] == "otel_traces"
    (traces_table,) = [v for v in DASHBOARDS["user-detail.json"]["templating"]["list"] if v["name"] == "traces_table"]
    assert traces_table["query"] == f"{j['traces']['defaultDatabase']}.{j['traces']['defaultTable']}"


def test_dashboard_provider():
    doc = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    assert provider["allowUiUpdates"] is False
