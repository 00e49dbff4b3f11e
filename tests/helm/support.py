"""Shared helpers of the chart tests: rendering with Helm's SDK, picking objects, running
the collector's --check-config."""

from __future__ import annotations

import copy
import json
import os
import pathlib
import subprocess
from typing import Any

import helm_python as helm
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "serviceradar-flow-collector"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
RELEASE = "flows"
NAMESPACE = "netflow"
FULLNAME = f"{RELEASE}-serviceradar-flow-collector"
# Where the image's entrypoint reads its config (`--config /etc/serviceradar/flow-collector.json`).
CONFIG_PATH = "/etc/serviceradar/flow-collector.json"

# Every values case the chart ships: its defaults and each example.
CASES: dict[str, dict[str, Any] | None] = {"default": None}
for _example in EXAMPLES:
    CASES[f"examples/{_example.name}"] = yaml.safe_load(_example.read_text())


def chart_values() -> dict[str, Any]:
    """The chart's default values (values.yaml), as Helm reads them."""
    with helm.Chart.load(CHART) as chart:
        return chart.values


class Rendered:
    """The objects of one render, by kind and name."""

    def __init__(self, manifests: dict[str, str]):
        self.manifests = manifests
        self.objects: list[dict[str, Any]] = []
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                continue
            for document in yaml.safe_load_all(text):
                if document:
                    self.objects.append(document)

    @property
    def notes(self) -> str:
        return next(text for path, text in self.manifests.items() if path.endswith("NOTES.txt"))

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    @property
    def workload(self) -> dict[str, Any]:
        found = self.all("Deployment") + self.all("DaemonSet")
        assert len(found) == 1, f"expected one Deployment or DaemonSet, found {len(found)}"
        return found[0]

    @property
    def pod(self) -> dict[str, Any]:
        return self.workload["spec"]["template"]

    @property
    def container(self) -> dict[str, Any]:
        containers = self.pod["spec"]["containers"]
        assert len(containers) == 1
        return containers[0]

    @property
    def config(self) -> dict[str, Any]:
        """The collector's JSON config, as the ConfigMap carries it."""
        configmap = self.one("ConfigMap")
        return json.loads(configmap["data"]["flow-collector.json"])

    @property
    def env(self) -> dict[str, Any]:
        return {e["name"]: e for e in self.container.get("env", [])}


def render(values: dict[str, Any] | None = None) -> Rendered:
    """Renders the chart as `helm template flows <chart> -n netflow -f values` would:
    values coalesced with values.yaml and checked against values.schema.json."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return Rendered(manifests)


def deep_merge(base: dict[str, Any] | None, override: dict[str, Any]) -> dict[str, Any]:
    """`override` layered over `base` (maps merge, everything else is replaced)."""
    merged = copy.deepcopy(base) if base else {}
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def nested(path: str, value: Any) -> dict[str, Any]:
    """`nested("config.channel_size", 1)` -> {"config": {"channel_size": 1}}."""
    out: Any = value
    for key in reversed(path.split(".")):
        out = {key: out}
    return out


def collector_binary() -> str:
    binary = os.environ.get("FLOW_COLLECTOR_BIN")
    assert binary, "FLOW_COLLECTOR_BIN is not set: run the chart tests through tests/helm.sh"
    assert os.access(binary, os.X_OK), f"{binary} is not an executable"
    return binary


def check_config(config: dict[str, Any], directory: pathlib.Path) -> subprocess.CompletedProcess:
    """Writes `config` to a file and runs `serviceradar-flow-collector --config FILE
    --check-config` on it, with no FLOW_COLLECTOR__* / NATS_URL overrides in the environment."""
    path = directory / "flow-collector.json"
    path.write_text(json.dumps(config, indent=2))
    return subprocess.run(
        [collector_binary(), "--config", str(path), "--check-config"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "warn"},
        capture_output=True,
        text=True,
        timeout=60,
    )
