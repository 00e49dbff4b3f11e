//! Helpers of the IPFIX-over-TCP/TLS tests: hand-built IPFIX messages, stream listeners
//! with the real decoders, TCP connections from chosen loopback addresses, a test PKI
//! (rcgen) and TLS clients (tokio-rustls).
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flow_actors::tls::{TlsFiles, TlsServerSettings};
use flow_actors::{
    Collector, CollectorSettings, DecoderSessions, ListenerProtocol, ListenerSettings,
    SourceFilter, StreamSettings, Transport,
};
use flow_decode::NetflowSettings;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::common::Recorder;

/// Template 256 laid out as source address, destination address, octets.
pub const ADDRESSES: &[(u16, u16)] = &[(8, 4), (12, 4), (1, 8)];
/// Template 256 laid out as source port, destination port, packets.
pub const PORTS: &[(u16, u16)] = &[(7, 2), (11, 2), (2, 8)];

/// An IPFIX message: the 16-byte header and `sets`.
pub fn message(sequence: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let length: usize = 16 + sets.iter().map(Vec::len).sum::<usize>();
    let mut m = Vec::with_capacity(length);
    m.extend_from_slice(&10u16.to_be_bytes());
    m.extend_from_slice(&u16::try_from(length).unwrap().to_be_bytes());
    m.extend_from_slice(&1_700_000_000u32.to_be_bytes()); // export time
    m.extend_from_slice(&sequence.to_be_bytes());
    m.extend_from_slice(&7u32.to_be_bytes()); // observation domain
    for set in sets {
        m.extend_from_slice(set);
    }
    m
}

/// A template set defining template `id` with `fields` (IE id, length).
pub fn template_set(id: u16, fields: &[(u16, u16)]) -> Vec<u8> {
    let mut s = vec![0, 2];
    s.extend_from_slice(&u16::try_from(8 + 4 * fields.len()).unwrap().to_be_bytes());
    s.extend_from_slice(&id.to_be_bytes());
    s.extend_from_slice(&u16::try_from(fields.len()).unwrap().to_be_bytes());
    for (ie, len) in fields {
        s.extend_from_slice(&ie.to_be_bytes());
        s.extend_from_slice(&len.to_be_bytes());
    }
    s
}

/// A data set of template `id` holding `records`.
pub fn data_set(id: u16, records: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = records.concat();
    let mut s = id.to_be_bytes().to_vec();
    s.extend_from_slice(&u16::try_from(4 + body.len()).unwrap().to_be_bytes());
    s.extend_from_slice(&body);
    s
}

/// A record of the [`ADDRESSES`] layout.
pub fn address_record(src: [u8; 4], dst: [u8; 4], octets: u64) -> Vec<u8> {
    [&src[..], &dst[..], &octets.to_be_bytes()[..]].concat()
}

/// A record of the [`PORTS`] layout.
pub fn port_record(src: u16, dst: u16, packets: u64) -> Vec<u8> {
    [&src.to_be_bytes()[..], &dst.to_be_bytes()[..], &packets.to_be_bytes()[..]].concat()
}

/// The real NetFlow/IPFIX decoder's settings.
pub fn netflow() -> ListenerProtocol {
    ListenerProtocol::Netflow(NetflowSettings {
        max_templates: 2000,
        max_template_fields: 10_000,
        pending: None,
        sampling: Default::default(),
    })
}

/// Stream settings for tests: 16 sessions, 5 s handshake, 60 s idle, plain TCP.
pub fn stream(tls: Option<TlsServerSettings>) -> StreamSettings {
    StreamSettings {
        max_sessions: 16,
        handshake_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        tls,
    }
}

/// A netflow listener on 127.0.0.1 (kernel-chosen port) receiving over `transport`.
pub fn netflow_listener(subject: &str, transport: Transport) -> ListenerSettings {
    ListenerSettings {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        partition: None,
        subject: subject.to_owned(),
        buffer_size: 1 << 20,
        protocol: netflow(),
        sources: SourceFilter::default(),
        max_exporter_pps: None,
        max_datagram_bytes: 65_535,
        sockets: 1,
        transport,
    }
}

/// Starts a collector with the real decoders and the recorder's sinks.
pub async fn start_real(settings: CollectorSettings, recorder: &Recorder) -> Collector {
    Collector::start_with(settings, Arc::new(DecoderSessions), &recorder.factory()).await.unwrap()
}

/// A TCP connection to `to` from `local` (any port).
pub async fn connect_from(local: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(local, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Writes `bytes` in uneven pieces (1, 7, 13, 333, 4096 bytes, …), yielding between
/// them, so message boundaries and TCP segments rarely line up.
pub async fn write_split<W: AsyncWriteExt + Unpin>(writer: &mut W, bytes: &[u8]) {
    const PIECES: [usize; 6] = [1, 7, 13, 333, 4096, 2];
    let mut rest = bytes;
    for piece in PIECES.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at((*piece).min(rest.len()));
        writer.write_all(now).await.unwrap();
        writer.flush().await.unwrap();
        tokio::task::yield_now().await;
        rest = later;
    }
}

/// A CA and the certificates it signs, as PEM files in `dir`.
pub struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    pub ca_file: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} CA"));
        params.key_usages =
            vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, ca.pem()).unwrap();
        Pki { ca, ca_file }
    }

    /// A server certificate for 127.0.0.1, or a client certificate with common name
    /// `name` (`common_name: false`: a DNS name SAN only); returns (cert, key) files.
    pub fn issue(
        &self,
        dir: &Path,
        name: &str,
        server: bool,
        common_name: bool,
    ) -> (PathBuf, PathBuf) {
        let sans = if server { vec!["127.0.0.1".to_owned()] } else { vec![name.to_owned()] };
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        // rcgen's default subject has a common name of its own.
        params.distinguished_name = rcgen::DistinguishedName::new();
        if common_name {
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
        }
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let cert_file = dir.join(format!("{name}.pem"));
        let key_file = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }

    /// The collector's TLS settings: a server certificate of this CA, trusting client
    /// certificates of `clients`.
    pub fn server(&self, dir: &Path, clients: &Pki) -> TlsServerSettings {
        let (cert_file, key_file) = self.issue(dir, "collector", true, true);
        let files = TlsFiles { cert_file, key_file, client_ca_file: clients.ca_file.clone() };
        TlsServerSettings::load(&files).unwrap()
    }
}

/// A TLS client trusting `server_ca`, presenting `client` (cert, key files) if given.
pub fn client_config(server_ca: &Path, client: Option<&(PathBuf, PathBuf)>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(server_ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let chain: Vec<_> =
                CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect();
            builder
                .with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap())
                .unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// A TLS connection to `to` (whose certificate names 127.0.0.1).
pub async fn tls_connect(
    to: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(to).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    TlsConnector::from(config).connect(name, tcp).await
}
