//! Node passwords (k3s's idea): each node keeps a random secret and the
//! server a salted hash of it in the Secret `kube-system/<node>.node-password.kelp`,
//! so that a second machine cannot take over a joined node's name. The API
//! server records proofs; the certificate approver reads them.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Where a joining node proves its password (`POST {"node", "password"}`).
pub const PROOF_PATH: &str = "/v1-kelp/node-password";
/// Where a node reads the cluster's settings (JSON).
pub const CONFIG_PATH: &str = "/v1-kelp/config";
/// Annotation: who last proved the node password.
pub const VERIFIED_BY: &str = "kelp.io/node-password-verified-by";
/// Annotation: when (RFC 3339).
pub const VERIFIED_AT: &str = "kelp.io/node-password-verified-at";
/// The Secret type.
pub const SECRET_TYPE: &str = "kelp.io/node-password";
/// How recent a proof must be for the approver to issue a node certificate.
pub const PROOF_VALID_FOR: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// The Secret (in kube-system) holding a node's password hash.
pub fn secret_name(node: &str) -> String {
    format!("{node}.node-password.kelp")
}

/// The stored hash of `password` with `salt`.
pub fn hash(salt: &str, password: &str) -> String {
    hex::encode(Sha256::digest(format!("{salt}\0{password}").as_bytes()))
}

/// Whether `password` is the one whose salted hash `secret` keeps.
pub fn matches(secret: &Value, password: &str) -> bool {
    let salt = super::secret_data(secret, "salt").unwrap_or_default();
    super::secret_data(secret, "hash").is_some_and(|stored| stored == hash(&salt, password))
}

/// A fresh password (the node's) or salt.
pub fn generate() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Whether `requestor` proved the password recorded in `secret` within
/// [`PROOF_VALID_FOR`] of `now`.
pub fn recently_verified(
    secret: &Value,
    requestor: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let annotations = &secret["metadata"]["annotations"];
    annotations[VERIFIED_BY] == requestor
        && annotations[VERIFIED_AT]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| now - t.with_timezone(&chrono::Utc) <= PROOF_VALID_FOR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn proofs_count_for_their_requestor_for_a_while() {
        let now = chrono::Utc::now();
        let at = (now - chrono::TimeDelta::minutes(1)).to_rfc3339();
        let secret = json!({"metadata": {"annotations": {VERIFIED_BY: "system:bootstrap:abcdef", VERIFIED_AT: at}}});
        assert!(recently_verified(&secret, "system:bootstrap:abcdef", now));
        assert!(!recently_verified(&secret, "system:bootstrap:zzzzzz", now));
        assert!(!recently_verified(
            &secret,
            "system:bootstrap:abcdef",
            now + chrono::TimeDelta::minutes(20)
        ));
        assert!(!recently_verified(
            &json!({}),
            "system:bootstrap:abcdef",
            now
        ));
        assert_ne!(hash("a", "pw"), hash("b", "pw"));
        assert_ne!(generate(), generate());
    }
}
