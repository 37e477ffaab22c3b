//! `GET /static/PATH`: the files under `<data-dir>/server/static/`, to
//! anyone, as k3s serves them: HelmCharts name chart archives there as
//! `https://%{KUBERNETES_API}%/static/charts/NAME.tgz`, which the job
//! fetches without credentials.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

use super::ApiState;

/// Where the files are served.
pub const PREFIX: &str = "/static/";

/// The file `path` (below the prefix) names in `dir`, if it stays inside.
pub fn resolve(dir: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    Some(dir.join(relative))
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

/// The handler.
pub async fn serve(
    State(state): State<Arc<ApiState>>,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> Response {
    let Some(dir) = &state.config.static_dir else {
        return not_found();
    };
    let Some(file) = resolve(dir, &path) else {
        return not_found();
    };
    match tokio::fs::read(&file).await {
        Ok(bytes) => {
            let kind = match file.extension().and_then(|e| e.to_str()) {
                Some("tgz" | "gz") => "application/gzip",
                Some("yaml" | "yml") => "application/yaml",
                Some("json") => "application/json",
                _ => "application/octet-stream",
            };
            ([(header::CONTENT_TYPE, kind)], bytes).into_response()
        }
        Err(_) => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_directory() {
        let dir = Path::new("/d/static");
        assert_eq!(
            resolve(dir, "charts/x.tgz"),
            Some(PathBuf::from("/d/static/charts/x.tgz"))
        );
        assert_eq!(resolve(dir, "../server/token"), None);
        assert_eq!(resolve(dir, "charts/../../x"), None);
        assert_eq!(resolve(dir, "./x"), None);
    }
}
