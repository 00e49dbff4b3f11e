//! Tenancy: which partition (tenant) an exporter's flows belong to, the registry tags
//! stamped on them, and the subject they are published on.
//!
//! An exporter's partition is the one of the longest registry prefix holding its address
//! that names a partition, else its listener's, else the install's (`partition`). Its
//! tags (name, site, role, free key/values) come from the longest matching registry
//! entry. Both are resolved once, when the exporter's actor starts, and stamped on each
//! of its flows.
//!
//! A listener subject may hold `{partition}` (`flows.raw.netflow.{partition}`): each
//! partition then publishes on its own subject, so NATS permissions can keep tenants
//! apart. Every partition a listener can produce is known from the config, so the
//! subjects (and their publishers) are all known at start-up.

use std::collections::BTreeMap;
use std::net::IpAddr;

use flow_decode::prefix::{IpNet, contains};
use flowpb::FlowMessage;
use prost::Message;

/// The placeholder a subject template holds.
pub const PARTITION_PLACEHOLDER: &str = "{partition}";

/// Registry tags of the exporters in one prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryEntry {
    pub prefix: IpNet,
    /// The tenant of these exporters, if not the listener's.
    pub partition: Option<String>,
    pub name: Option<String>,
    pub site: Option<String>,
    pub role: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// The exporter registry (`exporters[]` in the config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    entries: Vec<RegistryEntry>,
}

/// What is stamped on every flow of one exporter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExporterIdentity {
    pub partition: String,
    pub name: String,
    pub site: String,
    pub role: String,
    pub tags: BTreeMap<String, String>,
    /// The fields above as protobuf (see [`ExporterIdentity::encoded_fields`]), made
    /// with them by [`Registry::identify`].
    encoded: Vec<u8>,
}

impl Registry {
    pub fn new(entries: Vec<RegistryEntry>) -> Self {
        Self { entries }
    }

    /// The partitions the registry names.
    pub fn partitions(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().filter_map(|e| e.partition.as_deref())
    }

    /// The partition of the exporter at `addr` on a listener of `default_partition`: the
    /// longest matching prefix that names one, else the default.
    pub fn partition_of<'a>(&'a self, addr: IpAddr, default_partition: &'a str) -> &'a str {
        self.entries
            .iter()
            .filter(|e| contains(&e.prefix, addr))
            .filter_map(|e| Some((e.prefix.prefix_len(), e.partition.as_deref()?)))
            .max_by_key(|(len, _)| *len)
            .map_or(default_partition, |(_, partition)| partition)
    }

    /// The identity of the exporter at `addr` on a listener of `default_partition`.
    pub fn identify(&self, addr: IpAddr, default_partition: &str) -> ExporterIdentity {
        let mut matching: Vec<&RegistryEntry> =
            self.entries.iter().filter(|e| contains(&e.prefix, addr)).collect();
        matching.sort_by_key(|e| std::cmp::Reverse(e.prefix.prefix_len()));
        let first = |pick: fn(&RegistryEntry) -> Option<&String>| {
            matching.iter().find_map(|e| pick(e)).cloned().unwrap_or_default()
        };
        let partition = self.partition_of(addr, default_partition).to_owned();
        let mut tags = BTreeMap::new();
        // Wider prefixes first, so the longest prefix's value of a key wins.
        for entry in matching.iter().rev() {
            tags.extend(entry.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let mut identity = ExporterIdentity {
            partition,
            name: first(|e| e.name.as_ref()),
            site: first(|e| e.site.as_ref()),
            role: first(|e| e.role.as_ref()),
            tags,
            encoded: Vec::new(),
        };
        let mut fields = FlowMessage::default();
        identity.stamp(&mut fields);
        identity.encoded = fields.encode_to_vec();
        identity
    }
}

impl ExporterIdentity {
    /// The identity as the protobuf fields of a `FlowMessage`. A message's fields may
    /// come in any order, so these bytes appended to a flow encoded without them decode
    /// as the stamped flow: sinks that encode skip copying the strings onto each flow.
    pub fn encoded_fields(&self) -> &[u8] {
        &self.encoded
    }

    /// Writes the partition and tags onto `flow`.
    pub fn stamp(&self, flow: &mut FlowMessage) {
        flow.partition.clone_from(&self.partition);
        flow.exporter_name.clone_from(&self.name);
        flow.exporter_site.clone_from(&self.site);
        flow.exporter_role.clone_from(&self.role);
        if !self.tags.is_empty() {
            flow.exporter_tags = self.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
    }
}

/// The partitions a listener's exporters may belong to: its own (`own`: the listener's
/// or the install's) first, then every partition the registry names, each once.
pub fn listener_partitions(own: &str, registry: &Registry) -> Vec<String> {
    let mut partitions = vec![own.to_owned()];
    for partition in registry.partitions() {
        if !partitions.iter().any(|p| p == partition) {
            partitions.push(partition.to_owned());
        }
    }
    partitions
}

/// The subject of `partition` for a listener subject that may hold `{partition}`.
pub fn subject_for(template: &str, partition: &str) -> String {
    template.replace(PARTITION_PLACEHOLDER, partition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_decode::prefix::parse_prefix;

    fn entry(prefix: &str) -> RegistryEntry {
        RegistryEntry { prefix: parse_prefix(prefix).unwrap(), ..Default::default() }
    }

    fn registry() -> Registry {
        Registry::new(vec![
            RegistryEntry {
                partition: Some("acme".into()),
                site: Some("acme-hq".into()),
                tags: [("account".into(), "A-1".into()), ("tier".into(), "gold".into())].into(),
                ..entry("10.1.0.0/16")
            },
            RegistryEntry {
                name: Some("edge-1".into()),
                role: Some("border".into()),
                tags: [("tier".into(), "platinum".into())].into(),
                ..entry("10.1.2.3")
            },
            RegistryEntry { partition: Some("globex".into()), ..entry("10.2.0.0/16") },
        ])
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_longest_prefix_wins_and_wider_entries_fill_the_gaps() {
        let edge = registry().identify(ip("10.1.2.3"), "default");
        assert_eq!(edge.partition, "acme", "the /32 names no partition: the /16's");
        assert_eq!((edge.name.as_str(), edge.site.as_str()), ("edge-1", "acme-hq"));
        assert_eq!(edge.role, "border");
        assert_eq!(edge.tags.get("tier").map(String::as_str), Some("platinum"));
        assert_eq!(edge.tags.get("account").map(String::as_str), Some("A-1"));

        let globex = registry().identify(ip("::ffff:10.2.9.9"), "default");
        assert_eq!(globex.partition, "globex", "v4-mapped sources are their IPv4 address");
        assert_eq!(registry().partition_of(ip("10.1.2.3"), "default"), "acme");
        assert_eq!(registry().partition_of(ip("192.0.2.1"), "site-b"), "site-b");
        let unknown = registry().identify(ip("192.0.2.1"), "site-b");
        assert_eq!(unknown, Registry::default().identify(ip("192.0.2.1"), "site-b"));
        assert_eq!(unknown.partition, "site-b");
        assert!(unknown.name.is_empty() && unknown.tags.is_empty());
    }

    #[test]
    fn stamping_writes_the_identity_onto_the_flow() {
        let identity = registry().identify(ip("10.1.2.3"), "default");
        let mut flow = FlowMessage::default();
        identity.stamp(&mut flow);
        assert_eq!(flow.partition, "acme");
        assert_eq!(flow.exporter_name, "edge-1");
        assert_eq!(flow.exporter_tags.get("account").map(String::as_str), Some("A-1"));
    }

    #[test]
    fn encoded_fields_after_a_flow_decode_as_the_stamped_flow() {
        let identity = registry().identify(ip("10.1.2.3"), "default");
        let flow = FlowMessage { src_port: 53, bytes: 1200, ..Default::default() };
        let mut wire = flow.encode_to_vec();
        wire.extend_from_slice(identity.encoded_fields());
        let mut stamped = flow;
        identity.stamp(&mut stamped);
        assert_eq!(FlowMessage::decode(wire.as_slice()).expect("decodes"), stamped);
    }

    #[test]
    fn a_listener_sees_its_own_partition_first_then_the_registry_ones() {
        assert_eq!(listener_partitions("acme", &registry()), ["acme", "globex"]);
        assert_eq!(listener_partitions("edge", &Registry::default()), ["edge"]);
    }

    #[test]
    fn subjects_expand_the_partition() {
        assert_eq!(subject_for("flows.raw.netflow.{partition}", "acme"), "flows.raw.netflow.acme");
        assert_eq!(subject_for("flows.raw.netflow", "acme"), "flows.raw.netflow");
    }
}
