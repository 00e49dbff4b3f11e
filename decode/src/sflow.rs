//! sFlow v5. (Being written.)

/// sFlow limits, from the listener's config entry.
#[derive(Debug, Clone, Default)]
pub struct SflowSettings {
    /// Samples decoded per datagram at most (`max_samples_per_datagram`); `None` = no cap.
    pub max_samples_per_datagram: Option<u32>,
}

/// One sFlow agent's decoder state (sequence tracking).
pub struct SflowSession {}
