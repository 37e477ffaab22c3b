//! Who a caller is: the user and groups a verified client certificate or a
//! service-account token names. Shared by the API server and the kubelet's
//! port, which authenticate the same identities.

/// Who is making a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct User {
    /// User name (certificate CN, or `system:serviceaccount:<ns>:<name>`).
    pub name: String,
    /// Groups (certificate O values, service-account groups).
    pub groups: Vec<String>,
}

impl User {
    /// A service account's user: `system:serviceaccount:<ns>:<name>` in the
    /// service-account groups.
    pub fn service_account(namespace: &str, name: &str) -> User {
        User {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: service_account_groups(namespace),
        }
    }
}

/// The groups of every service account of `namespace`.
pub fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".into(),
    ]
}

/// The identity the connection itself proves: a verified TLS client certificate,
/// or an in-process client (see `client.rs`). Never read from the request.
#[derive(Debug, Clone)]
pub struct ConnectionIdentity(pub User);

/// Reads user and groups from a verified certificate (DER): CN and O values.
pub fn user_from_certificate(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    groups.push("system:authenticated".into());
    Some(User { name, groups })
}

/// The user a PEM certificate (its first) names; not a verification.
pub fn user_from_pem(pem: &str) -> Option<User> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    user_from_certificate(&block.contents)
}
