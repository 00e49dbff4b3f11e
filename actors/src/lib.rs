//! The supervision tree (ractor): a root supervisor, a listener actor per socket, an
//! exporter actor per source IP, and publisher actors that hand flows to a sink.
//!
//! This crate knows nothing of the JSON config file: the binary turns the config into
//! the typed [`settings`] below, and each actor receives only its part.

pub mod settings;

pub use settings::{CollectorSettings, ExporterLimits, ListenerProtocol, ListenerSettings, SinkSettings};
