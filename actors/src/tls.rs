//! TLS for IPFIX-over-TLS listeners (RFC 7011 §10.4.2, via tokio-rustls on ring): the
//! server certificate and key, and the CA that client certificates must chain to. A
//! client without a certificate, or with one that CA did not sign, is refused during
//! the handshake. An accepted exporter is named by its certificate.
//!
//! The files are read and checked once, by [`TlsServerSettings::load`], which the binary
//! calls while validating its config: a missing or malformed file is a start-up error
//! naming the file, never a surprise at the first connection.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use x509_parser::extensions::GeneralName;

use crate::counters::handshake;

/// Longest exporter name taken from a certificate (a label in logs and metrics).
const MAX_NAME_CHARS: usize = 128;

/// The three files of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The listener's certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// The CA certificates (PEM) client certificates must chain to.
    pub client_ca_file: PathBuf,
}

/// Which of the [`TlsFiles`] an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Certificate,
    Key,
    ClientCa,
}

impl TlsFile {
    /// The config key of the file: "cert_file", "key_file", "client_ca_file".
    pub fn key(self) -> &'static str {
        match self {
            TlsFile::Certificate => "cert_file",
            TlsFile::Key => "key_file",
            TlsFile::ClientCa => "client_ca_file",
        }
    }
}

/// A TLS file that cannot be used, and why.
#[derive(Debug, Error)]
pub enum TlsFileError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        file: TlsFile,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not usable: {reason}", path.display())]
    Invalid { file: TlsFile, path: PathBuf, reason: String },
}

impl TlsFileError {
    /// The file at fault.
    pub fn file(&self) -> TlsFile {
        match self {
            TlsFileError::Unreadable { file, .. } | TlsFileError::Invalid { file, .. } => *file,
        }
    }
}

/// A loaded, checked TLS server configuration. Cheap to clone.
#[derive(Clone)]
pub struct TlsServerSettings {
    config: Arc<ServerConfig>,
    files: TlsFiles,
}

impl fmt::Debug for TlsServerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerSettings").field("files", &self.files).finish_non_exhaustive()
    }
}

impl TlsServerSettings {
    /// Reads and checks the three files and builds the server configuration: TLS 1.2
    /// and 1.3, client certificates required and verified against `client_ca_file`.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsFileError> {
        // ring, as the NATS client uses: one crypto provider in the process.
        let provider = Arc::new(ring::default_provider());
        let chain = load_certificates(&files.cert_file, TlsFile::Certificate)?;
        let key = load_key(&files.key_file)?;
        let roots = load_roots(&files.client_ca_file)?;
        let invalid = |file: TlsFile, path: &Path, reason: String| TlsFileError::Invalid {
            file,
            path: path.to_path_buf(),
            reason,
        };
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| invalid(TlsFile::ClientCa, &files.client_ca_file, e.to_string()))?;
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(TlsFile::Certificate, &files.cert_file, e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(_) => invalid(
                    TlsFile::Certificate,
                    &files.cert_file,
                    format!("not usable for TLS (an X.509 v3 certificate is needed): {e}"),
                ),
                e => invalid(
                    TlsFile::Key,
                    &files.key_file,
                    format!("does not go with {}: {e}", files.cert_file.display()),
                ),
            })?;
        Ok(Self { config: Arc::new(config), files: files.clone() })
    }

    /// The files it was loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config))
    }
}

fn read(path: &Path, file: TlsFile) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Unreadable {
        file,
        path: path.to_path_buf(),
        source,
    })
}

fn load_certificates(
    path: &Path,
    file: TlsFile,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let invalid = |reason: String| TlsFileError::Invalid { file, path: path.to_path_buf(), reason };
    let bytes = read(path, file)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("no PEM certificate in it".into()));
    }
    for (i, cert) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(cert)
            .map_err(|e| invalid(format!("certificate {} is not X.509: {e}", i + 1)))?;
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let bytes = read(path, TlsFile::Key)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsFileError::Invalid {
        file: TlsFile::Key,
        path: path.to_path_buf(),
        reason: format!("no usable PEM private key in it: {e}"),
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certificates(path, TlsFile::ClientCa)? {
        roots.add(cert).map_err(|e| TlsFileError::Invalid {
            file: TlsFile::ClientCa,
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The exporter's name in its (verified) client certificate: the subject's common name,
/// or else its first subject alternative name. Control characters are replaced and the
/// name is cut at [`MAX_NAME_CHARS`].
pub(crate) fn certificate_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let common_name =
        cert.subject().iter_common_name().find_map(|cn| cn.as_str().ok().map(str::to_owned));
    let alternative = || {
        let names = cert.subject_alternative_name().ok().flatten()?;
        names.value.general_names.iter().find_map(|name| match name {
            GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                Some((*s).to_owned())
            }
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
            _ => None,
        })
    };
    let name = common_name.filter(|n| !n.trim().is_empty()).or_else(alternative)?;
    let clean: String =
        name.chars().map(|c| if c.is_control() { '?' } else { c }).take(MAX_NAME_CHARS).collect();
    (!clean.trim().is_empty()).then_some(clean)
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// The counter label of a failed handshake (see [`handshake`]).
pub(crate) fn handshake_failure(error: &io::Error) -> &'static str {
    let tls = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::NoCertificatesPresented) => handshake::NO_CERTIFICATE,
        Some(rustls::Error::InvalidCertificate(_)) => handshake::CERTIFICATE_REJECTED,
        Some(rustls::Error::AlertReceived(_)) => handshake::PEER_ALERT,
        Some(_) => handshake::PROTOCOL,
        None if error.kind() == io::ErrorKind::InvalidData => handshake::PROTOCOL,
        None => handshake::IO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_failures_are_named_from_the_rustls_error() {
        let wrap = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        assert_eq!(
            handshake_failure(&wrap(rustls::Error::NoCertificatesPresented)),
            handshake::NO_CERTIFICATE
        );
        assert_eq!(
            handshake_failure(&wrap(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))),
            handshake::CERTIFICATE_REJECTED
        );
        assert_eq!(
            handshake_failure(&wrap(rustls::Error::AlertReceived(
                rustls::AlertDescription::BadCertificate
            ))),
            handshake::PEER_ALERT
        );
        assert_eq!(
            handshake_failure(&io::Error::from(io::ErrorKind::UnexpectedEof)),
            handshake::IO
        );
    }

    #[test]
    fn missing_files_name_the_file() {
        let files = TlsFiles {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            client_ca_file: "/nonexistent/ca.pem".into(),
        };
        let error = TlsServerSettings::load(&files).unwrap_err();
        assert_eq!(error.file(), TlsFile::Certificate);
        assert!(error.to_string().contains("/nonexistent/cert.pem"), "{error}");
    }
}
