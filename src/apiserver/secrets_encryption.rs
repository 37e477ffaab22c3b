//! Administering encryption at rest on a running server (k3s's
//! `secrets-encrypt`): status, and `rotate-keys` — a new first key, every
//! stored secret re-encrypted with it, the old key dropped — without
//! downtime. Served at `/v1-kelp/encrypt/*`, which only `system:masters`
//! may reach (no role names these paths).

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::ApiState;
use super::body::json_response;
use crate::api::ApiError;
use crate::store::encrypted::EncryptedStore;
use crate::store::encryption::{self, EncryptionConfig};

/// The encrypting store and the file its configuration lives in.
pub struct SecretsEncryption {
    /// The store the API server writes through.
    pub store: Arc<EncryptedStore>,
    /// `<data-dir>/server/cred/encryption-config.json` (k3s's path).
    pub file: PathBuf,
    /// One rotation at a time.
    pub rotating: tokio::sync::Mutex<()>,
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
    let text = std::fs::read_to_string(&enc.file).map_err(ApiError::internal)?;
    let name = format!(
        "{}{}",
        encryption::K3S_ROTATED_KEY_PREFIX,
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    // 1. The new key first: writes use it, reads still know the old one.
    let rotated = encryption::with_new_first_key(&text, &name).map_err(ApiError::internal)?;
    install(enc, &rotated)?;
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
    install(enc, &cleaned)?;
    tracing::info!(key = %name, rewritten, "secrets encryption key rotated");
    Ok(json!({"activeKey": name, "reencrypted": rewritten}))
}

/// Writes `text` as the configuration file and puts it in force.
fn install(enc: &SecretsEncryption, text: &str) -> Result<(), ApiError> {
    let config = EncryptionConfig::parse(text).map_err(ApiError::internal)?;
    crate::pki::write_file_mode(&enc.file, text, 0o600).map_err(ApiError::internal)?;
    enc.store.reload(config);
    Ok(())
}
