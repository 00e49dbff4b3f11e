//! Connecting to NATS: the first connect is retried with capped exponential backoff
//! (the collector may start before NATS does); after that async-nats reconnects on its
//! own, forever, and the connection state is published on a `watch` channel for
//! readiness probes.
//!
//! Failures that retrying cannot fix are told apart and named: an unreadable or malformed
//! certificate or credentials file, a server certificate the configured CA does not
//! trust, a client certificate the server wants but did not get or refused, and refused
//! credentials. The operator reads which one it is instead of "IO error".

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, context::ContextBuilder};
use async_nats::rustls::pki_types::pem::PemObject;
use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use async_nats::rustls::{self, AlertDescription};
use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event, ServerAddr};
use thiserror::Error;
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};

use crate::settings::{ClientCertificate, JetStreamSettings, TlsSettings};

/// Why the connection could not be made. Each variant names the file or server at
/// fault and what to do about it.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("invalid NATS server list {servers:?}: {reason}")]
    InvalidServers { servers: String, reason: String },

    #[error("invalid JetStream settings: {0}")]
    InvalidSettings(String),

    #[error("cannot read {role} file {}: {source}", path.display())]
    UnreadableFile {
        role: FileRole,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{role} file {} is not usable: {reason}", path.display())]
    InvalidFile { role: FileRole, path: PathBuf, reason: String },

    #[error(
        "TLS: the certificate of NATS server {servers} is not trusted by {trust}: {detail} \
         (is security.tls.ca_file the CA that signed the server's certificate?)"
    )]
    ServerCertificateUntrusted { servers: String, trust: String, detail: String },

    #[error(
        "TLS: NATS server {servers} requires a client certificate and none is configured \
         (set security.tls.cert_file and key_file)"
    )]
    ClientCertificateMissing { servers: String },

    #[error(
        "TLS: NATS server {servers} rejected client certificate {}: {detail} \
         (is it signed by a CA the server's tls.ca_file trusts?)",
        cert.display()
    )]
    ClientCertificateRejected { servers: String, cert: PathBuf, detail: String },

    #[error("TLS with NATS server {servers} failed: {detail}")]
    Tls { servers: String, detail: String },

    #[error("NATS server {servers} refused the credentials ({method}): authorization violation")]
    Authorization { servers: String, method: String },

    #[error("could not authenticate to NATS server {servers} with {method}: {detail}")]
    Authentication { servers: String, method: String, detail: String },

    #[error("NATS not reachable at {servers} after {attempts} attempts: {detail}")]
    Unreachable { servers: String, attempts: u32, detail: String },
}

/// Which configured file a file error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    TlsCa,
    TlsClientCertificate,
    TlsClientKey,
    Credentials,
}

impl std::fmt::Display for FileRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileRole::TlsCa => "TLS CA",
            FileRole::TlsClientCertificate => "TLS client certificate",
            FileRole::TlsClientKey => "TLS client key",
            FileRole::Credentials => "NATS credentials",
        })
    }
}

/// The connection as readiness sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    Connected,
    /// Lost; async-nats is reconnecting.
    Disconnected,
    /// Closed for good (drained or dropped); no reconnect will follow.
    Closed,
}

/// A live NATS connection with its JetStream context. Cheap to clone.
#[derive(Debug, Clone)]
pub struct JetStreamConnection {
    client: Client,
    context: jetstream::Context,
    state: watch::Receiver<ConnectionState>,
    servers: String,
    /// `max_in_flight` permits: publishes awaiting their ack, across every clone.
    in_flight: Arc<Semaphore>,
}

impl JetStreamConnection {
    /// Connects, retrying the first connect per `settings.connect_backoff` while the
    /// servers are unreachable. Configuration errors (files, TLS, credentials) fail at
    /// once: retrying would only repeat them.
    pub async fn connect(settings: &JetStreamSettings) -> Result<Self, ConnectError> {
        check_settings(settings)?;
        let servers = ServerList::parse(&settings.servers)?;
        let auth = Authentication::load(settings, &servers).await?;
        if let Some(tls) = &settings.tls {
            check_tls_files(tls).await?;
        }
        let (state_tx, state) = watch::channel(ConnectionState::Disconnected);
        let state_tx = Arc::new(state_tx);
        let client = connect_with_retry(settings, &servers, &auth, &state_tx).await?;
        state_tx.send_replace(ConnectionState::Connected);
        // The context serves stream management; publishes and their acks are ours
        // (`publish.rs`), bounded by `in_flight`.
        let context = ContextBuilder::new().timeout(settings.publish_timeout).build(client.clone());
        let in_flight = Arc::new(Semaphore::new(settings.max_in_flight));
        Ok(JetStreamConnection { client, context, state, servers: servers.display, in_flight })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn context(&self) -> &jetstream::Context {
        &self.context
    }

    /// The bound on publishes awaiting their ack (`max_in_flight`), shared by every clone.
    pub fn in_flight(&self) -> &Arc<Semaphore> {
        &self.in_flight
    }

    /// Whether the client holds a live connection right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// Connection state changes, for readiness probes and for waiting out an outage.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// The server list with any credentials removed, for logs and errors.
    pub fn servers(&self) -> &str {
        &self.servers
    }
}

fn check_settings(settings: &JetStreamSettings) -> Result<(), ConnectError> {
    if settings.max_in_flight == 0 {
        return Err(ConnectError::InvalidSettings("max_in_flight must be > 0".into()));
    }
    if settings.publish_timeout.is_zero() {
        return Err(ConnectError::InvalidSettings("publish_timeout must be > 0".into()));
    }
    Ok(())
}

/// The parsed server URLs, the credentials embedded in them, and a redacted rendering.
#[derive(Debug)]
struct ServerList {
    addrs: Vec<ServerAddr>,
    url_auth: Option<UrlAuth>,
    display: String,
}

/// Credentials written into a URL: async-nats parses but does not send them, so they are
/// lifted into the connect options.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UrlAuth {
    UserPassword { user: String, password: String },
    Token(String),
}

impl ServerList {
    fn parse(input: &str) -> Result<Self, ConnectError> {
        let invalid = |reason: String| ConnectError::InvalidServers {
            servers: redact_servers(input),
            reason,
        };
        let mut addrs = Vec::new();
        let mut url_auth: Option<UrlAuth> = None;
        for url in input.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let addr: ServerAddr =
                url.parse().map_err(|e| invalid(format!("{}: {e}", redact_url(url))))?;
            if !matches!(addr.scheme(), "nats" | "tls") {
                return Err(invalid(format!(
                    "{}: only nats:// and tls:// are supported",
                    redact_url(url)
                )));
            }
            let auth = UrlAuth::of(&addr);
            match (&url_auth, auth) {
                (_, None) => {}
                (None, found) => url_auth = found,
                (Some(seen), Some(found)) if *seen != found => {
                    return Err(invalid("the URLs carry different credentials".into()));
                }
                (Some(_), Some(_)) => {}
            }
            addrs.push(addr);
        }
        if addrs.is_empty() {
            return Err(invalid("no server URL given".into()));
        }
        let display = addrs.iter().map(display_addr).collect::<Vec<_>>().join(",");
        Ok(ServerList { addrs, url_auth, display })
    }
}

impl UrlAuth {
    fn of(addr: &ServerAddr) -> Option<UrlAuth> {
        let user = addr.username()?;
        Some(match addr.password() {
            Some(password) => UrlAuth::UserPassword {
                user: percent_decode(user),
                password: percent_decode(password),
            },
            None => UrlAuth::Token(percent_decode(user)),
        })
    }
}

/// `%XX` escapes of URL user info (a password with `@` or `:` must be escaped in a URL).
fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `scheme://host:port`, never the credentials.
fn display_addr(addr: &ServerAddr) -> String {
    let host = addr.host();
    if host.contains(':') {
        format!("{}://[{host}]:{}", addr.scheme(), addr.port())
    } else {
        format!("{}://{host}:{}", addr.scheme(), addr.port())
    }
}

/// Drops `user:password@` from a URL that failed to parse, before it is shown.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    if scheme.is_empty() { rest.to_string() } else { format!("{scheme}://{rest}") }
}

/// A server list as it may be shown: every `user:password@` (or token) removed.
pub fn redact_servers(input: &str) -> String {
    input.split(',').map(|u| redact_url(u.trim())).collect::<Vec<_>>().join(",")
}

/// The credentials the connection presents, loaded once.
#[derive(Debug)]
struct Authentication {
    /// The `.creds` file and its text.
    creds: Option<(PathBuf, String)>,
    url: Option<UrlAuth>,
    method: String,
}

impl Authentication {
    async fn load(
        settings: &JetStreamSettings,
        servers: &ServerList,
    ) -> Result<Self, ConnectError> {
        let creds = match &settings.creds_file {
            Some(path) => Some((path.clone(), load_creds(path).await?)),
            None => None,
        };
        let method = match (&settings.creds_file, &servers.url_auth) {
            (Some(path), _) => format!("credentials file {}", path.display()),
            (None, Some(UrlAuth::UserPassword { user, .. })) => {
                format!("user {user:?} and password from the server URL")
            }
            (None, Some(UrlAuth::Token(_))) => "token from the server URL".into(),
            (None, None) => "no credentials".into(),
        };
        Ok(Authentication { creds, url: servers.url_auth.clone(), method })
    }

    fn apply(&self, mut options: ConnectOptions) -> Result<ConnectOptions, ConnectError> {
        match &self.url {
            Some(UrlAuth::UserPassword { user, password }) => {
                options = options.user_and_password(user.clone(), password.clone());
            }
            Some(UrlAuth::Token(token)) => options = options.token(token.clone()),
            None => {}
        }
        if let Some((path, creds)) = &self.creds {
            options = with_creds(options, path, creds)?;
        }
        Ok(options)
    }
}

async fn read_file(path: &Path, role: FileRole) -> Result<Vec<u8>, ConnectError> {
    tokio::fs::read(path).await.map_err(|source| ConnectError::UnreadableFile {
        role,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a `.creds` file and checks it parses.
async fn load_creds(path: &Path) -> Result<String, ConnectError> {
    let bytes = read_file(path, FileRole::Credentials).await?;
    let text = String::from_utf8(bytes).map_err(|_| ConnectError::InvalidFile {
        role: FileRole::Credentials,
        path: path.to_path_buf(),
        reason: "not UTF-8 text".into(),
    })?;
    with_creds(ConnectOptions::new(), path, &text)?;
    Ok(text)
}

/// Adds the user JWT and nkey seed of a `.creds` file's text to `options`.
fn with_creds(
    options: ConnectOptions,
    path: &Path,
    creds: &str,
) -> Result<ConnectOptions, ConnectError> {
    options.credentials(creds).map_err(|e| ConnectError::InvalidFile {
        role: FileRole::Credentials,
        path: path.to_path_buf(),
        reason: format!("not a NATS .creds file (user JWT + nkey seed): {e}"),
    })
}

/// Reads every configured TLS file and checks it holds what its role needs, so the
/// handshake only fails for handshake reasons.
async fn check_tls_files(tls: &TlsSettings) -> Result<(), ConnectError> {
    if let Some(ca) = &tls.ca_file {
        check_certificates(ca, FileRole::TlsCa).await?;
    }
    if let Some(ClientCertificate { cert_file, key_file }) = &tls.client {
        check_certificates(cert_file, FileRole::TlsClientCertificate).await?;
        let pem = read_file(key_file, FileRole::TlsClientKey).await?;
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| ConnectError::InvalidFile {
            role: FileRole::TlsClientKey,
            path: key_file.clone(),
            reason: format!("no PEM private key found: {e}"),
        })?;
    }
    Ok(())
}

async fn check_certificates(path: &Path, role: FileRole) -> Result<(), ConnectError> {
    let invalid =
        |reason: String| ConnectError::InvalidFile { role, path: path.to_path_buf(), reason };
    let pem = read_file(path, role).await?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("no PEM certificate found".into()));
    }
    Ok(())
}

/// Connect options for one attempt (they are not `Clone`, so they are rebuilt).
fn options(
    settings: &JetStreamSettings,
    auth: &Authentication,
    state_tx: &Arc<watch::Sender<ConnectionState>>,
) -> Result<ConnectOptions, ConnectError> {
    let reconnect = settings.connect_backoff;
    let mut options = ConnectOptions::new()
        .name(&settings.client_name)
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| {
            reconnect.delay(u32::try_from(attempts).unwrap_or(u32::MAX).saturating_sub(1))
        })
        .event_callback(event_handler(Arc::clone(state_tx)));
    if let Some(tls) = &settings.tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some(client) = &tls.client {
            options =
                options.add_client_certificate(client.cert_file.clone(), client.key_file.clone());
        }
    }
    auth.apply(options)
}

/// Logs connection events and mirrors them into the state channel.
fn event_handler(
    state_tx: Arc<watch::Sender<ConnectionState>>,
) -> impl Fn(Event) -> std::future::Ready<()> + Send + Sync + 'static {
    move |event| {
        match &event {
            Event::Connected => {
                info!("NATS connected");
                state_tx.send_replace(ConnectionState::Connected);
            }
            Event::Disconnected => {
                warn!("NATS connection lost; reconnecting");
                state_tx.send_replace(ConnectionState::Disconnected);
            }
            Event::Closed => {
                info!("NATS connection closed");
                state_tx.send_replace(ConnectionState::Closed);
            }
            Event::LameDuckMode => warn!("NATS server entered lame duck mode; it will close soon"),
            Event::Draining => info!("NATS connection draining"),
            Event::SlowConsumer(sid) => warn!(sid, "NATS slow consumer"),
            Event::ServerError(e) => warn!(error = %e, "NATS server error"),
            Event::ClientError(e) => warn!(error = %e, "NATS client error"),
        }
        std::future::ready(())
    }
}

async fn connect_with_retry(
    settings: &JetStreamSettings,
    servers: &ServerList,
    auth: &Authentication,
    state_tx: &Arc<watch::Sender<ConnectionState>>,
) -> Result<Client, ConnectError> {
    let mut attempt: u32 = 0;
    loop {
        let result = options(settings, auth, state_tx)?.connect(servers.addrs.clone()).await;
        let error = match result {
            Ok(client) => return Ok(client),
            Err(e) => e,
        };
        attempt += 1;
        let failure = classify(&error, settings, servers, auth, attempt);
        let retryable = matches!(failure, ConnectError::Unreachable { .. });
        let exhausted = settings.max_connect_attempts.is_some_and(|max| attempt >= max.get());
        if !retryable || exhausted {
            return Err(failure);
        }
        let delay = settings.connect_backoff.delay(attempt - 1);
        warn!(
            attempt,
            error = %error_chain(&error),
            "NATS not reachable at {}, retrying in {delay:?}",
            servers.display
        );
        tokio::time::sleep(delay).await;
    }
}

/// Names a failed connect: TLS and credential failures by what is wrong, anything else
/// as unreachable (retryable).
fn classify(
    error: &async_nats::ConnectError,
    settings: &JetStreamSettings,
    servers: &ServerList,
    auth: &Authentication,
    attempts: u32,
) -> ConnectError {
    let servers_display = servers.display.clone();
    let detail = error_chain(error);
    if let Some(tls_error) = find_rustls_error(error) {
        return classify_tls(tls_error, settings.tls.as_ref(), servers_display);
    }
    match error.kind() {
        ConnectErrorKind::AuthorizationViolation => {
            ConnectError::Authorization { servers: servers_display, method: auth.method.clone() }
        }
        ConnectErrorKind::Authentication => ConnectError::Authentication {
            servers: servers_display,
            method: auth.method.clone(),
            detail,
        },
        ConnectErrorKind::Tls => ConnectError::Tls { servers: servers_display, detail },
        ConnectErrorKind::ServerParse => {
            ConnectError::InvalidServers { servers: servers_display, reason: detail }
        }
        ConnectErrorKind::Dns
        | ConnectErrorKind::TimedOut
        | ConnectErrorKind::Io
        | ConnectErrorKind::MaxReconnects => {
            ConnectError::Unreachable { servers: servers_display, attempts, detail }
        }
    }
}

fn classify_tls(
    tls_error: &rustls::Error,
    tls: Option<&TlsSettings>,
    servers: String,
) -> ConnectError {
    let detail = tls_error.to_string();
    let client_cert = tls.and_then(|t| t.client.as_ref()).map(|c| c.cert_file.clone());
    match (tls_error, client_cert) {
        (rustls::Error::InvalidCertificate(_), _) => ConnectError::ServerCertificateUntrusted {
            servers,
            trust: match tls.and_then(|t| t.ca_file.as_ref()) {
                Some(ca) => format!("CA file {}", ca.display()),
                None => "the system's root certificates".into(),
            },
            detail,
        },
        (rustls::Error::AlertReceived(alert), None) if is_client_cert_alert(*alert) => {
            ConnectError::ClientCertificateMissing { servers }
        }
        (rustls::Error::AlertReceived(alert), Some(cert)) if is_client_cert_alert(*alert) => {
            ConnectError::ClientCertificateRejected { servers, cert, detail }
        }
        _ => ConnectError::Tls { servers, detail },
    }
}

/// Alerts a server sends when the client certificate is absent or not acceptable.
fn is_client_cert_alert(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
    )
}

/// The rustls error somewhere in the chain. `io::Error::source` skips the error it wraps,
/// so wrapped errors are looked into with `get_ref`.
fn find_rustls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current: Option<&'a (dyn StdError + 'static)> = Some(error);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = find_rustls_error(inner)
        {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// "outer: inner: innermost", without repeating a message its source already carries.
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(err) = current {
        let message = err.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        current = err.source();
    }
    text
}

/// Waits up to `limit` for the connection to be up; returns whether it is.
pub(crate) async fn wait_connected(
    state: &mut watch::Receiver<ConnectionState>,
    limit: Duration,
) -> bool {
    let wait = state.wait_for(|s| *s == ConnectionState::Connected);
    matches!(tokio::time::timeout(limit, wait).await, Ok(Ok(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_list_accepts_commas_and_lifts_credentials() {
        let list = ServerList::parse("nats://u:p%40ss@a:4222, tls://u:p%40ss@b:4443").unwrap();
        assert_eq!(list.addrs.len(), 2);
        assert_eq!(list.display, "nats://a:4222,tls://b:4443");
        assert_eq!(
            list.url_auth,
            Some(UrlAuth::UserPassword { user: "u".into(), password: "p@ss".into() })
        );
    }

    #[test]
    fn server_list_reads_a_token_and_defaults_the_scheme() {
        let list = ServerList::parse("s3cret@localhost:4333").unwrap();
        assert_eq!(list.display, "nats://localhost:4333");
        assert_eq!(list.url_auth, Some(UrlAuth::Token("s3cret".into())));
    }

    #[test]
    fn server_list_errors_never_show_passwords() {
        let err = ServerList::parse("ws://user:hunter2@host:80").unwrap_err().to_string();
        assert!(err.contains("only nats:// and tls://"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = ServerList::parse(" , ").unwrap_err().to_string();
        assert!(err.contains("no server URL"), "{err}");
        let err = ServerList::parse("nats://a:b@h1:1,nats://c:d@h2:2").unwrap_err().to_string();
        assert!(err.contains("different credentials"), "{err}");
    }

    #[test]
    fn percent_decoding_leaves_bad_escapes_alone() {
        assert_eq!(percent_decode("a%3Ab%2"), "a:b%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
