//! TLS, mTLS and credentials against a real nats-server: what works connects, what does
//! not is named for what it is.

mod support;

use std::num::NonZeroU32;
use std::path::PathBuf;

use flow_publish::{
    ClientCertificate, ConnectError, FileRole, JetStreamPublisher, JetStreamSettings,
    PublisherError, TlsSettings,
};
use support::{NatsServer, TestPki, messages, settings};

/// A server that requires TLS and verifies client certificates against `pki`'s CA.
struct MtlsServer {
    _certs: tempfile::TempDir,
    server: NatsServer,
    pki: TestPki,
    client: ClientCertificate,
}

impl MtlsServer {
    fn start() -> Self {
        let certs = tempfile::tempdir().expect("cert dir");
        let pki = TestPki::new(certs.path(), "trusted");
        let (server_cert, server_key) = pki.issue(certs.path(), "server", true);
        let (cert_file, key_file) = pki.issue(certs.path(), "collector", false);
        let tls = format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 2\n}}",
            server_cert.display(),
            server_key.display(),
            pki.ca_file.display()
        );
        let server = NatsServer::start_with(&tls);
        MtlsServer { _certs: certs, server, pki, client: ClientCertificate { cert_file, key_file } }
    }

    fn settings(&self, tls: TlsSettings) -> JetStreamSettings {
        let url = format!("tls://127.0.0.1:{}", self.server.port);
        let mut settings = settings(&url, "events", &["f.tls"]);
        settings.tls = Some(tls);
        settings.max_connect_attempts = NonZeroU32::new(2);
        settings
    }
}

async fn connect_err(settings: JetStreamSettings) -> ConnectError {
    match JetStreamPublisher::connect(settings).await {
        Err(PublisherError::Connect(e)) => {
            eprintln!("{e}");
            e
        }
        Err(other) => panic!("expected a connect error, got {other:?}"),
        Ok(_) => panic!("expected a connect error, got a connection"),
    }
}

#[tokio::test]
async fn mtls_with_a_trusted_client_certificate_publishes() {
    let mtls = MtlsServer::start();
    let tls =
        TlsSettings { ca_file: Some(mtls.pki.ca_file.clone()), client: Some(mtls.client.clone()) };
    let publisher = JetStreamPublisher::connect(mtls.settings(tls)).await.expect("mTLS connects");
    let outcome = publisher.publish_batch("f.tls", messages("tls", 10)).await;
    assert_eq!(outcome.acked, 10);
}

#[tokio::test]
async fn mtls_without_a_client_certificate_is_named() {
    let mtls = MtlsServer::start();
    let tls = TlsSettings { ca_file: Some(mtls.pki.ca_file.clone()), client: None };
    let err = connect_err(mtls.settings(tls)).await;
    assert!(matches!(err, ConnectError::ClientCertificateMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("requires a client certificate"), "{err}");
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_rejected() {
    let mtls = MtlsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let rogue = TestPki::new(dir.path(), "rogue");
    let (cert_file, key_file) = rogue.issue(dir.path(), "intruder", false);
    let tls = TlsSettings {
        ca_file: Some(mtls.pki.ca_file.clone()),
        client: Some(ClientCertificate { cert_file: cert_file.clone(), key_file }),
    };
    let err = connect_err(mtls.settings(tls)).await;
    match &err {
        ConnectError::ClientCertificateRejected { cert, .. } => assert_eq!(cert, &cert_file),
        other => panic!("wrong error: {other:?}"),
    }
}

#[tokio::test]
async fn a_server_certificate_from_an_unknown_ca_is_untrusted() {
    let mtls = MtlsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let other = TestPki::new(dir.path(), "other");
    let tls =
        TlsSettings { ca_file: Some(other.ca_file.clone()), client: Some(mtls.client.clone()) };
    let err = connect_err(mtls.settings(tls)).await;
    assert!(matches!(err, ConnectError::ServerCertificateUntrusted { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&other.ca_file.display().to_string()), "names the CA file: {text}");
}

#[tokio::test]
async fn unreadable_and_malformed_tls_files_are_named() {
    let mtls = MtlsServer::start();
    let missing = PathBuf::from("/nonexistent/root.pem");
    let tls = TlsSettings { ca_file: Some(missing.clone()), client: Some(mtls.client.clone()) };
    match connect_err(mtls.settings(tls)).await {
        ConnectError::UnreadableFile { role: FileRole::TlsCa, path, .. } => {
            assert_eq!(path, missing)
        }
        other => panic!("wrong error: {other:?}"),
    }

    // A certificate where the key should be.
    let swapped = ClientCertificate {
        cert_file: mtls.client.cert_file.clone(),
        key_file: mtls.client.cert_file.clone(),
    };
    let tls = TlsSettings { ca_file: Some(mtls.pki.ca_file.clone()), client: Some(swapped) };
    let err = connect_err(mtls.settings(tls)).await;
    assert!(
        matches!(err, ConnectError::InvalidFile { role: FileRole::TlsClientKey, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("TLS client key file"), "{err}");
}

fn password_server() -> NatsServer {
    NatsServer::start_with("authorization {\n  user: collector\n  password: s3cret\n}")
}

#[tokio::test]
async fn user_and_password_in_the_url_authenticate() {
    let server = password_server();
    let url = format!("nats://collector:s3cret@127.0.0.1:{}", server.port);
    let publisher = JetStreamPublisher::connect(settings(&url, "events", &["f.auth"]))
        .await
        .expect("right password connects");
    assert_eq!(publisher.connection().servers(), format!("nats://127.0.0.1:{}", server.port));
    assert_eq!(publisher.publish_batch("f.auth", messages("auth", 3)).await.acked, 3);
}

#[tokio::test]
async fn a_wrong_password_is_an_authorization_error() {
    let server = password_server();
    let url = format!("nats://collector:wrong@127.0.0.1:{}", server.port);
    let err = connect_err(settings(&url, "events", &["f.auth"])).await;
    assert!(matches!(err, ConnectError::Authorization { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("authorization violation"), "{text}");
    assert!(text.contains("user \"collector\""), "{text}");
    assert!(!text.contains("wrong"), "the password is never shown: {text}");
}

#[tokio::test]
async fn a_creds_file_is_presented_and_its_refusal_names_the_file() {
    let server = password_server();
    let seed = nkeys::KeyPair::new_user().seed().expect("user seed");
    let creds = server.path("collector.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        ),
    )
    .unwrap();
    let mut settings = settings(&server.url(), "events", &["f.auth"]);
    settings.creds_file = Some(creds.clone());
    let err = connect_err(settings).await;
    assert!(matches!(err, ConnectError::Authorization { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("credentials file {}", creds.display())), "{err}");
}

#[tokio::test]
async fn unreadable_and_malformed_creds_files_are_named() {
    let server = NatsServer::start();
    let mut missing = settings(&server.url(), "events", &["f.auth"]);
    missing.creds_file = Some(PathBuf::from("/nonexistent/platform.creds"));
    let err = connect_err(missing).await;
    assert!(matches!(err, ConnectError::UnreadableFile { role: FileRole::Credentials, .. }));
    assert!(
        err.to_string().contains("cannot read NATS credentials file /nonexistent/platform.creds")
    );

    let garbage = server.path("garbage.creds");
    std::fs::write(&garbage, "not a creds file").unwrap();
    let mut malformed = settings(&server.url(), "events", &["f.auth"]);
    malformed.creds_file = Some(garbage);
    let err = connect_err(malformed).await;
    assert!(
        matches!(err, ConnectError::InvalidFile { role: FileRole::Credentials, .. }),
        "{err:?}"
    );
}
