//! NATS decentralized auth for tests: an operator, accounts with JetStream, and users
//! with publish permissions, as signed JWTs (the nats-io `jwt` v2 claims), the
//! nats-server config that trusts them (memory resolver), and `.creds` files — what
//! `nsc` would produce, without needing `nsc`.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::BASE64URL_NOPAD;
use nkeys::KeyPair;
use serde_json::{Value, json};

/// An operator, its system account and the accounts it signed.
pub struct Operator {
    key: KeyPair,
    system_account: String,
    accounts: Vec<(String, String)>,
}

/// An account's signing key, to issue its users.
pub struct Account {
    key: KeyPair,
}

impl Operator {
    /// A fresh operator key with its system account (JetStream needs one).
    pub fn generate() -> Self {
        let mut operator = Operator {
            key: KeyPair::new_operator(),
            system_account: String::new(),
            accounts: Vec::new(),
        };
        let system = operator.add_account("SYS", false);
        operator.system_account = system.key.public_key();
        operator
    }

    /// A new account with unlimited JetStream, preloaded into the server config.
    pub fn account(&mut self, name: &str) -> Account {
        self.add_account(name, true)
    }

    fn add_account(&mut self, name: &str, jetstream: bool) -> Account {
        let key = KeyPair::new_account();
        let storage = if jetstream { -1 } else { 0 };
        let limits = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": storage, "disk_storage": storage, "streams": storage, "consumer": storage,
        });
        let nats = json!({ "limits": limits, "type": "account", "version": 2 });
        let jwt = sign(&self.key, &key.public_key(), name, nats);
        self.accounts.push((key.public_key(), jwt));
        Account { key }
    }

    /// The server config lines trusting this operator and its accounts.
    pub fn server_config(&self) -> String {
        let operator = sign(
            &self.key,
            &self.key.public_key(),
            "test-operator",
            json!({ "type": "operator", "version": 2 }),
        );
        let preload: Vec<String> =
            self.accounts.iter().map(|(key, jwt)| format!("  {key}: \"{jwt}\"")).collect();
        format!(
            "operator: \"{operator}\"\nsystem_account: {}\nresolver: MEMORY\n\
             resolver_preload: {{\n{}\n}}\n",
            self.system_account,
            preload.join("\n")
        )
    }
}

impl Account {
    /// Writes a `.creds` file for a new user of this account that may publish only on
    /// `publish` (and the JetStream API), and receive replies.
    pub fn user_creds(&self, name: &str, publish: &[&str], path: &Path) {
        let user = KeyPair::new_user();
        let mut allow: Vec<&str> = publish.to_vec();
        allow.push("$JS.API.>");
        let nats = json!({
            "pub": { "allow": allow },
            "sub": { "allow": ["_INBOX.>"] },
            "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        });
        let jwt = sign(&self.key, &user.public_key(), name, nats);
        let seed = user.seed().unwrap_or_else(|e| panic!("user seed: {e}"));
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        );
        std::fs::write(path, creds).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// A JWT for `subject`, signed by `issuer`.
fn sign(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let issued_at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let claims = json!({
        "jti": format!("{subject}-{issued_at}"),
        "iat": issued_at,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    let signed = format!("{header}.{body}");
    let signature = issuer.sign(signed.as_bytes()).unwrap_or_else(|e| panic!("sign: {e}"));
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}
