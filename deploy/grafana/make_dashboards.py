#!/usr/bin/env python3
"""Writes the two Grafana dashboards (InfluxQL and Flux) from one list of panels, so that the
variants cannot drift apart. Run after changing a panel; the JSON files are committed.

    python3 deploy/grafana/make_dashboards.py
"""

import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent

# (title, unit, measurement, fields, aggregate, kind): a time series per device and field.
SERIES = [
    ("剩余电流 Residual current", "mA", "electrical", ["leakage"], "max", "timeseries"),
    ("电气火灾探测器 剩余电流 Detector residual current", "mA", "electrical_fire", ["leak"], "max", "timeseries"),
    ("线缆温度 Cable temperature", "celsius", "electrical_fire", ["t1", "t2", "t3", "t4"], "max", "timeseries"),
    ("电压 Phase voltage", "volt", "electrical", ["ua", "ub", "uc"], "mean", "timeseries"),
    ("电流 Phase current", "amp", "electrical", ["ia", "ib", "ic"], "mean", "timeseries"),
    ("可燃气体 Combustible gas", "percent", "gas", ["lel"], "max", "timeseries"),
]

JOURNAL_FIELDS = ["action", "state", "message", "operator", "comment", "value", "threshold"]


def influxql_series(measurement, fields, aggregate):
    selects = ", ".join(f'{aggregate}("{f}") AS "{f}"' for f in fields)
    return (
        f'SELECT {selects} FROM "{measurement}" WHERE $timeFilter '
        f'AND "park" =~ /^$park$/ AND "device" =~ /^$device$/ '
        f'GROUP BY time($__interval), "device" fill(null)'
    )


def flux_series(measurement, fields, aggregate):
    field_test = " or ".join(f'r._field == "{f}"' for f in fields)
    return (
        'from(bucket: "${bucket}")\n'
        "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n"
        f'  |> filter(fn: (r) => r._measurement == "{measurement}" and ({field_test}))\n'
        '  |> filter(fn: (r) => r.park =~ /^${park:regex}$/ and r.device =~ /^${device:regex}$/)\n'
        f"  |> aggregateWindow(every: v.windowPeriod, fn: {aggregate}, createEmpty: false)\n"
        '  |> keep(columns: ["_time", "_value", "_field", "device"])'
    )


SMOKE_INFLUXQL = (
    'SELECT count("event") AS "alarms" FROM "smoke" WHERE $timeFilter AND "event" = \'alarm\' '
    'AND "park" =~ /^$park$/ GROUP BY time($__interval), "device" fill(0)'
)
SMOKE_FLUX = (
    'from(bucket: "${bucket}")\n'
    "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n"
    '  |> filter(fn: (r) => r._measurement == "smoke" and r._field == "event" and r._value == "alarm")\n'
    '  |> filter(fn: (r) => r.park =~ /^${park:regex}$/)\n'
    "  |> aggregateWindow(every: v.windowPeriod, fn: count, createEmpty: true)\n"
    '  |> keep(columns: ["_time", "_value", "device"])'
)
JOURNAL_INFLUXQL = (
    'SELECT "severity", "rule", "device", '
    + ", ".join(f'"{f}"' for f in JOURNAL_FIELDS)
    + ' FROM "alarm" WHERE $timeFilter AND "park" =~ /^$park$/ ORDER BY time DESC LIMIT 500'
)
JOURNAL_FLUX = (
    'from(bucket: "${bucket}")\n'
    "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n"
    '  |> filter(fn: (r) => r._measurement == "alarm" and r.park =~ /^${park:regex}$/)\n'
    '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
    '  |> group()\n'
    '  |> keep(columns: ["_time", "severity", "rule", "device", '
    + ", ".join(f'"{f}"' for f in JOURNAL_FIELDS)
    + "])\n"
    '  |> sort(columns: ["_time"], desc: true)\n'
    "  |> limit(n: 500)"
)


def panel(pid, title, kind, unit, query, language, x, y, w=12, h=8):
    target = {"refId": "A", "datasource": {"type": "influxdb", "uid": f"parkguard-{language}"}}
    if language == "influxql":
        target.update({"query": query, "rawQuery": True, "resultFormat": "time_series" if kind != "table" else "table"})
    else:
        target.update({"query": query})
    p = {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": {"type": "influxdb", "uid": f"parkguard-{language}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [target],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }
    return p


def variables(language):
    ds = {"type": "influxdb", "uid": f"parkguard-{language}"}
    if language == "influxql":
        park_q = 'SHOW TAG VALUES WITH KEY = "park"'
        device_q = 'SHOW TAG VALUES WITH KEY = "device" WHERE "park" =~ /^$park$/'
    else:
        park_q = 'import "influxdata/influxdb/schema"\nschema.tagValues(bucket: "${bucket}", tag: "park")'
        device_q = (
            'import "influxdata/influxdb/schema"\n'
            'schema.tagValues(bucket: "${bucket}", tag: "device", '
            "predicate: (r) => r.park =~ /^${park:regex}$/)"
        )
    out = []
    if language == "flux":
        out.append({"name": "bucket", "type": "constant", "query": "parkguard", "hide": 2})
    for name, label, query in [("park", "园区 Park", park_q), ("device", "设备 Device", device_q)]:
        out.append({
            "name": name, "label": label, "type": "query", "datasource": ds, "query": query,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
        })
    return {"list": out}


def dashboard(language):
    panels = []
    for i, (title, unit, measurement, fields, aggregate, kind) in enumerate(SERIES):
        query = (influxql_series if language == "influxql" else flux_series)(measurement, fields, aggregate)
        panels.append(panel(i + 1, title, kind, unit, query, language, (i % 2) * 12, (i // 2) * 8))
    y = (len(SERIES) + 1) // 2 * 8
    panels.append(panel(len(panels) + 1, "烟感报警 Smoke alarms", "barchart", "short",
                        SMOKE_INFLUXQL if language == "influxql" else SMOKE_FLUX, language, 0, y, 24, 6))
    panels.append(panel(len(panels) + 1, "报警日志 Alarm journal", "table", "none",
                        JOURNAL_INFLUXQL if language == "influxql" else JOURNAL_FLUX, language, 0, y + 6, 24, 10))
    return {
        "uid": f"parkguard-{language}",
        "title": f"parkguard 园区安全监测 ({'InfluxQL' if language == 'influxql' else 'Flux'})",
        "tags": ["parkguard"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": variables(language),
        "panels": panels,
    }


for language in ["influxql", "flux"]:
    path = HERE / "dashboards" / f"parkguard-{language}.json"
    path.write_text(json.dumps(dashboard(language), ensure_ascii=False, indent=2) + "\n")
    print(f"wrote {path}")
