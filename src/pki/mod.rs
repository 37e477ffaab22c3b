//! Certificates and credentials: the cluster CA, the API server's serving
//! certificate, the admin client certificate and kubeconfig, and the
//! service-account signing key. Made at first start, reused afterwards;
//! leaf certificates are re-issued once less than [`RENEW_BEFORE_DAYS`] of
//! their validity remain (at start, as k3s, and while running: see
//! [`ClusterPki::renew_at`]).

pub mod bootstrap_token;
pub mod csr;
pub mod identity;
pub mod node_password;
pub mod reloadable;
pub mod serviceaccount;
pub mod shared;
pub mod tls;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Validity of the CA (10 years, as k3s).
const CA_DAYS: i64 = 3650;
/// Validity of leaf certificates (1 year, as k3s).
const LEAF_DAYS: i64 = 365;
/// Leaf certificates with less validity left than this are re-issued.
pub const RENEW_BEFORE_DAYS: i64 = 120;

/// The cluster's PEM-encoded credentials, as kept under `<data-dir>/server/tls/`.
#[derive(Debug, Clone)]
pub struct ClusterPki {
    /// Directory holding the files.
    pub dir: PathBuf,
    /// CA certificates (PEM): the CA that signs now first, then those it
    /// replaced (`kelp certificate rotate-ca`); all are trusted.
    pub ca_cert: String,
    /// The signing CA's certificate cross-signed by the CA it replaced
    /// (PEM; empty before any rotation): sent after every leaf, so clients
    /// that trust only the previous CA verify what the new one signs.
    pub ca_chain: String,
    /// CA key (PEM): signs approved certificate requests.
    pub ca_key: String,
    /// Serving certificate chain and key (PEM).
    pub serving_cert: String,
    /// Serving key (PEM).
    pub serving_key: String,
    /// Admin client certificate (PEM), O=system:masters.
    pub admin_cert: String,
    /// Admin client key (PEM).
    pub admin_key: String,
    /// Service-account signing key (PKCS#8 PEM, ECDSA P-256).
    pub service_account_key: String,
}

/// What the serving certificate must name.
#[derive(Debug, Clone, Default)]
pub struct ServingNames {
    /// DNS names (hostname, `--tls-san` names).
    pub dns: Vec<String>,
    /// IP addresses (node IP, 127.0.0.1, first service IP, `--tls-san` IPs).
    pub ips: Vec<IpAddr>,
}

impl ClusterPki {
    /// Loads the credentials in `dir`, creating what is missing. The serving
    /// certificate is re-issued when it lacks one of `names`.
    pub fn load_or_create(dir: &Path, names: &ServingNames) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        restrict(dir, 0o700)?;
        let (ca_cert, ca_key) = ensure_pair(dir, "server-ca", || {
            let key = KeyPair::generate()?;
            let cert = ca_params("kelp-server-ca")?.self_signed(&key)?;
            Ok((cert.pem(), key.serialize_pem()))
        })?;
        let ca_chain = std::fs::read_to_string(dir.join(CA_CHAIN_FILE)).unwrap_or_default();
        let ca_keypair = KeyPair::from_pem(&ca_key).context("parsing CA key")?;
        let issuer =
            Issuer::from_ca_cert_pem(&ca_cert, ca_keypair).context("parsing CA certificate")?;

        let wanted = serving_sans(names);
        let serving_path = dir.join("serving-kube-apiserver.crt");
        if let Ok(existing) = std::fs::read_to_string(&serving_path)
            && !covers(&existing, &wanted)
        {
            std::fs::remove_file(&serving_path).ok();
        }
        for stem in ["serving-kube-apiserver", "client-admin"] {
            let path = dir.join(format!("{stem}.crt"));
            if let Ok(existing) = std::fs::read_to_string(&path)
                && expires_within(&existing, time::Duration::days(RENEW_BEFORE_DAYS))
            {
                tracing::info!(certificate = %path.display(), "renewing a certificate that expires within {RENEW_BEFORE_DAYS} days");
                std::fs::remove_file(&path).ok();
            }
        }
        let chained = |(cert, key): (String, String)| (format!("{cert}{ca_chain}"), key);
        let (serving_cert, serving_key) = ensure_pair(dir, "serving-kube-apiserver", || {
            leaf(
                &issuer,
                "kube-apiserver",
                None,
                wanted.clone(),
                ExtendedKeyUsagePurpose::ServerAuth,
            )
            .map(chained)
        })?;
        let (admin_cert, admin_key) = ensure_pair(dir, "client-admin", || {
            leaf(
                &issuer,
                "system:admin",
                Some("system:masters"),
                vec![],
                ExtendedKeyUsagePurpose::ClientAuth,
            )
            .map(chained)
        })?;
        let sa_path = dir.join("service.key");
        let service_account_key = match std::fs::read_to_string(&sa_path) {
            Ok(pem) => pem,
            Err(_) => {
                let pem = KeyPair::generate()?.serialize_pem();
                write_secret(&sa_path, &pem)?;
                pem
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            ca_cert,
            ca_chain,
            ca_key,
            serving_cert,
            serving_key,
            admin_cert,
            admin_key,
            service_account_key,
        })
    }

    /// When the first leaf certificate is due for renewal (the server
    /// reloads its credentials then, without a restart).
    pub fn renew_at(&self) -> Option<time::OffsetDateTime> {
        [&self.serving_cert, &self.admin_cert]
            .into_iter()
            .filter_map(|pem| not_after(pem))
            .min()
            .map(|t| t - time::Duration::days(RENEW_BEFORE_DAYS))
    }

    /// An admin kubeconfig pointing at `server` (e.g. `https://127.0.0.1:6443`).
    pub fn admin_kubeconfig(&self, server: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\npreferences: {{}}\nusers:\n- name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&self.ca_cert),
            b64(&self.admin_cert),
            b64(&self.admin_key)
        )
    }
}

/// One key of a Secret's `data`, base64-decoded to text.
pub fn secret_data(secret: &serde_json::Value, key: &str) -> Option<String> {
    let encoded = secret.pointer(&format!("/data/{key}"))?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// Writes `content` to `path` with `mode`, creating parent directories.
pub fn write_file_mode(path: &Path, content: &str, mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
    restrict(&tmp, mode)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn write_secret(path: &Path, content: &str) -> Result<()> {
    write_file_mode(path, content, 0o600)
}

fn restrict(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode of {}", path.display()))
}

/// Reads `<stem>.crt`/`<stem>.key` from `dir`, or makes and writes them.
fn ensure_pair(
    dir: &Path,
    stem: &str,
    make: impl FnOnce() -> Result<(String, String), rcgen::Error>,
) -> Result<(String, String)> {
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    if let (Ok(cert), Ok(key)) = (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) {
        return Ok((cert, key));
    }
    let (cert, key) = make().with_context(|| format!("generating {stem}"))?;
    write_secret(&key_path, &key)?;
    write_file_mode(&cert_path, &cert, 0o644)?;
    Ok((cert, key))
}

/// A CA certificate's settings: 10 years, signing certificates.
fn ca_params(common_name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(common_name, None);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_DAYS);
    Ok(params)
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // Back-date an hour so a node with a slightly slow clock accepts the certificate.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    organization: Option<&str>,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(common_name, organization);
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    validity(&mut params, LEAF_DAYS);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn serving_sans(names: &ServingNames) -> Vec<SanType> {
    let mut sans = Vec::new();
    let mut dns: Vec<String> = vec![
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
    ];
    dns.extend(names.dns.iter().cloned());
    dns.dedup();
    for d in dns {
        if let Ok(ia5) = d.clone().try_into() {
            sans.push(SanType::DnsName(ia5));
        }
    }
    let mut ips = vec![IpAddr::from([127, 0, 0, 1])];
    ips.extend(names.ips.iter().copied());
    ips.dedup();
    sans.extend(ips.into_iter().map(SanType::IpAddress));
    sans
}

/// The leaf certificates `kelp certificate rotate --service` names, with
/// k3s's service names: (service, file stem).
pub const LEAVES: &[(&str, &str)] = &[
    ("admin", "client-admin"),
    ("api-server", "serving-kube-apiserver"),
];

/// Sets the leaf certificates of `services` (all if empty) aside, with a
/// copy of the whole directory in `<dir>-<unix seconds>` as k3s does, so
/// the next start issues new ones. Returns the backup's path.
pub fn rotate(dir: &Path, services: &[String]) -> Result<PathBuf> {
    for service in services {
        anyhow::ensure!(
            LEAVES.iter().any(|(name, _)| name == service),
            "unknown service {service:?}: kelp has {}",
            LEAVES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    anyhow::ensure!(dir.is_dir(), "{} holds no certificates", dir.display());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let backup = PathBuf::from(format!("{}-{stamp}", dir.display()));
    std::fs::create_dir_all(&backup).with_context(|| format!("creating {}", backup.display()))?;
    restrict(&backup, 0o700)?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file()
            && let Some(name) = path.file_name()
        {
            std::fs::copy(&path, backup.join(name))
                .with_context(|| format!("backing up {}", path.display()))?;
        }
    }
    for (service, stem) in LEAVES {
        if services.is_empty() || services.iter().any(|s| s == service) {
            for ext in ["crt", "key"] {
                let path = dir.join(format!("{stem}.{ext}"));
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("removing {}", path.display()));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(backup)
}

/// Where the signing CA's cross-signed certificate is kept (see [`ClusterPki::ca_chain`]).
const CA_CHAIN_FILE: &str = "server-ca-chain.crt";

/// Replaces the cluster CA (`kelp certificate rotate-ca`, with the server
/// stopped): a new CA key and certificate (`kelp-server-ca@<unix seconds>`,
/// as k3s names rotated CAs), which signs from the next start on; the same
/// certificate cross-signed by the current CA, sent after every leaf so
/// that clients and nodes that trust only the current CA keep verifying;
/// the trust bundle `server-ca.crt` holds the new CA first and the current
/// one after it, so certificates the current CA issued stay valid. Leaf
/// certificates are set aside (with a backup of the directory, as
/// [`rotate`]) for the next start to issue under the new CA. Returns the
/// backup's path.
pub fn rotate_ca(dir: &Path) -> Result<PathBuf> {
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .with_context(|| format!("reading {}", dir.join(file).display()))
    };
    let (bundle, current_key) = (read("server-ca.crt")?, read("server-ca.key")?);
    let current = Issuer::from_ca_cert_pem(
        &bundle,
        KeyPair::from_pem(&current_key).context("parsing the CA key")?,
    )
    .context("parsing the CA certificate")?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let key = KeyPair::generate()?;
    let params = ca_params(&format!("kelp-server-ca@{stamp}"))?;
    let own = params.self_signed(&key).context("signing the new CA")?;
    let cross = params
        .signed_by(&key, &current)
        .context("cross-signing the new CA")?;
    let backup = rotate(dir, &[])?;
    write_secret(&dir.join("server-ca.key"), &key.serialize_pem())?;
    write_file_mode(&dir.join(CA_CHAIN_FILE), &cross.pem(), 0o644)?;
    write_file_mode(
        &dir.join("server-ca.crt"),
        &format!("{}{bundle}", own.pem()),
        0o644,
    )?;
    Ok(backup)
}

/// The end of the validity of the (first) certificate in `pem`.
pub(crate) fn not_after(pem: &str) -> Option<time::OffsetDateTime> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.validity().not_after.to_datetime())
}

/// Whether the certificate in `pem` expires (or is unreadable) within `window`.
fn expires_within(pem: &str, window: time::Duration) -> bool {
    not_after(pem).is_none_or(|end| end - time::OffsetDateTime::now_utc() < window)
}

/// Whether the certificate in `pem` carries every SAN in `wanted`.
fn covers(pem: &str, wanted: &[SanType]) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(pem.as_bytes()) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let mut have_dns = Vec::new();
    let mut have_ips = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => have_dns.push(d.to_string()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => have_ips.push(IpAddr::from(
                    <[u8; 4]>::try_from(*bytes).unwrap_or_default(),
                )),
                16 => have_ips.push(IpAddr::from(
                    <[u8; 16]>::try_from(*bytes).unwrap_or_default(),
                )),
                _ => {}
            },
            _ => {}
        }
    }
    wanted.iter().all(|w| match w {
        SanType::DnsName(d) => have_dns.iter().any(|h| h == d.as_str()),
        SanType::IpAddress(ip) => have_ips.contains(ip),
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_near_their_end_are_reissued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = ServingNames::default();
        let first = ClusterPki::load_or_create(dir.path(), &names).expect("create");
        let due = first.renew_at().expect("renewal time");
        let in_a_year =
            time::OffsetDateTime::now_utc() + time::Duration::days(LEAF_DAYS - RENEW_BEFORE_DAYS);
        assert!((due - in_a_year).abs() < time::Duration::hours(2), "{due}");
        // A serving certificate with 30 days left, signed by the same CA.
        let ca_key = std::fs::read_to_string(dir.path().join("server-ca.key")).expect("key");
        let issuer =
            Issuer::from_ca_cert_pem(&first.ca_cert, KeyPair::from_pem(&ca_key).expect("key"))
                .expect("issuer");
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
        let short = params.signed_by(&key, &issuer).expect("sign");
        std::fs::write(dir.path().join("serving-kube-apiserver.crt"), short.pem()).expect("write");
        std::fs::write(
            dir.path().join("serving-kube-apiserver.key"),
            key.serialize_pem(),
        )
        .expect("write");
        let renewed = ClusterPki::load_or_create(dir.path(), &names).expect("renew");
        assert_ne!(renewed.serving_cert, short.pem());
        assert_eq!(renewed.ca_cert, first.ca_cert);
        assert!(!expires_within(
            &renewed.serving_cert,
            time::Duration::days(300)
        ));
    }

    /// Verifies `chain_pem` (leaf first) as a server certificate for
    /// `localhost` against `roots_pem`, as rustls clients (agents) do.
    fn verifies(roots_pem: &str, chain_pem: &str) -> bool {
        use rustls::client::danger::ServerCertVerifier;
        let mut roots = rustls::RootCertStore::empty();
        for ca in rustls_pemfile::certs(&mut roots_pem.as_bytes()) {
            roots.add(ca.expect("CA")).expect("root");
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let chain: Vec<_> = rustls_pemfile::certs(&mut chain_pem.as_bytes())
            .map(|c| c.expect("cert"))
            .collect();
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        verifier
            .verify_server_cert(
                &chain[0],
                &chain[1..],
                &name,
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .is_ok()
    }

    #[test]
    fn a_rotated_ca_is_trusted_by_clients_of_the_old_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = ServingNames::default();
        let before = ClusterPki::load_or_create(dir.path(), &names).expect("create");
        assert!(before.ca_chain.is_empty());
        assert!(verifies(&before.ca_cert, &before.serving_cert));
        rotate_ca(dir.path()).expect("rotate");
        let after = ClusterPki::load_or_create(dir.path(), &names).expect("reissue");
        assert_ne!(after.serving_cert, before.serving_cert);
        assert!(after.ca_cert.ends_with(&before.ca_cert));
        // The new serving chain verifies for old-CA clients (through the
        // cross-signed certificate) and for new ones.
        assert!(verifies(&before.ca_cert, &after.serving_cert));
        assert!(verifies(&after.ca_cert, &after.serving_cert));
        let new_only = after
            .ca_cert
            .strip_suffix(&before.ca_cert)
            .expect("new CA first");
        assert!(verifies(new_only, &after.serving_cert));
        // The old serving certificate is still trusted by the bundle.
        assert!(verifies(&after.ca_cert, &before.serving_cert));
        // The new CA signs.
        let issuer = Issuer::from_ca_cert_pem(
            &after.ca_cert,
            KeyPair::from_pem(&after.ca_key).expect("key"),
        );
        assert!(issuer.is_ok());
        assert_ne!(after.ca_key, before.ca_key);
    }

    #[test]
    fn creates_then_reuses_and_reissues_for_new_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = ServingNames {
            dns: vec!["edge-1".into()],
            ips: vec!["10.0.0.5".parse().expect("ip")],
        };
        let first = ClusterPki::load_or_create(dir.path(), &names).expect("create");
        let again = ClusterPki::load_or_create(dir.path(), &names).expect("reuse");
        assert_eq!(first.serving_cert, again.serving_cert);
        assert_eq!(first.ca_cert, again.ca_cert);
        let more = ServingNames {
            dns: vec!["edge-1".into(), "extra.example".into()],
            ips: names.ips.clone(),
        };
        let reissued = ClusterPki::load_or_create(dir.path(), &more).expect("reissue");
        assert_ne!(first.serving_cert, reissued.serving_cert);
        assert_eq!(first.ca_cert, reissued.ca_cert);
        assert!(
            first
                .admin_kubeconfig("https://127.0.0.1:6443")
                .contains("client-certificate-data")
        );
    }
}
