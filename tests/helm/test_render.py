"""The chart lints, renders with its defaults and every example, every object passes the
Kubernetes (and prometheus-operator) schemas, and the rendered objects say what the
collector needs: UDP source addresses kept, probes, a locked-down container, guaranteed
memory, a PDB, spread replicas, the config as given."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess

import helm_python as helm
import kubernetes_validate
import pytest
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError, latest_version

from support import CASES, CHART, CONFIG_PATH, FULLNAME, REPO, chart_values, render

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema
# kubernetes-validate ships.
K8S_VERSIONS = ["1.25.0", latest_version()]


@pytest.fixture(scope="module")
def default():
    return render()


@pytest.mark.parametrize("case", CASES)
def test_lint_is_clean(case):
    report = helm.lint(CHART, CASES[case], strict=True)
    assert report["errors"] == []
    # Severity 1 is INFO (e.g. "icon is recommended"); warnings and errors fail.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_every_object_passes_the_kubernetes_schema(case, version):
    rendered = render(CASES[case])
    assert rendered.objects
    for obj in rendered.objects:
        if obj["kind"] == "ServiceMonitor":
            continue  # a CRD: checked against prometheus-operator's schema below
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} against {version}: {path}: {e.message}")
        except SchemaNotFoundError as e:
            pytest.fail(e.message)
        assert obj["metadata"]["namespace"] == "netflow"


def test_strict_validation_catches_what_an_old_kubernetes_lacks():
    """The validator is strict for real: the preStop sleep action (Kubernetes 1.29+) is
    refused against 1.25 and accepted against the newest schema."""
    workload = render({"preStopSleepSeconds": 5}).workload
    assert workload["spec"]["template"]["spec"]["containers"][0]["lifecycle"] == {
        "preStop": {"sleep": {"seconds": 5}}
    }
    kubernetes_validate.validate(workload, latest_version(), strict=True)
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(workload, "1.25.0", strict=True)


def _validate_servicemonitors(objects, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    modules = os.environ.get("SERVICEMONITOR_NODE_MODULES")
    assert modules, "SERVICEMONITOR_NODE_MODULES is not set: run the chart tests through tests/helm.sh"
    files = []
    for i, obj in enumerate(objects):
        path = tmp_path / f"servicemonitor-{i}.json"
        path.write_text(json.dumps(obj))
        files.append(str(path))
    return subprocess.run(
        ["node", str(REPO / "tests/helm/servicemonitor/validate.mjs"), *files],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_servicemonitor_passes_the_prometheus_operator_schema(tmp_path):
    rendered = render(CASES["examples/observability.yaml"])
    monitor = rendered.one("ServiceMonitor", FULLNAME)
    result = _validate_servicemonitors([monitor], tmp_path)
    assert result.returncode == 0, result.stderr
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # It selects the metrics Service and only it.
    metrics = rendered.one("Service", f"{FULLNAME}-metrics")
    flows = rendered.one("Service", FULLNAME)
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metrics["metadata"]["labels"].items()
    assert not selector.items() <= flows["metadata"]["labels"].items()

    # The check can fail: a wrongly typed interval is refused.
    endpoint["interval"] = 30
    result = _validate_servicemonitors([monitor], tmp_path)
    assert result.returncode == 1
    assert "interval" in result.stderr


def test_servicemonitor_is_off_by_default(default):
    assert default.all("ServiceMonitor") == []


def test_flow_service_keeps_exporter_source_addresses(default):
    service = default.one("Service", FULLNAME)
    spec = service["spec"]
    assert spec["type"] == "LoadBalancer"
    assert spec["externalTrafficPolicy"] == "Local"
    assert spec["sessionAffinity"] == "ClientIP"
    assert spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] == 10800
    assert spec["ports"] == [
        {"name": "netflow", "port": 2055, "targetPort": "netflow", "protocol": "UDP"},
        {"name": "sflow", "port": 6343, "targetPort": "sflow", "protocol": "UDP"},
    ]
    pod_labels = default.pod["metadata"]["labels"]
    assert spec["selector"].items() <= pod_labels.items()
    # NOTES.txt tells the operator why.
    assert "externalTrafficPolicy: Local" in default.notes
    assert "templates collide" in default.notes


def test_service_and_container_ports_follow_the_listeners():
    rendered = render(CASES["examples/tenant-b.yaml"])
    service_ports = rendered.one("Service", FULLNAME)["spec"]["ports"]
    assert [(p["name"], p["port"], p["protocol"]) for p in service_ports] == [
        ("netflow-2055", 2055, "UDP"),
        ("netflow-4739", 4739, "UDP"),
        ("sflow", 6343, "UDP"),
    ]
    container_ports = {p["name"]: p for p in rendered.container["ports"]}
    for port in service_ports:
        target = container_ports[port["targetPort"]]
        assert (target["containerPort"], target["protocol"]) == (port["port"], "UDP")


def test_non_local_traffic_policy_is_warned_about():
    rendered = render({"service": {"externalTrafficPolicy": "Cluster", "sessionAffinity": "None"}})
    spec = rendered.one("Service", FULLNAME)["spec"]
    assert spec["externalTrafficPolicy"] == "Cluster"
    assert "sessionAffinityConfig" not in spec
    assert "WARNING: externalTrafficPolicy is Cluster" in rendered.notes
    assert "WARNING: sessionAffinity is None" in rendered.notes


def test_cluster_ip_service_has_no_external_traffic_policy():
    spec = render({"service": {"type": "ClusterIP"}}).one("Service", FULLNAME)["spec"]
    assert spec["type"] == "ClusterIP"
    assert "externalTrafficPolicy" not in spec


def test_probes_and_metrics_service_use_the_metrics_port(default):
    container = default.container
    ports = {p["name"]: p for p in container["ports"]}
    assert ports["metrics"] == {"name": "metrics", "containerPort": 50046, "protocol": "TCP"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    metrics = default.one("Service", f"{FULLNAME}-metrics")
    assert metrics["spec"]["type"] == "ClusterIP"
    assert metrics["spec"]["ports"] == [
        {"name": "metrics", "port": 50046, "targetPort": "metrics", "protocol": "TCP"}
    ]

    moved = render({"config": {"metrics_addr": "[::]:9102"}})
    assert {p["name"]: p["containerPort"] for p in moved.container["ports"]}["metrics"] == 9102
    assert moved.one("Service", f"{FULLNAME}-metrics")["spec"]["ports"][0]["port"] == 9102
    assert moved.config["metrics_addr"] == "[::]:9102"


@pytest.mark.parametrize("case", CASES)
def test_container_is_locked_down(case):
    rendered = render(CASES[case])
    context = rendered.container["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["runAsNonRoot"] is True
    assert isinstance(context["runAsUser"], int) and context["runAsUser"] > 0
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    pod = rendered.pod["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False


def test_low_listener_port_gets_the_unprivileged_port_sysctl(default):
    assert "sysctls" not in default.pod["spec"]["securityContext"]
    listeners = chart_values()["config"]["listeners"]
    listeners[1]["listen_addr"] = "0.0.0.0:643"
    rendered = render({"config": {"listeners": listeners}})
    assert rendered.pod["spec"]["securityContext"]["sysctls"] == [
        {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}
    ]
    # Not allowed on the host network: the chart leaves it out there.
    on_host = render({"config": {"listeners": listeners}, "hostNetwork": True})
    assert "sysctls" not in on_host.pod["spec"]["securityContext"]


@pytest.mark.parametrize("case", CASES)
def test_memory_requests_equal_limits(case):
    resources = render(CASES[case]).container["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    assert "cpu" not in resources.get("limits", {}), "a CPU limit throttles the UDP receiver"


def test_pod_disruption_budget(default):
    pdb = default.one("PodDisruptionBudget", FULLNAME)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= default.pod["metadata"]["labels"].items()
    high = render(CASES["examples/high-volume.yaml"]).one("PodDisruptionBudget", FULLNAME)
    assert high["spec"]["maxUnavailable"] == "25%"
    assert render({"podDisruptionBudget": {"enabled": False}}).all("PodDisruptionBudget") == []


def test_daemonset_kind():
    rendered = render(CASES["examples/daemonset-hostnetwork.yaml"])
    workload = rendered.workload
    assert workload["kind"] == "DaemonSet"
    assert "replicas" not in workload["spec"]
    assert workload["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1
    pod = rendered.pod["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert "topologySpreadConstraints" not in pod
    # No flow Service (exporters send to the nodes), no PDB (drain skips DaemonSet pods).
    assert [s["metadata"]["name"] for s in rendered.all("Service")] == [f"{FULLNAME}-metrics"]
    assert rendered.all("PodDisruptionBudget") == []


def test_selectors_match_pod_labels(default):
    workload = default.workload
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # The operator guide's `kubectl get pods -l app=serviceradar-flow-collector` finds them.
    assert labels["app"] == "serviceradar-flow-collector"
    assert labels["serviceradar.io/partition"] == "default"
    assert workload["kind"] == "Deployment" and workload["spec"]["replicas"] == 2


def test_topology_spread_selects_this_release(default):
    constraints = default.pod["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]
    selector = default.workload["spec"]["selector"]["matchLabels"]
    for constraint in constraints:
        assert constraint["labelSelector"] == {"matchLabels": selector}
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"


def test_termination_grace_exceeds_the_drain(default):
    assert default.pod["spec"]["terminationGracePeriodSeconds"] == 45
    assert "lifecycle" not in default.container
    slept = render({"preStopSleepSeconds": 10, "terminationGracePeriodSeconds": 60})
    assert slept.pod["spec"]["terminationGracePeriodSeconds"] == 60


def test_configmap_is_values_config_verbatim(default):
    """The ConfigMap's JSON is values.config itself: no key dropped, renamed or retyped."""
    values = chart_values()
    assert default.config == values["config"]
    text = default.one("ConfigMap")["data"]["flow-collector.json"]
    assert '"stream_max_bytes": 10737418240' in text, "a large integer must stay an integer"
    mounts = {m["name"]: m for m in default.container["volumeMounts"]}
    assert mounts["config"] == {
        "name": "config",
        "mountPath": CONFIG_PATH,
        "subPath": "flow-collector.json",
        "readOnly": True,
    }
    volumes = {v["name"]: v for v in default.pod["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == default.one("ConfigMap")["metadata"]["name"]


def test_config_change_rolls_the_pods(default):
    changed = render({"config": {"channel_size": 20000}})
    assert changed.config["channel_size"] == 20000
    before = default.pod["metadata"]["annotations"]["checksum/config"]
    after = changed.pod["metadata"]["annotations"]["checksum/config"]
    assert before != after
    assert render().pod["metadata"]["annotations"]["checksum/config"] == before


def test_secrets_are_mounted_where_the_config_points():
    rendered = render(CASES["examples/tenant-a.yaml"])
    config = rendered.config
    assert config["partition"] == "tenant-a"
    assert config["nats_creds_file"] == "/etc/serviceradar/creds/tenant-a.creds"
    assert config["security"] == {
        "mode": "mtls",
        "cert_dir": "/etc/serviceradar/certs",
        "tls": {"cert_file": "tls.crt", "key_file": "tls.key", "ca_file": "ca.crt"},
    }
    mounts = {m["name"]: m for m in rendered.container["volumeMounts"]}
    volumes = {v["name"]: v for v in rendered.pod["spec"]["volumes"]}
    assert mounts["tls"]["mountPath"] == config["security"]["cert_dir"]
    assert mounts["tls"]["readOnly"] is True
    assert volumes["tls"]["secret"]["secretName"] == "tenant-a-flow-collector-tls"
    assert mounts["nats-creds"]["mountPath"] == config["nats_creds_file"]
    assert mounts["nats-creds"]["subPath"] == "tenant-a.creds"
    assert volumes["nats-creds"]["secret"]["secretName"] == "tenant-a-nats-creds"
    assert volumes["nats-creds"]["secret"]["items"] == [{"key": "tenant-a.creds", "path": "tenant-a.creds"}]
    # The secrets are readable by the collector's group only.
    assert volumes["tls"]["secret"]["defaultMode"] == 0o440
    assert rendered.pod["spec"]["securityContext"]["fsGroup"] == 10001
    service = rendered.one("Service", FULLNAME)["spec"]
    assert service["loadBalancerSourceRanges"] == ["198.51.100.0/24"]


def test_no_nats_example_prints_flows_without_secrets():
    rendered = render(CASES["examples/stdout-no-nats.yaml"])
    config = rendered.config
    assert "nats_url" not in config
    assert config["security"] == {"mode": "none"}
    names = {v["name"] for v in rendered.pod["spec"]["volumes"]}
    assert names == {"config", "tmp"}
    assert "stdout as JSON lines" in rendered.notes


def test_otel_environment(default):
    env = default.env
    assert env["OTEL_SERVICE_NAME"]["value"] == "serviceradar-flow-collector"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    attributes = env["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(",")
    assert "serviceradar.partition=default" in attributes
    assert "k8s.pod.name=$(POD_NAME)" in attributes
    # $(VAR) expands only variables defined earlier in the list.
    order = [e["name"] for e in default.container["env"]]
    assert order.index("POD_NAME") < order.index("OTEL_RESOURCE_ATTRIBUTES")
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["RUST_LOG"]["value"] == "info"
    assert default.container["args"] == ["--log-format", "json"]

    observed = render(CASES["examples/observability.yaml"]).env
    assert (
        observed["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"]
        == "http://otel-collector.observability.svc.cluster.local:4317"
    )
    attributes = observed["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(",")
    assert "deployment.environment=production" in attributes
    assert "service.namespace=serviceradar" in attributes

    tenant = render(CASES["examples/tenant-a.yaml"]).env
    assert "serviceradar.partition=tenant-a" in tenant["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(",")


def test_packaged_chart_renders_the_same(tmp_path, default):
    """`helm package` keeps everything the templates need (.helmignore drops nothing used)."""
    archive = helm.package(CHART, destination=tmp_path)
    assert pathlib.Path(archive).name == "serviceradar-flow-collector-0.1.0.tgz"
    with helm.Chart.load(archive) as chart:
        assert chart.schema is not None
        manifests = chart.render(None, name="flows", namespace="netflow", is_install=True)
    assert manifests == default.manifests


def test_chart_and_image_versions_follow_the_workspace():
    """appVersion (the default image tag) and the image's VERSION label are the crate's version."""
    cargo = (REPO / "Cargo.toml").read_text()
    version = re.search(r'\[workspace\.package\][^\[]*?\nversion = "([^"]+)"', cargo).group(1)
    with helm.Chart.load(CHART) as chart:
        assert chart.metadata["appVersion"] == version
    dockerfile = (REPO / "packaging/Dockerfile").read_text()
    assert f"ARG VERSION={version}\n" in dockerfile


def test_ipfix_over_tcp_and_tls_listeners_get_tcp_ports():
    listeners = chart_values()["config"]["listeners"][:1] + [
        {"protocol": "netflow", "listen_addr": "0.0.0.0:4739"},
        {"protocol": "netflow", "listen_addr": "0.0.0.0:4739", "transport": "tcp"},
        {
            "protocol": "netflow",
            "listen_addr": "0.0.0.0:4740",
            "transport": "tls",
            "tls": {"cert_file": "ipfix.pem", "key_file": "ipfix-key.pem", "client_ca_file": "exporters-ca.pem"},
        },
    ]
    rendered = render({"config": {"listeners": listeners}})
    service_ports = rendered.one("Service", FULLNAME)["spec"]["ports"]
    assert [(p["name"], p["port"], p["protocol"]) for p in service_ports] == [
        ("netflow-2055", 2055, "UDP"),
        ("netflow-4739", 4739, "UDP"),
        ("ipfix-tcp", 4739, "TCP"),
        ("ipfix-tls", 4740, "TCP"),
    ]
    container_ports = {p["name"]: p for p in rendered.container["ports"]}
    for port in service_ports:
        target = container_ports[port["targetPort"]]
        assert (target["containerPort"], target["protocol"]) == (port["port"], port["protocol"])
    assert "netflow on TLS (IPFIX over TLS) 4740" in rendered.notes
    assert "ipfix-tls: <address>:4740/tcp" in rendered.notes
