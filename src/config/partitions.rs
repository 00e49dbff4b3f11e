//! `partitions`: what a tenant gets of its own. NATS servers, credentials and stream —
//! its flows then go through a connection of its own and never the install's — and
//! limits on its exporters, counted over every listener.
//!
//! A partition that sets `nats_url` or `nats_creds_file` presents only its own
//! credentials (the install's `nats_creds_file` is not inherited); one that sets only
//! `stream_name` publishes with the install's connection settings into a stream of its
//! own. Partitions whose settings come out the same share one connection.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::path::PathBuf;

use flow_actors::PartitionLimits;
use flow_actors::sink::{JetStreamSettings, StreamSettings};
use flow_actors::tenancy::{listener_partitions, subject_for};
use serde::Deserialize;

use super::{
    Config, ConfigError, ListenerConfig, in_range, readable_file, validate_nats_url,
    validate_partition, validate_stream_name,
};

/// Datagrams per second a partition may be given at most (`max_pps`).
const MAX_PARTITION_PPS: usize = 100_000_000;

/// One `partitions.<name>` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PartitionConfig {
    /// NATS servers of this tenant (may carry `user:password@`); absent: `nats_url`.
    #[serde(default)]
    pub nats_url: Option<String>,
    /// The tenant's NATS credentials file (its account).
    #[serde(default)]
    pub nats_creds_file: Option<PathBuf>,
    /// The tenant's JetStream stream; absent: `stream_name`.
    #[serde(default)]
    pub stream_name: Option<String>,
    /// Live exporters of this partition at most, over every listener; a new source
    /// beyond it is refused and counted (`partition_exporter_cap`).
    #[serde(default)]
    pub max_exporters: Option<usize>,
    /// Datagrams per second all exporters of this partition may send together; the
    /// excess is dropped and counted (`partition_rate_limited`).
    #[serde(default)]
    pub max_pps: Option<u32>,
}

impl PartitionConfig {
    /// Whether the partition asks for a connection or stream of its own.
    fn has_nats_keys(&self) -> bool {
        self.nats_url.is_some() || self.nats_creds_file.is_some() || self.stream_name.is_some()
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if let Some(url) = &self.nats_url {
            validate_nats_url(&format!("{key}.nats_url"), url)?;
        }
        if let Some(creds) = &self.nats_creds_file {
            readable_file(&format!("{key}.nats_creds_file"), creds)?;
        }
        if let Some(stream) = &self.stream_name {
            validate_stream_name(&format!("{key}.stream_name"), stream)?;
        }
        if let Some(n) = self.max_exporters {
            in_range(&format!("{key}.max_exporters"), n, 1, 10_000_000)?;
        }
        if let Some(pps) = self.max_pps {
            in_range(&format!("{key}.max_pps"), pps as usize, 1, MAX_PARTITION_PPS)?;
        }
        Ok(())
    }

    fn limits(&self) -> PartitionLimits {
        PartitionLimits {
            max_exporters: self.max_exporters,
            max_pps: self.max_pps.and_then(NonZeroU32::new),
        }
    }
}

/// Where flows are published: servers, credentials and stream. Equal targets share one
/// connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct NatsTarget {
    servers: String,
    creds_file: Option<PathBuf>,
    stream_name: String,
}

/// A connection of the partitions that publish through their own (`partitions`).
#[derive(Debug, Clone)]
pub struct PartitionConnection {
    /// The partitions whose flows use it, never any other's.
    pub partitions: Vec<String>,
    pub settings: JetStreamSettings,
}

impl Config {
    /// Checks `partitions`: names a listener or the registry can produce, keys in range,
    /// NATS keys only when publishing to NATS, and no subject shared by partitions that
    /// publish through different connections.
    pub(super) fn validate_partitions(&self) -> Result<(), ConfigError> {
        let known = self.known_partitions();
        for (name, partition) in &self.partitions {
            let key = format!("partitions.{name}");
            validate_partition(&key, name)?;
            if !known.contains(name) {
                return Err(ConfigError::invalid(
                    key,
                    "no listener, exporters[] entry or the install's `partition` names this partition",
                ));
            }
            if partition.has_nats_keys() && self.nats_url.is_none() {
                return Err(ConfigError::invalid(
                    key,
                    "sets NATS keys but `nats_url` is not set (flows go to stdout)",
                ));
            }
            partition.validate(&key)?;
        }
        self.validate_subject_owners()
    }

    /// Every subject must belong to one connection: a listener subject without
    /// `{partition}` cannot carry partitions that publish through different ones.
    fn validate_subject_owners(&self) -> Result<(), ConfigError> {
        let mut owners: BTreeMap<String, (String, Option<NatsTarget>)> = BTreeMap::new();
        for (i, listener) in self.listeners.iter().enumerate() {
            for (partition, subject) in self.subjects_of(listener) {
                let target = self.target_of(&partition);
                match owners.get(&subject) {
                    Some((other, other_target)) if *other_target != target => {
                        return Err(ConfigError::invalid(
                            format!("listeners[{i}].subject"),
                            format!(
                                "partitions \"{other}\" and \"{partition}\" would share subject \
                                 {subject} but publish through different NATS connections or \
                                 streams (partitions.*); put {{partition}} in the subject"
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        owners.insert(subject, (partition, target));
                    }
                }
            }
        }
        Ok(())
    }

    /// The install's partition, every listener's and every one the registry names.
    fn known_partitions(&self) -> BTreeSet<String> {
        let mut known: BTreeSet<String> = [self.partition.clone()].into();
        known.extend(self.listeners.iter().filter_map(|l| l.partition.clone()));
        known.extend(self.exporters.iter().filter_map(|e| e.partition.clone()));
        known
    }

    /// Each partition a listener may see, with the subject its flows go on.
    fn subjects_of(&self, listener: &ListenerConfig) -> Vec<(String, String)> {
        let own = listener.partition.as_deref().unwrap_or(&self.partition);
        // `validate` refuses a bad registry before anything here is asked.
        let registry = self.registry().unwrap_or_default();
        listener_partitions(own, &registry)
            .into_iter()
            .map(|partition| {
                let subject = subject_for(&listener.effective_subject(), &partition);
                (partition, subject)
            })
            .collect()
    }

    /// The install's target, or `None` without `nats_url`.
    fn install_target(&self) -> Option<NatsTarget> {
        Some(NatsTarget {
            servers: self.nats_url.clone()?,
            creds_file: self.nats_creds_file.clone(),
            stream_name: self.stream_name.clone(),
        })
    }

    /// Where `partition`'s flows are published (`None` without `nats_url`).
    fn target_of(&self, partition: &str) -> Option<NatsTarget> {
        let install = self.install_target()?;
        let Some(own) = self.partitions.get(partition).filter(|p| p.has_nats_keys()) else {
            return Some(install);
        };
        let own_credentials = own.nats_url.is_some() || own.nats_creds_file.is_some();
        Some(NatsTarget {
            servers: own.nats_url.clone().unwrap_or(install.servers),
            creds_file: if own_credentials {
                own.nats_creds_file.clone()
            } else {
                install.creds_file
            },
            stream_name: own.stream_name.clone().unwrap_or(install.stream_name),
        })
    }

    /// Whether some partition publishes through a connection other than the install's.
    fn has_partition_connections(&self) -> bool {
        let install = self.install_target();
        install.is_some() && self.partitions.keys().any(|p| self.target_of(p) != install)
    }

    /// The subjects the stream of `target` captures: each listener subject of every
    /// partition publishing there.
    fn subjects_for_target(&self, target: &NatsTarget) -> Vec<String> {
        let mut subjects: Vec<String> = Vec::new();
        for listener in &self.listeners {
            for (partition, subject) in self.subjects_of(listener) {
                if self.target_of(&partition).as_ref() == Some(target)
                    && !subjects.contains(&subject)
                {
                    subjects.push(subject);
                }
            }
        }
        subjects
    }

    /// The subjects of the install's stream: `stream_subjects`, then every listener's
    /// subject (`{partition}` as the `*` wildcard) — or, when partitions publish through
    /// connections of their own, only the subjects of the partitions that do not.
    pub(super) fn install_stream_subjects(&self) -> Vec<String> {
        let listeners: Vec<String> = match self.install_target() {
            Some(install) if self.has_partition_connections() => self.subjects_for_target(&install),
            _ => self.listeners.iter().map(ListenerConfig::stream_subject).collect(),
        };
        let mut subjects: Vec<String> = Vec::new();
        for subject in self.stream_subjects.iter().cloned().chain(listeners) {
            if !subjects.contains(&subject) {
                subjects.push(subject);
            }
        }
        subjects
    }

    /// The connections of partitions that publish through their own, one per distinct
    /// target; empty without `nats_url`.
    pub fn partition_connections(&self) -> Vec<PartitionConnection> {
        let install = self.install_target();
        let mut by_target: BTreeMap<NatsTarget, Vec<String>> = BTreeMap::new();
        for partition in self.partitions.keys() {
            if let Some(target) = self.target_of(partition).filter(|t| Some(t) != install.as_ref())
            {
                by_target.entry(target).or_default().push(partition.clone());
            }
        }
        by_target
            .into_iter()
            .map(|(target, partitions)| {
                let subjects = self.subjects_for_target(&target);
                let stream = StreamSettings::new(target.stream_name.clone(), subjects);
                let mut settings = self.connection_settings(&target.servers, stream);
                settings.creds_file = target.creds_file;
                PartitionConnection { partitions, settings }
            })
            .collect()
    }

    /// Per-partition limits, for the partitions that set any.
    pub(super) fn partition_limits(&self) -> BTreeMap<String, PartitionLimits> {
        self.partitions
            .iter()
            .map(|(name, p)| (name.clone(), p.limits()))
            .filter(|(_, limits)| limits.max_exporters.is_some() || limits.max_pps.is_some())
            .collect()
    }
}
