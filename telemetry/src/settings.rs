//! Telemetry settings: the `otel` section of the config file, and how it is resolved
//! against the standard OpenTelemetry environment variables.
//!
//! Precedence, highest first: `OTEL_EXPORTER_OTLP_TRACES_*`, `OTEL_EXPORTER_OTLP_*`,
//! the `otel` section, the defaults. `OTEL_SERVICE_NAME` beats `service.name` in
//! `OTEL_RESOURCE_ATTRIBUTES`, which beats `otel.service_name`. Variables win over the
//! file so that a Kubernetes operator's injected OTEL_* settings take effect.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

use crate::error::TelemetryError;

/// Service name when neither the file nor the environment names one.
pub const DEFAULT_SERVICE_NAME: &str = "serviceradar-flow-collector";
/// OTLP/gRPC endpoint when none is configured.
pub const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
/// OTLP/HTTP base endpoint when none is configured (`/v1/traces` is appended).
pub const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318";
/// Which events and spans go to OTLP unless `otel.filter` says otherwise.
pub const DEFAULT_TRACE_FILTER: &str = "info";
/// Default time one export may take.
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// The path an OTLP/HTTP base endpoint gets for traces.
const HTTP_TRACES_PATH: &str = "/v1/traces";

/// How log lines are written on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (port 4317).
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    /// Parses the `OTEL_EXPORTER_OTLP_PROTOCOL` spelling.
    fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "grpc" => Some(OtlpProtocol::Grpc),
            "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
            _ => None,
        }
    }
}

/// The `otel` section of the config file. Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtelConfig {
    /// Export traces over OTLP. Also turned on by `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none` turn it off.
    pub enabled: bool,
    /// Collector endpoint: `http://host:4317` (gRPC) or the base `http://host:4318`
    /// (HTTP; `/v1/traces` is appended).
    pub endpoint: Option<String>,
    /// `grpc` (default) or `http/protobuf`.
    pub protocol: Option<OtlpProtocol>,
    /// Time one export may take, in milliseconds (10 000).
    pub timeout_ms: Option<u64>,
    /// `service.name` (serviceradar-flow-collector).
    pub service_name: Option<String>,
    /// Extra resource attributes.
    pub resource_attributes: BTreeMap<String, String>,
    /// Spans waiting for export at most (2048); beyond it new spans are dropped, so a
    /// slow or absent collector never slows the pipeline. `OTEL_BSP_MAX_QUEUE_SIZE`
    /// overrides it.
    pub max_queue_size: Option<usize>,
    /// Delay between two exports in milliseconds (5000). `OTEL_BSP_SCHEDULE_DELAY`
    /// overrides it.
    pub scheduled_delay_ms: Option<u64>,
    /// Which spans and events are exported, in `RUST_LOG` syntax ("info"). Independent
    /// of `RUST_LOG`, which filters log lines only.
    pub filter: Option<String>,
}

impl OtelConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        if let Some(endpoint) = &self.endpoint {
            check_endpoint("otel.endpoint", endpoint)?;
        }
        if self.timeout_ms == Some(0) {
            return Err(TelemetryError::invalid("otel.timeout_ms", "must be > 0"));
        }
        if self.max_queue_size == Some(0) {
            return Err(TelemetryError::invalid("otel.max_queue_size", "must be > 0"));
        }
        if self.scheduled_delay_ms == Some(0) {
            return Err(TelemetryError::invalid("otel.scheduled_delay_ms", "must be > 0"));
        }
        if self.service_name.as_deref().is_some_and(|name| name.trim().is_empty()) {
            return Err(TelemetryError::invalid("otel.service_name", "must not be empty"));
        }
        if let Some(filter) = &self.filter {
            parse_filter("otel.filter", filter)?;
        }
        Ok(())
    }
}

/// What [`crate::init`] needs: the log format, the `otel` section, and the identity of
/// this process for the resource attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// Text or JSON log lines on stderr.
    pub log_format: LogFormat,
    /// The `otel` config section.
    pub otel: OtelConfig,
    /// `service.version`: the binary's version.
    pub service_version: String,
    /// `partition` resource attribute: the install's partition tag.
    pub partition: String,
    /// `host.name`; detected from the kernel when `None`.
    pub host_name: Option<String>,
}

/// Reads one environment variable; tests pass a map instead of the process environment.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, empty values read as unset.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// OTLP export settings after the environment is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExportPlan {
    pub(crate) protocol: OtlpProtocol,
    /// Full URL: the gRPC endpoint, or the HTTP endpoint including `/v1/traces`.
    pub(crate) endpoint: String,
    pub(crate) timeout: Duration,
    pub(crate) max_queue_size: Option<usize>,
    pub(crate) scheduled_delay: Option<Duration>,
    pub(crate) filter: String,
}

impl ExportPlan {
    /// The plan, or `None` when trace export is off.
    pub(crate) fn resolve(
        config: &OtelConfig,
        env: Env<'_>,
    ) -> Result<Option<Self>, TelemetryError> {
        config.validate()?;
        if !export_enabled(config, env) {
            return Ok(None);
        }
        let protocol = resolve_protocol(config, env)?;
        let plan = ExportPlan {
            protocol,
            endpoint: resolve_endpoint(config, protocol, env)?,
            timeout: resolve_timeout(config, env)?,
            max_queue_size: config
                .max_queue_size
                .filter(|_| env("OTEL_BSP_MAX_QUEUE_SIZE").is_none()),
            scheduled_delay: config
                .scheduled_delay_ms
                .filter(|_| env("OTEL_BSP_SCHEDULE_DELAY").is_none())
                .map(Duration::from_millis),
            filter: config.filter.clone().unwrap_or_else(|| DEFAULT_TRACE_FILTER.to_owned()),
        };
        Ok(Some(plan))
    }
}

fn export_enabled(config: &OtelConfig, env: Env<'_>) -> bool {
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    let endpoint_set = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    !disabled && (config.enabled || endpoint_set)
}

/// The first variable of `names` that is set, with its name.
fn first_var(env: Env<'_>, names: [&'static str; 2]) -> Option<(&'static str, String)> {
    names.into_iter().find_map(|name| env(name).map(|value| (name, value)))
}

fn resolve_protocol(config: &OtelConfig, env: Env<'_>) -> Result<OtlpProtocol, TelemetryError> {
    let names = ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"];
    match first_var(env, names) {
        Some((name, value)) => OtlpProtocol::parse(&value).ok_or_else(|| {
            TelemetryError::invalid(name, format!("`{value}`: expected grpc or http/protobuf"))
        }),
        None => Ok(config.protocol.unwrap_or_default()),
    }
}

/// The signal-specific variable is used as is; a base endpoint gets `/v1/traces` for HTTP.
fn resolve_endpoint(
    config: &OtelConfig,
    protocol: OtlpProtocol,
    env: Env<'_>,
) -> Result<String, TelemetryError> {
    if let Some(endpoint) = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        check_endpoint("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint)?;
        return Ok(endpoint);
    }
    let base = match env("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Some(endpoint) => {
            check_endpoint("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)?;
            endpoint
        }
        None => config.endpoint.clone().unwrap_or_else(|| match protocol {
            OtlpProtocol::Grpc => DEFAULT_GRPC_ENDPOINT.to_owned(),
            OtlpProtocol::HttpProtobuf => DEFAULT_HTTP_ENDPOINT.to_owned(),
        }),
    };
    Ok(match protocol {
        OtlpProtocol::Grpc => base,
        OtlpProtocol::HttpProtobuf => format!("{}{HTTP_TRACES_PATH}", base.trim_end_matches('/')),
    })
}

fn resolve_timeout(config: &OtelConfig, env: Env<'_>) -> Result<Duration, TelemetryError> {
    let names = ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"];
    let millis = match first_var(env, names) {
        Some((name, value)) => match value.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => ms,
            _ => {
                return Err(TelemetryError::invalid(
                    name,
                    format!("`{value}`: expected milliseconds > 0"),
                ));
            }
        },
        None => config.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
    };
    Ok(Duration::from_millis(millis))
}

/// An endpoint must be an absolute `http://` URL: TLS to the collector is not built in
/// (send to a collector agent on the node or in the pod instead).
fn check_endpoint(key: &str, endpoint: &str) -> Result<(), TelemetryError> {
    if endpoint.starts_with("https://") {
        let reason =
            format!("`{endpoint}`: TLS to the OTLP collector is not supported; use http://");
        return Err(TelemetryError::invalid(key, reason));
    }
    let rest = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| TelemetryError::invalid(key, format!("`{endpoint}`: expected http://")))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(TelemetryError::invalid(key, format!("`{endpoint}`: no host")));
    }
    Ok(())
}

/// Parses a filter in `RUST_LOG` syntax; the error names `key`.
pub(crate) fn parse_filter(key: &str, directives: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|error| TelemetryError::invalid(key, format!("`{directives}`: {error}")))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn resolve(
        config: &OtelConfig,
        pairs: &[(&str, &str)],
    ) -> Result<Option<ExportPlan>, TelemetryError> {
        let vars = env_of(pairs);
        ExportPlan::resolve(config, &|name| vars.get(name).cloned())
    }

    fn enabled() -> OtelConfig {
        OtelConfig { enabled: true, ..OtelConfig::default() }
    }

    #[test]
    fn export_is_off_unless_enabled_or_an_endpoint_variable_is_set() {
        assert_eq!(resolve(&OtelConfig::default(), &[]).unwrap(), None);
        let plan =
            resolve(&OtelConfig::default(), &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")])
                .unwrap()
                .unwrap();
        assert_eq!(plan.endpoint, "http://c:4317");
        assert_eq!(resolve(&enabled(), &[("OTEL_SDK_DISABLED", "true")]).unwrap(), None);
        assert_eq!(resolve(&enabled(), &[("OTEL_TRACES_EXPORTER", "none")]).unwrap(), None);
    }

    #[test]
    fn defaults_are_grpc_on_localhost_with_the_info_filter() {
        let plan = resolve(&enabled(), &[]).unwrap().unwrap();
        assert_eq!(plan.protocol, OtlpProtocol::Grpc);
        assert_eq!(plan.endpoint, DEFAULT_GRPC_ENDPOINT);
        assert_eq!(plan.timeout, Duration::from_secs(10));
        assert_eq!(plan.filter, "info");
        assert_eq!((plan.max_queue_size, plan.scheduled_delay), (None, None));
    }

    #[test]
    fn http_base_endpoints_get_the_traces_path_and_the_signal_variable_is_used_as_is() {
        let config = OtelConfig {
            protocol: Some(OtlpProtocol::HttpProtobuf),
            endpoint: Some("http://otel:4318/".to_owned()),
            ..enabled()
        };
        assert_eq!(resolve(&config, &[]).unwrap().unwrap().endpoint, "http://otel:4318/v1/traces");
        let plan = resolve(&config, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318")])
            .unwrap()
            .unwrap();
        assert_eq!(plan.endpoint, "http://env:4318/v1/traces");
        let signal = [
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://sig:9/custom"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
        ];
        assert_eq!(resolve(&config, &signal).unwrap().unwrap().endpoint, "http://sig:9/custom");
        let http_default = OtelConfig { protocol: Some(OtlpProtocol::HttpProtobuf), ..enabled() };
        assert_eq!(
            resolve(&http_default, &[]).unwrap().unwrap().endpoint,
            "http://localhost:4318/v1/traces"
        );
    }

    #[test]
    fn variables_beat_the_file_and_the_signal_variable_beats_the_generic_one() {
        let config = OtelConfig { timeout_ms: Some(500), ..enabled() };
        let vars = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
        ];
        let plan = resolve(&config, &vars).unwrap().unwrap();
        assert_eq!(plan.protocol, OtlpProtocol::Grpc);
        assert_eq!(plan.timeout, Duration::from_millis(2000));
        assert_eq!(resolve(&config, &[]).unwrap().unwrap().timeout, Duration::from_millis(500));
    }

    #[test]
    fn batch_settings_of_the_file_yield_to_the_bsp_variables() {
        let config =
            OtelConfig { max_queue_size: Some(64), scheduled_delay_ms: Some(100), ..enabled() };
        let plan = resolve(&config, &[]).unwrap().unwrap();
        assert_eq!(plan.max_queue_size, Some(64));
        assert_eq!(plan.scheduled_delay, Some(Duration::from_millis(100)));
        let vars = [("OTEL_BSP_MAX_QUEUE_SIZE", "8"), ("OTEL_BSP_SCHEDULE_DELAY", "9")];
        let plan = resolve(&config, &vars).unwrap().unwrap();
        assert_eq!((plan.max_queue_size, plan.scheduled_delay), (None, None));
    }

    #[test]
    fn bad_values_name_their_key_or_variable() {
        let error = |config: &OtelConfig, vars: &[(&str, &str)]| match resolve(config, vars) {
            Err(TelemetryError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid setting, got {other:?}"),
        };
        assert_eq!(
            error(&enabled(), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
            "OTEL_EXPORTER_OTLP_PROTOCOL"
        );
        assert_eq!(
            error(&enabled(), &[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")]),
            "OTEL_EXPORTER_OTLP_TIMEOUT"
        );
        assert_eq!(
            error(&enabled(), &[("OTEL_EXPORTER_OTLP_ENDPOINT", "otel:4317")]),
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        );
        let bad_endpoint = OtelConfig { endpoint: Some("http://".to_owned()), ..enabled() };
        assert_eq!(error(&bad_endpoint, &[]), "otel.endpoint");
        let tls = OtelConfig { endpoint: Some("https://otel:4317".to_owned()), ..enabled() };
        assert_eq!(error(&tls, &[]), "otel.endpoint");
        let bad_filter = OtelConfig { filter: Some("info,[".to_owned()), ..enabled() };
        assert_eq!(error(&bad_filter, &[]), "otel.filter");
        let zero_queue = OtelConfig { max_queue_size: Some(0), ..OtelConfig::default() };
        assert_eq!(error(&zero_queue, &[]), "otel.max_queue_size");
    }

    #[test]
    fn the_section_parses_from_json_and_refuses_unknown_keys() {
        let config: OtelConfig = serde_json::from_str(
            r#"{"enabled": true, "protocol": "http/protobuf", "endpoint": "http://c:4318",
                "resource_attributes": {"deployment.environment": "prod"}}"#,
        )
        .unwrap();
        assert_eq!(config.protocol, Some(OtlpProtocol::HttpProtobuf));
        assert_eq!(config.resource_attributes["deployment.environment"], "prod");
        assert!(serde_json::from_str::<OtelConfig>(r#"{"endpont": "x"}"#).is_err());
        assert_eq!(serde_json::from_str::<LogFormat>(r#""json""#).unwrap(), LogFormat::Json);
    }
}
