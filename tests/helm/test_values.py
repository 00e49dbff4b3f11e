"""Wrong values fail at install with a message naming the key; values.schema.json knows
every key of the collector's config and accepts exactly what the collector accepts."""

from __future__ import annotations

import copy
import json
import re

import helm_python as helm
import pytest

from support import CHART, REPO, chart_values, check_config, nested, render


# (values, the JSON pointer the schema names, a fragment of the reason)
SCHEMA_MISTAKES = [
    ({"config": {"channel_size": -1}}, "/config/channel_size", "minimum"),
    ({"config": {"channel_size": 0}}, "/config/channel_size", "minimum"),
    (
        {"config": {"listeners": [{"protocol": "ipfix", "listen_addr": "0.0.0.0:4739"}]}},
        "/config/listeners/0/protocol",
        "netflow",
    ),
    ({"config": {"stream_replicas": 6}}, "/config/stream_replicas", "maximum"),
    ({"config": {"batch_size": "100"}}, "/config/batch_size", "integer"),
    ({"config": {"exporter_prefixes": {"10.0.0.0/8": "a"}}}, "/config", "exporter_prefixes"),
    ({"config": {"listeners": []}}, "/config/listeners", "minItems"),
    ({"config": {"metrics_addr": None}}, "/config", "metrics_addr"),
    ({"config": {"metrics_addr": "localhost:50046"}}, "/config/metrics_addr", "pattern"),
    ({"config": {"security": {"mode": "tls"}}}, "/config/security/mode", "mtls"),
    ({"config": {"security": {"tls": None}}}, "/config/security", "tls"),
    ({"kind": "StatefulSet"}, "/kind", "DaemonSet"),
    ({"service": {"externalTrafficPolicy": "Global"}}, "/service/externalTrafficPolicy", "Local"),
    ({"terminationGracePeriodSeconds": 10}, "/terminationGracePeriodSeconds", "minimum"),
    ({"replicaCount": 0}, "/replicaCount", "minimum"),
    ({"logFormat": "xml"}, "/logFormat", "json"),
    ({"replicas": 3}, "", "replicas"),
]


@pytest.mark.parametrize(("values", "pointer", "reason"), SCHEMA_MISTAKES)
def test_values_mistake_fails_with_a_schema_message(values, pointer, reason):
    with pytest.raises(helm.HelmValuesError) as caught:
        render(values)
    message = str(caught.value)
    assert "schema" in message
    assert f"at '{pointer}'" in message, message
    assert reason in message, message


def test_protocol_specific_keys_are_refused_on_the_other_protocol():
    listeners = chart_values()["config"]["listeners"]
    listeners[1]["max_templates"] = 100  # the sflow listener
    with pytest.raises(helm.HelmValuesError) as caught:
        render({"config": {"listeners": listeners}})
    assert "/config/listeners/1/max_templates" in str(caught.value)


# (values, a fragment of the chart's own message): mistakes a JSON schema cannot express.
TEMPLATE_MISTAKES = [
    ({"resources": {"limits": {"memory": "1Gi"}}}, "requests.memory (512Mi) must equal limits.memory (1Gi)"),
    ({"tls": {"existingSecret": ""}}, 'config.security.mode is "mtls": set tls.existingSecret'),
    (
        {"config": {"security": {"tls": {"cert_file": "/etc/ssl/collector.pem"}}}},
        "config.security.tls.cert_file",
    ),
    (
        {"config": {"nats_creds_file": "/etc/serviceradar/creds/platform.creds"}},
        "config.nats_creds_file is /etc/serviceradar/creds/platform.creds but nothing mounts it",
    ),
    ({"preStopSleepSeconds": 20}, "terminationGracePeriodSeconds (45) must exceed preStopSleepSeconds (20)"),
    ({"serviceMonitor": {"enabled": True}, "metricsService": {"enabled": False}}, "needs metricsService.enabled"),
]


@pytest.mark.parametrize(("values", "fragment"), TEMPLATE_MISTAKES)
def test_values_mistake_fails_with_the_charts_message(values, fragment):
    with pytest.raises(helm.HelmRenderError) as caught:
        render(values)
    assert fragment in str(caught.value)


def test_two_listeners_on_one_port_are_refused():
    listeners = chart_values()["config"]["listeners"]
    listeners.append({"protocol": "netflow", "listen_addr": "127.0.0.1:2055"})
    with pytest.raises(helm.HelmRenderError) as caught:
        render({"config": {"listeners": listeners}})
    assert "config.listeners[2].listen_addr: port 2055 is already used by config.listeners[0]" in str(caught.value)


def test_extra_volume_mounts_may_provide_the_certificates():
    values = {
        "tls": {"existingSecret": ""},
        "extraVolumes": [{"name": "certs", "csi": {"driver": "csi.cert-manager.io", "readOnly": True}}],
        "extraVolumeMounts": [{"name": "certs", "mountPath": "/etc/serviceradar/certs"}],
    }
    rendered = render(values)
    assert {m["mountPath"] for m in rendered.container["volumeMounts"]} >= {"/etc/serviceradar/certs"}
    assert "tls" not in {v["name"] for v in rendered.pod["spec"]["volumes"]}


def _rust_struct_fields(source: str, struct: str) -> set[str]:
    body = re.search(r"pub struct " + struct + r" \{(.*?)\n\}", source, re.S)
    assert body, f"struct {struct} not found in src/config.rs"
    return set(re.findall(r"^\s*pub (\w+):", body.group(1), re.M))


def test_schema_knows_every_key_of_the_collector_config():
    """values.schema.json refuses unknown config keys, so a key added to the collector
    (src/config.rs) must be added to the schema too, or the chart could not set it."""
    source = (REPO / "src/config.rs").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())
    config = schema["properties"]["config"]
    definitions = schema["definitions"]
    pairs = [
        ("Config", config),
        ("ListenerConfig", definitions["listener"]),
        ("PendingFlowsConfig", definitions["pendingFlows"]),
        ("SecurityConfig", definitions["security"]),
        ("TlsConfig", definitions["security"]["properties"]["tls"]),
        ("ListenerTlsConfig", definitions["listenerTls"]),
    ]
    for struct, node in pairs:
        assert node["additionalProperties"] is False, struct
        assert set(node["properties"]) == _rust_struct_fields(source, struct), struct
    # And values.yaml sets every top-level key but the Secret-backed nats_creds_file.
    assert set(chart_values()["config"]) == set(config["properties"]) - {"nats_creds_file"}


# The schema mirrors the collector's validation: each change below is applied to the
# chart's config; the chart must render it exactly when the collector's --check-config
# accepts it. `accepted` documents the expected answer of both.
N, S = 0, 1  # listener indexes in values.yaml: netflow, sflow


def _stream(**keys):
    """A netflow listener on 2055 and one on 4739 with `keys` (transport, ...). A tls
    listener whose files exist is checked in test_check_config.py."""
    return [
        {"protocol": "netflow", "listen_addr": "0.0.0.0:2055"},
        {"protocol": "netflow", "listen_addr": "0.0.0.0:4739", **keys},
    ]


TLS_FILES = {"cert_file": "c.pem", "key_file": "k.pem", "client_ca_file": "ca.pem"}

MIRROR = [
    ("channel_size", 1, True),
    ("channel_size", 0, False),
    ("batch_size", 0, False),
    ("publish_timeout_ms", 0, False),
    ("max_exporters", 0, False),
    ("exporter_idle_timeout_secs", 0, False),
    ("stream_replicas", 0, False),
    ("stream_replicas", 5, True),
    ("stream_replicas", 6, False),
    ("stream_max_bytes", -1, True),
    ("stream_max_bytes", 0, False),
    ("stream_max_bytes", -2, False),
    ("stream_name", "", False),
    ("stream_name", "flows.events", False),
    ("stream_name", "my events", False),
    ("stream_name", "EVENTS_2", True),
    ("stream_subjects", ["flows.raw.*", "flows.>"], True),
    ("stream_subjects", ["flows..raw"], False),
    ("stream_subjects", ["flows.raw netflow"], False),
    ("partition", "tenant-a", True),
    ("partition", "", False),
    ("partition", "   ", False),
    ("nats_url", "nats://a", True),
    ("nats_url", "nats://n1:4222, tls://n2:4222", True),
    ("nats_url", "wss://nats.example:443", False),
    ("nats_url", "http://nats:4222", False),
    ("nats_url", "nats://a,", False),
    ("nats_url", "tls://a", False),
    ("metrics_addr", "[::]:50046", True),
    ("metrics_addr", "0.0.0.0:70000", False),
    ("metrics_addr", "50046", False),
    ("unknown_key", 1, False),
    ("partitions", {"default": {"max_exporters": 5, "max_pps": 1000}}, True),
    ("partitions", {"default": {"stream_name": "tenant_flows", "nats_url": "nats://t:pw@nats:4222"}}, True),
    ("partitions", {"default": {"max_exporters": 0}}, False),
    ("partitions", {"default": {"max_pps": 0}}, False),
    ("partitions", {"default": {"stream_name": "a.b"}}, False),
    ("partitions", {"default": {"nats_url": "http://nats:4222"}}, False),
    ("partitions", {"default": {"max_exporter": 1}}, False),
    ("partitions", {"a b": {}}, False),
    ("security.mode", "none", True),
    ("security.mode", "tls", False),
    ("security.tls", None, False),
    (f"listeners.{N}.protocol", "ipfix", False),
    (f"listeners.{N}.listen_addr", "[::]:2055", True),
    (f"listeners.{N}.listen_addr", "2055", False),
    (f"listeners.{N}.listen_addr", "0.0.0.0:99999", False),
    (f"listeners.{S}.listen_addr", "0.0.0.0:2055", False),  # two listeners on one address
    (f"listeners.{N}.subject", "flows.raw.netflow.site1", True),
    (f"listeners.{N}.subject", "flows..raw", False),
    (f"listeners.{N}.buffer_size", 1023, False),
    (f"listeners.{N}.buffer_size", 1024, True),
    (f"listeners.{N}.buffer_size", 1073741824, True),
    (f"listeners.{N}.buffer_size", 1073741825, False),
    (f"listeners.{N}.max_templates", 0, False),
    (f"listeners.{N}.max_templates", 65536, True),
    (f"listeners.{N}.max_templates", 65537, False),
    (f"listeners.{N}.max_template_fields", 65535, True),
    (f"listeners.{N}.max_template_fields", 65536, False),
    (f"listeners.{N}.pending_flows.max_pending_flows", 0, False),
    (f"listeners.{N}.pending_flows.max_pending_flows", 10000, True),
    (f"listeners.{N}.pending_flows.max_pending_flows", 10001, False),
    (f"listeners.{N}.pending_flows.max_entries_per_template", 100000, True),
    (f"listeners.{N}.pending_flows.max_entries_per_template", 100001, False),
    (f"listeners.{N}.pending_flows.max_entry_size_bytes", 1048576, True),
    (f"listeners.{N}.pending_flows.max_entry_size_bytes", 1048577, False),
    (f"listeners.{N}.pending_flows.ttl_secs", 0, False),
    (f"listeners.{N}.pending_flows.ttl_secs", 3600, True),
    (f"listeners.{N}.pending_flows.ttl_secs", 4000, False),
    (f"listeners.{N}.pending_flows.unknown", 1, False),
    (f"listeners.{N}.pending_flows.max_bytes", 65535, False),
    (f"listeners.{N}.pending_flows.max_bytes", 1073741824, True),
    (f"listeners.{N}.pending_flows.max_bytes", 1073741825, False),
    ("pending_flows_max_bytes", 1048575, False),
    ("pending_flows_max_bytes", 1048576, True),
    ("publish_framing", "delimited", True),
    ("publish_framing", "batched", False),
    ("exporters", [{"prefix": "10.1.0.0/16", "partition": "acme", "site": "hq", "tags": {"rack": "r1"}}], True),
    ("exporters", [{"prefix": "10.1.0.0/16", "partition": "a.b"}], False),
    ("exporters", [{"partition": "acme"}], False),
    (f"listeners.{N}.partition", "lab", True),
    (f"listeners.{N}.max_datagram_bytes", 9216, True),
    (f"listeners.{N}.max_datagram_bytes", 63, False),
    (f"listeners.{S}.max_datagram_bytes", 65536, False),
    (f"listeners.{N}.partition", "a b", False),
    (f"listeners.{N}.subject", "flows.raw.netflow.{partition}", True),
    (f"listeners.{N}.max_samples_per_datagram", 10, False),
    (f"listeners.{N}.unknown", 1, False),
    (f"listeners.{S}.max_samples_per_datagram", 0, False),
    (f"listeners.{S}.max_samples_per_datagram", 100000, True),
    (f"listeners.{S}.max_samples_per_datagram", 100001, False),
    (f"listeners.{S}.max_templates", 10, False),
    (f"listeners.{S}.pending_flows", {"ttl_secs": 10}, False),
    (f"listeners.{N}.sampling", {"default_rate": 1, "overrides": [{"exporter": "10.0.0.0/8", "rate": 1000}]}, True),
    (f"listeners.{N}.sampling", {"default_rate": 0}, False),
    (f"listeners.{S}.sampling", {"default_rate": 1000}, True),
    (f"listeners.{S}.sampling", {"overrides": [{"exporter": "2001:db8::/32", "rate": 2048}]}, True),
    (f"listeners.{S}.sampling", {"default_rate": 0}, False),
    (f"listeners.{S}.sampling", {"overrides": [{"exporter": "10.0.0.0/8", "rate": 0}]}, False),
    (f"listeners.{S}.sampling", {"overrides": [{"prefix": "10.0.0.0/8", "rate": 5}]}, False),
    (f"listeners.{S}.sampling", {"unknown": 1}, False),
    (f"listeners.{N}.allow_sources", ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"], True),
    (f"listeners.{S}.deny_sources", ["10.6.6.0/24"], True),
    (f"listeners.{N}.allow_sources", "10.0.0.0/8", False),
    (f"listeners.{N}.max_exporter_pps", 1, True),
    (f"listeners.{N}.max_exporter_pps", 0, False),
    (f"listeners.{S}.max_exporter_pps", 10000000, True),
    (f"listeners.{S}.max_exporter_pps", 10000001, False),
    (f"listeners.{N}.sockets", 4, True),
    (f"listeners.{S}.sockets", 64, True),
    (f"listeners.{N}.sockets", 0, False),
    (f"listeners.{N}.sockets", 65, False),
    ("listeners", _stream(transport="tcp", sockets=2), False),
    ("listeners", _stream(transport="tcp"), True),
    ("listeners", _stream(transport="udp"), True),
    ("listeners", _stream(transport="quic"), False),
    ("listeners", _stream(transport="tcp", listen_addr="0.0.0.0:2055"), True),  # UDP and TCP share a port
    ("listeners", _stream(transport="tcp") + _stream(transport="tls", tls=TLS_FILES)[1:], False),  # one port, two stream listeners
    ("listeners", _stream(transport="tcp", max_sessions=0), False),
    ("listeners", _stream(transport="tcp", max_sessions=100000), True),
    ("listeners", _stream(transport="tcp", max_sessions=100001), False),
    ("listeners", _stream(transport="tcp", idle_timeout_secs=0), False),
    ("listeners", _stream(transport="tcp", idle_timeout_secs=86400), True),
    ("listeners", _stream(transport="tcp", idle_timeout_secs=86401), False),
    ("listeners", _stream(transport="tcp", handshake_timeout_secs=10), False),
    ("listeners", _stream(transport="tcp", tls=TLS_FILES), False),
    ("listeners", _stream(transport="tcp", max_exporter_pps=10), False),
    ("listeners", _stream(max_sessions=10), False),
    ("listeners", _stream(idle_timeout_secs=10), False),
    ("listeners", _stream(transport="udp", tls=TLS_FILES), False),
    ("listeners", _stream(transport="tls"), False),
    ("listeners", _stream(transport="tls", tls={"cert_file": "c.pem"}), False),
    ("listeners", _stream(transport="tcp", protocol="sflow"), False),
    ("listeners", _stream(transport="udp", protocol="sflow"), True),
]


def _set(config: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value


def _without_nulls(value):
    """Helm's coalescing: a null value removes the key."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@pytest.mark.parametrize(("path", "value", "accepted"), MIRROR, ids=[f"{p}={v!r}" for p, v, _ in MIRROR])
def test_schema_accepts_what_the_collector_accepts(path, value, accepted, tmp_path):
    config = chart_values()["config"]
    _set(config, path, value)

    # The collector, on that config (security "none" unless security is what is tested,
    # so no certificate files are needed).
    collector_config = _without_nulls(copy.deepcopy(config))
    if not path.startswith("security"):
        collector_config["security"] = {"mode": "none"}
    result = check_config(collector_config, tmp_path)
    assert result.returncode in (0, 1), f"--check-config crashed: {result.returncode} {result.stderr}"
    collector_accepts = result.returncode == 0
    if collector_accepts:
        assert "config OK" in result.stdout, result.stdout

    # The chart, given the same change as values (a list is replaced whole, as Helm does).
    top = path.split(".")[0]
    try:
        render(nested(f"config.{top}", config[top]))
        chart_accepts = True
    except (helm.HelmValuesError, helm.HelmRenderError) as e:
        chart_accepts = False
        chart_message = str(e)

    assert collector_accepts == accepted, f"collector: {result.stdout}{result.stderr}"
    assert chart_accepts == accepted, chart_message if not chart_accepts else "chart accepted it"
