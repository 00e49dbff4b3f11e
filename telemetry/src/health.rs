//! Readiness for `/readyz`: named checks, all of which must pass. Liveness (`/healthz`)
//! needs none: answering at all is the proof.

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

/// One condition readiness depends on. Must answer at once, without I/O.
pub trait ReadinessCheck: Send + Sync + 'static {
    fn is_ready(&self) -> bool;
}

impl<F> ReadinessCheck for F
where
    F: Fn() -> bool + Send + Sync + 'static,
{
    fn is_ready(&self) -> bool {
        self()
    }
}

/// Ready while the watched value satisfies a predicate, e.g. a JetStream
/// `ConnectionState` that is `Connected`.
pub struct WatchCheck<T> {
    value: watch::Receiver<T>,
    ready: fn(&T) -> bool,
}

impl<T: Send + Sync + 'static> WatchCheck<T> {
    pub fn new(value: watch::Receiver<T>, ready: fn(&T) -> bool) -> Self {
        WatchCheck { value, ready }
    }
}

impl<T: Send + Sync + 'static> ReadinessCheck for WatchCheck<T> {
    fn is_ready(&self) -> bool {
        (self.ready)(&self.value.borrow())
    }
}

/// The checks of `/readyz`, by name. Cheap to clone.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(String, Arc<dyn ReadinessCheck>)>,
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.checks.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

impl Readiness {
    /// No checks yet: ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check named `name` ("listeners", "publisher").
    pub fn with_check(mut self, name: impl Into<String>, check: impl ReadinessCheck) -> Self {
        self.checks.push((name.into(), Arc::new(check)));
        self
    }

    /// The names of the checks failing now; empty when ready.
    pub fn failing(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|(_, check)| !check.is_ready())
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn ready_only_when_every_check_passes() {
        let (tx, rx) = watch::channel(false);
        let flag = Arc::new(AtomicBool::new(true));
        let probe = Arc::clone(&flag);
        let readiness = Readiness::new()
            .with_check("listeners", move || probe.load(Ordering::Relaxed))
            .with_check("publisher", WatchCheck::new(rx, |up| *up));
        assert_eq!(readiness.failing(), vec!["publisher"]);
        tx.send_replace(true);
        assert!(readiness.failing().is_empty());
        flag.store(false, Ordering::Relaxed);
        assert_eq!(readiness.failing(), vec!["listeners"]);
        assert!(Readiness::new().failing().is_empty());
    }
}
