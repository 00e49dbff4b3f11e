//! The OpenTelemetry resource of this process: service.name, service.version, partition,
//! host.name, the file's extra attributes, then `OTEL_RESOURCE_ATTRIBUTES` and
//! `OTEL_SERVICE_NAME` on top.

use std::collections::BTreeMap;

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::TelemetryResourceDetector;

use crate::error::TelemetryError;
use crate::settings::{DEFAULT_SERVICE_NAME, Env, TelemetrySettings};

const SERVICE_NAME: &str = "service.name";

/// Builds the resource from the settings and the environment.
pub(crate) fn build(
    settings: &TelemetrySettings,
    env: Env<'_>,
) -> Result<Resource, TelemetryError> {
    let attributes = attributes(settings, env)?;
    let pairs = attributes.into_iter().map(|(key, value)| KeyValue::new(key, value));
    Ok(Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(pairs)
        .build())
}

/// Every attribute, later sources overriding earlier ones.
pub(crate) fn attributes(
    settings: &TelemetrySettings,
    env: Env<'_>,
) -> Result<BTreeMap<String, String>, TelemetryError> {
    let mut attributes = BTreeMap::new();
    let mut put = |key: &str, value: &str| {
        if !value.is_empty() {
            attributes.insert(key.to_owned(), value.to_owned());
        }
    };
    put(SERVICE_NAME, settings.otel.service_name.as_deref().unwrap_or(DEFAULT_SERVICE_NAME));
    put("service.version", &settings.service_version);
    put("partition", &settings.partition);
    if let Some(host) = settings.host_name.clone().or_else(|| host_name(env)) {
        put("host.name", &host);
    }
    for (key, value) in &settings.otel.resource_attributes {
        put(key, value);
    }
    if let Some(list) = env("OTEL_RESOURCE_ATTRIBUTES") {
        for (key, value) in parse_attribute_list(&list)? {
            put(&key, &value);
        }
    }
    if let Some(name) = env("OTEL_SERVICE_NAME") {
        put(SERVICE_NAME, name.trim());
    }
    Ok(attributes)
}

/// The kernel's host name, else `HOSTNAME`.
fn host_name(env: Env<'_>) -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| env("HOSTNAME"))
}

/// Parses `key1=value1,key2=value2` with percent-encoded values (the W3C Baggage
/// octet rules `OTEL_RESOURCE_ATTRIBUTES` uses).
fn parse_attribute_list(list: &str) -> Result<Vec<(String, String)>, TelemetryError> {
    let invalid = |reason: String| TelemetryError::invalid("OTEL_RESOURCE_ATTRIBUTES", reason);
    list.split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(|entry| {
            let (key, value) = entry
                .split_once('=')
                .ok_or_else(|| invalid(format!("`{entry}` is not key=value")))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(invalid(format!("`{entry}` has an empty key")));
            }
            let value = percent_decode(value.trim())
                .ok_or_else(|| invalid(format!("`{entry}` has a bad percent escape")))?;
            Ok((key.to_owned(), value))
        })
        .collect()
}

/// Decodes `%XX` escapes; `None` on a malformed escape or invalid UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::settings::OtelConfig;

    fn settings() -> TelemetrySettings {
        TelemetrySettings {
            service_version: "1.2.3".to_owned(),
            partition: "edge-1".to_owned(),
            host_name: Some("collector-0".to_owned()),
            ..TelemetrySettings::default()
        }
    }

    fn resolve(settings: &TelemetrySettings, pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let vars: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        attributes(settings, &|name| vars.get(name).cloned()).unwrap()
    }

    #[test]
    fn the_defaults_name_the_service_version_partition_and_host() {
        let attributes = resolve(&settings(), &[]);
        assert_eq!(attributes["service.name"], DEFAULT_SERVICE_NAME);
        assert_eq!(attributes["service.version"], "1.2.3");
        assert_eq!(attributes["partition"], "edge-1");
        assert_eq!(attributes["host.name"], "collector-0");
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let mut settings = settings();
        settings.otel = OtelConfig {
            service_name: Some("from-file".to_owned()),
            resource_attributes: [("team".to_owned(), "netops".to_owned())].into(),
            ..OtelConfig::default()
        };
        assert_eq!(resolve(&settings, &[])["service.name"], "from-file");
        assert_eq!(resolve(&settings, &[])["team"], "netops");
        let vars =
            [("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,team=noc%2Cwan, region = eu ")];
        let attributes = resolve(&settings, &vars);
        assert_eq!(attributes["service.name"], "from-attrs");
        assert_eq!(attributes["team"], "noc,wan");
        assert_eq!(attributes["region"], "eu");
        let vars = [
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs"),
            ("OTEL_SERVICE_NAME", "from-var"),
        ];
        assert_eq!(resolve(&settings, &vars)["service.name"], "from-var");
    }

    #[test]
    fn a_malformed_attribute_list_is_refused() {
        for list in ["novalue", "=v", "k=%zz", "k=%4"] {
            let vars: HashMap<String, String> =
                [("OTEL_RESOURCE_ATTRIBUTES".to_owned(), list.to_owned())].into();
            let result = attributes(&settings(), &|name| vars.get(name).cloned());
            assert!(
                matches!(&result, Err(TelemetryError::Invalid { key, .. }) if key == "OTEL_RESOURCE_ATTRIBUTES"),
                "{list}: {result:?}"
            );
        }
    }

    #[test]
    fn the_resource_carries_the_attributes() {
        let resource = build(&settings(), &|_| None).unwrap();
        let get =
            |key: &'static str| resource.get(&opentelemetry::Key::new(key)).map(|v| v.to_string());
        assert_eq!(get("service.name").as_deref(), Some(DEFAULT_SERVICE_NAME));
        assert_eq!(get("partition").as_deref(), Some("edge-1"));
        assert_eq!(get("telemetry.sdk.language").as_deref(), Some("rust"));
    }
}
