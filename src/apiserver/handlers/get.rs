//! GET of one object (also `/status`).

use axum::http::StatusCode;
use axum::response::Response;

use super::{Request, load, render};
use crate::api::ApiError;
use crate::apiserver::ApiState;

/// Reads the named object.
pub async fn get(state: &ApiState, req: &Request) -> Result<Response, ApiError> {
    let (obj, _) = load(state, req).await?;
    Ok(render(state, req, StatusCode::OK, &obj))
}
