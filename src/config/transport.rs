//! A listener's `transport`: UDP datagrams (the default), or IPFIX messages over TCP or
//! TLS connections (RFC 7011 §10.4) for exporters whose UDP source addresses cannot be
//! trusted. Only IPFIX has a stream framing, so only netflow listeners take tcp or tls.
//!
//! The TLS files are read and checked here, at start-up (and by `--check-config`),
//! before any socket is bound: an unreadable or malformed file is an error naming its
//! key, e.g. `listeners[2].tls.cert_file`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flow_actors::tls::{TlsFiles, TlsServerSettings};
use flow_actors::{StreamSettings, Transport};

use super::{
    ConfigError, ListenerConfig, ListenerKind, ListenerTlsConfig, TransportKind, in_range,
};

/// `max_sessions` when absent.
const DEFAULT_MAX_SESSIONS: usize = 1_000;
/// `handshake_timeout_secs` when absent.
const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// `idle_timeout_secs` when absent: exporters send templates and data well within it.
const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 300;

/// Checks the transport keys of one listener (`key` = "listeners[i]"), loading its TLS
/// files when it has any.
pub(super) fn validate(
    listener: &ListenerConfig,
    key: &str,
    cert_dir: Option<&Path>,
) -> Result<(), ConfigError> {
    settings(listener, key, cert_dir).map(drop)
}

/// The actors' transport settings of one listener.
pub(super) fn settings(
    listener: &ListenerConfig,
    key: &str,
    cert_dir: Option<&Path>,
) -> Result<Transport, ConfigError> {
    let only = |name: &str, transports: &str| {
        ConfigError::invalid(
            format!("{key}.{name}"),
            format!("only valid with transport {transports}"),
        )
    };
    let stream_keys = [
        ("max_sessions", listener.max_sessions.is_some(), "\"tcp\" or \"tls\""),
        ("idle_timeout_secs", listener.idle_timeout_secs.is_some(), "\"tcp\" or \"tls\""),
        ("handshake_timeout_secs", listener.handshake_timeout_secs.is_some(), "\"tls\""),
        ("tls", listener.tls.is_some(), "\"tls\""),
    ];
    if listener.transport == TransportKind::Udp {
        return match stream_keys.iter().find(|(_, present, _)| *present) {
            Some((name, _, transports)) => Err(only(name, transports)),
            None => Ok(Transport::Udp),
        };
    }
    if listener.protocol == ListenerKind::Sflow {
        return Err(ConfigError::invalid(
            format!("{key}.transport"),
            "sFlow is only sent over UDP (\"tcp\" and \"tls\" carry IPFIX: netflow listeners)",
        ));
    }
    for (name, present) in [
        ("max_exporter_pps", listener.max_exporter_pps.is_some()),
        ("sockets", listener.sockets.is_some()),
    ] {
        if present {
            return Err(only(name, "\"udp\""));
        }
    }
    let max_sessions = listener.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS);
    in_range(&format!("{key}.max_sessions"), max_sessions, 1, 100_000)?;
    let idle = listener.idle_timeout_secs.unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS);
    in_range(&format!("{key}.idle_timeout_secs"), to_usize(idle), 1, 86_400)?;
    let handshake = listener.handshake_timeout_secs.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT_SECS);
    let tls = match listener.transport {
        TransportKind::Tls => {
            in_range(&format!("{key}.handshake_timeout_secs"), to_usize(handshake), 1, 300)?;
            let tls = listener.tls.as_ref().ok_or_else(|| {
                ConfigError::invalid(format!("{key}.tls"), "required when transport is \"tls\"")
            })?;
            Some(load_tls(tls, &format!("{key}.tls"), cert_dir)?)
        }
        _ => {
            if let Some((name, _, transports)) =
                stream_keys[2..].iter().find(|(_, present, _)| *present)
            {
                return Err(only(name, transports));
            }
            None
        }
    };
    Ok(Transport::Stream(StreamSettings {
        max_sessions,
        handshake_timeout: Duration::from_secs(handshake),
        idle_timeout: Duration::from_secs(idle),
        tls,
    }))
}

/// Reads and checks the three files; an error names the file's key and the reason.
fn load_tls(
    tls: &ListenerTlsConfig,
    key: &str,
    cert_dir: Option<&Path>,
) -> Result<TlsServerSettings, ConfigError> {
    let resolve = |file: &Path| -> PathBuf {
        match cert_dir {
            Some(dir) if file.is_relative() => dir.join(file),
            _ => file.to_path_buf(),
        }
    };
    let files = TlsFiles {
        cert_file: resolve(&tls.cert_file),
        key_file: resolve(&tls.key_file),
        client_ca_file: resolve(&tls.client_ca_file),
    };
    TlsServerSettings::load(&files)
        .map_err(|e| ConfigError::invalid(format!("{key}.{}", e.file().key()), e.to_string()))
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use serde_json::{Value, json};

    /// A CA, and a server certificate it signed, written as PEM files into a temp dir.
    fn pki() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["collector.test".into()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca.pem());
        write("server.pem", cert.pem());
        write("server-key.pem", key.serialize_pem());
        write("other-key.pem", KeyPair::generate().unwrap().serialize_pem());
        write("garbage.pem", "not a certificate\n".into());
        dir
    }

    fn config(listeners: Value, cert_dir: Option<&Path>) -> Config {
        let mut config = json!({ "listeners": listeners });
        if let Some(dir) = cert_dir {
            config["security"] = json!({ "mode": "none", "cert_dir": dir });
        }
        Config::from_json_with_env(&config.to_string(), "test.json", &[]).unwrap()
    }

    /// The key and reason of the validation error.
    fn refused(listeners: Value, cert_dir: Option<&Path>) -> (String, String) {
        match config(listeners, cert_dir).validate() {
            Err(ConfigError::Invalid { key, reason }) => (key, reason),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn tls_listener(cert: &str, key: &str, ca: &str) -> Value {
        json!({
            "protocol": "netflow", "listen_addr": "127.0.0.1:4740", "transport": "tls",
            "tls": { "cert_file": cert, "key_file": key, "client_ca_file": ca },
        })
    }

    #[test]
    fn tcp_takes_its_defaults_and_udp_stays_the_default() {
        let config = config(
            json!([
                { "protocol": "netflow", "listen_addr": "127.0.0.1:4739" },
                { "protocol": "netflow", "listen_addr": "127.0.0.1:4739", "transport": "tcp" },
            ]),
            None,
        );
        config.validate().unwrap();
        let settings = config.collector_settings().unwrap();
        assert!(matches!(settings.listeners[0].transport, Transport::Udp));
        let Transport::Stream(stream) = &settings.listeners[1].transport else {
            panic!("tcp listener without stream settings")
        };
        assert_eq!(stream.max_sessions, 1_000);
        assert_eq!(stream.idle_timeout, Duration::from_secs(300));
        assert!(stream.tls.is_none());
        assert_eq!(settings.listeners[1].name(), "netflow-tcp@127.0.0.1:4739");
    }

    #[test]
    fn keys_of_another_transport_or_protocol_are_refused_with_their_path() {
        let cases = [
            (json!({"max_sessions": 5}), "listeners[0].max_sessions", "\"tcp\" or \"tls\""),
            (json!({"idle_timeout_secs": 5}), "listeners[0].idle_timeout_secs", "\"tcp\""),
            (
                json!({"transport": "tcp", "handshake_timeout_secs": 5}),
                "listeners[0].handshake_timeout_secs",
                "\"tls\"",
            ),
            (
                json!({"transport": "tcp", "tls": {"cert_file": "a", "key_file": "b", "client_ca_file": "c"}}),
                "listeners[0].tls",
                "\"tls\"",
            ),
            (
                json!({"transport": "tcp", "max_exporter_pps": 10}),
                "listeners[0].max_exporter_pps",
                "\"udp\"",
            ),
            (
                json!({"transport": "tcp", "max_sessions": 0}),
                "listeners[0].max_sessions",
                "between 1 and",
            ),
            (
                json!({"transport": "tcp", "idle_timeout_secs": 0}),
                "listeners[0].idle_timeout_secs",
                "between 1 and",
            ),
            (json!({"transport": "tls"}), "listeners[0].tls", "required"),
            (json!({"protocol": "sflow", "transport": "tcp"}), "listeners[0].transport", "sFlow"),
        ];
        for (extra, want_key, want_reason) in cases {
            let mut listener = json!({ "protocol": "netflow", "listen_addr": "127.0.0.1:4739" });
            for (k, v) in extra.as_object().unwrap() {
                listener[k] = v.clone();
            }
            let (key, reason) = refused(json!([listener]), None);
            assert_eq!(key, want_key, "{extra}: {reason}");
            assert!(reason.contains(want_reason), "{extra}: {reason}");
        }
    }

    #[test]
    fn a_transport_that_is_not_known_is_a_parse_error() {
        let text = r#"{"listeners":[{"protocol":"netflow","listen_addr":"127.0.0.1:1","transport":"quic"}]}"#;
        let error = Config::from_json_with_env(text, "test.json", &[]).unwrap_err().to_string();
        assert!(error.contains("transport") || error.contains("quic"), "{error}");
    }

    #[test]
    fn one_stream_listener_per_address_but_udp_and_tcp_may_share_it() {
        let tcp =
            json!({ "protocol": "netflow", "listen_addr": "127.0.0.1:4739", "transport": "tcp" });
        let (key, _) = refused(json!([tcp.clone(), tcp]), None);
        assert_eq!(key, "listeners[1].listen_addr");
    }

    #[test]
    fn tls_files_resolve_under_cert_dir_and_load() {
        let pki = pki();
        let config = config(
            json!([tls_listener("server.pem", "server-key.pem", "ca.pem")]),
            Some(pki.path()),
        );
        config.validate().unwrap();
        let settings = config.collector_settings().unwrap();
        let Transport::Stream(stream) = &settings.listeners[0].transport else { panic!("not tls") };
        let tls = stream.tls.as_ref().expect("tls settings");
        assert_eq!(tls.files().client_ca_file, pki.path().join("ca.pem"));
        assert_eq!(stream.handshake_timeout, Duration::from_secs(10));
        assert_eq!(settings.listeners[0].name(), "netflow-tls@127.0.0.1:4740");
    }

    #[test]
    fn a_bad_tls_file_names_its_key_and_the_reason() {
        let pki = pki();
        let dir = Some(pki.path());
        let (key, reason) =
            refused(json!([tls_listener("missing.pem", "server-key.pem", "ca.pem")]), dir);
        assert_eq!(key, "listeners[0].tls.cert_file");
        assert!(reason.contains("missing.pem") && reason.contains("No such file"), "{reason}");

        let (key, reason) =
            refused(json!([tls_listener("garbage.pem", "server-key.pem", "ca.pem")]), dir);
        assert_eq!(key, "listeners[0].tls.cert_file");
        assert!(reason.contains("no PEM certificate"), "{reason}");

        let (key, reason) =
            refused(json!([tls_listener("server.pem", "garbage.pem", "ca.pem")]), dir);
        assert_eq!(key, "listeners[0].tls.key_file");
        assert!(reason.contains("private key"), "{reason}");

        let (key, reason) =
            refused(json!([tls_listener("server.pem", "other-key.pem", "ca.pem")]), dir);
        assert_eq!(key, "listeners[0].tls.key_file");
        assert!(reason.contains("does not go with"), "{reason}");

        let (key, _) =
            refused(json!([tls_listener("server.pem", "server-key.pem", "garbage.pem")]), dir);
        assert_eq!(key, "listeners[0].tls.client_ca_file");

        let text = json!({"listeners": [
            { "protocol": "netflow", "listen_addr": "127.0.0.1:2055" },
            tls_listener("/nonexistent/cert.pem", "k", "c"),
        ]});
        let error = Config::from_json_with_env(&text.to_string(), "test.json", &[])
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(
                "config key `listeners[1].tls.cert_file`: cannot read /nonexistent/cert.pem"
            ),
            "{error}"
        );
    }
}
