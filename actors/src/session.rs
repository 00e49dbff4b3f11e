//! How an exporter actor gets its decoder: a [`SessionFactory`], so the actors depend
//! only on the `ExporterSession` trait and tests can put a test double in its place.

use flow_decode::{ExporterSession, NetflowSession, SflowSession};

use crate::settings::ListenerProtocol;

/// Creates the decoder state of a new exporter (and of a restarted one: always fresh).
pub trait SessionFactory: Send + Sync {
    fn create(&self, protocol: &ListenerProtocol) -> Box<dyn ExporterSession>;
}

impl<F> SessionFactory for F
where
    F: Fn(&ListenerProtocol) -> Box<dyn ExporterSession> + Send + Sync,
{
    fn create(&self, protocol: &ListenerProtocol) -> Box<dyn ExporterSession> {
        self(protocol)
    }
}

/// The real decoders: a `NetflowSession` for netflow listeners, an `SflowSession` for
/// sflow listeners, each with the listener's limits.
#[derive(Debug, Default, Clone, Copy)]
pub struct DecoderSessions;

impl SessionFactory for DecoderSessions {
    fn create(&self, protocol: &ListenerProtocol) -> Box<dyn ExporterSession> {
        match protocol {
            ListenerProtocol::Netflow(settings) => Box::new(NetflowSession::new(settings)),
            ListenerProtocol::Sflow(settings) => Box::new(SflowSession::new(settings)),
        }
    }
}
