//! Join tokens: upstream's bootstrap tokens (`<id>.<secret>`, kept as
//! `bootstrap.kubernetes.io/token` Secrets named `bootstrap-token-<id>` in
//! kube-system) and k3s's secure format `K10<sha256 of the CA>::<credentials>`,
//! whose hash lets a joining node pin the cluster CA before it sends any secret.
//! Pure: the API server authenticates with [`authenticate`], the CLI and the
//! agent build and parse tokens here.

use std::fmt;

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::secret_data;

/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Prefix of a bootstrap token Secret's name.
pub const SECRET_PREFIX: &str = "bootstrap-token-";
/// The group every bootstrap token's user is in.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// The extra group kelp's join tokens carry (kubeadm's is `…:kubeadm:default-node-token`);
/// the default RBAC policy lets it ask for node client certificates.
pub const DEFAULT_NODE_GROUP: &str = "system:bootstrappers:kelp:default-node-token";
/// The user-name prefix of bootstrap token users.
pub const USER_PREFIX: &str = "system:bootstrap:";

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A bootstrap token `<6 chars>.<16 chars>` of `[a-z0-9]`.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// The public part, also the Secret's name suffix.
    pub id: String,
    /// The secret part.
    pub secret: String,
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}.<redacted>)", self.id)
    }
}

impl fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b))
}

impl BootstrapToken {
    /// Parses `<id>.<secret>`.
    pub fn parse(text: &str) -> Option<Self> {
        let (id, secret) = text.split_once('.')?;
        (is_token_part(id, 6) && is_token_part(secret, 16)).then(|| BootstrapToken {
            id: id.into(),
            secret: secret.into(),
        })
    }

    /// A fresh random token.
    pub fn generate() -> Self {
        use rand::Rng;
        let mut rng = rand::rng();
        let mut part = |n: usize| -> String {
            (0..n)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect()
        };
        BootstrapToken {
            id: part(6),
            secret: part(16),
        }
    }

    /// The token a passphrase stands for (k3s lets `--token` be any
    /// string): server and agent derive the same one from the same words.
    pub fn from_passphrase(passphrase: &str) -> Self {
        let digest = Sha256::digest(format!("kelp join token\0{passphrase}").as_bytes());
        let chars: String = digest
            .iter()
            .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
            .collect();
        BootstrapToken {
            id: chars[..6].into(),
            secret: chars[6..22].into(),
        }
    }

    /// The token credentials stand for: a bootstrap token as such, anything
    /// else as a passphrase.
    pub fn from_credentials(credentials: &str) -> Self {
        Self::parse(credentials).unwrap_or_else(|| Self::from_passphrase(credentials))
    }

    /// The name of the Secret that holds it.
    pub fn secret_name(&self) -> String {
        format!("{SECRET_PREFIX}{}", self.id)
    }
}

/// A join token as users pass it: `K10<CA hash>::<credentials>`, or bare
/// credentials (then the CA cannot be pinned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 (hex) of the cluster CA bundle, when the token carries it.
    pub ca_hash: Option<String>,
    /// What follows `::` (a bootstrap token, or a passphrase).
    pub credentials: String,
}

impl JoinToken {
    /// Parses a token; a `K10` token with a malformed hash is refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the token is empty".into());
        }
        if let Some(rest) = text.strip_prefix("K10")
            && let Some((hash, credentials)) = rest.split_once("::")
        {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "the token's CA hash {hash:?} is not a SHA-256 in hex (K10<64 hex digits>::<credentials>)"
                ));
            }
            if credentials.is_empty() {
                return Err("the token has no credentials after \"::\"".into());
            }
            return Ok(JoinToken {
                ca_hash: Some(hash.to_ascii_lowercase()),
                credentials: credentials.into(),
            });
        }
        Ok(JoinToken {
            ca_hash: None,
            credentials: text.into(),
        })
    }

    /// The secure form for a CA.
    pub fn secure(ca_pem: &str, credentials: &str) -> String {
        format!("K10{}::{credentials}", ca_hash(ca_pem))
    }

    /// The bootstrap token the credentials stand for.
    pub fn bootstrap_token(&self) -> BootstrapToken {
        BootstrapToken::from_credentials(&self.credentials)
    }
}

/// The hash a secure token pins: SHA-256 of the CA bundle as served at `/cacerts`.
pub fn ca_hash(ca_pem: &str) -> String {
    hex::encode(Sha256::digest(ca_pem.as_bytes()))
}

/// Whether `hash` pins this cluster's CA bundle, as it is or as it was
/// before CA rotations (each rotation puts the new CA in front of the
/// bundle): a server accepts its own tokens made before a rotation.
/// Joining nodes pin the bundle as served, strictly.
pub fn pins_cluster_ca(hash: &str, ca_pem: &str) -> bool {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    ca_pem
        .match_indices(BEGIN)
        .any(|(at, _)| ca_hash(&ca_pem[at..]) == hash)
}

/// What a new token Secret says.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    /// Shown by `kelp token list`.
    pub description: String,
    /// Expiry (RFC 3339), none for a token that lasts.
    pub expiration: Option<chrono::DateTime<chrono::Utc>>,
    /// `authentication`, `signing`.
    pub usages: Vec<String>,
    /// Extra groups (`system:bootstrappers:…`).
    pub groups: Vec<String>,
}

/// The Secret holding `token` (upstream's layout: stringData-like keys in data).
pub fn secret(token: &BootstrapToken, spec: &TokenSpec) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut data = serde_json::Map::new();
    data.insert("token-id".into(), json!(b64(&token.id)));
    data.insert("token-secret".into(), json!(b64(&token.secret)));
    if !spec.description.is_empty() {
        data.insert("description".into(), json!(b64(&spec.description)));
    }
    if let Some(expiration) = spec.expiration {
        data.insert(
            "expiration".into(),
            json!(b64(
                &expiration.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
        );
    }
    for usage in &spec.usages {
        data.insert(format!("usage-bootstrap-{usage}"), json!(b64("true")));
    }
    if !spec.groups.is_empty() {
        data.insert(
            "auth-extra-groups".into(),
            json!(b64(&spec.groups.join(","))),
        );
    }
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SECRET_TYPE,
        "metadata": {"name": token.secret_name(), "namespace": "kube-system"},
        "data": data,
    })
}

/// When the token Secret expires, if it does (a malformed date counts as expired).
pub fn expiration(secret: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = secret_data(secret, "expiration")?;
    Some(
        chrono::DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
    )
}

/// Whether an extra group is one a bootstrap token may carry.
pub fn valid_group(group: &str) -> bool {
    group
        .strip_prefix("system:bootstrappers:")
        .is_some_and(|rest| {
            !rest.is_empty()
                && rest.len() <= 256
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
                && rest
                    .bytes()
                    .last()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// The user a presented token authenticates as, given its Secret (looked up
/// by the token's id), or why not. Upstream's rules: the right type, the
/// same secret, usable for authentication, not expired, valid extra groups.
pub fn authenticate(
    token: &BootstrapToken,
    secret: &Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(String, Vec<String>), String> {
    if secret["type"] != SECRET_TYPE {
        return Err(format!(
            "secret {} is not a bootstrap token",
            token.secret_name()
        ));
    }
    if secret.pointer("/metadata/deletionTimestamp").is_some() {
        return Err("the token is being deleted".into());
    }
    let stored = secret_data(secret, "token-secret").unwrap_or_default();
    let same_id = secret_data(secret, "token-id").is_none_or(|id| id == token.id);
    if !same_id || !constant_time_eq(stored.as_bytes(), token.secret.as_bytes()) {
        return Err("the token's secret does not match".into());
    }
    if secret_data(secret, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return Err("the token may not be used for authentication".into());
    }
    if let Some(expiration) = expiration(secret)
        && expiration <= now
    {
        return Err(format!("the token expired at {expiration}"));
    }
    let mut groups = vec![BOOTSTRAPPERS.to_string()];
    if let Some(extra) = secret_data(secret, "auth-extra-groups") {
        for group in extra.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            if !valid_group(group) {
                return Err(format!(
                    "the token's extra group {group:?} is not system:bootstrappers:…"
                ));
            }
            if !groups.iter().any(|g| g == group) {
                groups.push(group.to_string());
            }
        }
    }
    groups.push("system:authenticated".into());
    Ok((format!("{USER_PREFIX}{}", token.id), groups))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }

    #[test]
    fn tokens_parse_and_generate_in_upstream_shape() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").expect("valid");
        assert_eq!(t.id, "abcdef");
        assert_eq!(t.to_string(), "abcdef.0123456789abcdef");
        assert_eq!(t.secret_name(), "bootstrap-token-abcdef");
        for bad in [
            "abcde.0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef0123456789abcdef",
            "abcdef.0123456789abcde_",
        ] {
            assert!(BootstrapToken::parse(bad).is_none(), "{bad}");
        }
        let g = BootstrapToken::generate();
        assert_eq!(BootstrapToken::parse(&g.to_string()), Some(g.clone()));
        assert_ne!(BootstrapToken::generate(), g);
        assert!(
            !format!("{g:?}").contains(&g.secret),
            "Debug hides the secret"
        );
    }

    #[test]
    fn a_passphrase_stands_for_the_same_token_everywhere() {
        let a = BootstrapToken::from_credentials("my cluster secret");
        assert_eq!(a, BootstrapToken::from_passphrase("my cluster secret"));
        assert_ne!(a, BootstrapToken::from_passphrase("another"));
        assert!(BootstrapToken::parse(&a.to_string()).is_some());
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").expect("valid");
        assert_eq!(
            BootstrapToken::from_credentials("abcdef.0123456789abcdef"),
            t
        );
    }

    #[test]
    fn secure_tokens_carry_the_ca_hash() {
        let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let text = JoinToken::secure(ca, "abcdef.0123456789abcdef");
        assert!(
            text.starts_with("K10") && text.contains("::abcdef."),
            "{text}"
        );
        let parsed = JoinToken::parse(&text).expect("parses");
        assert_eq!(parsed.ca_hash.as_deref(), Some(ca_hash(ca).as_str()));
        assert_eq!(parsed.bootstrap_token().id, "abcdef");
        assert_eq!(JoinToken::parse("plain").expect("bare").ca_hash, None);
        assert!(
            JoinToken::parse("K10abc::x")
                .unwrap_err()
                .contains("SHA-256")
        );
        assert!(JoinToken::parse(&format!("K10{}::", "a".repeat(64))).is_err());
        assert!(JoinToken::parse("  ").is_err());
    }

    fn stored(spec: &TokenSpec) -> (BootstrapToken, Value) {
        let token = BootstrapToken::parse("abcdef.0123456789abcdef").expect("valid");
        let s = secret(&token, spec);
        (token, s)
    }

    #[test]
    fn authentication_follows_upstream_rules() {
        let spec = TokenSpec {
            description: "join".into(),
            expiration: Some(now() + chrono::Duration::hours(1)),
            usages: vec!["authentication".into(), "signing".into()],
            groups: vec![DEFAULT_NODE_GROUP.into()],
        };
        let (token, s) = stored(&spec);
        assert_eq!(s["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(secret_data(&s, "description").as_deref(), Some("join"));
        let (user, groups) = authenticate(&token, &s, now()).expect("authenticates");
        assert_eq!(user, "system:bootstrap:abcdef");
        assert_eq!(
            groups,
            vec![BOOTSTRAPPERS, DEFAULT_NODE_GROUP, "system:authenticated"]
        );

        let wrong = BootstrapToken::parse("abcdef.0123456789abcdee").expect("valid");
        assert!(
            authenticate(&wrong, &s, now())
                .unwrap_err()
                .contains("does not match")
        );
        let later = now() + chrono::Duration::hours(2);
        assert!(
            authenticate(&token, &s, later)
                .unwrap_err()
                .contains("expired")
        );

        let (token, s) = stored(&TokenSpec {
            usages: vec!["signing".into()],
            ..spec.clone()
        });
        assert!(
            authenticate(&token, &s, now())
                .unwrap_err()
                .contains("authentication")
        );
        let (token, s) = stored(&TokenSpec {
            groups: vec!["system:masters".into()],
            ..spec.clone()
        });
        assert!(
            authenticate(&token, &s, now())
                .unwrap_err()
                .contains("extra group")
        );
        let (token, mut s) = stored(&spec);
        s["type"] = json!("Opaque");
        assert!(authenticate(&token, &s, now()).is_err());
        let (token, s) = stored(&TokenSpec {
            expiration: None,
            ..spec
        });
        assert!(authenticate(&token, &s, later).is_ok(), "no expiry lasts");
    }

    #[test]
    fn extra_groups_must_be_bootstrappers() {
        assert!(valid_group("system:bootstrappers:kelp:default-node-token"));
        assert!(!valid_group("system:bootstrappers:"));
        assert!(!valid_group("system:bootstrappers:Upper"));
        assert!(!valid_group("system:bootstrappers:trailing-"));
        assert!(!valid_group("system:nodes"));
    }

    #[test]
    fn a_server_knows_its_ca_before_a_rotation() {
        let old = "-----BEGIN CERTIFICATE-----\nOLD\n-----END CERTIFICATE-----\n";
        let bundle = format!("-----BEGIN CERTIFICATE-----\nNEW\n-----END CERTIFICATE-----\n{old}");
        assert!(pins_cluster_ca(&ca_hash(&bundle), &bundle));
        assert!(pins_cluster_ca(&ca_hash(old), &bundle));
        assert!(!pins_cluster_ca(&ca_hash("other"), &bundle));
        assert!(!pins_cluster_ca(&ca_hash(&bundle), old));
    }
}
