"""deploy/prometheus/alerts.yml: valid for Prometheus, unit-tested with promtool, and about metrics we export."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bot.metrics import Metrics

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
SELECTOR = re.compile(r"\b(bot_[a-z_]+)(?:\{([^}]*)\})?")
SUFFIXES = ("_count", "_bucket", "_sum")


def promtool(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: install Debian's 'prometheus' package (.ci/run does)"
    return subprocess.run([tool, *args], cwd=RULES, capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    tests = yaml.safe_load((RULES / "alerts.test.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    firing = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"] if t.get("exp_alerts")}
    assert alerts == firing  # each one is shown to fire (and the tests around it show when it must not)


def test_the_rules_use_only_metrics_and_labels_the_app_exports() -> None:
    metrics = Metrics()
    exported: dict[str, tuple[str, ...]] = {}
    for metric in vars(metrics).values():
        name = getattr(metric, "_name", None)
        if name:
            kind = getattr(metric, "_type", "")
            exported[f"{name}_total" if kind == "counter" else name] = tuple(metric._labelnames)
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    used = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            for name, selector in SELECTOR.findall(rule["expr"]):
                base = next((name[:-len(s)] for s in SUFFIXES if name.endswith(s) and name[:-len(s)] in exported),
                            name)
                assert base in exported, f"{rule['alert']}: {name} is not a metric of bot/metrics.py"
                labels = re.findall(r"(\w+)\s*(?:=~|!=|!~|=)", selector)
                assert set(labels) <= set(exported[base]), f"{rule['alert']}: {name} has no label {labels}"
                used += 1
    assert used >= 8
