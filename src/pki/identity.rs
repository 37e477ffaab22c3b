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

/// The users a node's own components act as. A joined node gets their
/// client certificates without a human's approval (as k3s issues its
/// agents theirs); `kelp server`'s own node acts as them in-process.
pub mod node_components {
    /// The node's shared caches: every kind its components read, Secrets
    /// excepted (k3s's agents read as `system:k3s-controller`).
    pub const READER: &str = "system:kelp:node-reader";
    /// A joined node's cluster DNS (the server's runs as the `coredns`
    /// service account, as k3s's CoreDNS does).
    pub const DNS: &str = "system:kelp:coredns";
    /// A joined node's local-path provisioner.
    pub const LOCAL_STORAGE: &str = "system:kelp:local-path-provisioner";
    /// Every node's ingress proxy (its Secrets, its Ingresses' status).
    pub const INGRESS: &str = "system:kelp:ingress";
    /// All of them.
    pub const ALL: &[&str] = &[READER, DNS, LOCAL_STORAGE, INGRESS];
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
