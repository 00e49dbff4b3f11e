"""The JSON config the chart renders, for its defaults and every example, passes the
collector's own `--check-config` (with real certificate files where the Secret mounts
would put them)."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

from support import CASES, check_config, deep_merge, render


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> pathlib.Path:
    """A throwaway CA and a client certificate signed by it (PEM), made with openssl."""
    assert shutil.which("openssl"), "openssl is needed to make test certificates"
    directory = tmp_path_factory.mktemp("pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "client-key.pem", "-out", "client.csr", "-subj", "/CN=flow-collector")
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-out", "client.pem", "-days", "2")
    return directory


@pytest.mark.parametrize("case", CASES)
def test_rendered_config_passes_check_config(case, pki, tmp_path):
    values = CASES[case]
    config = render(values).config
    # Render again with the Secret mount points moved into a temp dir holding the files the
    # Secrets would hold, so --check-config can open them.
    overlay: dict = {}
    security = config.get("security", {})
    if security.get("mode") == "mtls":
        certs = tmp_path / "certs"
        certs.mkdir()
        tls = security["tls"]
        shutil.copy(pki / "client.pem", certs / tls["cert_file"])
        shutil.copy(pki / "client-key.pem", certs / tls["key_file"])
        shutil.copy(pki / "ca.pem", certs / tls["ca_file"])
        overlay = deep_merge(overlay, {"config": {"security": {"cert_dir": str(certs)}}})
    if "nats_creds_file" in config:
        creds = tmp_path / "nats.creds"
        creds.write_text(
            "-----BEGIN NATS USER JWT-----\nplaceholder\n------END NATS USER JWT------\n"
        )
        overlay = deep_merge(overlay, {"config": {"nats_creds_file": str(creds)}})
    for name, partition in config.get("partitions", {}).items():
        if "nats_creds_file" in partition:
            creds = tmp_path / f"{name}.creds"
            creds.write_text("placeholder")
            moved_creds = {"partitions": {name: {"nats_creds_file": str(creds)}}}
            overlay = deep_merge(overlay, {"config": moved_creds})
    checked = render(deep_merge(values, overlay)).config if overlay else config
    if overlay:
        # Only the mount points moved.
        moved = json.loads(json.dumps(checked))
        for name, partition in overlay.get("config", {}).get("partitions", {}).items():
            moved["partitions"][name]["nats_creds_file"] = config["partitions"][name]["nats_creds_file"]
        if "security" in overlay.get("config", {}):
            moved["security"]["cert_dir"] = config["security"]["cert_dir"]
        if "nats_creds_file" in overlay.get("config", {}):
            moved["nats_creds_file"] = config["nats_creds_file"]
        assert moved == config

    result = check_config(checked, tmp_path)
    assert result.returncode == 0, f"{result.stdout}{result.stderr}"
    assert "config OK" in result.stdout


def test_check_config_refuses_missing_certificates(tmp_path):
    """The check above is real: the default config, with its mTLS files absent, is refused."""
    config = render().config
    config["security"]["cert_dir"] = str(tmp_path / "nowhere")
    result = check_config(config, tmp_path)
    assert result.returncode == 1
    assert "security.tls.cert_file" in result.stdout + result.stderr


def _tls_listener_config(pki, cert_file: str) -> dict:
    """The default values plus an IPFIX-over-TLS listener whose files are in `pki`."""
    listeners = render().config["listeners"] + [
        {
            "protocol": "netflow",
            "listen_addr": "0.0.0.0:4740",
            "transport": "tls",
            "tls": {"cert_file": cert_file, "key_file": "client-key.pem", "client_ca_file": "ca.pem"},
        }
    ]
    values = {"config": {"listeners": listeners, "security": {"mode": "none", "cert_dir": str(pki)}}}
    return render(values).config


def test_a_tls_listener_with_its_files_passes_check_config(pki, tmp_path):
    # TLS needs an X.509 v3 certificate (the fixture's is v1): one with a SAN, same key.
    extensions = tmp_path / "v3.ext"
    extensions.write_text("subjectAltName=DNS:flow-collector\n")
    subprocess.run(
        ["openssl", "x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
         "-CAcreateserial", "-out", "ipfix.pem", "-days", "2", "-extfile", str(extensions)],
        cwd=pki, check=True, capture_output=True,
    )
    result = check_config(_tls_listener_config(pki, "ipfix.pem"), tmp_path)
    assert result.returncode == 0, f"{result.stdout}{result.stderr}"


def test_a_tls_listener_without_its_certificate_is_refused_naming_the_key(pki, tmp_path):
    result = check_config(_tls_listener_config(pki, "missing.pem"), tmp_path)
    assert result.returncode == 1
    assert "listeners[2].tls.cert_file" in result.stdout, result.stdout
    # An X.509 v1 certificate is named too, with the reason.
    result = check_config(_tls_listener_config(pki, "client.pem"), tmp_path)
    assert result.returncode == 1
    assert "listeners[2].tls.cert_file" in result.stdout and "v3" in result.stdout, result.stdout
