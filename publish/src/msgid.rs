//! `Nats-Msg-Id` values: unique per message, stable across the retries of that message.
//!
//! The prefix is random per process. A counter alone would restart at 0 when the
//! collector restarts, and JetStream would then drop the new process's first messages
//! as duplicates of the old one's (for the whole duplicate window).

use std::sync::atomic::{AtomicU64, Ordering};

/// Makes ids `<prefix>-<counter>`; shareable across tasks.
#[derive(Debug)]
pub struct MessageIdGenerator {
    prefix: String,
    next: AtomicU64,
}

impl MessageIdGenerator {
    /// A generator with a fresh random prefix.
    pub fn new() -> Self {
        Self::with_prefix(nuid::next().to_string())
    }

    /// A generator whose ids also name the collector instance (e.g. the host or pod):
    /// `<instance>.<random>-<counter>`, handy when reading a stream.
    pub fn for_instance(instance: &str) -> Self {
        Self::with_prefix(format!("{instance}.{}", nuid::next()))
    }

    fn with_prefix(prefix: String) -> Self {
        MessageIdGenerator { prefix, next: AtomicU64::new(0) }
    }

    /// The random part shared by every id of this generator.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The next id. Never repeats within this generator.
    pub fn next_id(&self) -> String {
        let sequence = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{sequence}", self.prefix)
    }
}

impl Default for MessageIdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_count_up_under_one_prefix() {
        let ids = MessageIdGenerator::new();
        assert_eq!(ids.next_id(), format!("{}-0", ids.prefix()));
        assert_eq!(ids.next_id(), format!("{}-1", ids.prefix()));
    }

    #[test]
    fn every_generator_gets_its_own_prefix() {
        let prefixes: HashSet<String> =
            (0..100).map(|_| MessageIdGenerator::new().prefix().to_string()).collect();
        assert_eq!(prefixes.len(), 100);
        let named = MessageIdGenerator::for_instance("collector-1");
        assert!(named.prefix().starts_with("collector-1."));
    }
}
