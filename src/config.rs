//! The collector's configuration: one JSON file (default
//! `/etc/serviceradar/flow-collector.json`) plus environment overrides, loaded with
//! the `config` crate, checked once at start-up, and turned into the typed settings the
//! actors run with.
//!
//! Environment overrides use the prefix `FLOW_COLLECTOR` and `__` between key parts,
//! e.g. `FLOW_COLLECTOR__CHANNEL_SIZE=50000` or `FLOW_COLLECTOR__SECURITY__MODE=none`.
//! `stream_subjects` takes a comma-separated list. The `listeners` array cannot be
//! spelled key by key, so `FLOW_COLLECTOR_LISTENERS` takes it as one JSON array. The
//! guide's Docker example sets `NATS_URL`; it is honoured as an alias of
//! `FLOW_COLLECTOR__NATS_URL`.
//!
//! Every error names the key path and the reason; unknown keys are errors.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flow_actors::settings::{Framing, JetStreamSinkSettings};
use flow_actors::sink::{
    ClientCertificate, JetStreamLink, JetStreamSettings, StreamSettings, TlsSettings,
    redact_servers,
};
use flow_actors::tenancy::{PARTITION_PLACEHOLDER, Registry, RegistryEntry, subject_for};
use flow_actors::{
    CollectorSettings, ExporterLimits, ListenerProtocol, ListenerSettings, SinkSettings,
    SourceFilter,
};
use flow_decode::netflow::PendingMemory;
use flow_decode::prefix::parse_prefix;
use flow_decode::{
    NetflowSettings, PendingFlowSettings, SamplingOverride, SamplingPolicy, SflowSettings,
};
use serde::Deserialize;
use thiserror::Error;

/// Where the config file is read from when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/serviceradar/flow-collector.json";
/// Prefix of environment overrides: `FLOW_COLLECTOR__KEY__SUBKEY`.
pub const ENV_PREFIX: &str = "FLOW_COLLECTOR";
/// Environment variable holding the whole `listeners` array as JSON.
pub const LISTENERS_ENV: &str = "FLOW_COLLECTOR_LISTENERS";
/// The guide's Docker Compose example sets this; it overrides `nats_url`.
pub const NATS_URL_ENV: &str = "NATS_URL";
/// Upper bound of `publish_buffer_flows`: about 2 GB of encoded flows per subject.
const MAX_PUBLISH_BUFFER_FLOWS: usize = 10_000_000;

/// The embedded default: NetFlow on 2055 and sFlow on 6343, flows printed to stdout.
/// Used when no `--config` is given and the default path does not exist.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/local.json");

/// Why the configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    /// The file or an override is not valid JSON, or a value has the wrong type.
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    /// A value is present and well-typed but not acceptable.
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid { key: key.into(), reason: reason.into() }
    }
}

/// The largest UDP payload: the default `max_datagram_bytes`.
const MAX_UDP_PAYLOAD: usize = 65_535;

/// The most UDP sockets one listener may bind on its address (`sockets`).
const MAX_SOCKETS_PER_LISTENER: usize = 64;

/// The whole config file, as written by the operator.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// NATS endpoint for JetStream publishing; absent: flows go to stdout.
    #[serde(default)]
    pub nats_url: Option<String>,
    #[serde(default)]
    pub nats_creds_file: Option<PathBuf>,
    #[serde(default = "defaults::stream_name")]
    pub stream_name: String,
    #[serde(default = "defaults::stream_subjects")]
    pub stream_subjects: Vec<String>,
    #[serde(default = "defaults::stream_max_bytes")]
    pub stream_max_bytes: i64,
    #[serde(default = "defaults::stream_replicas")]
    pub stream_replicas: usize,
    #[serde(default = "defaults::partition")]
    pub partition: String,
    pub listeners: Vec<ListenerConfig>,
    #[serde(default = "defaults::channel_size")]
    pub channel_size: usize,
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    #[serde(default = "defaults::publish_timeout_ms")]
    pub publish_timeout_ms: u64,
    /// Flows each subject's JetStream publisher holds while NATS is slow or away.
    #[serde(default = "defaults::publish_buffer_flows")]
    pub publish_buffer_flows: usize,
    #[serde(default)]
    pub security: Option<SecurityConfig>,
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// OTLP trace export; off unless `enabled` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    #[serde(default)]
    pub otel: flow_telemetry::OtelConfig,
    /// Live exporters per listener at most; a new source beyond it is refused and counted.
    #[serde(default = "defaults::max_exporters")]
    pub max_exporters: usize,
    /// An exporter silent this long is stopped and its templates freed.
    #[serde(default = "defaults::exporter_idle_timeout_secs")]
    pub exporter_idle_timeout_secs: u64,
    /// Exporters per listener with `/metrics` series of their own; later ones share
    /// `exporter="other"` (0: every exporter does).
    #[serde(default = "defaults::metrics_max_exporters")]
    pub metrics_max_exporters: usize,
    /// Bytes the pending-flows caches of every exporter may take together.
    #[serde(default = "defaults::pending_flows_max_bytes")]
    pub pending_flows_max_bytes: usize,
    /// How flows are laid out in JetStream messages: one per message (the contract's
    /// default) or many, length-delimited.
    #[serde(default)]
    pub publish_framing: PublishFraming,
    /// The exporter registry: partition and tags by exporter prefix.
    #[serde(default)]
    pub exporters: Vec<ExporterConfig>,
    /// What partitions (tenants) get of their own: NATS credentials, servers and
    /// stream, and limits on their exporters.
    #[serde(default)]
    pub partitions: BTreeMap<String, PartitionConfig>,
}

/// One `exporters[]` entry: the exporters in `prefix` belong to `partition` (a tenant)
/// and carry these tags on every flow. The longest matching prefix wins, key by key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExporterConfig {
    /// An exporter address ("10.0.0.1") or prefix ("10.0.0.0/8").
    pub prefix: String,
    #[serde(default)]
    pub partition: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl ExporterConfig {
    fn entry(&self, key: &str) -> Result<RegistryEntry, ConfigError> {
        let prefix = parse_prefix(&self.prefix)
            .map_err(|e| ConfigError::invalid(format!("{key}.prefix"), e.to_string()))?;
        if let Some(partition) = &self.partition {
            validate_partition(&format!("{key}.partition"), partition)?;
        }
        Ok(RegistryEntry {
            prefix,
            partition: self.partition.clone(),
            name: self.name.clone(),
            site: self.site.clone(),
            role: self.role.clone(),
            tags: self.tags.clone(),
        })
    }
}

/// A partition names a tenant and may become a subject token: no dots, spaces or
/// wildcards.
fn validate_partition(key: &str, partition: &str) -> Result<(), ConfigError> {
    let bad = partition.is_empty()
        || partition.chars().any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace());
    if bad {
        return Err(ConfigError::invalid(
            key,
            format!(
                "\"{partition}\" is not a partition name (one subject token: no dots, spaces or wildcards)"
            ),
        ));
    }
    Ok(())
}

/// `publish_framing`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PublishFraming {
    /// One protobuf `FlowMessage` per NATS message.
    #[default]
    Message,
    /// Many `FlowMessage`s per NATS message, each preceded by its varint length.
    Delimited,
}

impl PublishFraming {
    fn framing(self) -> Framing {
        match self {
            PublishFraming::Message => Framing::PerFlow,
            PublishFraming::Delimited => Framing::Delimited,
        }
    }
}

/// Which decoder a listener runs.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    Netflow,
    Sflow,
}

/// One `listeners[]` entry. The netflow-only and sflow-only keys are checked against
/// `protocol` in [`Config::validate`].
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub protocol: ListenerKind,
    pub listen_addr: String,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default = "defaults::buffer_size")]
    pub buffer_size: usize,
    #[serde(default)]
    pub max_templates: Option<usize>,
    #[serde(default)]
    pub max_template_fields: Option<usize>,
    #[serde(default)]
    pub pending_flows: Option<PendingFlowsConfig>,
    #[serde(default)]
    pub max_samples_per_datagram: Option<u32>,
    #[serde(default)]
    pub sampling: Option<SamplingConfig>,
    /// Exporter prefixes allowed to send (absent or empty: any not denied).
    #[serde(default)]
    pub allow_sources: Vec<String>,
    /// Exporter prefixes whose datagrams are dropped; wins over `allow_sources`.
    #[serde(default)]
    pub deny_sources: Vec<String>,
    /// Datagrams per second one exporter may send; the excess is dropped and counted.
    #[serde(default)]
    pub max_exporter_pps: Option<u32>,
    /// Datagrams larger than this are dropped and counted (UDP listeners).
    #[serde(default)]
    pub max_datagram_bytes: Option<usize>,
    /// UDP sockets bound to `listen_addr` with SO_REUSEPORT, each read by its own task
    /// (default 1; UDP listeners).
    #[serde(default)]
    pub sockets: Option<usize>,
    /// The partition of this listener's exporters the registry does not place (absent:
    /// the install's `partition`).
    #[serde(default)]
    pub partition: Option<String>,
    /// "udp" (default), or IPFIX messages over "tcp" or "tls" connections (netflow
    /// listeners only); see [`transport`].
    #[serde(default)]
    pub transport: TransportKind,
    /// tcp/tls: connections open at once at most (default 1000).
    #[serde(default)]
    pub max_sessions: Option<usize>,
    /// tls: seconds a connection has to finish its handshake (default 10).
    #[serde(default)]
    pub handshake_timeout_secs: Option<u64>,
    /// tcp/tls: seconds without a complete message before a session is closed
    /// (default 300).
    #[serde(default)]
    pub idle_timeout_secs: Option<u64>,
    /// tls: the listener's certificate and key, and the CA of the exporters' client
    /// certificates.
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
}

/// A listener's `transport`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    #[default]
    Udp,
    Tcp,
    Tls,
}

/// A tls listener's `tls`: file names, resolved under `security.cert_dir` unless absolute.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: PathBuf,
}

/// `sampling` (netflow and sflow): rates for exporters that announce none, or announce
/// a wrong one. Announced rates are used otherwise. sFlow samples always carry a rate:
/// an override (matched against the agent address) replaces it, and `default_rate`
/// fills only a rate of 0.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    /// Rate given to flows whose exporter announced none (absent: they keep 0, "unknown").
    #[serde(default)]
    pub default_rate: Option<u64>,
    /// Rates forced per exporter (sFlow: agent) address or prefix; the longest prefix
    /// wins.
    #[serde(default)]
    pub overrides: Vec<SamplingOverrideConfig>,
}

/// One `sampling.overrides[]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SamplingOverrideConfig {
    /// An exporter address ("10.0.0.1") or prefix ("10.0.0.0/8"); for sFlow, the agent
    /// address of the datagrams (the UDP source when the agent address is unknown).
    pub exporter: String,
    /// 1-in-N sampling rate to stamp on its flows (1 = unsampled).
    pub rate: u64,
}

impl SamplingConfig {
    /// The decoder's policy; errors name the offending entry.
    fn policy(&self, key: &str) -> Result<SamplingPolicy, ConfigError> {
        let overrides = self
            .overrides
            .iter()
            .enumerate()
            .map(|(i, o)| {
                SamplingOverride::parse(&o.exporter, o.rate).map_err(|e| {
                    ConfigError::invalid(format!("{key}.overrides[{i}]"), e.to_string())
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let policy = SamplingPolicy { default_rate: self.default_rate, overrides };
        policy
            .validate()
            .map_err(|e| ConfigError::invalid(format!("{key}.default_rate"), e.to_string()))?;
        Ok(policy)
    }
}

/// `pending_flows`: the cache for data that arrives before its template.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PendingFlowsConfig {
    #[serde(default = "defaults::max_pending_flows")]
    pub max_pending_flows: usize,
    #[serde(default = "defaults::max_entries_per_template")]
    pub max_entries_per_template: usize,
    #[serde(default = "defaults::max_entry_size_bytes")]
    pub max_entry_size_bytes: usize,
    #[serde(default = "defaults::pending_ttl_secs")]
    pub ttl_secs: u64,
    /// Bytes one exporter's held data sets may take.
    #[serde(default = "defaults::pending_max_bytes")]
    pub max_bytes: usize,
}

impl Default for PendingFlowsConfig {
    fn default() -> Self {
        PendingFlowsConfig {
            max_pending_flows: defaults::max_pending_flows(),
            max_entries_per_template: defaults::max_entries_per_template(),
            max_entry_size_bytes: defaults::max_entry_size_bytes(),
            ttl_secs: defaults::pending_ttl_secs(),
            max_bytes: defaults::pending_max_bytes(),
        }
    }
}

/// `security`: how the collector authenticates to NATS.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    pub mode: SecurityMode,
    #[serde(default)]
    pub cert_dir: Option<PathBuf>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `security.mode`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    Mtls,
    None,
}

/// `security.tls`: file names, resolved under `cert_dir` unless absolute.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

/// The defaults of the operator guide and the wire contract, in one place.
mod defaults {
    pub fn stream_name() -> String {
        "events".into()
    }
    pub fn stream_subjects() -> Vec<String> {
        vec!["flows.raw.netflow".into(), "flows.raw.sflow".into()]
    }
    pub fn stream_max_bytes() -> i64 {
        10 * 1024 * 1024 * 1024
    }
    pub fn stream_replicas() -> usize {
        1
    }
    pub fn partition() -> String {
        "default".into()
    }
    pub fn channel_size() -> usize {
        10_000
    }
    pub fn batch_size() -> usize {
        100
    }
    pub fn publish_timeout_ms() -> u64 {
        5_000
    }
    /// A minute of NATS outage at 10,000 flows/s.
    pub fn publish_buffer_flows() -> usize {
        600_000
    }
    pub fn max_exporters() -> usize {
        10_000
    }
    pub fn exporter_idle_timeout_secs() -> u64 {
        3_600
    }
    pub fn metrics_max_exporters() -> usize {
        flow_actors::counters::DEFAULT_MAX_SERIES
    }
    pub fn buffer_size() -> usize {
        65_536
    }
    pub fn max_templates() -> usize {
        2_000
    }
    pub fn max_template_fields() -> usize {
        10_000
    }
    pub fn max_pending_flows() -> usize {
        256
    }
    pub fn max_entries_per_template() -> usize {
        1_024
    }
    pub fn max_entry_size_bytes() -> usize {
        65_535
    }
    pub fn pending_ttl_secs() -> u64 {
        300
    }
    /// 16 MiB per exporter: minutes of data from a busy router waiting for a template.
    pub fn pending_max_bytes() -> usize {
        16 << 20
    }
    /// 256 MiB for every exporter together: the collector's memory stays known however
    /// many sources send data without templates.
    pub fn pending_flows_max_bytes() -> usize {
        256 << 20
    }
    pub fn subject(kind: super::ListenerKind) -> String {
        match kind {
            super::ListenerKind::Netflow => "flows.raw.netflow".into(),
            super::ListenerKind::Sflow => "flows.raw.sflow".into(),
        }
    }
}

/// Where the configuration text comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file on disk.
    File(PathBuf),
    /// The embedded default (no file was given and none exists at the default path).
    Embedded,
}

impl ConfigSource {
    /// `--config PATH` when given; otherwise the default path when it exists; otherwise
    /// the embedded default.
    pub fn choose(explicit: Option<PathBuf>) -> Self {
        match explicit {
            Some(path) => ConfigSource::File(path),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                ConfigSource::File(DEFAULT_CONFIG_PATH.into())
            }
            None => ConfigSource::Embedded,
        }
    }

    /// The file path, or "embedded default", for log and check-config lines.
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::Embedded => "embedded default".into(),
        }
    }
}

impl Config {
    /// Reads, merges the environment overrides into, parses and validates the config.
    pub fn load(source: &ConfigSource) -> Result<Config, ConfigError> {
        let text = match source {
            ConfigSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Unreadable { path: path.clone(), source: e })?,
            ConfigSource::Embedded => EMBEDDED_DEFAULT.to_owned(),
        };
        let env: Vec<(String, String)> = std::env::vars().collect();
        let config = Self::from_json_with_env(&text, &source.describe(), &env)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses `text` and layers the overrides found in `env` on top. Pure, for tests.
    pub fn from_json_with_env(
        text: &str,
        origin: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let parse_error = |origin: &str, e: config::ConfigError| ConfigError::Parse {
            origin: origin.to_owned(),
            message: readable_key_paths(&e.to_string()),
        };
        // Check the JSON on its own first, so a syntax error names the file and not
        // the merge of every source.
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Json))
            .build()
            .map_err(|e| parse_error(origin, e))?;

        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Json));
        if let Some((_, listeners)) = env.iter().find(|(k, _)| k == LISTENERS_ENV) {
            let wrapped = format!("{{\"listeners\": {listeners}}}");
            builder =
                builder.add_source(config::File::from_str(&wrapped, config::FileFormat::Json));
        }
        // `stream_subjects` is the one list-valued key; it is split here rather than by
        // the `config` crate's `try_parsing`, which would also turn "007" into 7.
        let subjects_key = format!("{ENV_PREFIX}__STREAM_SUBJECTS");
        let overrides: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")) && *k != subjects_key)
            .cloned()
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .source(Some(overrides)),
        );
        if let Some((_, subjects)) = env.iter().find(|(k, _)| *k == subjects_key) {
            let list: Vec<String> = subjects.split(',').map(|s| s.trim().to_owned()).collect();
            builder = builder
                .set_override("stream_subjects", list)
                .map_err(|e| parse_error(&subjects_key, e))?;
        }
        if let Some((_, url)) = env.iter().find(|(k, _)| k == NATS_URL_ENV) {
            builder = builder
                .set_override("nats_url", url.as_str())
                .map_err(|e| parse_error(NATS_URL_ENV, e))?;
        }
        let merged_origin = format!("{origin} with environment overrides");
        builder
            .build()
            .and_then(|c| c.try_deserialize::<Config>())
            .map_err(|e| parse_error(&merged_origin, e))
    }

    /// Checks every range and cross-key rule, reporting the first violation.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.nats_url {
            validate_nats_url("nats_url", url)?;
        }
        validate_stream_name("stream_name", &self.stream_name)?;
        for (i, subject) in self.stream_subjects.iter().enumerate() {
            validate_subject(&format!("stream_subjects[{i}]"), subject)?;
        }
        if self.stream_max_bytes <= 0 && self.stream_max_bytes != -1 {
            return Err(ConfigError::invalid(
                "stream_max_bytes",
                "must be > 0 (or -1 for unlimited)",
            ));
        }
        if !(1..=5).contains(&self.stream_replicas) {
            return Err(ConfigError::invalid("stream_replicas", "must be between 1 and 5"));
        }
        validate_partition("partition", &self.partition)?;
        self.registry()?;
        positive("channel_size", self.channel_size)?;
        positive("batch_size", self.batch_size)?;
        positive("publish_timeout_ms", self.publish_timeout_ms as usize)?;
        in_range(
            "publish_buffer_flows",
            self.publish_buffer_flows,
            self.batch_size.max(1),
            MAX_PUBLISH_BUFFER_FLOWS,
        )?;
        positive("max_exporters", self.max_exporters)?;
        positive("exporter_idle_timeout_secs", self.exporter_idle_timeout_secs as usize)?;
        in_range("pending_flows_max_bytes", self.pending_flows_max_bytes, 1 << 20, 64 << 30)?;
        self.metrics_socket_addr()?;
        self.otel.validate().map_err(|e| match e {
            flow_telemetry::TelemetryError::Invalid { key, reason } => {
                ConfigError::invalid(key, reason)
            }
            other => ConfigError::invalid("otel", other.to_string()),
        })?;
        if let Some(security) = &self.security {
            security.validate()?;
        }
        if let Some(creds) = &self.nats_creds_file {
            readable_file("nats_creds_file", creds)?;
        }
        self.validate_listeners()?;
        self.validate_partitions()
    }

    fn validate_listeners(&self) -> Result<(), ConfigError> {
        if self.listeners.is_empty() {
            return Err(ConfigError::invalid("listeners", "at least one listener is required"));
        }
        let mut seen = HashSet::new();
        for (i, listener) in self.listeners.iter().enumerate() {
            let key = format!("listeners[{i}]");
            let addr = listener.validate(&key)?;
            transport::validate(listener, &key, self.cert_dir())?;
            // A UDP and a TCP/TLS listener may share an address: they are different sockets.
            if !seen.insert((addr, listener.transport == TransportKind::Udp)) {
                return Err(ConfigError::invalid(
                    format!("{key}.listen_addr"),
                    format!("{addr} is already used by another listener"),
                ));
            }
        }
        Ok(())
    }

    /// `security.cert_dir`, under which relative TLS file names resolve.
    fn cert_dir(&self) -> Option<&Path> {
        self.security.as_ref().and_then(|s| s.cert_dir.as_deref())
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub fn metrics_socket_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        self.metrics_addr.as_deref().map(|a| parse_socket_addr("metrics_addr", a)).transpose()
    }

    /// The typed settings the supervision tree runs with (stdout sink; the binary
    /// chooses the sink).
    pub fn collector_settings(&self) -> Result<CollectorSettings, ConfigError> {
        let pending_memory = Arc::new(PendingMemory::new(self.pending_flows_max_bytes));
        let listeners = self
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let key = format!("listeners[{i}]");
                let mut settings = l.settings(&key, &pending_memory)?;
                settings.transport = transport::settings(l, &key, self.cert_dir())?;
                Ok(settings)
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(CollectorSettings {
            listeners,
            channel_size: self.channel_size,
            batch_size: self.batch_size,
            exporters: ExporterLimits {
                max_exporters: self.max_exporters,
                idle_timeout: Duration::from_secs(self.exporter_idle_timeout_secs),
                max_series: self.metrics_max_exporters,
            },
            stats_interval: Duration::from_secs(30),
            sink: SinkSettings::Stdout,
            partition: self.partition.clone(),
            registry: self.registry()?,
            partition_limits: self.partition_limits(),
        })
    }

    /// The exporter registry from `exporters`.
    fn registry(&self) -> Result<Registry, ConfigError> {
        let entries = self
            .exporters
            .iter()
            .enumerate()
            .map(|(i, e)| e.entry(&format!("exporters[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Registry::new(entries))
    }
}

/// The JetStream side of the config, for when the binary publishes there.
impl Config {
    /// What the install's JetStream connection connects with, or `None` without
    /// `nats_url`. Partitions with a connection of their own are in
    /// [`Config::partition_connections`].
    pub fn jetstream_settings(&self) -> Option<JetStreamSettings> {
        let servers = self.nats_url.as_ref()?;
        let stream = StreamSettings::new(self.stream_name.clone(), self.stream_subjects());
        let mut settings = self.connection_settings(servers, stream);
        settings.creds_file = self.nats_creds_file.clone();
        Some(settings)
    }

    /// Connection settings every connection shares (TLS, timeouts, stream limits), for
    /// `servers` and `stream`; no credentials file.
    fn connection_settings(&self, servers: &str, mut stream: StreamSettings) -> JetStreamSettings {
        stream.max_bytes = self.stream_max_bytes;
        stream.replicas = self.stream_replicas;
        let mut settings = JetStreamSettings::new(servers.to_owned(), stream);
        settings.tls = self.tls_settings(servers);
        settings.publish_timeout = Duration::from_millis(self.publish_timeout_ms);
        settings
    }

    /// The JetStream sink's settings around the install's `link` and the partitions'
    /// own links; `max_in_flight` is the transport's bound on acks outstanding.
    pub fn jetstream_sink(
        &self,
        link: JetStreamLink,
        partition_links: BTreeMap<String, JetStreamLink>,
        max_in_flight: usize,
    ) -> SinkSettings {
        SinkSettings::JetStream(JetStreamSinkSettings {
            link,
            partition_links,
            buffer_flows: self.publish_buffer_flows,
            batches_in_flight: JetStreamSinkSettings::batches_in_flight_for(
                max_in_flight,
                self.batch_size,
            ),
            framing: self.publish_framing.framing(),
        })
    }

    /// The subjects of the install's stream: `stream_subjects`, then every listener's
    /// subject, each once, in that order (see [`Config::install_stream_subjects`]).
    pub fn stream_subjects(&self) -> Vec<String> {
        self.install_stream_subjects()
    }

    /// mTLS with the `security.tls` files (under `cert_dir`); TLS on the system roots
    /// when mode is "none" and a URL says `tls://`; plain TCP otherwise.
    fn tls_settings(&self, servers: &str) -> Option<TlsSettings> {
        let mtls = self.security.as_ref().filter(|s| s.mode == SecurityMode::Mtls);
        if let Some(security) = mtls {
            let tls = security.tls.as_ref()?;
            return Some(TlsSettings {
                ca_file: Some(security.resolve(&tls.ca_file)),
                client: Some(ClientCertificate {
                    cert_file: security.resolve(&tls.cert_file),
                    key_file: security.resolve(&tls.key_file),
                }),
            });
        }
        let wants_tls = servers.split(',').any(|url| url.trim().starts_with("tls://"));
        wants_tls.then_some(TlsSettings { ca_file: None, client: None })
    }
}

impl ListenerConfig {
    /// Checks this entry, returning its parsed address.
    fn validate(&self, key: &str) -> Result<SocketAddr, ConfigError> {
        let addr = parse_socket_addr(&format!("{key}.listen_addr"), &self.listen_addr)?;
        if let Some(subject) = &self.subject {
            validate_subject_template(&format!("{key}.subject"), subject)?;
        }
        if let Some(partition) = &self.partition {
            validate_partition(&format!("{key}.partition"), partition)?;
        }
        if let Some(bytes) = self.max_datagram_bytes {
            in_range(&format!("{key}.max_datagram_bytes"), bytes, 64, MAX_UDP_PAYLOAD)?;
        }
        in_range(&format!("{key}.buffer_size"), self.buffer_size, 1024, 1 << 30)?;
        if let Some(sockets) = self.sockets {
            in_range(&format!("{key}.sockets"), sockets, 1, MAX_SOCKETS_PER_LISTENER)?;
        }
        match self.protocol {
            ListenerKind::Netflow => {
                if self.max_samples_per_datagram.is_some() {
                    return Err(only_for(key, "max_samples_per_datagram", "sflow"));
                }
                if let Some(n) = self.max_templates {
                    in_range(&format!("{key}.max_templates"), n, 1, 65_536)?;
                }
                if let Some(n) = self.max_template_fields {
                    in_range(&format!("{key}.max_template_fields"), n, 1, 65_535)?;
                }
                if let Some(pending) = &self.pending_flows {
                    pending.validate(&format!("{key}.pending_flows"))?;
                }
            }
            ListenerKind::Sflow => {
                for (name, present) in [
                    ("max_templates", self.max_templates.is_some()),
                    ("max_template_fields", self.max_template_fields.is_some()),
                    ("pending_flows", self.pending_flows.is_some()),
                ] {
                    if present {
                        return Err(only_for(key, name, "netflow"));
                    }
                }
                if let Some(n) = self.max_samples_per_datagram {
                    in_range(&format!("{key}.max_samples_per_datagram"), n as usize, 1, 100_000)?;
                }
            }
        }
        self.sampling_policy(key)?;
        self.source_filter(key)?;
        if let Some(pps) = self.max_exporter_pps {
            in_range(&format!("{key}.max_exporter_pps"), pps as usize, 1, 10_000_000)?;
        }
        Ok(addr)
    }

    /// The allow and deny lists, each entry parsed as a prefix.
    fn source_filter(&self, key: &str) -> Result<SourceFilter, ConfigError> {
        let parse = |name: &str, list: &[String]| {
            list.iter()
                .enumerate()
                .map(|(i, text)| {
                    parse_prefix(text).map_err(|e| {
                        ConfigError::invalid(format!("{key}.{name}[{i}]"), e.to_string())
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(SourceFilter {
            allow: parse("allow_sources", &self.allow_sources)?,
            deny: parse("deny_sources", &self.deny_sources)?,
        })
    }

    /// The listener's settings; NetFlow pending caches share `pending_memory`.
    fn settings(
        &self,
        key: &str,
        pending_memory: &Arc<PendingMemory>,
    ) -> Result<ListenerSettings, ConfigError> {
        let listen_addr = parse_socket_addr(&format!("{key}.listen_addr"), &self.listen_addr)?;
        let protocol = match self.protocol {
            ListenerKind::Netflow => {
                let pending = self.pending_flows.clone().unwrap_or_default();
                ListenerProtocol::Netflow(NetflowSettings {
                    max_templates: self.max_templates.unwrap_or_else(defaults::max_templates),
                    max_template_fields: self
                        .max_template_fields
                        .unwrap_or_else(defaults::max_template_fields),
                    pending: Some(PendingFlowSettings {
                        max_pending_flows: pending.max_pending_flows,
                        max_entries_per_template: pending.max_entries_per_template,
                        max_entry_size_bytes: pending.max_entry_size_bytes,
                        ttl: Duration::from_secs(pending.ttl_secs),
                        max_bytes: pending.max_bytes,
                        memory: Arc::clone(pending_memory),
                    }),
                    sampling: self.sampling_policy(key)?,
                })
            }
            ListenerKind::Sflow => ListenerProtocol::Sflow(SflowSettings {
                max_samples_per_datagram: self.max_samples_per_datagram,
                sampling: self.sampling_policy(key)?,
            }),
        };
        Ok(ListenerSettings {
            listen_addr,
            subject: self.effective_subject(),
            partition: self.partition.clone(),
            buffer_size: self.buffer_size,
            protocol,
            sources: self.source_filter(key)?,
            max_exporter_pps: self.max_exporter_pps.and_then(NonZeroU32::new),
            max_datagram_bytes: self.max_datagram_bytes.unwrap_or(MAX_UDP_PAYLOAD),
            sockets: self.sockets.unwrap_or(1),
            // Set by `Config::collector_settings`, which knows `security.cert_dir`.
            transport: Default::default(),
        })
    }

    /// The decoder's sampling policy from `sampling` (either protocol); empty without it.
    fn sampling_policy(&self, key: &str) -> Result<SamplingPolicy, ConfigError> {
        match &self.sampling {
            Some(sampling) => sampling.policy(&format!("{key}.sampling")),
            None => Ok(SamplingPolicy::default()),
        }
    }

    /// The subject this listener publishes on.
    pub fn effective_subject(&self) -> String {
        self.subject.clone().unwrap_or_else(|| defaults::subject(self.protocol))
    }

    /// The subject the stream captures for this listener: its subject, with a
    /// `{partition}` token as the `*` wildcard (every partition).
    pub fn stream_subject(&self) -> String {
        subject_for(&self.effective_subject(), "*")
    }
}

impl PendingFlowsConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        in_range(&format!("{key}.max_pending_flows"), self.max_pending_flows, 1, 10_000)?;
        in_range(
            &format!("{key}.max_entries_per_template"),
            self.max_entries_per_template,
            1,
            100_000,
        )?;
        in_range(&format!("{key}.max_entry_size_bytes"), self.max_entry_size_bytes, 1, 1_048_576)?;
        in_range(&format!("{key}.ttl_secs"), self.ttl_secs as usize, 1, 3_600)?;
        in_range(&format!("{key}.max_bytes"), self.max_bytes, 65_536, 1 << 30)
    }
}

impl SecurityConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.mode == SecurityMode::None {
            return Ok(());
        }
        let tls = self.tls.as_ref().ok_or_else(|| {
            ConfigError::invalid("security.tls", "required when mode is \"mtls\"")
        })?;
        for (name, file) in
            [("cert_file", &tls.cert_file), ("key_file", &tls.key_file), ("ca_file", &tls.ca_file)]
        {
            readable_file(&format!("security.tls.{name}"), &self.resolve(file))?;
        }
        Ok(())
    }

    /// A TLS file name resolved under `cert_dir` (absolute names are kept).
    pub fn resolve(&self, file: &Path) -> PathBuf {
        match &self.cert_dir {
            Some(dir) if file.is_relative() => dir.join(file),
            _ => file.to_path_buf(),
        }
    }
}

fn only_for(key: &str, name: &str, protocol: &str) -> ConfigError {
    ConfigError::invalid(format!("{key}.{name}"), format!("only valid for {protocol} listeners"))
}

fn positive(key: &str, value: usize) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(key, "must be greater than 0"));
    }
    Ok(())
}

fn in_range(key: &str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::invalid(
            key,
            format!("{value} is out of range: must be between {min} and {max}"),
        ));
    }
    Ok(())
}

fn parse_socket_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::invalid(
            key,
            format!("\"{value}\" is not an address:port such as 0.0.0.0:2055"),
        )
    })
}

/// A listener subject: a NATS subject in which one whole token may be `{partition}`.
fn validate_subject_template(key: &str, subject: &str) -> Result<(), ConfigError> {
    let placeholders = subject.matches(PARTITION_PLACEHOLDER).count();
    let whole_token = subject.split('.').any(|token| token == PARTITION_PLACEHOLDER);
    if placeholders > 1 || (placeholders == 1 && !whole_token) {
        return Err(ConfigError::invalid(
            key,
            format!("\"{subject}\": {PARTITION_PLACEHOLDER} must be one whole token, at most once"),
        ));
    }
    validate_subject(key, &subject_for(subject, "p"))
}

fn validate_subject(key: &str, subject: &str) -> Result<(), ConfigError> {
    let bad_token = subject.split('.').any(|t| t.is_empty() || t.contains([' ', '\t']));
    if subject.is_empty() || bad_token {
        return Err(ConfigError::invalid(
            key,
            format!("\"{subject}\" is not a NATS subject (dot-separated non-empty tokens)"),
        ));
    }
    Ok(())
}

fn validate_nats_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let ok = url.split(',').all(|part| {
        let part = part.trim();
        ["nats://", "tls://"].iter().any(|s| part.starts_with(s)) && part.len() > "nats://".len()
    });
    if !ok {
        return Err(ConfigError::invalid(
            key,
            format!("\"{}\" is not a nats:// or tls:// URL", redact_servers(url)),
        ));
    }
    Ok(())
}

fn validate_stream_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.contains(['.', '*', '>', ' ']) {
        return Err(ConfigError::invalid(
            key,
            "must be a non-empty name without '.', '*', '>' or spaces",
        ));
    }
    Ok(())
}

fn readable_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))
}

/// The `config` crate prints nested keys as `listeners[0]max_templates`; put the dot back.
fn readable_key_paths(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 4);
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == ']' && chars.peek().is_some_and(|n| n.is_ascii_alphabetic()) {
            out.push('.');
        }
    }
    out
}

mod partitions;
mod transport;

pub use partitions::PartitionConfig;

#[cfg(test)]
mod tests;
