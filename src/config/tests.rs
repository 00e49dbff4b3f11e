//! Config parsing and validation: every default, range, cross-key rule and error path.

use super::*;

const GUIDE_EXAMPLE: &str = include_str!("../../config/flow-collector.json");
const HIGH_VOLUME: &str = include_str!("../../config/high-volume.json");

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_env(text, &[])
}

fn parse_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> =
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from_json_with_env(text, "test.json", &env)
}

fn invalid_key(text: &str) -> String {
    let config = parse(text).expect("parses");
    match config.validate() {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

const MINIMAL: &str = r#"{"listeners":[{"protocol":"netflow","listen_addr":"127.0.0.1:2055"}]}"#;

#[test]
fn guide_example_parses_with_its_values() {
    let config = parse(GUIDE_EXAMPLE).expect("guide example parses");
    assert_eq!(config.nats_url.as_deref(), Some("nats://nats:4222"));
    assert_eq!(config.stream_max_bytes, 10_737_418_240);
    assert_eq!(config.listeners.len(), 2);
    assert_eq!(config.listeners[0].max_templates, Some(2000));
    assert_eq!(config.metrics_addr.as_deref(), Some("0.0.0.0:50046"));
    let security = config.security.as_ref().expect("security block");
    assert_eq!(security.mode, SecurityMode::Mtls);
    let tls = security.tls.as_ref().expect("tls block");
    assert_eq!(security.resolve(&tls.ca_file), PathBuf::from("/etc/serviceradar/certs/root.pem"));
}

#[test]
fn guide_example_fails_validation_only_on_missing_files() {
    // The example points at /etc/serviceradar/creds and certs, which do not exist here.
    let err = parse(GUIDE_EXAMPLE).unwrap().validate().unwrap_err().to_string();
    assert!(err.contains("nats_creds_file") || err.contains("security.tls"), "{err}");
}

#[test]
fn minimal_config_takes_every_documented_default() {
    let config = parse(MINIMAL).unwrap();
    config.validate().unwrap();
    assert_eq!(config.stream_name, "events");
    assert_eq!(config.stream_subjects, vec!["flows.raw.netflow", "flows.raw.sflow"]);
    assert_eq!(config.stream_max_bytes, 10 * 1024 * 1024 * 1024);
    assert_eq!(config.stream_replicas, 1);
    assert_eq!(config.partition, "default");
    assert_eq!(config.channel_size, 10_000);
    assert_eq!(config.batch_size, 100);
    assert_eq!(config.publish_timeout_ms, 5_000);
    let settings = config.collector_settings().unwrap();
    let listener = &settings.listeners[0];
    assert_eq!(listener.subject, "flows.raw.netflow");
    assert_eq!(listener.buffer_size, 65_536);
    let ListenerProtocol::Netflow(netflow) = &listener.protocol else {
        panic!("netflow listener expected");
    };
    assert_eq!(netflow.max_templates, 2_000);
    assert_eq!(netflow.max_template_fields, 10_000);
    let pending = netflow.pending.as_ref().expect("pending cache on by default");
    assert_eq!(pending.max_pending_flows, 256);
    assert_eq!(pending.max_entries_per_template, 1_024);
    assert_eq!(pending.max_entry_size_bytes, 65_535);
    assert_eq!(pending.ttl, Duration::from_secs(300));
}

#[test]
fn high_volume_and_embedded_examples_validate() {
    parse(HIGH_VOLUME).unwrap().validate().unwrap();
    let local = parse(EMBEDDED_DEFAULT).unwrap();
    local.validate().unwrap();
    assert!(local.nats_url.is_none(), "the embedded default needs no NATS");
    let subjects: Vec<String> = local.listeners.iter().map(|l| l.effective_subject()).collect();
    assert_eq!(subjects, vec!["flows.raw.netflow", "flows.raw.sflow"]);
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let top = parse(r#"{"listeners":[], "chanel_size": 5}"#).unwrap_err().to_string();
    assert!(top.contains("chanel_size"), "{top}");
    let nested = parse(
        r#"{"listeners":[{"protocol":"netflow","listen_addr":"0.0.0.0:1","pending_flows":{"ttl":1}}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(nested.contains("`ttl`") && nested.contains("listeners[0].pending_flows"), "{nested}");
}

#[test]
fn wrong_types_name_the_key() {
    let err = parse(r#"{"listeners":[{"protocol":"netflow","listen_addr":"0.0.0.0:1","max_templates":"many"}]}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("listeners[0].max_templates"), "{err}");
    let err = parse(r#"{"listeners":[{"protocol":"ipfix","listen_addr":"0.0.0.0:1"}]}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ipfix") && err.contains("protocol"), "{err}");
}

#[test]
fn malformed_json_names_the_file() {
    let err = parse(r#"{"listeners": [ "#).unwrap_err().to_string();
    assert!(err.contains("test.json"), "{err}");
}

#[test]
fn ranges_are_enforced() {
    let cases = [
        (r#""channel_size": 0"#, "channel_size"),
        (r#""batch_size": 0"#, "batch_size"),
        (r#""stream_replicas": 0"#, "stream_replicas"),
        (r#""publish_timeout_ms": 0"#, "publish_timeout_ms"),
        (r#""stream_max_bytes": 0"#, "stream_max_bytes"),
        (r#""partition": " ""#, "partition"),
        (r#""stream_name": "a.b""#, "stream_name"),
        (r#""stream_subjects": ["flows..raw"]"#, "stream_subjects[0]"),
        (r#""metrics_addr": "nowhere""#, "metrics_addr"),
        (r#""nats_url": "http://nats:4222""#, "nats_url"),
        (r#""nats_url": "wss://nats:443""#, "nats_url"),
        (r#""max_exporters": 0"#, "max_exporters"),
        (r#""pending_flows_max_bytes": 1024"#, "pending_flows_max_bytes"),
    ];
    for (fragment, key) in cases {
        let text = format!(
            r#"{{{fragment}, "listeners":[{{"protocol":"netflow","listen_addr":"0.0.0.0:2055"}}]}}"#
        );
        assert_eq!(invalid_key(&text), key, "for {fragment}");
    }
}

#[test]
fn listener_ranges_and_protocol_specific_keys_are_enforced() {
    let cases = [
        (
            r#""protocol":"netflow","listen_addr":"0.0.0.0:1","max_templates":0"#,
            "listeners[0].max_templates",
        ),
        (
            r#""protocol":"netflow","listen_addr":"0.0.0.0:1","max_template_fields":70000"#,
            "listeners[0].max_template_fields",
        ),
        (
            r#""protocol":"netflow","listen_addr":"0.0.0.0:1","pending_flows":{"max_pending_flows":10001}"#,
            "listeners[0].pending_flows.max_pending_flows",
        ),
        (
            r#""protocol":"netflow","listen_addr":"0.0.0.0:1","pending_flows":{"max_entries_per_template":0}"#,
            "listeners[0].pending_flows.max_entries_per_template",
        ),
        (
            r#""protocol":"netflow","listen_addr":"0.0.0.0:1","pending_flows":{"max_entry_size_bytes":1048577}"#,
            "listeners[0].pending_flows.max_entry_size_bytes",
        ),
        (
            r#""protocol":"netflow","listen_addr":"0.0.0.0:1","pending_flows":{"ttl_secs":3601}"#,
            "listeners[0].pending_flows.ttl_secs",
        ),
        (
            r#""protocol":"netflow","listen_addr":"0.0.0.0:1","pending_flows":{"max_bytes":100}"#,
            "listeners[0].pending_flows.max_bytes",
        ),
        (
            r#""protocol":"netflow","listen_addr":"0.0.0.0:1","max_samples_per_datagram":5"#,
            "listeners[0].max_samples_per_datagram",
        ),
        (
            r#""protocol":"sflow","listen_addr":"0.0.0.0:1","max_templates":5"#,
            "listeners[0].max_templates",
        ),
        (
            r#""protocol":"sflow","listen_addr":"0.0.0.0:1","max_samples_per_datagram":0"#,
            "listeners[0].max_samples_per_datagram",
        ),
        (r#""protocol":"sflow","listen_addr":"2055""#, "listeners[0].listen_addr"),
        (
            r#""protocol":"sflow","listen_addr":"0.0.0.0:1","buffer_size":10"#,
            "listeners[0].buffer_size",
        ),
        (
            r#""protocol":"sflow","listen_addr":"0.0.0.0:1","subject":"a. b""#,
            "listeners[0].subject",
        ),
        (
            r#""protocol":"netflow","listen_addr":"0.0.0.0:1","allow_sources":["10.0.0.0/8","10.0.0.1/8"]"#,
            "listeners[0].allow_sources[1]",
        ),
        (
            r#""protocol":"sflow","listen_addr":"0.0.0.0:1","deny_sources":["switch-1"]"#,
            "listeners[0].deny_sources[0]",
        ),
        (
            r#""protocol":"netflow","listen_addr":"0.0.0.0:1","max_exporter_pps":0"#,
            "listeners[0].max_exporter_pps",
        ),
        (r#""protocol":"netflow","listen_addr":"0.0.0.0:1","sockets":0"#, "listeners[0].sockets"),
        (r#""protocol":"sflow","listen_addr":"0.0.0.0:1","sockets":65"#, "listeners[0].sockets"),
        (
            r#""protocol":"netflow","listen_addr":"0.0.0.0:1","transport":"tcp","sockets":2"#,
            "listeners[0].sockets",
        ),
    ];
    for (fragment, key) in cases {
        let text = format!(r#"{{"listeners":[{{{fragment}}}]}}"#);
        assert_eq!(invalid_key(&text), key, "for {fragment}");
    }
}

#[test]
fn listeners_must_exist_and_be_unique() {
    assert_eq!(invalid_key(r#"{"listeners":[]}"#), "listeners");
    let dup = r#"{"listeners":[{"protocol":"netflow","listen_addr":"0.0.0.0:2055"},
                              {"protocol":"sflow","listen_addr":"0.0.0.0:2055"}]}"#;
    assert_eq!(invalid_key(dup), "listeners[1].listen_addr");
    let missing = parse(r#"{"channel_size": 5}"#).unwrap_err().to_string();
    assert!(missing.contains("listeners"), "{missing}");
}

#[test]
fn mtls_requires_readable_files_under_cert_dir() {
    let dir = std::env::temp_dir().join(format!("fc-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["c.pem", "k.pem", "ca.pem"] {
        std::fs::write(dir.join(f), "x").unwrap();
    }
    let text = |ca: &str| {
        format!(
            r#"{{"security":{{"mode":"mtls","cert_dir":"{}","tls":{{"cert_file":"c.pem","key_file":"k.pem","ca_file":"{ca}"}}}},
                "listeners":[{{"protocol":"netflow","listen_addr":"0.0.0.0:2055"}}]}}"#,
            dir.display()
        )
    };
    parse(&text("ca.pem")).unwrap().validate().unwrap();
    assert_eq!(invalid_key(&text("missing.pem")), "security.tls.ca_file");
    let no_tls = r#"{"security":{"mode":"mtls"},"listeners":[{"protocol":"netflow","listen_addr":"0.0.0.0:2055"}]}"#;
    assert_eq!(invalid_key(no_tls), "security.tls");
    let none = r#"{"security":{"mode":"none"},"listeners":[{"protocol":"netflow","listen_addr":"0.0.0.0:2055"}]}"#;
    parse(none).unwrap().validate().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn environment_overrides_scalars_lists_listeners_and_nats_url() {
    let config = parse_env(
        MINIMAL,
        &[
            ("FLOW_COLLECTOR__CHANNEL_SIZE", "50000"),
            ("FLOW_COLLECTOR__PARTITION", "tenant-a"),
            ("FLOW_COLLECTOR__STREAM_SUBJECTS", "a.b,c.d"),
            ("NATS_URL", "nats://127.0.0.1:4333"),
            (
                "FLOW_COLLECTOR_LISTENERS",
                r#"[{"protocol":"sflow","listen_addr":"127.0.0.1:6343"}]"#,
            ),
            ("UNRELATED_VARIABLE", "ignored"),
        ],
    )
    .unwrap();
    assert_eq!(config.channel_size, 50_000);
    assert_eq!(config.partition, "tenant-a");
    assert_eq!(config.stream_subjects, vec!["a.b", "c.d"]);
    assert_eq!(config.nats_url.as_deref(), Some("nats://127.0.0.1:4333"));
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.listeners[0].protocol, ListenerKind::Sflow);
}

#[test]
fn environment_override_with_a_bad_value_names_the_key() {
    let err =
        parse_env(MINIMAL, &[("FLOW_COLLECTOR__BATCH_SIZE", "lots")]).unwrap_err().to_string();
    assert!(err.contains("batch_size"), "{err}");
    let err = parse_env(MINIMAL, &[("FLOW_COLLECTOR__NO_SUCH_KEY", "1")]).unwrap_err().to_string();
    assert!(err.contains("no_such_key"), "{err}");
}

#[test]
fn the_guide_example_maps_onto_jetstream_settings() {
    let config = parse(GUIDE_EXAMPLE).unwrap();
    let js = config.jetstream_settings().expect("nats_url is set");
    assert_eq!(js.servers, "nats://nats:4222");
    assert_eq!(js.creds_file, Some(PathBuf::from("/etc/serviceradar/creds/platform.creds")));
    assert_eq!(js.stream.name, "events");
    assert_eq!(js.stream.subjects, vec!["flows.raw.netflow", "flows.raw.sflow"]);
    assert_eq!(js.stream.max_bytes, 10_737_418_240);
    assert_eq!(js.stream.replicas, 1);
    assert_eq!(js.publish_timeout, Duration::from_millis(5_000));
    let tls = js.tls.expect("mode mtls turns TLS on");
    let certs = PathBuf::from("/etc/serviceradar/certs");
    assert_eq!(tls.ca_file, Some(certs.join("root.pem")));
    let client = tls.client.expect("mTLS presents a client certificate");
    assert_eq!(client.cert_file, certs.join("flow-collector.pem"));
    assert_eq!(client.key_file, certs.join("flow-collector-key.pem"));
}

#[test]
fn stream_subjects_merge_every_listener_subject_once_in_order() {
    let config = parse(
        r#"{"nats_url":"nats://127.0.0.1:4222","stream_subjects":["b.raw","a.raw"],
            "listeners":[{"protocol":"netflow","listen_addr":"0.0.0.0:2055","subject":"c.raw"},
                         {"protocol":"sflow","listen_addr":"0.0.0.0:6343","subject":"a.raw"},
                         {"protocol":"netflow","listen_addr":"0.0.0.0:2056"}]}"#,
    )
    .unwrap();
    let js = config.jetstream_settings().unwrap();
    assert_eq!(js.stream.subjects, vec!["b.raw", "a.raw", "c.raw", "flows.raw.netflow"]);
    assert!(js.tls.is_none(), "nats:// without mTLS is plain TCP");
    assert!(js.creds_file.is_none());
}

#[test]
fn a_tls_url_without_mtls_trusts_the_system_roots() {
    let text = r#"{"nats_url":"nats://a:4222, tls://b:4222","security":{"mode":"none"},
                  "listeners":[{"protocol":"netflow","listen_addr":"0.0.0.0:2055"}]}"#;
    let js = parse(text).unwrap().jetstream_settings().unwrap();
    let tls = js.tls.expect("a tls:// URL asks for TLS");
    assert_eq!(tls.ca_file, None);
    assert_eq!(tls.client, None);
}

#[test]
fn without_nats_url_there_is_no_jetstream() {
    assert!(parse(MINIMAL).unwrap().jetstream_settings().is_none());
}

#[test]
fn publish_buffer_flows_defaults_to_a_minute_at_ten_thousand_flows_a_second() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.publish_buffer_flows, 600_000);
    let SinkSettings::JetStream(sink) =
        config.jetstream_sink(JetStreamLink::new(), Default::default(), 4096)
    else {
        panic!("a JetStream sink expected");
    };
    assert_eq!(sink.buffer_flows, 600_000);
    assert_eq!(sink.batches_in_flight, 40, "4096 acks in flight / batches of 100");
    let small = parse(r#"{"batch_size": 5000, "listeners":[{"protocol":"netflow","listen_addr":"0.0.0.0:2055"}]}"#)
        .unwrap();
    let SinkSettings::JetStream(sink) =
        small.jetstream_sink(JetStreamLink::new(), Default::default(), 4096)
    else {
        panic!("a JetStream sink expected");
    };
    assert_eq!(sink.batches_in_flight, 4, "never fewer than four batches in flight");
}

#[test]
fn publish_buffer_flows_is_range_checked() {
    for value in ["0", "99", "10000001"] {
        let text = format!(
            r#"{{"publish_buffer_flows": {value}, "listeners":[{{"protocol":"netflow","listen_addr":"0.0.0.0:2055"}}]}}"#
        );
        assert_eq!(invalid_key(&text), "publish_buffer_flows", "for {value}");
    }
    let text = r#"{"publish_buffer_flows": 100, "listeners":[{"protocol":"netflow","listen_addr":"0.0.0.0:2055"}]}"#;
    parse(text).unwrap().validate().unwrap();
}

#[test]
fn sampling_policy_reaches_the_netflow_decoder() {
    let text = r#"{"listeners":[{"protocol":"netflow","listen_addr":"0.0.0.0:2055",
        "sampling":{"default_rate":1,"overrides":[{"exporter":"10.0.0.0/8","rate":1000},
                                                  {"exporter":"10.1.2.3","rate":64}]}}]}"#;
    let config = parse(text).unwrap();
    config.validate().unwrap();
    let settings = config.collector_settings().unwrap();
    let ListenerProtocol::Netflow(netflow) = &settings.listeners[0].protocol else {
        panic!("netflow listener expected");
    };
    let policy = &netflow.sampling;
    assert_eq!(policy.default_rate, Some(1));
    assert_eq!(policy.override_for("10.9.9.9".parse().unwrap()), Some(1000));
    assert_eq!(policy.override_for("10.1.2.3".parse().unwrap()), Some(64), "longest prefix");
    assert_eq!(policy.override_for("192.0.2.1".parse().unwrap()), None);
}

#[test]
fn sampling_mistakes_name_the_entry() {
    let listener = |sampling: &str| {
        format!(
            r#"{{"listeners":[{{"protocol":"netflow","listen_addr":"0.0.0.0:2055","sampling":{sampling}}}]}}"#
        )
    };
    assert_eq!(
        invalid_key(&listener(r#"{"overrides":[{"exporter":"10.0.0.0/33","rate":5}]}"#)),
        "listeners[0].sampling.overrides[0]"
    );
    assert_eq!(
        invalid_key(&listener(r#"{"overrides":[{"exporter":"router-a","rate":5}]}"#)),
        "listeners[0].sampling.overrides[0]"
    );
    assert_eq!(
        invalid_key(&listener(r#"{"overrides":[{"exporter":"10.0.0.1","rate":0}]}"#)),
        "listeners[0].sampling.overrides[0]"
    );
    assert_eq!(
        invalid_key(&listener(r#"{"default_rate":0}"#)),
        "listeners[0].sampling.default_rate"
    );
    let typo = listener(r#"{"default":5}"#);
    assert!(parse(&typo).unwrap_err().to_string().contains("`default`"));
}

#[test]
fn sampling_policy_reaches_the_sflow_decoder() {
    let text = r#"{"listeners":[{"protocol":"sflow","listen_addr":"0.0.0.0:6343",
        "sampling":{"default_rate":512,"overrides":[{"exporter":"10.0.0.0/8","rate":1000},
                                                    {"exporter":"2001:db8::7","rate":64}]}}]}"#;
    let config = parse(text).unwrap();
    config.validate().unwrap();
    let settings = config.collector_settings().unwrap();
    let ListenerProtocol::Sflow(sflow) = &settings.listeners[0].protocol else {
        panic!("sflow listener expected");
    };
    let policy = &sflow.sampling;
    assert_eq!(policy.default_rate, Some(512));
    assert_eq!(policy.override_for("10.9.9.9".parse().unwrap()), Some(1000));
    assert_eq!(policy.override_for("2001:db8::7".parse().unwrap()), Some(64));
    assert_eq!(policy.override_for("192.0.2.1".parse().unwrap()), None);
}

#[test]
fn sflow_sampling_mistakes_name_the_entry() {
    let listener = |sampling: &str| {
        format!(
            r#"{{"listeners":[{{"protocol":"netflow","listen_addr":"0.0.0.0:2055"}},{{"protocol":"sflow","listen_addr":"0.0.0.0:6343","sampling":{sampling}}}]}}"#
        )
    };
    assert_eq!(
        invalid_key(&listener(r#"{"overrides":[{"exporter":"10.0.0.1/8","rate":5}]}"#)),
        "listeners[1].sampling.overrides[0]"
    );
    assert_eq!(
        invalid_key(&listener(
            r#"{"overrides":[{"exporter":"10.0.0.0/8","rate":5},{"exporter":"agent-1","rate":5}]}"#
        )),
        "listeners[1].sampling.overrides[1]"
    );
    assert_eq!(
        invalid_key(&listener(r#"{"default_rate":0}"#)),
        "listeners[1].sampling.default_rate"
    );
    let typo = listener(r#"{"overrides":[{"prefix":"10.0.0.0/8","rate":5}]}"#);
    assert!(parse(&typo).unwrap_err().to_string().contains("`prefix`"));
}

#[test]
fn source_control_reaches_the_listener_settings() {
    let text = r#"{"listeners":[{"protocol":"netflow","listen_addr":"0.0.0.0:2055",
        "allow_sources":["10.0.0.0/8","2001:db8::/32"],"deny_sources":["10.6.6.6"],
        "max_exporter_pps":5000}]}"#;
    let settings = parse(text).expect("valid").collector_settings().expect("settings");
    let listener = &settings.listeners[0];
    assert_eq!(listener.max_exporter_pps.map(|n| n.get()), Some(5000));
    let accepts = |addr: &str| listener.sources.accepts(addr.parse().unwrap());
    assert!(accepts("10.1.2.3"));
    assert!(accepts("::ffff:10.1.2.3"), "v4-mapped sources are their IPv4 address");
    assert!(accepts("2001:db8::1"));
    assert!(!accepts("10.6.6.6"), "the deny list wins");
    assert!(!accepts("192.0.2.1"), "outside the allow list");
    let open = parse(r#"{"listeners":[{"protocol":"sflow","listen_addr":"0.0.0.0:6343"}]}"#)
        .expect("valid")
        .collector_settings()
        .expect("settings");
    assert!(open.listeners[0].sources.is_open());
    assert_eq!(open.listeners[0].max_exporter_pps, None);
}

#[test]
fn sockets_reach_the_listener_settings_and_default_to_one() {
    let text = r#"{"listeners":[{"protocol":"netflow","listen_addr":"0.0.0.0:2055","sockets":4},
        {"protocol":"sflow","listen_addr":"0.0.0.0:6343","sockets":64},
        {"protocol":"netflow","listen_addr":"0.0.0.0:4739"}]}"#;
    let settings = parse(text).expect("valid").collector_settings().expect("settings");
    let sockets: Vec<usize> = settings.listeners.iter().map(|l| l.sockets).collect();
    assert_eq!(sockets, [4, 64, 1]);
}

#[test]
fn the_exporter_registry_and_subject_templates_reach_the_settings() {
    let text = r#"{"partition":"site-a","exporters":[
        {"prefix":"10.1.0.0/16","partition":"acme","site":"hq","tags":{"account":"A-1"}},
        {"prefix":"10.1.2.3","name":"edge-1"}],
      "listeners":[{"protocol":"netflow","listen_addr":"0.0.0.0:2055",
        "subject":"flows.raw.netflow.{partition}","partition":"lab"}]}"#;
    let config = parse(text).expect("valid");
    let settings = config.collector_settings().expect("settings");
    assert_eq!(settings.listeners[0].partition.as_deref(), Some("lab"));
    assert_eq!(settings.listeners[0].subject, "flows.raw.netflow.{partition}");
    let edge = settings.registry.identify("10.1.2.3".parse().unwrap(), "lab");
    assert_eq!((edge.partition.as_str(), edge.name.as_str()), ("acme", "edge-1"));
    assert_eq!(edge.site, "hq");
    let stranger = settings.registry.identify("192.0.2.1".parse().unwrap(), "lab");
    assert_eq!(stranger.partition, "lab");
    assert!(config.stream_subjects().contains(&"flows.raw.netflow.*".to_owned()));
}

#[test]
fn tenancy_mistakes_name_the_key() {
    let cases = [
        (r#""exporters":[{"prefix":"10.0.0.1/8"}]"#, "exporters[0].prefix"),
        (r#""exporters":[{"prefix":"10.0.0.0/8","partition":"a.b"}]"#, "exporters[0].partition"),
        (r#""partition":"two words""#, "partition"),
    ];
    for (fragment, key) in cases {
        let text = format!(
            r#"{{{fragment}, "listeners":[{{"protocol":"netflow","listen_addr":"0.0.0.0:2055"}}]}}"#
        );
        assert_eq!(invalid_key(&text), key, "for {fragment}");
    }
    let listener = |extra: &str| {
        format!(
            r#"{{"listeners":[{{"protocol":"netflow","listen_addr":"0.0.0.0:2055",{extra}}}]}}"#
        )
    };
    assert_eq!(invalid_key(&listener(r#""partition":"x*""#)), "listeners[0].partition");
    assert_eq!(invalid_key(&listener(r#""subject":"flows.{partition}x""#)), "listeners[0].subject");
    assert_eq!(
        invalid_key(&listener(r#""subject":"flows.{partition}.{partition}""#)),
        "listeners[0].subject"
    );
}

/// Two tenants on one templated listener: `Acme` with an account of its own, `globex`
/// with only a stream of its own, and the install's own flows.
const TENANTS: &str = r#"{"nats_url":"nats://ops:pw@nats:4222","partition":"ops",
  "exporters":[{"prefix":"10.1.0.0/16","partition":"Acme"},
               {"prefix":"10.2.0.0/16","partition":"globex"}],
  "partitions":{"Acme":{"nats_url":"nats://acme:secret@nats:4222","stream_name":"acme_flows",
                        "max_exporters":5,"max_pps":1000},
                "globex":{"stream_name":"globex_flows"}},
  "listeners":[{"protocol":"netflow","listen_addr":"0.0.0.0:2055",
                "subject":"flows.raw.netflow.{partition}"}]}"#;

#[test]
fn partitions_with_their_own_account_or_stream_get_their_own_connection() {
    let config = parse(TENANTS).expect("valid");
    config.validate().expect("valid");
    let install = config.jetstream_settings().expect("nats_url is set");
    assert_eq!(install.stream.name, "events");
    assert_eq!(
        install.stream.subjects,
        ["flows.raw.netflow", "flows.raw.sflow", "flows.raw.netflow.ops"],
        "no wildcard: the tenants' subjects belong to their own streams"
    );
    let own = config.partition_connections();
    assert_eq!(own.len(), 2, "{own:?}");
    let acme = own.iter().find(|c| c.partitions == ["Acme"]).expect("Acme's connection");
    assert_eq!(acme.settings.servers, "nats://acme:secret@nats:4222");
    assert_eq!(acme.settings.stream.name, "acme_flows");
    assert_eq!(acme.settings.stream.subjects, ["flows.raw.netflow.Acme"], "names keep their case");
    assert_eq!(acme.settings.creds_file, None);
    let globex = own.iter().find(|c| c.partitions == ["globex"]).expect("globex's connection");
    assert_eq!(globex.settings.servers, "nats://ops:pw@nats:4222", "the install's servers");
    assert_eq!(globex.settings.stream.subjects, ["flows.raw.netflow.globex"]);
    let limits = config.collector_settings().expect("settings").partition_limits;
    assert_eq!(limits.len(), 1);
    assert_eq!(limits["Acme"].max_exporters, Some(5));
    assert_eq!(limits["Acme"].max_pps.map(NonZeroU32::get), Some(1000));
}

#[test]
fn without_partition_connections_the_install_stream_keeps_its_wildcard() {
    let text = TENANTS.replace(
        r#""partitions":{"Acme":{"nats_url":"nats://acme:secret@nats:4222","stream_name":"acme_flows",
                        "max_exporters":5,"max_pps":1000},
                "globex":{"stream_name":"globex_flows"}},"#,
        r#""partitions":{"Acme":{"max_exporters":5}},"#,
    );
    let config = parse(&text).expect("valid");
    config.validate().expect("valid");
    assert!(config.partition_connections().is_empty());
    let subjects = config.jetstream_settings().expect("nats_url").stream.subjects;
    assert!(subjects.contains(&"flows.raw.netflow.*".to_owned()), "{subjects:?}");
}

#[test]
fn partition_mistakes_name_the_key() {
    let with = |partitions: &str, subject: &str| {
        format!(
            r#"{{"nats_url":"nats://nats:4222","exporters":[{{"prefix":"10.1.0.0/16","partition":"acme"}}],
              "partitions":{partitions},
              "listeners":[{{"protocol":"netflow","listen_addr":"0.0.0.0:2055","subject":"{subject}"}}]}}"#
        )
    };
    let templated = "flows.{partition}";
    let cases = [
        (r#"{"acme":{"max_exporters":0}}"#, templated, "partitions.acme.max_exporters"),
        (r#"{"acme":{"max_pps":0}}"#, templated, "partitions.acme.max_pps"),
        (r#"{"acme":{"stream_name":"a.b"}}"#, templated, "partitions.acme.stream_name"),
        (r#"{"acme":{"nats_url":"http://x"}}"#, templated, "partitions.acme.nats_url"),
        (
            r#"{"acme":{"nats_creds_file":"/nonexistent/acme.creds"}}"#,
            templated,
            "partitions.acme.nats_creds_file",
        ),
        (r#"{"acmee":{"max_pps":10}}"#, templated, "partitions.acmee"),
        (r#"{"acme":{"stream_name":"acme"}}"#, "flows.shared", "listeners[0].subject"),
    ];
    for (partitions, subject, key) in cases {
        assert_eq!(invalid_key(&with(partitions, subject)), key, "for {partitions} on {subject}");
    }
    let stdout = r#"{"exporters":[{"prefix":"10.1.0.0/16","partition":"acme"}],
        "partitions":{"acme":{"stream_name":"acme"}},
        "listeners":[{"protocol":"netflow","listen_addr":"0.0.0.0:2055"}]}"#;
    assert_eq!(invalid_key(stdout), "partitions.acme", "NATS keys without nats_url");
    let shared_but_same = with(r#"{"acme":{"max_exporters":3}}"#, "flows.shared");
    parse(&shared_but_same).expect("parses").validate().expect("limits alone share a subject");
    let unknown_key = with(r#"{"acme":{"max_exporter":3}}"#, templated);
    assert!(parse(&unknown_key).is_err(), "unknown keys are refused");
}

#[test]
fn a_refused_partition_url_never_shows_its_password() {
    let text = r#"{"nats_url":"nats://nats:4222","partitions":{"default":{"nats_url":"http://u:hunter2@x"}},
        "listeners":[{"protocol":"netflow","listen_addr":"0.0.0.0:2055"}]}"#;
    let error = parse(text).expect("parses").validate().expect_err("a bad URL").to_string();
    assert!(error.contains("partitions.default.nats_url"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}
