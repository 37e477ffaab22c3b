//! Administering encryption at rest on a running server (k3s's
//! `secrets-encrypt`): status, and `rotate-keys` — a new first key, every
//! stored secret re-encrypted with it, the old key dropped — without
//! downtime. Served at `/v1-kelp/encrypt/*`, which only `system:masters`
//! may reach (no role names these paths).
//!
//! On a shared datastore the other servers take the configuration from the
//! credentials sealed there (`pki::shared`) when they start: a rotation is
//! refused while another server runs (it would go on writing and reading
//! with the old key), and each configuration it puts in force is sealed
//! there again for them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::json;

use super::ApiState;
use super::body::json_response;
use crate::api::ApiError;
use crate::store::encrypted::EncryptedStore;
use crate::store::encryption::{self, EncryptionConfig};
use crate::telemetry::{Descriptor, Metrics};

/// The encrypting store and the file its configuration lives in.
pub struct SecretsEncryption {
    /// The store the API server writes through.
    pub store: Arc<EncryptedStore>,
    /// `<data-dir>/server/cred/encryption-config.json` (k3s's path).
    pub file: PathBuf,
    /// One rotation at a time.
    pub rotating: tokio::sync::Mutex<()>,
    /// Counts each time the configuration is put in force again.
    pub reloads: ReloadMetrics,
    /// On a shared datastore: the credentials the servers share.
    pub shared: Option<SharedBootstrap>,
}

/// Where the servers on a shared datastore keep the credentials they share.
pub struct SharedBootstrap {
    /// This server's directory (`<data-dir>/server`), whose files are shared.
    pub server_dir: PathBuf,
    /// The join token's credentials, which seal them.
    pub passphrase: String,
}

/// kube-apiserver's encryption configuration controller metrics: here each
/// reload of the configuration (a rotation makes two) counts, as k3s's
/// rotations reach the API server as automatic reloads of its file.
#[derive(Debug, Clone)]
pub struct ReloadMetrics {
    id_hash: String,
    reloads: Family<ReloadLabels, Counter>,
    last: Family<ReloadLabels, Gauge<f64, AtomicU64>>,
    successes: Family<IdLabels, Counter>,
    failures: Family<IdLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    apiserver_id_hash: String,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdLabels {
    apiserver_id_hash: String,
}

impl ReloadMetrics {
    /// Registers the metrics of the API server `apiserver_id`; upstream's
    /// two per-outcome counters are deprecated since 1.30.0 (hidden unless
    /// `--show-hidden-metrics-for-version`).
    pub fn new(metrics: &Metrics, apiserver_id: &str) -> Self {
        use sha2::Digest as _;
        let this = Self {
            id_hash: format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(apiserver_id.as_bytes()))
            ),
            reloads: Family::default(),
            last: Family::default(),
            successes: Family::default(),
            failures: Family::default(),
        };
        const PREFIX: &str = "apiserver_encryption_config_controller_";
        metrics.register(
            Descriptor::new(
                format!("{PREFIX}automatic_reloads"),
                "Total number of reload successes and failures of encryption configuration split by apiserver identity",
            ),
            this.reloads.clone(),
        );
        metrics.register(
            Descriptor::new(
                format!("{PREFIX}automatic_reload_last_timestamp_seconds"),
                "Timestamp of the last successful or failed automatic reload of encryption configuration split by apiserver identity",
            ),
            this.last.clone(),
        );
        metrics.register(
            Descriptor::new(
                format!("{PREFIX}automatic_reload_success"),
                "Total number of successful automatic reloads of encryption configuration split by apiserver identity",
            )
            .deprecated_since("1.30.0"),
            this.successes.clone(),
        );
        metrics.register(
            Descriptor::new(
                format!("{PREFIX}automatic_reload_failures"),
                "Total number of failed automatic reloads of encryption configuration split by apiserver identity",
            )
            .deprecated_since("1.30.0"),
            this.failures.clone(),
        );
        this
    }

    fn record(&self, ok: bool) {
        let labels = ReloadLabels {
            apiserver_id_hash: self.id_hash.clone(),
            status: if ok { "success" } else { "failure" },
        };
        self.reloads.get_or_create(&labels).inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.last.get_or_create(&labels).set(now);
        let id = IdLabels {
            apiserver_id_hash: self.id_hash.clone(),
        };
        if ok { &self.successes } else { &self.failures }
            .get_or_create(&id)
            .inc();
    }
}

/// Where the status is served.
pub const STATUS_PATH: &str = "/v1-kelp/encrypt/status";
/// Where a rotation is asked for.
pub const ROTATE_PATH: &str = "/v1-kelp/encrypt/rotate-keys";

/// GET: whether secrets are encrypted, with which key, and how many values
/// are under it.
pub async fn status(State(state): State<Arc<ApiState>>) -> Response {
    let Some(enc) = &state.secrets_encryption else {
        return json_response(StatusCode::OK, &json!({"enabled": false}));
    };
    let config = enc.store.config();
    let census = match enc.store.census(false).await {
        Ok(c) => c,
        Err(e) => return axum::response::IntoResponse::into_response(ApiError::internal(e)),
    };
    json_response(
        StatusCode::OK,
        &json!({
            "enabled": true,
            "activeKey": config.transformer_for("", "secrets").map(|t| t.write_prefix()),
            "current": census.current,
            "stale": census.stale,
        }),
    )
}

/// POST: rotate the key and re-encrypt every secret.
pub async fn rotate_keys(State(state): State<Arc<ApiState>>) -> Response {
    match rotate(&state).await {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(e) => axum::response::IntoResponse::into_response(e),
    }
}

async fn rotate(state: &ApiState) -> Result<serde_json::Value, ApiError> {
    let enc = state.secrets_encryption.as_ref().ok_or_else(|| {
        ApiError::bad_request("secrets encryption is off: start kelp with --secrets-encryption")
    })?;
    let _one = enc.rotating.lock().await;
    if enc.shared.is_some() {
        let servers = running_servers(state).await?;
        if servers > 1 {
            return Err(ApiError::bad_request(format!(
                "{servers} servers are running on this datastore: stop the others and wait until they leave the kubernetes Service's endpoints (15 s), rotate, then start them again (they take the new key from the datastore)"
            )));
        }
    }
    let text = std::fs::read_to_string(&enc.file).map_err(ApiError::internal)?;
    let name = format!(
        "{}{}",
        encryption::K3S_ROTATED_KEY_PREFIX,
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    // 1. The new key first: writes use it, reads still know the old one.
    let rotated = encryption::with_new_first_key(&text, &name).map_err(ApiError::internal)?;
    install(state, enc, &rotated).await?;
    // 2. Everything under the old key again under the new one (a second pass
    //    catches writes that raced the switch).
    let mut rewritten = 0;
    for _ in 0..2 {
        rewritten += enc
            .store
            .census(true)
            .await
            .map_err(ApiError::internal)?
            .rewritten;
    }
    // 3. The old key goes.
    let cleaned = encryption::without_stale_keys(&rotated).map_err(ApiError::internal)?;
    install(state, enc, &cleaned).await?;
    tracing::info!(key = %name, rewritten, "secrets encryption key rotated");
    Ok(json!({"activeKey": name, "reencrypted": rewritten}))
}

/// Writes `text` as the configuration file and puts it in force (and, on
/// a shared datastore, seals it there for the other servers).
async fn install(state: &ApiState, enc: &SecretsEncryption, text: &str) -> Result<(), ApiError> {
    let installed = EncryptionConfig::parse(text)
        .map_err(ApiError::internal)
        .and_then(|config| {
            crate::pki::write_file_mode(&enc.file, text, 0o600).map_err(ApiError::internal)?;
            enc.store.reload(config);
            Ok(())
        });
    enc.reloads.record(installed.is_ok());
    installed?;
    match &enc.shared {
        Some(shared) => share(state, shared).await,
        None => Ok(()),
    }
}

/// How many servers the `kubernetes` Service's endpoints hold (each
/// server's address stays there while its Lease is renewed).
async fn running_servers(state: &ApiState) -> Result<usize, ApiError> {
    let endpoints = state
        .registry
        .lookup("", "v1", "endpoints")
        .ok_or_else(|| ApiError::internal("no endpoints resource"))?;
    let stored = state
        .store
        .get(&endpoints.key(Some("default"), "kubernetes"))
        .await
        .map_err(ApiError::internal)?;
    let Some(kv) = stored else {
        return Ok(1);
    };
    let object: serde_json::Value =
        serde_json::from_slice(&kv.value).map_err(ApiError::internal)?;
    Ok(object["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|subset| subset["addresses"].as_array().map_or(0, Vec::len))
        .sum())
}

/// Seals this server's shared files (the configuration just written among
/// them) in the datastore again.
async fn share(state: &ApiState, shared: &SharedBootstrap) -> Result<(), ApiError> {
    use crate::pki::shared::{SharedCredentials, store_key};
    let sealed = SharedCredentials::collect(&shared.server_dir)
        .map_err(ApiError::internal)?
        .seal(&shared.passphrase);
    let key = store_key(&shared.passphrase);
    let written = match state.store.get(&key).await.map_err(ApiError::internal)? {
        Some(kv) => state.store.update(&key, sealed, kv.mod_revision).await,
        None => state.store.create(&key, sealed).await,
    };
    written.map(|_| ()).map_err(ApiError::internal)
}
