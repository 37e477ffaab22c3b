//! Encryption at rest for stored objects, driven by an upstream
//! `EncryptionConfiguration` file (`apiserver.config.k8s.io/v1`).
//!
//! The stored bytes are the same envelope kube-apiserver writes, so a store
//! written by kelp can be read by kube-apiserver with the same file and the
//! other way round:
//!
//! * `aescbc`: `k8s:enc:aescbc:v1:<key>:` + 16-byte IV + AES-CBC(PKCS#7).
//! * `aesgcm`: `k8s:enc:aesgcm:v1:<key>:` + 12-byte nonce + AES-GCM seal
//!   (ciphertext then tag), with the storage key as additional data.
//! * `secretbox`: `k8s:enc:secretbox:v1:<key>:` + 24-byte nonce + NaCl
//!   secretbox (tag then ciphertext).
//! * `identity`: the value as it is, no prefix.
//!
//! The first provider (and its first key) of a resource writes; every listed
//! provider and key can read, and a read through anything but the writer
//! reports the value as stale so the caller can rewrite it. `kms` is not
//! supported.

use std::fmt;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use cbc::cipher::block_padding::{NoPadding, Pkcs7};
use cbc::cipher::{BlockCipher, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize};

/// The only `apiVersion` accepted for the configuration file.
pub const API_VERSION: &str = "apiserver.config.k8s.io/v1";

/// The only `kind` accepted for the configuration file.
pub const KIND: &str = "EncryptionConfiguration";

/// Every encrypted value starts with this; plain values (JSON or the `k8s\0`
/// protobuf envelope) never do.
pub const ENCRYPTED_PREFIX: &str = "k8s:enc:";

/// Name k3s gives the key it generates for `--secrets-encryption`.
pub const K3S_INITIAL_KEY_NAME: &str = "aescbckey";

/// Prefix of the keys k3s adds on rotation; an RFC 3339 time follows it.
pub const K3S_ROTATED_KEY_PREFIX: &str = "aescbckey-";

const AES_KEY_SIZES: &[usize] = &[16, 24, 32];
const SECRETBOX_KEY_SIZES: &[usize] = &[32];
const GENERATED_KEY_SIZE: usize = 32;
const AES_BLOCK_SIZE: usize = 16;
const GCM_NONCE_SIZE: usize = 12;
const SECRETBOX_NONCE_SIZE: usize = 24;
const SECRETBOX_TAG_SIZE: usize = 16;

/// Go's `base64.StdEncoding`: padding required, but stray trailing bits are
/// accepted; secrets written for upstream must load here too.
const GO_STD_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Errors from loading a configuration or transforming a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not a decodable `EncryptionConfiguration`.
    #[error("cannot parse encryption configuration: {0}")]
    Parse(String),
    /// The configuration decoded but breaks a rule; the text lists every
    /// problem found, in upstream's wording.
    #[error("invalid encryption configuration: {0}")]
    Invalid(String),
    /// A `kms` provider was configured.
    #[error("{0}: kms provider is not supported by kelp, use aescbc, aesgcm or secretbox")]
    KmsNotSupported(String),
    /// No configured provider recognises the stored value.
    #[error("no matching prefix found")]
    NoMatchingPrefix,
    /// A provider recognised the value but could not decrypt it.
    #[error("{0}")]
    Decrypt(String),
    /// A value could not be encrypted.
    #[error("cannot encrypt value: {0}")]
    Encrypt(String),
    /// A rewritten configuration could not be serialized.
    #[error("cannot write encryption configuration: {0}")]
    Write(String),
}

/// True when `stored` carries an encryption envelope. A resource without a
/// configured transformer must refuse such a value, as upstream's identity
/// fallback does.
pub fn is_encrypted(stored: &[u8]) -> bool {
    stored.starts_with(ENCRYPTED_PREFIX.as_bytes())
}

// ---------------------------------------------------------------------------
// File format. Unknown fields are rejected because upstream decodes strictly.

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    api_version: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    resources: Vec<FileResources>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileResources {
    #[serde(default, deserialize_with = "null_as_default")]
    resources: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    providers: Vec<FileProvider>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aesgcm: Option<FileKeys>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aescbc: Option<FileKeys>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secretbox: Option<FileKeys>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<FileIdentity>,
    // Kept loose: it is only recognised in order to be refused clearly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kms: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    #[serde(default, deserialize_with = "null_as_default")]
    keys: Vec<FileKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    #[serde(default, deserialize_with = "null_as_default")]
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    secret: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIdentity {}

/// Go decodes an explicit `null` as the zero value; serde would reject it.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl FileProvider {
    fn keyed(&self) -> Option<(Kind, &FileKeys)> {
        if let Some(k) = &self.aesgcm {
            Some((Kind::AesGcm, k))
        } else if let Some(k) = &self.aescbc {
            Some((Kind::AesCbc, k))
        } else {
            self.secretbox.as_ref().map(|k| (Kind::Secretbox, k))
        }
    }
}

fn decode_file(text: &str) -> Result<FileConfig, Error> {
    if text.trim().is_empty() {
        return Err(Error::Parse(
            "encryption provider configuration is empty".into(),
        ));
    }
    // JSON is what k3s writes; everything else goes through YAML.
    let file: FileConfig = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| Error::Parse(e.to_string()))?
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| Error::Parse(e.to_string()))?
    };
    let api_version = file.api_version.as_deref().unwrap_or("");
    let kind = file.kind.as_deref().unwrap_or("");
    if api_version != API_VERSION || kind != KIND {
        return Err(Error::Parse(format!(
            "expected apiVersion {API_VERSION:?} and kind {KIND:?}, got {api_version:?} and {kind:?}"
        )));
    }
    Ok(file)
}

fn encode_file(file: &FileConfig) -> Result<String, Error> {
    serde_json::to_string(file).map_err(|e| Error::Write(e.to_string()))
}

// ---------------------------------------------------------------------------
// Validation, after upstream's rules and messages.

/// Group/resource as upstream splits it: at the first dot.
#[derive(Clone, Debug, PartialEq, Eq)]
struct GroupResource {
    group: String,
    resource: String,
}

impl GroupResource {
    fn parse(text: &str) -> Self {
        match text.split_once('.') {
            Some((resource, group)) => Self {
                group: group.to_owned(),
                resource: resource.to_owned(),
            },
            None => Self {
                group: String::new(),
                resource: text.to_owned(),
            },
        }
    }

    fn new(group: &str, resource: &str) -> Self {
        Self {
            group: group.to_owned(),
            resource: resource.to_owned(),
        }
    }

    fn is_any_any(&self) -> bool {
        self.group == "*" && self.resource == "*"
    }
}

impl fmt::Display for GroupResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `*.` is how the file spells "every core resource".
        if self.group.is_empty() && self.resource == "*" {
            f.write_str("*.")
        } else if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

fn required(path: &str, detail: &str) -> String {
    format!("{path}: Required value: {detail}")
}

fn invalid(path: &str, value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {value}: {detail}")
}

fn validate(file: &FileConfig) -> Result<(), Error> {
    // kms is refused up front so the message is not buried among others.
    for (i, entry) in file.resources.iter().enumerate() {
        for (j, provider) in entry.providers.iter().enumerate() {
            if provider.kms.is_some() {
                return Err(Error::KmsNotSupported(format!(
                    "resources[{i}].providers[{j}].kms"
                )));
            }
        }
    }

    let mut errs = Vec::new();
    if file.resources.is_empty() {
        errs.push(required("resources", "at least one resources is required"));
    }
    for (i, entry) in file.resources.iter().enumerate() {
        let r = format!("resources[{i}].resources");
        let p = format!("resources[{i}].providers");
        if entry.resources.is_empty() {
            errs.push(required(&r, &format!("at least one {r} is required")));
        }
        validate_overlap(&entry.resources, &r, &mut errs);
        validate_names(&entry.resources, &r, &mut errs);
        if entry.providers.is_empty() {
            errs.push(required(&p, &format!("at least one {p} is required")));
        }
        // Names reused within one provider type of one entry share an
        // envelope prefix, so which key wrote a value would be ambiguous.
        let mut seen: Vec<(Kind, &str)> = Vec::new();
        for (j, provider) in entry.providers.iter().enumerate() {
            let path = format!("{p}[{j}]");
            let found = [
                provider.aesgcm.is_some(),
                provider.aescbc.is_some(),
                provider.secretbox.is_some(),
                provider.identity.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if found == 0 {
                errs.push(invalid(
                    &path,
                    "{}",
                    "provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity",
                ));
                continue;
            }
            if found > 1 {
                errs.push(invalid(
                    &path,
                    "{...}",
                    "more than one provider specified in a single element, should split into different list elements",
                ));
                continue;
            }
            if let Some((kind, keys)) = provider.keyed() {
                let keys_path = format!("{path}.{}.keys", kind.name());
                validate_keys(kind, &keys.keys, &keys_path, &mut seen, &mut errs);
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(aggregate(&errs)))
    }
}

fn aggregate(errs: &[String]) -> String {
    if errs.len() == 1 {
        errs[0].clone()
    } else {
        format!("[{}]", errs.join(", "))
    }
}

fn validate_overlap(resources: &[String], path: &str, errs: &mut Vec<String>) {
    let parsed: Vec<GroupResource> = resources.iter().map(|r| GroupResource::parse(r)).collect();
    let mut duplicate = false;
    let mut overlap = false;
    for (i, a) in parsed.iter().enumerate() {
        for (j, b) in parsed.iter().enumerate() {
            if i == j {
                continue;
            }
            if a == b {
                duplicate = true;
            } else if a.is_any_any()
                || (a.group == b.group && (a.resource == "*" || b.resource == "*"))
            {
                overlap = true;
            }
        }
    }
    let value = format!("{resources:?}");
    if duplicate {
        errs.push(invalid(
            path,
            &value,
            "the same resource cannot be specified multiple times",
        ));
    }
    if overlap {
        errs.push(invalid(
            path,
            &value,
            "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked",
        ));
    }
}

fn validate_names(resources: &[String], path: &str, errs: &mut Vec<String>) {
    for (j, name) in resources.iter().enumerate() {
        let path = format!("{path}[{j}]");
        let value = format!("{name:?}");
        let gr = GroupResource::parse(name);
        let detail = if name.to_lowercase() != *name {
            "resource name should not contain capital letters"
        } else if name == "*" {
            "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources"
        } else if matches!(
            name.as_str(),
            "apiserveripinfo" | "serviceipallocations" | "servicenodeportallocations"
        ) {
            "resources which do not have REST API/s cannot be encrypted"
        } else if gr.group == "events.k8s.io" {
            "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file"
        } else if gr.group == "extensions" {
            "'extensions' group has been removed and cannot be used for encryption"
        } else if gr.group == "*" && gr.resource != "*" {
            "encrypting the same resource across groups is not supported"
        } else {
            continue;
        };
        errs.push(invalid(&path, &value, detail));
    }
}

fn validate_keys<'a>(
    kind: Kind,
    keys: &'a [FileKey],
    path: &str,
    seen: &mut Vec<(Kind, &'a str)>,
    errs: &mut Vec<String>,
) {
    if keys.is_empty() {
        errs.push(required(path, "at least one keys is required"));
        return;
    }
    let sizes = kind.key_sizes();
    for (i, key) in keys.iter().enumerate() {
        let path = format!("{path}[{i}]");
        if key.name.is_empty() {
            errs.push(required(
                &format!("{path}.name"),
                "name is a mandatory field for a key",
            ));
        } else if seen.contains(&(kind, key.name.as_str())) {
            errs.push(format!("{path}.name: Duplicate value: {:?}", key.name));
        } else {
            seen.push((kind, key.name.as_str()));
        }
        if key.secret.is_empty() {
            errs.push(required(
                &format!("{path}.secret"),
                "secret is a mandatory field for a key",
            ));
            continue;
        }
        match decode_secret(&key.secret) {
            None => errs.push(invalid(
                &format!("{path}.secret"),
                "\"REDACTED\"",
                "secrets must be base64 encoded",
            )),
            Some(secret) if !sizes.contains(&secret.len()) => {
                let expected: Vec<String> = sizes.iter().map(usize::to_string).collect();
                errs.push(invalid(
                    &format!("{path}.secret"),
                    "\"REDACTED\"",
                    &format!(
                        "secret is not of the expected length, got {}, expected one of [{}]",
                        secret.len(),
                        expected.join(" ")
                    ),
                ));
            }
            Some(_) => {}
        }
    }
}

fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    // Go's decoder skips line breaks, so a wrapped secret is still valid.
    let cleaned: String = secret
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect();
    GO_STD_BASE64.decode(cleaned).ok()
}

// ---------------------------------------------------------------------------
// Runtime structures.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    AesCbc,
    AesGcm,
    Secretbox,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::AesCbc => "aescbc",
            Kind::AesGcm => "aesgcm",
            Kind::Secretbox => "secretbox",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Kind::AesCbc => "k8s:enc:aescbc:v1:",
            Kind::AesGcm => "k8s:enc:aesgcm:v1:",
            Kind::Secretbox => "k8s:enc:secretbox:v1:",
        }
    }

    fn key_sizes(self) -> &'static [usize] {
        match self {
            Kind::AesCbc | Kind::AesGcm => AES_KEY_SIZES,
            Kind::Secretbox => SECRETBOX_KEY_SIZES,
        }
    }

    fn no_key_message(self) -> &'static str {
        match self {
            Kind::AesCbc | Kind::AesGcm => {
                "no matching key was found for the provided AES transformer"
            }
            Kind::Secretbox => "no matching key was found for the provided Secretbox transformer",
        }
    }

    fn seal(self, secret: &[u8], storage_key: &str, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let mut rng = rand::rng();
        match self {
            Kind::AesCbc => {
                let mut iv = [0u8; AES_BLOCK_SIZE];
                rng.fill_bytes(&mut iv);
                cbc_seal(secret, &iv, plaintext)
            }
            Kind::AesGcm => {
                let mut nonce = [0u8; GCM_NONCE_SIZE];
                rng.fill_bytes(&mut nonce);
                gcm_seal(secret, &nonce, storage_key.as_bytes(), plaintext)
            }
            Kind::Secretbox => {
                let mut nonce = [0u8; SECRETBOX_NONCE_SIZE];
                rng.fill_bytes(&mut nonce);
                secretbox_seal(secret, &nonce, plaintext)
            }
        }
    }

    fn open(self, secret: &[u8], storage_key: &str, data: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Kind::AesCbc => cbc_open(secret, data),
            Kind::AesGcm => gcm_open(secret, storage_key.as_bytes(), data),
            Kind::Secretbox => secretbox_open(secret, data),
        }
    }
}

#[derive(Clone)]
struct NamedKey {
    name: String,
    secret: Vec<u8>,
}

impl fmt::Debug for NamedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never let key material reach logs.
        f.debug_struct("NamedKey")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Clone, Debug)]
enum Provider {
    Identity,
    Keyed { kind: Kind, keys: Vec<NamedKey> },
}

impl Provider {
    fn from_file(provider: &FileProvider) -> Result<Self, Error> {
        if provider.identity.is_some() {
            return Ok(Provider::Identity);
        }
        let Some((kind, keys)) = provider.keyed() else {
            return Err(Error::Invalid(
                "provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity".into(),
            ));
        };
        let keys = keys
            .keys
            .iter()
            .map(|k| {
                let secret = decode_secret(&k.secret).ok_or_else(|| {
                    Error::Invalid(format!("could not obtain secret for named key {}", k.name))
                })?;
                Ok(NamedKey {
                    name: k.name.clone(),
                    secret,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Provider::Keyed { kind, keys })
    }
}

/// Encrypts and decrypts the stored values of one resource: the ordered
/// providers of every `resources` entry that lists it.
#[derive(Clone, Debug)]
pub struct Transformer {
    providers: Vec<Provider>,
}

impl Transformer {
    /// The envelope prefix new writes get, e.g. `k8s:enc:aescbc:v1:key1:`;
    /// empty when identity writes.
    pub fn write_prefix(&self) -> String {
        match self.providers.first() {
            Some(Provider::Keyed { kind, keys }) => match keys.first() {
                Some(key) => format!("{}{}:", kind.prefix(), key.name),
                None => String::new(),
            },
            _ => String::new(),
        }
    }

    /// Encrypts `plaintext` with the first provider and its first key.
    /// `storage_key` must be the full key the value is stored under (for
    /// example `/registry/secrets/default/db`), byte for byte as upstream
    /// would use it: aesgcm authenticates it, so a value copied to another
    /// key will not decrypt.
    pub fn encrypt(&self, storage_key: &str, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        match self.providers.first() {
            None | Some(Provider::Identity) => Ok(plaintext.to_vec()),
            Some(Provider::Keyed { kind, keys }) => {
                let key = keys.first().ok_or_else(|| {
                    Error::Encrypt(format!("{} provider has no keys", kind.name()))
                })?;
                let body = kind.seal(&key.secret, storage_key, plaintext)?;
                let mut out =
                    Vec::with_capacity(kind.prefix().len() + key.name.len() + 1 + body.len());
                out.extend_from_slice(kind.prefix().as_bytes());
                out.extend_from_slice(key.name.as_bytes());
                out.push(b':');
                out.extend_from_slice(&body);
                Ok(out)
            }
        }
    }

    /// Decrypts a stored value, trying the providers and keys in order.
    /// The flag is true ("stale") when the value was not written by the first
    /// provider's first key, i.e. it should be rewritten. Plain values are
    /// returned as they are only when identity is listed.
    pub fn decrypt(&self, storage_key: &str, stored: &[u8]) -> Result<(Vec<u8>, bool), Error> {
        let mut errs = Vec::new();
        for (i, provider) in self.providers.iter().enumerate() {
            match provider {
                Provider::Identity => {
                    // Encrypted data is for a later provider; identity only
                    // steps aside, as upstream's does.
                    if !is_encrypted(stored) {
                        return Ok((stored.to_vec(), i != 0));
                    }
                }
                Provider::Keyed { kind, keys } => {
                    let Some(rest) = stored.strip_prefix(kind.prefix().as_bytes()) else {
                        continue;
                    };
                    // A failure does not end the search: the same prefix may
                    // belong to a later provider with other keys.
                    match open_with_keys(*kind, keys, storage_key, rest) {
                        Ok((plain, stale)) => return Ok((plain, stale || i != 0)),
                        Err(e) => errs.push(e),
                    }
                }
            }
        }
        if errs.is_empty() {
            Err(Error::NoMatchingPrefix)
        } else {
            Err(Error::Decrypt(aggregate(&errs)))
        }
    }
}

fn open_with_keys(
    kind: Kind,
    keys: &[NamedKey],
    storage_key: &str,
    data: &[u8],
) -> Result<(Vec<u8>, bool), String> {
    let mut errs = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let Some(rest) = data
            .strip_prefix(key.name.as_bytes())
            .and_then(|r| r.strip_prefix(b":"))
        else {
            continue;
        };
        match kind.open(&key.secret, storage_key, rest) {
            Ok(plain) => return Ok((plain, i != 0)),
            Err(e) => errs.push(e),
        }
    }
    if errs.is_empty() {
        Err(kind.no_key_message().to_owned())
    } else {
        Err(aggregate(&errs))
    }
}

/// A loaded and validated `EncryptionConfiguration`.
#[derive(Clone, Debug)]
pub struct EncryptionConfig {
    rules: Vec<(GroupResource, Transformer)>,
}

impl EncryptionConfig {
    /// Parses and validates configuration text (YAML or JSON) the way
    /// kube-apiserver loads `--encryption-provider-config`.
    pub fn parse(text: &str) -> Result<EncryptionConfig, Error> {
        let file = decode_file(text)?;
        validate(&file)?;
        let mut rules: Vec<(GroupResource, Transformer)> = Vec::new();
        for entry in &file.resources {
            let providers = entry
                .providers
                .iter()
                .map(Provider::from_file)
                .collect::<Result<Vec<_>, Error>>()?;
            for name in &entry.resources {
                let gr = GroupResource::parse(name);
                // A wildcard from an earlier entry would hide this one.
                for mask in [
                    GroupResource::new(&gr.group, "*"),
                    GroupResource::new("*", "*"),
                ] {
                    if rules.iter().any(|(g, _)| *g == mask) {
                        return Err(Error::Invalid(format!(
                            "resource \"{gr}\" is masked by earlier rule \"{mask}\""
                        )));
                    }
                }
                // The same resource in several entries reads with all of
                // their providers; the earliest entry writes.
                match rules.iter_mut().find(|(g, _)| *g == gr) {
                    Some((_, t)) => t.providers.extend(providers.iter().cloned()),
                    None => rules.push((
                        gr,
                        Transformer {
                            providers: providers.clone(),
                        },
                    )),
                }
            }
        }
        Ok(EncryptionConfig { rules })
    }

    /// The transformer for a resource (`group` is `""` for the core group,
    /// `resource` the plural name): an exact `resource.group` rule first,
    /// then `*.group` (`*.` for core), then `*.*`. `None` means values are
    /// stored plain; such a resource must refuse [`is_encrypted`] values.
    pub fn transformer_for(&self, group: &str, resource: &str) -> Option<&Transformer> {
        [
            GroupResource::new(group, resource),
            GroupResource::new(group, "*"),
            GroupResource::new("*", "*"),
        ]
        .iter()
        .find_map(|want| self.rules.iter().find(|(gr, _)| gr == want).map(|(_, t)| t))
    }
}

// ---------------------------------------------------------------------------
// Ciphers. The seal helpers take the random bytes as input so the format can
// be checked against fixed vectors.

fn cbc_seal(secret: &[u8], iv: &[u8; AES_BLOCK_SIZE], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    fn run<C: BlockEncryptMut + BlockCipher + KeyInit>(
        secret: &[u8],
        iv: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let enc = cbc::Encryptor::<C>::new_from_slices(secret, iv)
            .map_err(|e| Error::Encrypt(e.to_string()))?;
        Ok(enc.encrypt_padded_vec_mut::<Pkcs7>(plaintext))
    }
    let body = match secret.len() {
        16 => run::<aes::Aes128>(secret, iv, plaintext)?,
        24 => run::<aes::Aes192>(secret, iv, plaintext)?,
        32 => run::<aes::Aes256>(secret, iv, plaintext)?,
        n => return Err(Error::Encrypt(format!("invalid aes key size {n}"))),
    };
    let mut out = Vec::with_capacity(AES_BLOCK_SIZE + body.len());
    out.extend_from_slice(iv);
    out.extend_from_slice(&body);
    Ok(out)
}

fn cbc_open(secret: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    fn run<C: BlockDecryptMut + BlockCipher + KeyInit>(
        secret: &[u8],
        iv: &[u8],
        body: &[u8],
    ) -> Result<Vec<u8>, String> {
        let dec = cbc::Decryptor::<C>::new_from_slices(secret, iv).map_err(|e| e.to_string())?;
        dec.decrypt_padded_vec_mut::<NoPadding>(body)
            .map_err(|e| e.to_string())
    }
    if data.len() < AES_BLOCK_SIZE {
        return Err("the stored data was shorter than the required size".into());
    }
    let (iv, body) = data.split_at(AES_BLOCK_SIZE);
    if body.len() % AES_BLOCK_SIZE != 0 {
        return Err("the stored data is not a multiple of the block size".into());
    }
    let mut plain = match secret.len() {
        16 => run::<aes::Aes128>(secret, iv, body)?,
        24 => run::<aes::Aes192>(secret, iv, body)?,
        32 => run::<aes::Aes256>(secret, iv, body)?,
        n => return Err(format!("invalid aes key size {n}")),
    };
    // Checked by hand rather than with Pkcs7 to accept exactly what
    // upstream accepts (it does not cap the pad length at one block).
    let pad = plain.last().copied().unwrap_or(0) as usize;
    if pad == 0 || pad > plain.len() {
        return Err("invalid PKCS7 data (empty or not padded)".into());
    }
    let keep = plain.len() - pad;
    if plain[keep..].iter().any(|b| *b as usize != pad) {
        return Err("invalid padding on input".into());
    }
    plain.truncate(keep);
    Ok(plain)
}

fn gcm_seal(
    secret: &[u8],
    nonce: &[u8; GCM_NONCE_SIZE],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    fn run<A: Aead + KeyInit + aes_gcm::AeadCore<NonceSize = U12>>(
        secret: &[u8],
        nonce: &[u8; GCM_NONCE_SIZE],
        aad: &[u8],
        msg: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let aead = A::new_from_slice(secret).map_err(|e| Error::Encrypt(e.to_string()))?;
        aead.encrypt(&(*nonce).into(), Payload { msg, aad })
            .map_err(|e| Error::Encrypt(e.to_string()))
    }
    let body = match secret.len() {
        16 => run::<aes_gcm::Aes128Gcm>(secret, nonce, aad, plaintext)?,
        24 => run::<aes_gcm::AesGcm<aes::Aes192, U12>>(secret, nonce, aad, plaintext)?,
        32 => run::<aes_gcm::Aes256Gcm>(secret, nonce, aad, plaintext)?,
        n => return Err(Error::Encrypt(format!("invalid aes key size {n}"))),
    };
    let mut out = Vec::with_capacity(GCM_NONCE_SIZE + body.len());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

fn gcm_open(secret: &[u8], aad: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    fn run<A: Aead + KeyInit + aes_gcm::AeadCore<NonceSize = U12>>(
        secret: &[u8],
        nonce: &[u8],
        aad: &[u8],
        msg: &[u8],
    ) -> Result<Vec<u8>, String> {
        let aead = A::new_from_slice(secret).map_err(|e| e.to_string())?;
        let nonce: [u8; GCM_NONCE_SIZE] = nonce
            .try_into()
            .map_err(|_| "the stored data was shorter than the required size".to_owned())?;
        aead.decrypt(&nonce.into(), Payload { msg, aad })
            .map_err(|_| "cipher: message authentication failed".to_owned())
    }
    if data.len() < GCM_NONCE_SIZE {
        return Err("the stored data was shorter than the required size".into());
    }
    let (nonce, body) = data.split_at(GCM_NONCE_SIZE);
    match secret.len() {
        16 => run::<aes_gcm::Aes128Gcm>(secret, nonce, aad, body),
        24 => run::<aes_gcm::AesGcm<aes::Aes192, U12>>(secret, nonce, aad, body),
        32 => run::<aes_gcm::Aes256Gcm>(secret, nonce, aad, body),
        n => Err(format!("invalid aes key size {n}")),
    }
}

fn secretbox_seal(
    secret: &[u8],
    nonce: &[u8; SECRETBOX_NONCE_SIZE],
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    let sbox = crypto_secretbox::XSalsa20Poly1305::new_from_slice(secret)
        .map_err(|e| Error::Encrypt(e.to_string()))?;
    // The crate lays the box out as NaCl does (tag, then ciphertext), which
    // is what Go's secretbox.Seal appends after the nonce.
    let body = sbox
        .encrypt(&(*nonce).into(), plaintext)
        .map_err(|e| Error::Encrypt(e.to_string()))?;
    let mut out = Vec::with_capacity(SECRETBOX_NONCE_SIZE + body.len());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

fn secretbox_open(secret: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    if data.len() < SECRETBOX_NONCE_SIZE + SECRETBOX_TAG_SIZE {
        return Err("the stored data was shorter than the required size".into());
    }
    let (nonce, body) = data.split_at(SECRETBOX_NONCE_SIZE);
    let nonce: [u8; SECRETBOX_NONCE_SIZE] = nonce
        .try_into()
        .map_err(|_| "the stored data was shorter than the required size".to_owned())?;
    let sbox =
        crypto_secretbox::XSalsa20Poly1305::new_from_slice(secret).map_err(|e| e.to_string())?;
    sbox.decrypt(&nonce.into(), body)
        .map_err(|_| "secretbox: message authentication failed".to_owned())
}

// ---------------------------------------------------------------------------
// Key generation and rotation helpers (k3s `--secrets-encryption` style).

fn random_secret() -> String {
    let mut key = [0u8; GENERATED_KEY_SIZE];
    rand::rng().fill_bytes(&mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// A new configuration like the `encryption-config.json` k3s writes: one
/// random 32-byte aescbc key named `key_name` for `secrets`, then identity so
/// values written before encryption was enabled stay readable. Compact JSON.
pub fn generate_config(key_name: &str) -> String {
    // Display of a JSON string value cannot fail and escapes the name.
    let name = serde_json::Value::String(key_name.to_owned());
    format!(
        r#"{{"kind":"{KIND}","apiVersion":"{API_VERSION}","resources":[{{"resources":["secrets"],"providers":[{{"aescbc":{{"keys":[{{"name":{name},"secret":"{}"}}]}}}},{{"identity":{{}}}}]}}]}}"#,
        random_secret()
    )
}

/// The `resources` entry that lists `secrets`, which the helpers edit.
fn secrets_entry(file: &mut FileConfig) -> Result<&mut FileResources, Error> {
    file.resources
        .iter_mut()
        .find(|e| e.resources.iter().any(|r| r == "secrets"))
        .ok_or_else(|| Error::Invalid("no resources entry lists \"secrets\"".into()))
}

/// Adds a fresh random 32-byte aescbc key called `name` in front of the keys
/// of the first aescbc provider for `secrets`, making it the write key while
/// the older keys still read. Returns the new file as compact JSON.
pub fn with_new_first_key(text: &str, name: &str) -> Result<String, Error> {
    EncryptionConfig::parse(text)?;
    let mut file = decode_file(text)?;
    let entry = secrets_entry(&mut file)?;
    let taken = entry.providers.iter().any(|p| {
        p.aescbc
            .as_ref()
            .is_some_and(|k| k.keys.iter().any(|k| k.name == name))
    });
    if taken {
        return Err(Error::Invalid(format!(
            "an aescbc key named {name:?} already exists"
        )));
    }
    let keys = entry
        .providers
        .iter_mut()
        .find_map(|p| p.aescbc.as_mut())
        .ok_or_else(|| Error::Invalid("the \"secrets\" entry has no aescbc provider".into()))?;
    keys.keys.insert(
        0,
        FileKey {
            name: name.to_owned(),
            secret: random_secret(),
        },
    );
    let out = encode_file(&file)?;
    EncryptionConfig::parse(&out)?;
    Ok(out)
}

/// After every secret has been rewritten with the write key, keeps only that
/// key: the first provider for `secrets` keeps its first key, other keyed
/// providers there are dropped and identity is kept. Fails when identity
/// writes, since dropping keys then would only lose data. Compact JSON.
pub fn without_stale_keys(text: &str) -> Result<String, Error> {
    EncryptionConfig::parse(text)?;
    let mut file = decode_file(text)?;
    let entry = secrets_entry(&mut file)?;
    let mut providers = std::mem::take(&mut entry.providers).into_iter();
    let Some(mut first) = providers.next() else {
        return Err(Error::Invalid(
            "the \"secrets\" entry has no providers".into(),
        ));
    };
    for keys in [&mut first.aesgcm, &mut first.aescbc, &mut first.secretbox]
        .into_iter()
        .flatten()
    {
        keys.keys.truncate(1);
    }
    if first.keyed().is_none() {
        return Err(Error::Invalid(
            "secrets are written unencrypted (identity is the first provider), refusing to drop keys"
                .into(),
        ));
    }
    entry.providers = std::iter::once(first)
        .chain(providers.filter(|p| p.identity.is_some()))
        .collect();
    let out = encode_file(&file)?;
    EncryptionConfig::parse(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B64_16: &str = "AAECAwQFBgcICQoLDA0ODw==";
    const B64_24: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX";
    // Bytes 0x00..=0x1f.
    const B64_32: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const B64_32_B: &str = "Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";
    const SKEY: &str = "/registry/secrets/default/db";
    const PLAIN: &[u8] = br#"{"kind":"Secret","apiVersion":"v1"}"#;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn config(providers: &str) -> String {
        format!(
            "apiVersion: {API_VERSION}\nkind: {KIND}\nresources:\n  - resources: [secrets]\n    providers:\n{providers}"
        )
    }

    fn secrets(text: &str) -> Transformer {
        let cfg = EncryptionConfig::parse(text).expect("config parses");
        cfg.transformer_for("", "secrets")
            .expect("secrets configured")
            .clone()
    }

    fn keyed(kind: &str, keys: &[(&str, &str)]) -> String {
        let mut s = format!("      - {kind}:\n          keys:\n");
        for (name, secret) in keys {
            s.push_str(&format!(
                "            - name: {name}\n              secret: \"{secret}\"\n"
            ));
        }
        s
    }

    const IDENTITY: &str = "      - identity: {}\n";

    fn err_text(text: &str) -> String {
        EncryptionConfig::parse(text)
            .expect_err("config must be rejected")
            .to_string()
    }

    #[test]
    fn round_trip_every_provider_and_key_size() {
        for (kind, secret) in [
            ("aescbc", B64_16),
            ("aescbc", B64_24),
            ("aescbc", B64_32),
            ("aesgcm", B64_16),
            ("aesgcm", B64_24),
            ("aesgcm", B64_32),
            ("secretbox", B64_32),
        ] {
            let t = secrets(&config(&keyed(kind, &[("key1", secret)])));
            for plain in [PLAIN, b"", &[7u8; 16][..], &[0u8; 1000][..]] {
                let stored = t.encrypt(SKEY, plain).expect("encrypt");
                assert!(is_encrypted(&stored));
                let (back, stale) = t.decrypt(SKEY, &stored).expect("decrypt");
                assert_eq!(back, plain, "{kind}");
                assert!(!stale);
            }
            // Random IVs/nonces: the same value never encrypts the same way.
            assert_ne!(
                t.encrypt(SKEY, PLAIN).expect("encrypt"),
                t.encrypt(SKEY, PLAIN).expect("encrypt")
            );
        }
        let t = secrets(&config(IDENTITY));
        assert_eq!(t.encrypt(SKEY, PLAIN).expect("encrypt"), PLAIN);
        assert_eq!(
            t.decrypt(SKEY, PLAIN).expect("decrypt"),
            (PLAIN.to_vec(), false)
        );
        assert_eq!(t.write_prefix(), "");
    }

    #[test]
    fn envelope_prefix_and_layout() {
        let t = secrets(&config(&keyed("aescbc", &[("key1", B64_32)])));
        assert_eq!(t.write_prefix(), "k8s:enc:aescbc:v1:key1:");
        let stored = t.encrypt(SKEY, PLAIN).expect("encrypt");
        let prefix = b"k8s:enc:aescbc:v1:key1:";
        assert!(stored.starts_with(prefix));
        // IV plus the value padded up to whole blocks (35 -> 48).
        assert_eq!(stored.len(), prefix.len() + 16 + 48);

        let gcm = secrets(&config(&keyed("aesgcm", &[("k", B64_32)])));
        let stored = gcm.encrypt(SKEY, PLAIN).expect("encrypt");
        assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:k:"));
        assert_eq!(stored.len(), 20 + 12 + PLAIN.len() + 16);

        let sb = secrets(&config(&keyed("secretbox", &[("k", B64_32)])));
        let stored = sb.encrypt(SKEY, PLAIN).expect("encrypt");
        assert!(stored.starts_with(b"k8s:enc:secretbox:v1:k:"));
        assert_eq!(stored.len(), 23 + 24 + 16 + PLAIN.len());
    }

    #[test]
    fn older_key_reads_as_stale() {
        let old = secrets(&config(&keyed("aescbc", &[("key1", B64_32)])));
        let new = secrets(&config(&keyed(
            "aescbc",
            &[("key2", B64_32_B), ("key1", B64_32)],
        )));
        let stored = old.encrypt(SKEY, PLAIN).expect("encrypt");
        assert_eq!(
            new.decrypt(SKEY, &stored).expect("decrypt"),
            (PLAIN.to_vec(), true)
        );
        let fresh = new.encrypt(SKEY, PLAIN).expect("encrypt");
        assert!(fresh.starts_with(b"k8s:enc:aescbc:v1:key2:"));
        assert_eq!(
            new.decrypt(SKEY, &fresh).expect("decrypt"),
            (PLAIN.to_vec(), false)
        );

        // An old key held by a later provider is stale as well.
        let two = secrets(&config(&format!(
            "{}{}",
            keyed("secretbox", &[("sb", B64_32_B)]),
            keyed("aescbc", &[("key1", B64_32)])
        )));
        assert_eq!(
            two.decrypt(SKEY, &stored).expect("decrypt"),
            (PLAIN.to_vec(), true)
        );
    }

    #[test]
    fn identity_first_reads_encrypted_and_plain() {
        let enc = secrets(&config(&format!(
            "{}{IDENTITY}",
            keyed("aesgcm", &[("key1", B64_32)])
        )));
        let stored = enc.encrypt(SKEY, PLAIN).expect("encrypt");
        // Encryption-first config still reads plain values, as stale.
        assert_eq!(
            enc.decrypt(SKEY, PLAIN).expect("decrypt"),
            (PLAIN.to_vec(), true)
        );

        let off = secrets(&config(&format!(
            "{IDENTITY}{}",
            keyed("aesgcm", &[("key1", B64_32)])
        )));
        assert_eq!(
            off.decrypt(SKEY, &stored).expect("decrypt"),
            (PLAIN.to_vec(), true)
        );
        assert_eq!(
            off.decrypt(SKEY, PLAIN).expect("decrypt"),
            (PLAIN.to_vec(), false)
        );
        assert_eq!(off.encrypt(SKEY, PLAIN).expect("encrypt"), PLAIN);
    }

    #[test]
    fn unknown_prefix_and_wrong_key_fail() {
        let t = secrets(&config(&keyed("aescbc", &[("key1", B64_32)])));
        let stored = t.encrypt(SKEY, PLAIN).expect("encrypt");

        // Plain data without identity, and other providers' envelopes.
        for value in [
            PLAIN,
            b"k8s:enc:kms:v2:foo:xxxx",
            b"k8s:enc:secretbox:v1:key1:x",
        ] {
            let err = t.decrypt(SKEY, value).expect_err("must fail");
            assert!(matches!(err, Error::NoMatchingPrefix), "{err}");
            assert_eq!(err.to_string(), "no matching prefix found");
        }

        // Right provider, unknown key name.
        let renamed = [b"k8s:enc:aescbc:v1:other:", &stored[23..]].concat();
        let err = t.decrypt(SKEY, &renamed).expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "no matching key was found for the provided AES transformer"
        );

        // Right name, different secret: padding check fails.
        let other = secrets(&config(&keyed("aescbc", &[("key1", B64_32_B)])));
        let mut failures = 0;
        for _ in 0..8 {
            let stored = t.encrypt(SKEY, PLAIN).expect("encrypt");
            match other.decrypt(SKEY, &stored) {
                Err(Error::Decrypt(m)) => {
                    assert!(
                        m.starts_with("invalid pad") || m.starts_with("invalid PKCS7"),
                        "{m}"
                    );
                    failures += 1;
                }
                Ok((plain, _)) => assert_ne!(plain, PLAIN),
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(failures > 0);

        // Truncated and misaligned bodies.
        let short = [b"k8s:enc:aescbc:v1:key1:".as_slice(), &[1u8; 5]].concat();
        assert!(
            t.decrypt(SKEY, &short)
                .expect_err("short")
                .to_string()
                .contains("shorter than the required size")
        );
        let odd = [b"k8s:enc:aescbc:v1:key1:".as_slice(), &[1u8; 20]].concat();
        assert!(
            t.decrypt(SKEY, &odd)
                .expect_err("odd")
                .to_string()
                .contains("multiple of the block size")
        );
    }

    #[test]
    fn aesgcm_is_bound_to_the_storage_key() {
        let t = secrets(&config(&keyed("aesgcm", &[("key1", B64_32)])));
        let stored = t.encrypt(SKEY, PLAIN).expect("encrypt");
        let err = t
            .decrypt("/registry/secrets/default/other", &stored)
            .expect_err("moved value must not decrypt");
        assert_eq!(err.to_string(), "cipher: message authentication failed");
        assert_eq!(
            t.decrypt(SKEY, &stored).expect("decrypt"),
            (PLAIN.to_vec(), false)
        );
        // Tampering is caught too.
        let mut bad = stored.clone();
        if let Some(last) = bad.last_mut() {
            *last ^= 1;
        }
        assert!(t.decrypt(SKEY, &bad).is_err());

        // aescbc and secretbox do not authenticate the key, as upstream.
        for kind in ["aescbc", "secretbox"] {
            let t = secrets(&config(&keyed(kind, &[("key1", B64_32)])));
            let stored = t.encrypt(SKEY, PLAIN).expect("encrypt");
            assert!(t.decrypt("/elsewhere", &stored).is_ok());
        }
    }

    #[test]
    fn aescbc_matches_openssl() {
        // openssl enc -aes-256-cbc -K 000102..1f -iv a0a1..af, and the
        // -aes-128-cbc variant with key 000102..0f.
        let key32: Vec<u8> = (0u8..32).collect();
        let iv: [u8; 16] = std::array::from_fn(|i| 0xa0 + i as u8);
        let ct = cbc_seal(&key32, &iv, PLAIN).expect("seal");
        assert_eq!(hex(&ct[..16]), hex(&iv));
        assert_eq!(
            hex(&ct[16..]),
            "da54e881eafae68f34aa2ddb00e56b52372721a55a897321873ece06f719cdc84d165043f360bb841394d4008eac0e6c"
        );
        let ct128 = cbc_seal(&key32[..16], &iv, PLAIN).expect("seal");
        assert_eq!(
            hex(&ct128[16..]),
            "c15858287920aa138bca2074cc32f9c1f6ab1bf20b189049ed34234cb4e336513600f935c935e159e4c5bfa3bbf3c149"
        );
        let empty = cbc_seal(&key32, &iv, b"").expect("seal");
        assert_eq!(hex(&empty[16..]), "600d07a3b9b2c4e4082153d6d1707aa6");

        // And a stored value built from the openssl bytes decrypts.
        let t = secrets(&config(&keyed("aescbc", &[("key1", B64_32)])));
        let stored = [b"k8s:enc:aescbc:v1:key1:".as_slice(), &ct].concat();
        assert_eq!(
            t.decrypt(SKEY, &stored).expect("decrypt"),
            (PLAIN.to_vec(), false)
        );
    }

    #[test]
    fn aesgcm_and_secretbox_match_reference_vectors() {
        // AES-256-GCM from Python's `cryptography` (AESGCM), nonce b0..bb,
        // additional data = the storage key.
        let key32: Vec<u8> = (0u8..32).collect();
        let nonce: [u8; 12] = std::array::from_fn(|i| 0xb0 + i as u8);
        let aad = b"/registry/secrets/default/s1";
        let ct = gcm_seal(&key32, &nonce, aad, PLAIN).expect("seal");
        assert_eq!(
            hex(&ct),
            format!(
                "{}{}",
                hex(&nonce),
                "e27731c282a9996565abf2c1bf38fce0a81e28a27c78ea472da7ed9f7eb8d06034695e30dd8ead052fa80faa449a3fe33a49e0"
            )
        );
        // XSalsa20-Poly1305 from an independent Python implementation
        // (tag first, as NaCl), nonce c0..d7.
        let nonce: [u8; 24] = std::array::from_fn(|i| 0xc0 + i as u8);
        let sb = secretbox_seal(&key32, &nonce, PLAIN).expect("seal");
        assert_eq!(
            hex(&sb),
            format!(
                "{}{}",
                hex(&nonce),
                "affa31547ed532029f9dfd049e249c60e6d5e8e034d752d5197bb937e217b357b237823fefba353b058c86533f346a1f77e976"
            )
        );
        let t = secrets(&config(&keyed("secretbox", &[("k", B64_32)])));
        let stored = [b"k8s:enc:secretbox:v1:k:".as_slice(), &sb].concat();
        assert_eq!(
            t.decrypt(SKEY, &stored).expect("decrypt"),
            (PLAIN.to_vec(), false)
        );
    }

    #[test]
    fn validation_errors() {
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "is empty"),
            (
                format!("apiVersion: v1\nkind: {KIND}\nresources: []\n"),
                "expected apiVersion",
            ),
            (
                format!("apiVersion: {API_VERSION}\nkind: {KIND}\nresources: []\n"),
                "resources: Required value: at least one resources is required",
            ),
            (
                format!(
                    "apiVersion: {API_VERSION}\nkind: {KIND}\nresources:\n  - resources: []\n    providers:\n{IDENTITY}"
                ),
                "resources[0].resources: Required value: at least one resources[0].resources is required",
            ),
            (
                format!(
                    "apiVersion: {API_VERSION}\nkind: {KIND}\nresources:\n  - resources: [secrets]\n    providers: []\n"
                ),
                "at least one resources[0].providers is required",
            ),
            (config("      - rot13: {}\n"), "unknown field `rot13`"),
            (
                config("      - {}\n"),
                "provider does not contain any of the expected providers",
            ),
            (
                config("      - identity: {}\n        aescbc:\n          keys: []\n"),
                "more than one provider specified in a single element",
            ),
            (
                config("      - aescbc:\n          keys: []\n"),
                "resources[0].providers[0].aescbc.keys: Required value: at least one keys is required",
            ),
            (
                config(&keyed("aescbc", &[("key1", "c2hvcnQ=")])),
                "resources[0].providers[0].aescbc.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 5, expected one of [16 24 32]",
            ),
            (
                config(&keyed("secretbox", &[("key1", B64_16)])),
                "secret is not of the expected length, got 16, expected one of [32]",
            ),
            (
                config(&keyed("aesgcm", &[("key1", "not base64!")])),
                "secrets must be base64 encoded",
            ),
            (
                config(&keyed("aescbc", &[("", B64_32)])),
                "keys[0].name: Required value: name is a mandatory field for a key",
            ),
            (
                config(&keyed("aescbc", &[("key1", "")])),
                "keys[0].secret: Required value: secret is a mandatory field for a key",
            ),
            (
                config(&keyed("aescbc", &[("key1", B64_32), ("key1", B64_16)])),
                "aescbc.keys[1].name: Duplicate value: \"key1\"",
            ),
            (
                config(
                    "      - kms:\n          name: vault\n          endpoint: unix:///kms.sock\n",
                ),
                "resources[0].providers[0].kms: kms provider is not supported by kelp",
            ),
            (
                config("      - identity: {}\n        extra: 1\n"),
                "unknown field `extra`",
            ),
        ];
        for (text, want) in cases {
            let got = err_text(&text);
            assert!(got.contains(want), "want {want:?} in {got:?}");
        }
    }

    #[test]
    fn resource_list_rules() {
        let with = |resources: &str| {
            format!(
                "apiVersion: {API_VERSION}\nkind: {KIND}\nresources:\n  - resources: {resources}\n    providers:\n{IDENTITY}"
            )
        };
        for (list, want) in [
            (
                "[secrets, secrets]",
                "the same resource cannot be specified multiple times",
            ),
            ("[secrets, '*.']", "using overlapping resources"),
            ("['*.*', deployments.apps]", "using overlapping resources"),
            ("[Secrets]", "should not contain capital letters"),
            ("['*']", "use '*.' to encrypt all the resources"),
            ("[serviceipallocations]", "do not have REST API/s"),
            ("['*.events.k8s.io']", "Use 'events' instead"),
            (
                "[deployments.extensions]",
                "'extensions' group has been removed",
            ),
            ("['secrets.*']", "across groups is not supported"),
        ] {
            let got = err_text(&with(list));
            assert!(got.contains(want), "{list}: want {want:?} in {got:?}");
        }
        // Two problems are reported together.
        let got = err_text(&with("[Secrets, '*']"));
        assert!(
            got.contains("capital letters") && got.contains("'*.'"),
            "{got}"
        );

        // A later entry hidden by an earlier wildcard.
        let masked = format!(
            "apiVersion: {API_VERSION}\nkind: {KIND}\nresources:\n  - resources: ['*.']\n    providers:\n{IDENTITY}  - resources: [secrets]\n    providers:\n{IDENTITY}"
        );
        assert!(
            err_text(&masked).contains("resource \"secrets\" is masked by earlier rule \"*.\"")
        );
        let masked = format!(
            "apiVersion: {API_VERSION}\nkind: {KIND}\nresources:\n  - resources: ['*.*']\n    providers:\n{IDENTITY}  - resources: ['*.apps']\n    providers:\n{IDENTITY}"
        );
        assert!(
            err_text(&masked).contains("resource \"*.apps\" is masked by earlier rule \"*.*\"")
        );
    }

    #[test]
    fn resource_matching() {
        let text = format!(
            r#"
apiVersion: {API_VERSION}
kind: {KIND}
resources:
  - resources: [secrets, deployments.apps]
    providers:
      - aescbc: {{keys: [{{name: exact, secret: "{B64_32}"}}]}}
  - resources: [configmaps]
    providers:
      - secretbox: {{keys: [{{name: cm, secret: "{B64_32}"}}]}}
  - resources: [secrets]
    providers:
      - aesgcm: {{keys: [{{name: second, secret: "{B64_32}"}}]}}
  - resources: ["*.apps"]
    providers:
      - aesgcm: {{keys: [{{name: apps, secret: "{B64_32}"}}]}}
  - resources: ["*."]
    providers:
      - aescbc: {{keys: [{{name: core, secret: "{B64_32}"}}]}}
  - resources: ["*.*"]
    providers:
      - secretbox: {{keys: [{{name: any, secret: "{B64_32}"}}]}}
"#
        );
        let cfg = EncryptionConfig::parse(&text).expect("parses");
        let prefix = |g: &str, r: &str| cfg.transformer_for(g, r).map(Transformer::write_prefix);
        assert_eq!(
            prefix("", "secrets").as_deref(),
            Some("k8s:enc:aescbc:v1:exact:")
        );
        assert_eq!(
            prefix("apps", "deployments").as_deref(),
            Some("k8s:enc:aescbc:v1:exact:")
        );
        assert_eq!(
            prefix("", "configmaps").as_deref(),
            Some("k8s:enc:secretbox:v1:cm:")
        );
        assert_eq!(
            prefix("apps", "statefulsets").as_deref(),
            Some("k8s:enc:aesgcm:v1:apps:")
        );
        assert_eq!(
            prefix("", "pods").as_deref(),
            Some("k8s:enc:aescbc:v1:core:")
        );
        assert_eq!(
            prefix("batch", "jobs").as_deref(),
            Some("k8s:enc:secretbox:v1:any:")
        );

        // `secrets` listed twice: the first entry writes, both read.
        let t = cfg.transformer_for("", "secrets").expect("secrets");
        let second = secrets(&config(&keyed("aesgcm", &[("second", B64_32)])));
        let stored = second.encrypt(SKEY, PLAIN).expect("encrypt");
        assert_eq!(
            t.decrypt(SKEY, &stored).expect("decrypt"),
            (PLAIN.to_vec(), true)
        );

        // Nothing configured: plain storage.
        let only = EncryptionConfig::parse(&config(IDENTITY)).expect("parses");
        assert!(only.transformer_for("", "configmaps").is_none());
        assert!(only.transformer_for("apps", "secrets").is_none());
    }

    #[test]
    fn json_and_yaml_both_load() {
        let json = format!(
            r#"{{"kind":"{KIND}","apiVersion":"{API_VERSION}","resources":[{{"resources":["secrets"],"providers":[{{"aescbc":{{"keys":[{{"name":"k","secret":"{B64_32}"}}]}}}},{{"identity":{{}}}}]}}]}}"#
        );
        let a = secrets(&json);
        let b = secrets(&config(&format!(
            "{}{IDENTITY}",
            keyed("aescbc", &[("k", B64_32)])
        )));
        let stored = a.encrypt(SKEY, PLAIN).expect("encrypt");
        assert_eq!(
            b.decrypt(SKEY, &stored).expect("decrypt"),
            (PLAIN.to_vec(), false)
        );
        // Wrapped base64, as Go tolerates.
        let wrapped = "AAECAwQFBgcICQoLDA0ODxAREhMU\\nFRYXGBkaGxwdHh8=";
        let c = secrets(&config(&keyed("aescbc", &[("k", wrapped)])));
        assert_eq!(
            c.decrypt(SKEY, &stored).expect("decrypt"),
            (PLAIN.to_vec(), false)
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let cfg = EncryptionConfig::parse(&config(&keyed("aescbc", &[("key1", B64_32)])))
            .expect("parses");
        let shown = format!("{cfg:?}");
        assert!(shown.contains("key1") && shown.contains("redacted"));
        assert!(!shown.contains("29, 30, 31"), "{shown}");
    }

    #[test]
    fn generated_config_is_k3s_shaped() {
        let text = generate_config(K3S_INITIAL_KEY_NAME);
        assert!(text.starts_with(
            r#"{"kind":"EncryptionConfiguration","apiVersion":"apiserver.config.k8s.io/v1","resources":[{"resources":["secrets"],"providers":[{"aescbc":{"keys":[{"name":"aescbckey","secret":""#
        ));
        assert!(text.ends_with(r#""}]}},{"identity":{}}]}]}"#));
        let t = secrets(&text);
        assert_eq!(t.write_prefix(), "k8s:enc:aescbc:v1:aescbckey:");
        // Existing plain secrets stay readable (and are stale).
        assert_eq!(
            t.decrypt(SKEY, PLAIN).expect("decrypt"),
            (PLAIN.to_vec(), true)
        );
        // Two generated configs never share a key.
        let other = secrets(&generate_config(K3S_INITIAL_KEY_NAME));
        let stored = t.encrypt(SKEY, PLAIN).expect("encrypt");
        assert!(
            other
                .decrypt(SKEY, &stored)
                .map(|(p, _)| p != PLAIN)
                .unwrap_or(true)
        );
    }

    #[test]
    fn rotation_flow() {
        let v1 = generate_config(K3S_INITIAL_KEY_NAME);
        let old = secrets(&v1);
        let stored = old.encrypt(SKEY, PLAIN).expect("encrypt");

        let name = format!("{K3S_ROTATED_KEY_PREFIX}2024-05-01T12:00:00Z");
        let v2 = with_new_first_key(&v1, &name).expect("rotate");
        let mid = secrets(&v2);
        assert_eq!(mid.write_prefix(), format!("k8s:enc:aescbc:v1:{name}:"));
        let (plain, stale) = mid.decrypt(SKEY, &stored).expect("decrypt old");
        assert_eq!((plain.as_slice(), stale), (PLAIN, true));
        let rewritten = mid.encrypt(SKEY, &plain).expect("re-encrypt");
        assert_eq!(
            mid.decrypt(SKEY, &rewritten).expect("decrypt"),
            (PLAIN.to_vec(), false)
        );
        assert!(
            with_new_first_key(&v2, &name)
                .expect_err("duplicate")
                .to_string()
                .contains("already exists")
        );

        let v3 = without_stale_keys(&v2).expect("prune");
        let new = secrets(&v3);
        assert_eq!(
            new.decrypt(SKEY, &rewritten).expect("decrypt"),
            (PLAIN.to_vec(), false)
        );
        assert!(new.decrypt(SKEY, &stored).is_err());
        // Identity stays, so plain values remain readable.
        assert!(new.decrypt(SKEY, PLAIN).is_ok());
        assert!(v3.contains(r#"{"identity":{}}"#));

        // Disabled encryption (identity first) is not pruned.
        let off = config(&format!("{IDENTITY}{}", keyed("aescbc", &[("k", B64_32)])));
        assert!(without_stale_keys(&off).is_err());
        // And a file without an aescbc provider for secrets cannot rotate.
        let gcm = config(&keyed("aesgcm", &[("k", B64_32)]));
        assert!(with_new_first_key(&gcm, "n").is_err());
    }
}
