//! Kubernetes protobuf request bodies (being written; until then they are refused).

use serde_json::Value;

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not supported yet.
    #[error("protobuf request bodies are not supported yet; send application/json")]
    Unsupported,
}

/// Decodes a protobuf body into JSON.
pub fn decode(_body: &[u8]) -> Result<Value, DecodeError> {
    Err(DecodeError::Unsupported)
}
