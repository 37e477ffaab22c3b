//! The certificate side of CertificateSigningRequests (certificates.k8s.io/v1)
//! for node join: reading a request (`spec.request`, a PEM "CERTIFICATE
//! REQUEST" whose self-signature must verify), the kubelet client/serving
//! request rules the approver and the signers apply, the per-signer checks
//! the csrsigning controller makes before it signs, issuing the certificate
//! with the cluster CA, and, for the joining agent, making a request and
//! deciding when its certificate is due for renewal.
//!
//! Everything here is pure: no API objects, no I/O. The controllers and the
//! agent wrap it.
//!
//! The issued certificate carries the request's subject byte for byte (so a
//! client certificate may name several groups, which rcgen's
//! `DistinguishedName` cannot hold) and the CA certificate's subject as its
//! issuer: rcgen writes the certificate, then the two names are swapped in
//! and the to-be-signed part is signed again with the CA key.

use std::collections::BTreeSet;
use std::net::IpAddr;

use base64::Engine;
use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SigningKey,
    SubjectPublicKeyInfo,
};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME;
use x509_parser::prelude::FromDer;

/// Client certificates for the API server, for any user.
pub const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// Client certificates kubelets use towards the API server.
pub const KUBE_APISERVER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Serving certificates of kubelets.
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
/// The v1beta1-era signer with no rules; not accepted by the v1 API.
pub const LEGACY_UNKNOWN: &str = "kubernetes.io/legacy-unknown";

/// The group every node's certificate names as its only organization.
pub const NODES_GROUP: &str = "system:nodes";
/// The prefix of a node's user name (and certificate common name).
pub const NODE_USER_PREFIX: &str = "system:node:";

/// Kubernetes usage strings (`spec.usages`) the node rules refer to.
pub const USAGE_DIGITAL_SIGNATURE: &str = "digital signature";
/// See [`USAGE_DIGITAL_SIGNATURE`].
pub const USAGE_KEY_ENCIPHERMENT: &str = "key encipherment";
/// See [`USAGE_DIGITAL_SIGNATURE`].
pub const USAGE_CLIENT_AUTH: &str = "client auth";
/// See [`USAGE_DIGITAL_SIGNATURE`].
pub const USAGE_SERVER_AUTH: &str = "server auth";

/// How far before "now" an issued certificate's validity starts, for clocks
/// that run a little behind (upstream's signer backdates by 5 minutes too).
pub const BACKDATE: Duration = Duration::minutes(5);
/// Certificates living shorter than this keep their full requested lifetime;
/// longer ones lose the backdate at the end (as upstream).
const SHORT_LIVED: Duration = Duration::hours(8);
/// The shortest lifetime issued, whatever `expirationSeconds` asks (600 s,
/// twice the backdate; the API refuses smaller values anyway).
pub const MIN_DURATION: Duration = Duration::minutes(10);
/// The share of its lifetime after which [`renew_due`] says a certificate
/// should be replaced (upstream's kubelet picks 70–90 % at random; see
/// [`renew_at`] to pass a fraction of your own).
pub const RENEW_FRACTION: f64 = 0.8;

/// Why a request could not be read or a certificate not issued.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// `spec.request` holds no PEM "CERTIFICATE REQUEST" block.
    #[error("reading the request's PEM: {0}")]
    Pem(String),
    /// The DER inside the PEM block is not a PKCS#10 request kelp can read.
    #[error("parsing the certificate request: {0}")]
    Parse(String),
    /// The request is not signed by the key it carries.
    #[error("the certificate request's signature does not verify: {0}")]
    Signature(String),
    /// The request's public key is of a kind kelp cannot put in a certificate.
    #[error("unsupported public key in the certificate request: {0}")]
    PublicKey(#[source] rcgen::Error),
    /// Usage strings with no X.509 meaning.
    #[error("unrecognized usage values: {}", .0.join(", "))]
    Usages(Vec<String>),
    /// The CA certificate cannot be read.
    #[error("reading the CA certificate: {0}")]
    CaCert(String),
    /// The CA key cannot be read.
    #[error("reading the CA key: {0}")]
    CaKey(#[source] rcgen::Error),
    /// The CA key is not the one the CA certificate names.
    #[error("the CA key does not belong to the CA certificate")]
    CaKeyMismatch,
    /// The CA certificate is no longer valid.
    #[error("the CA certificate expired at {0}; refusing to sign")]
    CaExpired(OffsetDateTime),
    /// A request name that cannot be written into a certificate.
    #[error("{what} {value:?} cannot be written into a certificate: {source}")]
    Name {
        /// Which kind of name.
        what: &'static str,
        /// The name.
        value: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// rcgen failed.
    #[error("{context}: {source}")]
    Rcgen {
        /// What was being done.
        context: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// Swapping the names into the DER and signing again failed.
    #[error("re-encoding the {what}: {reason}")]
    Der {
        /// Certificate or request.
        what: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// What a CertificateSigningRequest's `spec.request` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedRequest {
    /// The subject's common name (the last one, if several).
    pub common_name: String,
    /// The subject's organizations, in order (the groups of a client certificate).
    pub organizations: Vec<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Email (RFC 822) subject alternative names.
    pub emails: Vec<String>,
    /// URI subject alternative names.
    pub uris: Vec<String>,
    /// The subject Name as DER, copied into the issued certificate.
    pub subject_der: Vec<u8>,
    /// The requester's SubjectPublicKeyInfo as DER.
    pub public_key_der: Vec<u8>,
}

/// Reads and verifies a PEM-encoded PKCS#10 request (the decoded bytes of a
/// CSR object's `spec.request`). The first PEM block must be a
/// "CERTIFICATE REQUEST"; its signature must verify with its own key.
pub fn parse(pem: &[u8]) -> Result<ParsedRequest, CsrError> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| CsrError::Pem(e.to_string()))?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err(CsrError::Pem(format!(
            "the PEM block is a {:?}, not a \"CERTIFICATE REQUEST\"",
            block.label
        )));
    }
    parse_der(&block.contents)
}

fn parse_der(der: &[u8]) -> Result<ParsedRequest, CsrError> {
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Parse(format!(
            "{} bytes of trailing data after the request",
            rest.len()
        )));
    }
    csr.verify_signature()
        .map_err(|e| CsrError::Signature(e.to_string()))?;
    let info = &csr.certification_request_info;
    let text = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>, what: &str| {
        attr.as_str()
            .map(str::to_string)
            .map_err(|e| CsrError::Parse(format!("the subject's {what} is not a string: {e}")))
    };
    let common_name = match info.subject.iter_common_name().last() {
        Some(cn) => text(cn, "common name")?,
        None => String::new(),
    };
    let organizations = info
        .subject
        .iter_organization()
        .map(|o| text(o, "organization"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut req = ParsedRequest {
        common_name,
        organizations,
        subject_der: info.subject.as_raw().to_vec(),
        public_key_der: info.subject_pki.raw.to_vec(),
        ..ParsedRequest::default()
    };
    for attr in info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(request) = attr.parsed_attribute() else {
            continue;
        };
        for ext in &request.extensions {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        add_san(&mut req, name)?;
                    }
                }
                ParsedExtension::ParseError { error }
                    if ext.oid == OID_X509_EXT_SUBJECT_ALT_NAME =>
                {
                    return Err(CsrError::Parse(format!(
                        "malformed subjectAltName extension: {error}"
                    )));
                }
                _ => {}
            }
        }
    }
    Ok(req)
}

/// Records one subject alternative name; kinds other than DNS, IP, email
/// and URI are ignored (they are not copied into certificates either).
fn add_san(req: &mut ParsedRequest, name: &GeneralName<'_>) -> Result<(), CsrError> {
    match name {
        GeneralName::DNSName(d) => req.dns_names.push(d.to_string()),
        GeneralName::RFC822Name(e) => req.emails.push(e.to_string()),
        GeneralName::URI(u) => req.uris.push(u.to_string()),
        GeneralName::IPAddress(bytes) => {
            let ip = match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).map(IpAddr::from).ok(),
                16 => <[u8; 16]>::try_from(*bytes).map(IpAddr::from).ok(),
                _ => None,
            };
            req.ip_addresses.push(ip.ok_or_else(|| {
                CsrError::Parse(format!(
                    "an IP subjectAltName of {} bytes (want 4 or 16)",
                    bytes.len()
                ))
            })?);
        }
        _ => {}
    }
    Ok(())
}

/// The node a kubelet request is for: its common name without
/// [`NODE_USER_PREFIX`] (`None` when the prefix is missing or nothing follows).
pub fn node_name(req: &ParsedRequest) -> Option<&str> {
    req.common_name
        .strip_prefix(NODE_USER_PREFIX)
        .filter(|name| !name.is_empty())
}

fn usage_set(usages: &[String]) -> BTreeSet<&str> {
    usages.iter().map(String::as_str).collect()
}

/// Whether `usages` (as a set) is `required`, or `required` plus key encipherment.
fn usages_match(usages: &[String], required: &[&str]) -> bool {
    let have = usage_set(usages);
    let mut want: BTreeSet<&str> = required.iter().copied().collect();
    if have == want {
        return true;
    }
    want.insert(USAGE_KEY_ENCIPHERMENT);
    have == want
}

fn check_nodes_group(req: &ParsedRequest) -> Result<(), String> {
    if req.organizations.len() == 1 && req.organizations[0] == NODES_GROUP {
        Ok(())
    } else {
        Err(format!(
            "the subject's organizations must be exactly [{NODES_GROUP}], got {:?}",
            req.organizations
        ))
    }
}

fn check_node_common_name(req: &ParsedRequest) -> Result<(), String> {
    if req.common_name.starts_with(NODE_USER_PREFIX) {
        Ok(())
    } else {
        Err(format!(
            "the subject's common name {:?} does not start with {NODE_USER_PREFIX}",
            req.common_name
        ))
    }
}

/// Whether a request is a well-formed kubelet client certificate request
/// (see [`validate_kubelet_client`]).
pub fn is_kubelet_client(req: &ParsedRequest, usages: &[String]) -> bool {
    validate_kubelet_client(req, usages).is_ok()
}

/// The rules for a kubelet's client certificate: organization exactly
/// `system:nodes`, no subject alternative names of any kind, a common name
/// starting `system:node:`, and usages "client auth" and "digital signature"
/// with "key encipherment" optional (RSA keys). The checks run in upstream's
/// order, so the first failure reported is the same.
pub fn validate_kubelet_client(req: &ParsedRequest, usages: &[String]) -> Result<(), String> {
    check_nodes_group(req)?;
    if !req.dns_names.is_empty() {
        return Err("a kubelet client certificate may not carry DNS subjectAltNames".into());
    }
    if !req.emails.is_empty() {
        return Err("a kubelet client certificate may not carry email subjectAltNames".into());
    }
    if !req.ip_addresses.is_empty() {
        return Err("a kubelet client certificate may not carry IP subjectAltNames".into());
    }
    if !req.uris.is_empty() {
        return Err("a kubelet client certificate may not carry URI subjectAltNames".into());
    }
    check_node_common_name(req)?;
    if !usages_match(usages, &[USAGE_CLIENT_AUTH, USAGE_DIGITAL_SIGNATURE]) {
        return Err(format!(
            "usages must be {USAGE_CLIENT_AUTH:?} and {USAGE_DIGITAL_SIGNATURE:?}, \
             optionally with {USAGE_KEY_ENCIPHERMENT:?}; got {usages:?}"
        ));
    }
    Ok(())
}

/// Whether a request is a well-formed kubelet serving certificate request
/// (see [`validate_kubelet_serving`]).
pub fn is_kubelet_serving(req: &ParsedRequest, usages: &[String]) -> bool {
    validate_kubelet_serving(req, usages).is_ok()
}

/// The rules for a kubelet's serving certificate: organization exactly
/// `system:nodes`, at least one DNS or IP subject alternative name, no email
/// or URI ones, usages "server auth" and "digital signature" with "key
/// encipherment" optional, and a common name starting `system:node:`.
/// The checks run in upstream's order.
pub fn validate_kubelet_serving(req: &ParsedRequest, usages: &[String]) -> Result<(), String> {
    check_nodes_group(req)?;
    if req.dns_names.is_empty() && req.ip_addresses.is_empty() {
        return Err(
            "a kubelet serving certificate needs at least one DNS or IP subjectAltName".into(),
        );
    }
    if !req.emails.is_empty() {
        return Err("a kubelet serving certificate may not carry email subjectAltNames".into());
    }
    if !req.uris.is_empty() {
        return Err("a kubelet serving certificate may not carry URI subjectAltNames".into());
    }
    if !usages_match(usages, &[USAGE_SERVER_AUTH, USAGE_DIGITAL_SIGNATURE]) {
        return Err(format!(
            "usages must be {USAGE_SERVER_AUTH:?} and {USAGE_DIGITAL_SIGNATURE:?}, \
             optionally with {USAGE_KEY_ENCIPHERMENT:?}; got {usages:?}"
        ));
    }
    check_node_common_name(req)?;
    Ok(())
}

/// What the csrapproving controller recognizes as a node client request
/// (its "nodeclient" check): the kubelet client signer and a valid kubelet
/// client request.
pub fn is_node_client(signer_name: &str, req: &ParsedRequest, usages: &[String]) -> bool {
    signer_name == KUBE_APISERVER_CLIENT_KUBELET && is_kubelet_client(req, usages)
}

/// The "selfnodeclient" case: a node client request made by the node the
/// certificate names (`username`, the CSR's `spec.username`, equals the
/// common name): a node renewing its own certificate.
pub fn is_self_node_client(
    signer_name: &str,
    req: &ParsedRequest,
    usages: &[String],
    username: &str,
) -> bool {
    username == req.common_name && is_node_client(signer_name, req, usages)
}

/// Why a signer does not sign an (approved) request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignerRefusal {
    /// Not a signer kelp implements: leave the CSR alone (another signer
    /// may handle it).
    #[error("signer {0:?} is not one kelp signs for")]
    NotOurs(String),
    /// The request breaks the signer's rules: the CSR should be marked
    /// Failed (reason `SignerValidationFailure`) with this message.
    #[error("{0}")]
    Invalid(String),
}

/// What the csrsigning controller checks for `signer_name` before it signs
/// an approved request:
/// - for [`KUBE_APISERVER_CLIENT`], usages "client auth" (required),
///   "digital signature" and "key encipherment" (optional), nothing else;
///   the subject is not restricted here;
/// - for [`KUBE_APISERVER_CLIENT_KUBELET`], [`validate_kubelet_client`];
/// - for [`KUBELET_SERVING`], [`validate_kubelet_serving`];
/// - for [`LEGACY_UNKNOWN`], a refusal: upstream's signer would sign it
///   without rules, but the v1 API does not accept that signer name, and
///   kelp serves only v1, so such a request can only come from outside
///   the API;
/// - for any other signer, [`SignerRefusal::NotOurs`].
pub fn check_signer(
    signer_name: &str,
    req: &ParsedRequest,
    usages: &[String],
) -> Result<(), SignerRefusal> {
    match signer_name {
        KUBE_APISERVER_CLIENT => check_apiserver_client_usages(usages),
        KUBE_APISERVER_CLIENT_KUBELET => validate_kubelet_client(req, usages),
        KUBELET_SERVING => validate_kubelet_serving(req, usages),
        LEGACY_UNKNOWN => Err(format!(
            "kelp does not sign for {LEGACY_UNKNOWN}: that signer has no rules and is not \
             accepted by certificates.k8s.io/v1; use {KUBE_APISERVER_CLIENT}, \
             {KUBE_APISERVER_CLIENT_KUBELET} or {KUBELET_SERVING}"
        )),
        other => return Err(SignerRefusal::NotOurs(other.to_string())),
    }
    .map_err(SignerRefusal::Invalid)
}

fn check_apiserver_client_usages(usages: &[String]) -> Result<(), String> {
    let mut client_auth = false;
    for usage in usages {
        match usage.as_str() {
            USAGE_CLIENT_AUTH => client_auth = true,
            USAGE_DIGITAL_SIGNATURE | USAGE_KEY_ENCIPHERMENT => {}
            other => {
                return Err(format!(
                    "usage {other:?} is not allowed in an API server client certificate"
                ));
            }
        }
    }
    if client_auth {
        Ok(())
    } else {
        Err(format!(
            "an API server client certificate needs the {USAGE_CLIENT_AUTH:?} usage"
        ))
    }
}

enum Usage {
    Key(KeyUsagePurpose),
    Extended(ExtendedKeyUsagePurpose),
}

/// The X.509 meaning of a Kubernetes usage string.
fn x509_usage(usage: &str) -> Option<Usage> {
    use ExtendedKeyUsagePurpose as E;
    use KeyUsagePurpose as K;
    let other = |oid: &[u64]| Some(Usage::Extended(E::Other(oid.to_vec())));
    let key = |k| Some(Usage::Key(k));
    let ext = |e| Some(Usage::Extended(e));
    match usage {
        "signing" | "digital signature" => key(K::DigitalSignature),
        "content commitment" => key(K::ContentCommitment),
        "key encipherment" => key(K::KeyEncipherment),
        "key agreement" => key(K::KeyAgreement),
        "data encipherment" => key(K::DataEncipherment),
        "cert sign" => key(K::KeyCertSign),
        "crl sign" => key(K::CrlSign),
        "encipher only" => key(K::EncipherOnly),
        "decipher only" => key(K::DecipherOnly),
        "any" => ext(E::Any),
        "server auth" => ext(E::ServerAuth),
        "client auth" => ext(E::ClientAuth),
        "code signing" => ext(E::CodeSigning),
        "email protection" | "s/mime" => ext(E::EmailProtection),
        "ipsec end system" => other(&[1, 3, 6, 1, 5, 5, 7, 3, 5]),
        "ipsec tunnel" => other(&[1, 3, 6, 1, 5, 5, 7, 3, 6]),
        "ipsec user" => other(&[1, 3, 6, 1, 5, 5, 7, 3, 7]),
        "timestamping" => ext(E::TimeStamping),
        "ocsp signing" => ext(E::OcspSigning),
        "microsoft sgc" => other(&[1, 3, 6, 1, 4, 1, 311, 10, 3, 3]),
        "netscape sgc" => other(&[2, 16, 840, 1, 113730, 4, 1]),
        _ => None,
    }
}

/// Key usages and extended key usages for Kubernetes usage strings
/// (duplicates collapse); unknown strings are an error.
fn x509_usages(
    usages: &[String],
) -> Result<(Vec<KeyUsagePurpose>, Vec<ExtendedKeyUsagePurpose>), CsrError> {
    let mut key = Vec::new();
    let mut extended = Vec::new();
    let mut unknown = Vec::new();
    for usage in usages {
        match x509_usage(usage) {
            Some(Usage::Key(k)) if !key.contains(&k) => key.push(k),
            Some(Usage::Extended(e)) if !extended.contains(&e) => extended.push(e),
            Some(_) => {}
            None => unknown.push(usage.clone()),
        }
    }
    if unknown.is_empty() {
        Ok((key, extended))
    } else {
        Err(CsrError::Usages(unknown))
    }
}

/// The lifetime to issue: the default without `expiration_seconds`, else the
/// requested one, capped at the default and raised to [`MIN_DURATION`].
fn lifetime(expiration_seconds: Option<i64>, default_duration: Duration) -> Duration {
    match expiration_seconds.map(Duration::seconds) {
        None => default_duration,
        Some(asked) if asked > default_duration => default_duration,
        Some(asked) if asked < MIN_DURATION => MIN_DURATION,
        Some(asked) => asked,
    }
}

/// Issues a certificate (PEM) for the request `req_pem` with the CA, as the
/// csrsigning controller does once a request is approved and has passed
/// [`check_signer`] (this function applies no signer rules of its own).
///
/// The certificate carries the request's subject and its DNS, email, IP and
/// URI names, no other extension from the request; key usage and extended
/// key usage come from `usages`; it is not a CA. It is valid from now −
/// [`BACKDATE`] for `default_duration`, or for `expiration_seconds` when
/// given (capped at `default_duration`, raised to [`MIN_DURATION`]);
/// lifetimes of 8 hours or more end [`BACKDATE`] early, as upstream's; and
/// never past the CA's own end.
pub fn sign(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    req_pem: &[u8],
    usages: &[String],
    expiration_seconds: Option<i64>,
    default_duration: Duration,
) -> Result<String, CsrError> {
    sign_at(
        ca_cert_pem,
        ca_key_pem,
        req_pem,
        usages,
        lifetime(expiration_seconds, default_duration),
        OffsetDateTime::now_utc(),
    )
}

fn sign_at(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    req_pem: &[u8],
    usages: &[String],
    ttl: Duration,
    now: OffsetDateTime,
) -> Result<String, CsrError> {
    let req = parse(req_pem)?;
    let (key_usages, extended_key_usages) = x509_usages(usages)?;

    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(CsrError::CaKey)?;
    let (_, ca_block) = x509_parser::pem::parse_x509_pem(ca_cert_pem.as_bytes())
        .map_err(|e| CsrError::CaCert(e.to_string()))?;
    let ca = ca_block
        .parse_x509()
        .map_err(|e| CsrError::CaCert(e.to_string()))?;
    if ca.public_key().subject_public_key.data.as_ref() != ca_key.der_bytes() {
        return Err(CsrError::CaKeyMismatch);
    }
    let ca_not_after = ca.validity().not_after.to_datetime();
    if now >= ca_not_after {
        return Err(CsrError::CaExpired(ca_not_after));
    }
    let ca_key_id = ca
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        });

    let mut params = CertificateParams::default();
    params.distinguished_name = placeholder_name(&req.subject_der);
    params.not_before = now - BACKDATE;
    let end = if ttl < SHORT_LIVED {
        now + ttl
    } else {
        now + ttl - BACKDATE
    };
    params.not_after = end.min(ca_not_after);
    let mut serial: [u8; 16] = rand::random();
    serial[0] = (serial[0] & 0x7f) | 0x40; // positive, full length
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = key_usages;
    params.extended_key_usages = extended_key_usages;
    params.use_authority_key_identifier_extension = ca_key_id.is_some();
    params.subject_alt_names = subject_alt_names(&req)?;

    let public_key =
        SubjectPublicKeyInfo::from_der(&req.public_key_der).map_err(CsrError::PublicKey)?;
    let mut issuer_params = CertificateParams::default();
    issuer_params.key_identifier_method = KeyIdMethod::PreSpecified(ca_key_id.unwrap_or_default());
    let issuer = Issuer::new(issuer_params, ca_key);
    let draft = params
        .signed_by(&public_key, &issuer)
        .map_err(|source| CsrError::Rcgen {
            context: "writing the certificate",
            source,
        })?;

    let der = {
        let (_, cert) = X509Certificate::from_der(draft.der()).map_err(|e| CsrError::Der {
            what: "certificate",
            reason: e.to_string(),
        })?;
        let tbs = &cert.tbs_certificate;
        resign(
            draft.der(),
            tbs.as_ref(),
            &[
                (tbs.issuer.as_raw(), ca.subject().as_raw()),
                (tbs.subject.as_raw(), &req.subject_der),
            ],
            issuer.key(),
            "certificate",
        )?
    };
    // The result must read back as a certificate.
    match X509Certificate::from_der(&der) {
        Ok(([], _)) => Ok(pem_encode("CERTIFICATE", &der)),
        Ok(_) => Err(CsrError::Der {
            what: "certificate",
            reason: "trailing bytes".into(),
        }),
        Err(e) => Err(CsrError::Der {
            what: "certificate",
            reason: e.to_string(),
        }),
    }
}

/// The request's names as rcgen SANs, in the order Go writes them.
fn subject_alt_names(req: &ParsedRequest) -> Result<Vec<SanType>, CsrError> {
    let ia5 = |what: &'static str, value: &String| {
        value.clone().try_into().map_err(|source| CsrError::Name {
            what,
            value: value.clone(),
            source,
        })
    };
    let mut sans = Vec::new();
    for dns in &req.dns_names {
        sans.push(SanType::DnsName(ia5("DNS name", dns)?));
    }
    for email in &req.emails {
        sans.push(SanType::Rfc822Name(ia5("email address", email)?));
    }
    sans.extend(req.ip_addresses.iter().copied().map(SanType::IpAddress));
    for uri in &req.uris {
        sans.push(SanType::URI(ia5("URI", uri)?));
    }
    Ok(sans)
}

/// Makes a request for the joining side: a fresh ECDSA P-256 key and a
/// PKCS#10 request for `common_name` with `organizations` (written before
/// the common name, one attribute each, as Go does) and the given DNS and
/// IP names. Returns (request PEM, private key PEM); the request PEM,
/// base64-encoded, is a CSR object's `spec.request`.
pub fn new_request(
    common_name: &str,
    organizations: &[&str],
    dns_names: &[String],
    ips: &[IpAddr],
) -> Result<(String, String), CsrError> {
    let key = KeyPair::generate().map_err(|source| CsrError::Rcgen {
        context: "generating a key",
        source,
    })?;
    let subject = encode_name(common_name, organizations);
    let mut params = CertificateParams::default();
    params.distinguished_name = placeholder_name(&subject);
    for dns in dns_names {
        let name = dns.clone().try_into().map_err(|source| CsrError::Name {
            what: "DNS name",
            value: dns.clone(),
            source,
        })?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    params
        .subject_alt_names
        .extend(ips.iter().copied().map(SanType::IpAddress));
    let draft = params
        .serialize_request(&key)
        .map_err(|source| CsrError::Rcgen {
            context: "writing the certificate request",
            source,
        })?;
    let der = {
        let (_, csr) =
            X509CertificationRequest::from_der(draft.der()).map_err(|e| CsrError::Der {
                what: "certificate request",
                reason: e.to_string(),
            })?;
        let info = &csr.certification_request_info;
        resign(
            draft.der(),
            info.raw,
            &[(info.subject.as_raw(), &subject)],
            &key,
            "certificate request",
        )?
    };
    Ok((pem_encode("CERTIFICATE REQUEST", &der), key.serialize_pem()))
}

/// The end of the validity of the (first) certificate in `cert_pem`.
pub fn not_after(cert_pem: &str) -> Option<OffsetDateTime> {
    super::not_after(cert_pem)
}

/// When the certificate in `cert_pem` has used up `fraction` (0–1) of its
/// lifetime (from not-before to not-after). Callers wanting upstream's
/// jitter pass a random fraction between 0.7 and 0.9.
pub fn renew_at(cert_pem: &str, fraction: f64) -> Option<OffsetDateTime> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let start = cert.validity().not_before.to_datetime();
    let end = cert.validity().not_after.to_datetime();
    Some(start + (end - start) * fraction.clamp(0.0, 1.0))
}

/// Whether the certificate in `cert_pem` should be replaced at `now`: it is
/// past [`RENEW_FRACTION`] of its lifetime, or unreadable.
pub fn renew_due(cert_pem: &str, now: OffsetDateTime) -> bool {
    renew_at(cert_pem, RENEW_FRACTION).is_none_or(|at| now >= at)
}

// ---- DER plumbing for swapping names into rcgen's output ----

/// The name rcgen writes until the real one (`subject_der`) is swapped in:
/// empty exactly when the real one is, since rcgen marks the subjectAltName
/// extension critical for an empty subject (RFC 5280 4.2.1.6).
fn placeholder_name(subject_der: &[u8]) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    if subject_der != [0x30, 0x00] {
        name.push(rcgen::DnType::CommonName, "placeholder");
    }
    name
}

/// A Name with one RDN per organization, then the common name (both as
/// UTF8String; empty ones left out).
fn encode_name(common_name: &str, organizations: &[&str]) -> Vec<u8> {
    const ORGANIZATION: [u8; 3] = [0x55, 0x04, 0x0a]; // 2.5.4.10
    const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03]; // 2.5.4.3
    let rdn = |oid: &[u8], value: &str| {
        let mut atv = der_tlv(0x06, oid);
        atv.extend(der_tlv(0x0c, value.as_bytes()));
        der_tlv(0x31, &der_tlv(0x30, &atv))
    };
    let mut rdns = Vec::new();
    for org in organizations.iter().filter(|o| !o.is_empty()) {
        rdns.extend(rdn(&ORGANIZATION, org));
    }
    if !common_name.is_empty() {
        rdns.extend(rdn(&COMMON_NAME, common_name));
    }
    der_tlv(0x30, &rdns)
}

/// A DER element with a one-byte `tag`.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// (header length, content length) of the DER element starting `der`
/// (one-byte tags only, which is all X.509 uses at these places).
fn der_header(der: &[u8]) -> Option<(usize, usize)> {
    let first = *der.get(1)?;
    if first < 0x80 {
        return Some((2, usize::from(first)));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let len = der
        .get(2..2 + n)?
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    Some((2 + n, len))
}

/// Where `inner` (a sub-slice) starts in `outer`.
fn offset_in(outer: &[u8], inner: &[u8]) -> Option<usize> {
    let start = inner.as_ptr().addr().checked_sub(outer.as_ptr().addr())?;
    (start + inner.len() <= outer.len()).then_some(start)
}

/// Rebuilds a signed object (`SEQUENCE { info, algorithm, BIT STRING
/// signature }`, a certificate or a request): inside `info` (a sub-slice of
/// `signed`) each `(old, new)` of `swaps` (sub-slices of `info`, in order)
/// is replaced, and the new info is signed with `key` under the same
/// algorithm.
fn resign(
    signed: &[u8],
    info: &[u8],
    swaps: &[(&[u8], &[u8])],
    key: &KeyPair,
    what: &'static str,
) -> Result<Vec<u8>, CsrError> {
    let fail = |reason: &str| CsrError::Der {
        what,
        reason: reason.to_string(),
    };
    let info_at = offset_in(signed, info).ok_or_else(|| fail("the signed part is misplaced"))?;
    let (header, _) = der_header(info).ok_or_else(|| fail("unreadable header"))?;
    let mut content = Vec::with_capacity(info.len());
    let mut pos = header;
    for (old, new) in swaps {
        let at = offset_in(info, old)
            .filter(|at| *at >= pos)
            .ok_or_else(|| fail("a name is misplaced"))?;
        content.extend_from_slice(&info[pos..at]);
        content.extend_from_slice(new);
        pos = at + old.len();
    }
    content.extend_from_slice(&info[pos..]);
    let new_info = der_tlv(0x30, &content);

    let rest = &signed[info_at + info.len()..];
    let (alg_header, alg_len) =
        der_header(rest).ok_or_else(|| fail("unreadable signature algorithm"))?;
    let algorithm = rest
        .get(..alg_header + alg_len)
        .ok_or_else(|| fail("truncated signature algorithm"))?;
    let signature = key.sign(&new_info).map_err(|source| CsrError::Rcgen {
        context: "signing",
        source,
    })?;
    let mut bits = Vec::with_capacity(signature.len() + 1);
    bits.push(0); // no unused bits
    bits.extend(signature);

    let mut body = new_info;
    body.extend_from_slice(algorithm);
    body.extend(der_tlv(0x03, &bits));
    Ok(der_tlv(0x30, &body))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, DnType};
    use x509_parser::extensions::GeneralName;

    fn usages(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn client_usages() -> Vec<String> {
        usages(&["digital signature", "client auth"])
    }

    fn serving_usages() -> Vec<String> {
        usages(&["digital signature", "key encipherment", "server auth"])
    }

    /// A CA valid from an hour ago until `valid_for` from now.
    fn ca(valid_for: Duration) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "kelp-test-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + valid_for;
        let cert = params.self_signed(&key).expect("CA");
        (cert.pem(), key.serialize_pem())
    }

    fn node_client_request() -> ParsedRequest {
        let (pem, _) = new_request("system:node:edge-1", &[NODES_GROUP], &[], &[]).expect("csr");
        parse(pem.as_bytes()).expect("parse")
    }

    fn node_serving_request() -> ParsedRequest {
        let (pem, _) = new_request(
            "system:node:edge-1",
            &[NODES_GROUP],
            &["edge-1".to_string()],
            &["10.0.0.5".parse().expect("ip")],
        )
        .expect("csr");
        parse(pem.as_bytes()).expect("parse")
    }

    fn der_of(pem: &str) -> Vec<u8> {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .expect("pem")
            .1
            .contents
    }

    #[test]
    fn a_generated_request_reads_back() {
        let ips: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        let (pem, key) = new_request(
            "system:node:edge-1",
            &[NODES_GROUP, "extra"],
            &["edge-1".into(), "edge-1.lan".into()],
            &ips,
        )
        .expect("csr");
        assert!(
            pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"),
            "{pem}"
        );
        assert!(key.contains("PRIVATE KEY"));
        let req = parse(pem.as_bytes()).expect("parse");
        assert_eq!(req.common_name, "system:node:edge-1");
        assert_eq!(req.organizations, vec![NODES_GROUP, "extra"]);
        assert_eq!(req.dns_names, vec!["edge-1", "edge-1.lan"]);
        assert_eq!(req.ip_addresses, ips);
        assert!(req.emails.is_empty() && req.uris.is_empty());
        assert_eq!(node_name(&req), Some("edge-1"));
        // The request's key is the one returned.
        let pair = KeyPair::from_pem(&key).expect("key");
        let spki = SubjectPublicKeyInfo::from_der(&req.public_key_der).expect("spki");
        assert_eq!(spki.der_bytes(), pair.der_bytes());
    }

    #[test]
    fn requests_that_are_not_csrs_are_refused() {
        let (ca_pem, _) = ca(Duration::days(1));
        assert!(matches!(parse(ca_pem.as_bytes()), Err(CsrError::Pem(_))));
        assert!(matches!(parse(b"not pem at all"), Err(CsrError::Pem(_))));
        let garbage = pem_encode("CERTIFICATE REQUEST", b"\x30\x03\x02\x01\x00");
        assert!(matches!(parse(garbage.as_bytes()), Err(CsrError::Parse(_))));
    }

    #[test]
    fn a_tampered_request_is_refused() {
        let (pem, _) = new_request("system:node:edge-1", &[NODES_GROUP], &[], &[]).expect("csr");
        let mut der = der_of(&pem);
        let at = der
            .windows(6)
            .position(|w| w == b"edge-1")
            .expect("name in the DER");
        der[at + 5] = b'2';
        let tampered = pem_encode("CERTIFICATE REQUEST", &der);
        let err = parse(tampered.as_bytes()).expect_err("tampered");
        assert!(matches!(err, CsrError::Signature(_)), "{err}");
        let (ca_cert, ca_key) = ca(Duration::days(1));
        let err = sign(
            &ca_cert,
            &ca_key,
            tampered.as_bytes(),
            &client_usages(),
            None,
            Duration::days(365),
        )
        .expect_err("tampered");
        assert!(matches!(err, CsrError::Signature(_)), "{err}");
    }

    #[test]
    fn kubelet_client_rules() {
        let good = node_client_request();
        assert_eq!(validate_kubelet_client(&good, &client_usages()), Ok(()));
        let with_ke = usages(&["key encipherment", "client auth", "digital signature"]);
        assert!(is_kubelet_client(&good, &with_ke));
        // Duplicates are a set, as upstream.
        assert!(is_kubelet_client(
            &good,
            &usages(&["client auth", "client auth", "digital signature"])
        ));
        assert!(is_node_client(
            KUBE_APISERVER_CLIENT_KUBELET,
            &good,
            &client_usages()
        ));
        assert!(!is_node_client(KUBELET_SERVING, &good, &client_usages()));
        assert!(is_self_node_client(
            KUBE_APISERVER_CLIENT_KUBELET,
            &good,
            &client_usages(),
            "system:node:edge-1"
        ));
        assert!(!is_self_node_client(
            KUBE_APISERVER_CLIENT_KUBELET,
            &good,
            &client_usages(),
            "system:bootstrap:abcdef"
        ));

        let mut wrong_o = good.clone();
        wrong_o.organizations = vec!["system:masters".into()];
        let err = validate_kubelet_client(&wrong_o, &client_usages()).unwrap_err();
        assert!(err.contains("organizations"), "{err}");
        let mut two_o = good.clone();
        two_o.organizations.push("system:masters".into());
        assert!(!is_kubelet_client(&two_o, &client_usages()));

        let mut wrong_cn = good.clone();
        wrong_cn.common_name = "edge-1".into();
        let err = validate_kubelet_client(&wrong_cn, &client_usages()).unwrap_err();
        assert!(err.contains("common name"), "{err}");
        assert_eq!(node_name(&wrong_cn), None);

        let serving = node_serving_request();
        let err = validate_kubelet_client(&serving, &client_usages()).unwrap_err();
        assert!(err.contains("DNS"), "{err}");
        let mut ip_only = good.clone();
        ip_only.ip_addresses.push("10.0.0.5".parse().unwrap());
        let err = validate_kubelet_client(&ip_only, &client_usages()).unwrap_err();
        assert!(err.contains("IP"), "{err}");
        let mut email = good.clone();
        email.emails.push("a@b.c".into());
        assert!(
            validate_kubelet_client(&email, &client_usages())
                .unwrap_err()
                .contains("email")
        );
        let mut uri = good.clone();
        uri.uris.push("spiffe://x".into());
        assert!(
            validate_kubelet_client(&uri, &client_usages())
                .unwrap_err()
                .contains("URI")
        );

        for bad in [
            usages(&["client auth"]),
            usages(&["digital signature", "client auth", "server auth"]),
            usages(&["key encipherment", "client auth"]),
            usages(&[]),
        ] {
            let err = validate_kubelet_client(&good, &bad).unwrap_err();
            assert!(err.contains("usages"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn kubelet_serving_rules() {
        let good = node_serving_request();
        assert_eq!(validate_kubelet_serving(&good, &serving_usages()), Ok(()));
        assert!(is_kubelet_serving(
            &good,
            &usages(&["server auth", "digital signature"])
        ));
        let mut ip_only = good.clone();
        ip_only.dns_names.clear();
        assert!(is_kubelet_serving(&ip_only, &serving_usages()));

        let err = validate_kubelet_serving(&node_client_request(), &serving_usages()).unwrap_err();
        assert!(err.contains("at least one DNS or IP"), "{err}");

        let mut wrong_o = good.clone();
        wrong_o.organizations.clear();
        assert!(
            validate_kubelet_serving(&wrong_o, &serving_usages())
                .unwrap_err()
                .contains("organizations")
        );
        let mut wrong_cn = good.clone();
        wrong_cn.common_name = "system:nodes:edge-1".into();
        assert!(
            validate_kubelet_serving(&wrong_cn, &serving_usages())
                .unwrap_err()
                .contains("common name")
        );
        let mut email = good.clone();
        email.emails.push("a@b.c".into());
        assert!(
            validate_kubelet_serving(&email, &serving_usages())
                .unwrap_err()
                .contains("email")
        );
        let mut uri = good.clone();
        uri.uris.push("spiffe://x".into());
        assert!(
            validate_kubelet_serving(&uri, &serving_usages())
                .unwrap_err()
                .contains("URI")
        );
        for bad in [
            client_usages(),
            usages(&["server auth"]),
            usages(&["server auth", "digital signature", "client auth"]),
        ] {
            assert!(!is_kubelet_serving(&good, &bad), "{bad:?}");
        }
    }

    #[test]
    fn signer_checks() {
        let client = node_client_request();
        let serving = node_serving_request();
        assert_eq!(
            check_signer(KUBE_APISERVER_CLIENT_KUBELET, &client, &client_usages()),
            Ok(())
        );
        assert!(matches!(
            check_signer(KUBE_APISERVER_CLIENT_KUBELET, &serving, &client_usages()),
            Err(SignerRefusal::Invalid(_))
        ));
        assert_eq!(
            check_signer(KUBELET_SERVING, &serving, &serving_usages()),
            Ok(())
        );
        assert!(matches!(
            check_signer(KUBELET_SERVING, &client, &serving_usages()),
            Err(SignerRefusal::Invalid(_))
        ));
        // Any subject; client auth required; only signature/encipherment besides.
        let user = ParsedRequest {
            common_name: "alice".into(),
            organizations: vec!["dev".into(), "ops".into()],
            ..ParsedRequest::default()
        };
        assert_eq!(
            check_signer(KUBE_APISERVER_CLIENT, &user, &usages(&["client auth"])),
            Ok(())
        );
        assert_eq!(
            check_signer(
                KUBE_APISERVER_CLIENT,
                &user,
                &usages(&["client auth", "key encipherment", "digital signature"])
            ),
            Ok(())
        );
        let Err(SignerRefusal::Invalid(msg)) = check_signer(
            KUBE_APISERVER_CLIENT,
            &user,
            &usages(&["digital signature"]),
        ) else {
            panic!("missing client auth accepted");
        };
        assert!(msg.contains("client auth"), "{msg}");
        let Err(SignerRefusal::Invalid(msg)) = check_signer(
            KUBE_APISERVER_CLIENT,
            &user,
            &usages(&["client auth", "server auth"]),
        ) else {
            panic!("server auth accepted");
        };
        assert!(msg.contains("server auth"), "{msg}");
        let Err(SignerRefusal::Invalid(msg)) =
            check_signer(LEGACY_UNKNOWN, &user, &usages(&["client auth"]))
        else {
            panic!("legacy signer accepted");
        };
        assert!(msg.contains("legacy-unknown"), "{msg}");
        for other in ["example.com/my-signer", "kubernetes.io/something-new"] {
            assert_eq!(
                check_signer(other, &user, &client_usages()),
                Err(SignerRefusal::NotOurs(other.into()))
            );
        }
    }

    #[test]
    fn lifetimes_follow_upstream() {
        let year = Duration::days(365);
        assert_eq!(lifetime(None, year), year);
        assert_eq!(lifetime(Some(3600), year), Duration::hours(1));
        assert_eq!(lifetime(Some(60), year), MIN_DURATION);
        assert_eq!(lifetime(Some(-5), year), MIN_DURATION);
        assert_eq!(lifetime(Some(10 * 365 * 86400), year), year);
    }

    #[test]
    fn signed_certificates_chain_to_the_ca() {
        let (ca_cert, ca_key) = ca(Duration::days(3650));
        let (req_pem, key_pem) = new_request(
            "system:node:edge-1",
            &[NODES_GROUP],
            &["edge-1".into()],
            &["10.0.0.5".parse().unwrap()],
        )
        .expect("csr");
        let pem = sign(
            &ca_cert,
            &ca_key,
            req_pem.as_bytes(),
            &serving_usages(),
            None,
            Duration::days(365),
        )
        .expect("sign");
        let now = OffsetDateTime::now_utc();
        let der = der_of(&pem);
        let (rest, cert) = X509Certificate::from_der(&der).expect("certificate");
        assert!(rest.is_empty());
        let ca_der = der_of(&ca_cert);
        let (_, ca_x509) = X509Certificate::from_der(&ca_der).expect("CA");
        cert.verify_signature(Some(ca_x509.public_key()))
            .expect("signed by the CA");
        assert_eq!(cert.issuer().as_raw(), ca_x509.subject().as_raw());
        assert_eq!(
            cert.subject().to_string(),
            "O=system:nodes, CN=system:node:edge-1"
        );
        // The request's key is certified.
        let pair = KeyPair::from_pem(&key_pem).expect("key");
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            pair.der_bytes()
        );
        let san = cert.subject_alternative_name().unwrap().expect("SANs");
        assert!(!san.critical, "the subject is not empty");
        assert_eq!(
            san.value.general_names,
            vec![
                GeneralName::DNSName("edge-1"),
                GeneralName::IPAddress(&[10, 0, 0, 5])
            ]
        );
        let eku = cert.extended_key_usage().unwrap().expect("EKU").value;
        assert!(eku.server_auth && !eku.client_auth);
        let ku = cert.key_usage().unwrap().expect("KU").value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        let bc = cert.basic_constraints().unwrap().expect("BC").value;
        assert!(!bc.ca);
        // The authority key identifier names the CA's key.
        let ski = ca_x509
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            });
        let aki = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ => None,
            });
        assert!(ski.is_some());
        assert_eq!(aki, ski);
        // Backdated 5 minutes; a year long less the backdate.
        let start = cert.validity().not_before.to_datetime();
        let end = cert.validity().not_after.to_datetime();
        assert!(
            (now - BACKDATE - start).abs() < Duration::seconds(5),
            "{start}"
        );
        assert!(
            (now + Duration::days(365) - BACKDATE - end).abs() < Duration::seconds(5),
            "{end}"
        );
        assert_eq!(not_after(&pem), Some(end));
        // Two certificates for the same key get different serials.
        let again = sign(
            &ca_cert,
            &ca_key,
            req_pem.as_bytes(),
            &serving_usages(),
            None,
            Duration::days(365),
        )
        .expect("sign");
        let der2 = der_of(&again);
        let (_, cert2) = X509Certificate::from_der(&der2).expect("certificate");
        assert_ne!(cert.raw_serial(), cert2.raw_serial());
    }

    #[test]
    fn client_certificates_keep_every_group() {
        let (ca_cert, ca_key) = ca(Duration::days(30));
        let (req_pem, _) = new_request("alice", &["dev", "ops"], &[], &[]).expect("csr");
        let pem = sign(
            &ca_cert,
            &ca_key,
            req_pem.as_bytes(),
            &usages(&["client auth", "digital signature"]),
            Some(3600),
            Duration::days(365),
        )
        .expect("sign");
        let der = der_of(&pem);
        let (_, cert) = X509Certificate::from_der(&der).expect("certificate");
        let orgs: Vec<&str> = cert
            .subject()
            .iter_organization()
            .map(|o| o.as_str().unwrap())
            .collect();
        assert_eq!(orgs, vec!["dev", "ops"]);
        assert!(cert.subject_alternative_name().unwrap().is_none());
        let eku = cert.extended_key_usage().unwrap().expect("EKU").value;
        assert!(eku.client_auth && !eku.server_auth);
        // Short-lived: the full hour, plus the backdate at the start.
        let v = cert.validity();
        assert_eq!(
            v.not_after.to_datetime() - v.not_before.to_datetime(),
            Duration::hours(1) + BACKDATE
        );
    }

    #[test]
    fn an_empty_subject_makes_the_names_critical() {
        let (ca_cert, ca_key) = ca(Duration::days(30));
        let (req_pem, _) = new_request("", &[], &["svc.example".into()], &[]).expect("csr");
        let req = parse(req_pem.as_bytes()).expect("parse");
        assert_eq!(req.subject_der, vec![0x30, 0x00]);
        assert_eq!(req.common_name, "");
        assert!(req.organizations.is_empty());
        let pem = sign(
            &ca_cert,
            &ca_key,
            req_pem.as_bytes(),
            &usages(&["server auth"]),
            None,
            Duration::days(365),
        )
        .expect("sign");
        let der = der_of(&pem);
        let (_, cert) = X509Certificate::from_der(&der).expect("certificate");
        assert_eq!(cert.subject().as_raw(), &[0x30, 0x00]);
        let san = cert.subject_alternative_name().unwrap().expect("SANs");
        assert!(san.critical);
        assert!(cert.key_usage().unwrap().is_none());
    }

    #[test]
    fn expiration_is_raised_to_ten_minutes_and_capped_by_the_ca() {
        let (ca_cert, ca_key) = ca(Duration::hours(2));
        let (req_pem, _) =
            new_request("system:node:edge-1", &[NODES_GROUP], &[], &[]).expect("csr");
        let short = sign(
            &ca_cert,
            &ca_key,
            req_pem.as_bytes(),
            &client_usages(),
            Some(60),
            Duration::days(365),
        )
        .expect("sign");
        let der = der_of(&short);
        let (_, cert) = X509Certificate::from_der(&der).expect("certificate");
        let v = cert.validity();
        assert_eq!(
            v.not_after.to_datetime() - v.not_before.to_datetime(),
            Duration::seconds(600) + BACKDATE
        );

        let capped = sign(
            &ca_cert,
            &ca_key,
            req_pem.as_bytes(),
            &client_usages(),
            None,
            Duration::days(365),
        )
        .expect("sign");
        assert_eq!(not_after(&capped), not_after(&ca_cert));
    }

    #[test]
    fn signing_refuses_bad_usages_and_bad_cas() {
        let (ca_cert, ca_key) = ca(Duration::days(1));
        let (req_pem, _) =
            new_request("system:node:edge-1", &[NODES_GROUP], &[], &[]).expect("csr");
        let year = Duration::days(365);
        let err = sign(
            &ca_cert,
            &ca_key,
            req_pem.as_bytes(),
            &usages(&["client auth", "teleportation"]),
            None,
            year,
        )
        .expect_err("unknown usage");
        assert!(
            matches!(&err, CsrError::Usages(u) if u == &["teleportation"]),
            "{err}"
        );

        let (_, other_key) = ca(Duration::days(1));
        let err = sign(
            &ca_cert,
            &other_key,
            req_pem.as_bytes(),
            &client_usages(),
            None,
            year,
        )
        .expect_err("mismatched key");
        assert!(matches!(err, CsrError::CaKeyMismatch), "{err}");

        // A CA that has expired.
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(2);
        params.not_after = now - Duration::days(1);
        let old = params.self_signed(&key).expect("CA");
        let err = sign(
            &old.pem(),
            &key.serialize_pem(),
            req_pem.as_bytes(),
            &client_usages(),
            None,
            year,
        )
        .expect_err("expired CA");
        assert!(matches!(err, CsrError::CaExpired(_)), "{err}");
    }

    #[test]
    fn renewal_is_due_at_eighty_percent() {
        let (ca_cert, ca_key) = ca(Duration::days(3650));
        let (req_pem, _) =
            new_request("system:node:edge-1", &[NODES_GROUP], &[], &[]).expect("csr");
        let pem = sign(
            &ca_cert,
            &ca_key,
            req_pem.as_bytes(),
            &client_usages(),
            Some(10 * 3600),
            Duration::days(365),
        )
        .expect("sign");
        let der = der_of(&pem);
        let (_, cert) = X509Certificate::from_der(&der).expect("certificate");
        let start = cert.validity().not_before.to_datetime();
        let end = cert.validity().not_after.to_datetime();
        let at = renew_at(&pem, RENEW_FRACTION).expect("renew at");
        assert_eq!(at, start + (end - start) * 0.8);
        assert_eq!(
            renew_at(&pem, 0.7).expect("70%"),
            start + (end - start) * 0.7
        );
        assert_eq!(renew_at(&pem, 2.0), Some(end));
        assert!(!renew_due(&pem, OffsetDateTime::now_utc()));
        assert!(!renew_due(&pem, at - Duration::seconds(1)));
        assert!(renew_due(&pem, at));
        assert!(renew_due(&pem, end + Duration::hours(1)));
        assert!(renew_due("garbage", OffsetDateTime::now_utc()));
        assert_eq!(not_after("garbage"), None);
    }

    #[test]
    fn der_lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 65535, 65536] {
            let tlv = der_tlv(0x04, &vec![7; len]);
            assert_eq!(
                der_header(&tlv).map(|(h, l)| (h + l, l)),
                Some((tlv.len(), len))
            );
        }
    }
}
