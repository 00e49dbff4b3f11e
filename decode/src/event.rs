//! Lifecycle events a decoder session reports. The actor that owns the session turns
//! each into one log line, one metric increment and one OTLP span event.

use std::fmt;

/// The export protocol an event or flow belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    V5,
    V9,
    Ipfix,
    Sflow,
}

impl Protocol {
    /// The name used in log lines ("V9", "IPFIX", …), as the operator guide prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V5 => "V5",
            Protocol::V9 => "V9",
            Protocol::Ipfix => "IPFIX",
            Protocol::Sflow => "SFLOW",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change in an exporter's decoder state worth telling the operator about.
/// `domain` is the IPFIX observation domain or the v9 source_id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleEvent {
    /// A template (or options template) not known before was learned.
    TemplateLearned { protocol: Protocol, domain: u32, template_id: u16, field_count: usize },
    /// A known template ID arrived with a different layout; the new one replaced it.
    TemplateCollision {
        protocol: Protocol,
        domain: u32,
        template_id: u16,
        old_field_count: usize,
        new_field_count: usize,
    },
    /// A template was dropped because the cache reached `max_templates`.
    TemplateEvicted { protocol: Protocol, domain: u32, template_id: u16 },
    /// A template outlived its time to live.
    TemplateExpired { protocol: Protocol, domain: u32, template_id: u16 },
    /// An IPFIX template withdrawal removed a template.
    TemplateWithdrawn { protocol: Protocol, domain: u32, template_id: u16 },
    /// Data arrived for a template not (yet) known.
    MissingTemplate { protocol: Protocol, domain: u32, template_id: u16 },
    /// Data held while its template was missing was decoded once the template came.
    PendingReplayed { protocol: Protocol, domain: u32, template_id: u16, records: usize },
    /// Data held while its template was missing was given up (ttl, caps).
    PendingDropped { protocol: Protocol, domain: u32, template_id: u16, reason: &'static str },
    /// The exporter restarted (uptime or sequence went backwards); its state was reset.
    /// For NetFlow v5, `domain` is engine_type << 8 | engine_id; for sFlow the sub-agent.
    ExporterRestarted { protocol: Protocol, domain: u32 },
}
