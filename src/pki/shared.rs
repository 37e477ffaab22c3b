//! The credentials every server of one cluster must share (the cluster CA
//! and its key, the service-account signing key, the secrets-encryption
//! configuration), sealed for the datastore the servers share, as k3s
//! keeps its bootstrap data: AES-256-GCM under a key derived from the join
//! token's credentials (PBKDF2-HMAC-SHA256), stored under a key named by a
//! hash of those credentials. Whoever can read the datastore but has no
//! token learns nothing; a server given the token installs them and then
//! issues its own serving certificate from the shared CA.

use std::collections::BTreeMap;
use std::path::Path;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The shared files, relative to `<data-dir>/server`.
pub const FILES: &[&str] = &[
    "tls/server-ca.crt",
    "tls/server-ca.key",
    "tls/server-ca-chain.crt",
    "tls/service.key",
    "cred/encryption-config.json",
];

/// Certificates issued from the CA that must be issued anew when it changes.
const ISSUED: &[&str] = &[
    "tls/serving-kube-apiserver.crt",
    "tls/serving-kube-apiserver.key",
    "tls/client-admin.crt",
    "tls/client-admin.key",
];

/// PBKDF2 rounds (a join token's credentials are random, not a password;
/// the rounds only slow a guess down).
const ROUNDS: u32 = 100_000;

/// The shared files' contents, by path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedCredentials {
    files: BTreeMap<String, String>,
}

/// The sealed form stored in the datastore.
#[derive(Serialize, Deserialize)]
struct Sealed {
    salt: String,
    nonce: String,
    ciphertext: String,
}

/// The datastore key of the credentials sealed with `passphrase`.
pub fn store_key(passphrase: &str) -> String {
    let digest = hex::encode(Sha256::digest(passphrase.as_bytes()));
    format!("/bootstrap/{}", &digest[..12])
}

fn cipher(passphrase: &str, salt: &[u8]) -> Aes256Gcm {
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(passphrase.as_bytes(), salt, ROUNDS, &mut key);
    Aes256Gcm::new(&key.into())
}

impl SharedCredentials {
    /// The shared files that exist under `server_dir`.
    pub fn collect(server_dir: &Path) -> std::io::Result<Self> {
        let mut files = BTreeMap::new();
        for name in FILES {
            match std::fs::read_to_string(server_dir.join(name)) {
                Ok(text) => {
                    files.insert(name.to_string(), text);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Self { files })
    }

    /// Writes the files under `server_dir` (0600). If that changes the CA,
    /// the certificates issued from the old one are removed, to be issued
    /// again from the shared one. Whether anything changed.
    pub fn install(&self, server_dir: &Path) -> anyhow::Result<bool> {
        let before = Self::collect(server_dir)?;
        if before == *self {
            return Ok(false);
        }
        if before.files.get("tls/server-ca.crt") != self.files.get("tls/server-ca.crt") {
            for name in ISSUED {
                let _ = std::fs::remove_file(server_dir.join(name));
            }
        }
        for (name, text) in &self.files {
            super::write_file_mode(&server_dir.join(name), text, 0o600)?;
        }
        Ok(true)
    }

    /// Sealed with `passphrase`, for the datastore.
    pub fn seal(&self, passphrase: &str) -> Vec<u8> {
        let salt: [u8; 16] = rand::random();
        let nonce: [u8; 12] = rand::random();
        let plain = serde_json::to_vec(self).expect("credentials serialize");
        let ciphertext = cipher(passphrase, &salt)
            .encrypt(&nonce.into(), plain.as_slice())
            .expect("AES-GCM encrypts any length kelp stores");
        serde_json::to_vec(&Sealed {
            salt: STANDARD.encode(salt),
            nonce: STANDARD.encode(nonce),
            ciphertext: STANDARD.encode(ciphertext),
        })
        .expect("sealed credentials serialize")
    }

    /// Opens what [`Self::seal`] made; an error for another passphrase.
    pub fn open(sealed: &[u8], passphrase: &str) -> Result<Self, String> {
        let sealed: Sealed =
            serde_json::from_slice(sealed).map_err(|e| format!("malformed bootstrap data: {e}"))?;
        let decode = |field: &str| {
            STANDARD
                .decode(field)
                .map_err(|e| format!("malformed bootstrap data: {e}"))
        };
        let salt = decode(&sealed.salt)?;
        let nonce: [u8; 12] = decode(&sealed.nonce)?
            .try_into()
            .map_err(|_| "malformed bootstrap data: the nonce is not 12 bytes".to_string())?;
        let plain = cipher(passphrase, &salt)
            .decrypt(&nonce.into(), decode(&sealed.ciphertext)?.as_slice())
            .map_err(|_| "the bootstrap data does not open with this token".to_string())?;
        serde_json::from_slice(&plain).map_err(|e| format!("malformed bootstrap data: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> SharedCredentials {
        SharedCredentials {
            files: BTreeMap::from([
                ("tls/server-ca.crt".to_string(), "CA".to_string()),
                ("tls/server-ca.key".to_string(), "KEY".to_string()),
            ]),
        }
    }

    #[test]
    fn sealed_credentials_open_only_with_the_same_token() {
        let sealed = credentials().seal("abcdef.0123456789abcdef");
        assert!(!String::from_utf8_lossy(&sealed).contains("KEY"));
        assert_eq!(
            SharedCredentials::open(&sealed, "abcdef.0123456789abcdef"),
            Ok(credentials())
        );
        assert!(SharedCredentials::open(&sealed, "abcdef.0000000000000000").is_err());
        assert_ne!(store_key("a.b"), store_key("a.c"));
    }

    #[test]
    fn installing_another_ca_drops_the_certificates_issued_from_the_old_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let issued = dir.path().join("tls/serving-kube-apiserver.crt");
        super::super::write_file_mode(&dir.path().join("tls/server-ca.crt"), "OLD", 0o600)
            .expect("write");
        super::super::write_file_mode(&issued, "LEAF", 0o600).expect("write");
        assert!(credentials().install(dir.path()).expect("install"));
        assert!(!issued.exists());
        assert_eq!(
            SharedCredentials::collect(dir.path()).expect("collect"),
            credentials()
        );
        assert!(!credentials().install(dir.path()).expect("install again"));
    }
}
