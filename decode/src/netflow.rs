//! NetFlow v5, v9 and IPFIX. (Being written.)

use std::time::Duration;

/// Per-exporter NetFlow/IPFIX limits, from the listener's config entry.
#[derive(Debug, Clone)]
pub struct NetflowSettings {
    /// Templates kept per exporter scope (`max_templates`).
    pub max_templates: usize,
    /// Largest field count accepted in a template (`max_template_fields`).
    pub max_template_fields: usize,
    /// The pending-flows cache; `None` disables it (data before its template is dropped and counted).
    pub pending: Option<PendingFlowSettings>,
}

/// Limits of the cache for data that arrives before its template (`pending_flows`).
#[derive(Debug, Clone)]
pub struct PendingFlowSettings {
    pub max_pending_flows: usize,
    pub max_entries_per_template: usize,
    pub max_entry_size_bytes: usize,
    pub ttl: Duration,
}

/// One exporter's NetFlow/IPFIX decoder state.
pub struct NetflowSession {}
