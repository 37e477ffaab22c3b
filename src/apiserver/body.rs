//! Request bodies in, responses out: content types, size limits, decoding
//! JSON / YAML / protobuf, and rendering errors as `metav1.Status`.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::api::ApiError;

/// Largest request body accepted (upstream's 3 MiB object limit plus envelope).
pub const MAX_BODY: usize = 3 * 1024 * 1024 + 64 * 1024;

/// Content type of aggregated discovery v2.
pub const DISCOVERY_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// Content type of aggregated discovery v2beta1 (kubectl ≤ 1.29).
pub const DISCOVERY_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
/// Content type of server-side Tables.
pub const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, _) = self.code_and_reason();
        if code >= 500 {
            tracing::error!(err = %self, "request failed");
        }
        let mut response = json_response(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &self.status(),
        );
        if code == 429 {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// How much of an oversized body is read and discarded before answering 413,
/// so the client sees the Status instead of a reset connection.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Reads a request body of at most [`MAX_BODY`] bytes; 413 beyond that.
pub async fn read_limited(body: axum::body::Body) -> Result<axum::body::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buffer = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= MAX_BODY {
            buffer.extend_from_slice(&data);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::TooLarge(format!("limit is {MAX_BODY} bytes")));
    }
    Ok(buffer.into())
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// A JSON response with an explicit content type.
pub fn typed_response(status: StatusCode, content_type: &'static str, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

/// Content type of metadata-only objects and lists.
pub const PARTIAL: &str = "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io";
/// Content type of metadata-only lists.
pub const PARTIAL_LIST: &str = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io";

/// Whether the client asked for metadata only (`as=PartialObjectMetadata`
/// or `as=PartialObjectMetadataList`, as client-go's metadata client and
/// kube-rs's `list_metadata` do), before a Table.
pub fn wants_metadata(headers: &HeaderMap) -> bool {
    let first = accept(headers)
        .split(',')
        .next()
        .unwrap_or("")
        .replace(' ', "");
    first.contains("as=PartialObjectMetadata") && first.contains("g=meta.k8s.io")
}

/// Whether the client asked for a server-side Table.
pub fn wants_table(headers: &HeaderMap) -> bool {
    accept(headers).split(',').any(|part| {
        let part = part.replace(' ', "");
        part.contains("as=Table") && part.contains("g=meta.k8s.io")
    })
}

/// The Accept header ("" if absent).
pub fn accept(headers: &HeaderMap) -> &str {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// What the body's content type says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// application/json (and anything JSON-compatible).
    Json,
    /// application/yaml.
    Yaml,
    /// application/vnd.kubernetes.protobuf.
    Protobuf,
}

/// The media type of the body, without parameters.
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decodes an object body by its content type. Duplicate JSON keys are reported
/// in the returned list (for fieldValidation), never silently merged.
pub fn decode_object(headers: &HeaderMap, body: &[u8]) -> Result<(Value, Vec<String>), ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::TooLarge(format!("limit is {MAX_BODY} bytes")));
    }
    let format = match content_type(headers).as_str() {
        "application/json" | "" | "*/*" => BodyFormat::Json,
        "application/yaml" | "application/x-yaml" | "text/yaml" => BodyFormat::Yaml,
        "application/vnd.kubernetes.protobuf" => BodyFormat::Protobuf,
        _ => return Err(ApiError::UnsupportedMediaType),
    };
    decode_as(format, body)
}

/// Decodes `body` as `format`.
pub fn decode_as(format: BodyFormat, body: &[u8]) -> Result<(Value, Vec<String>), ApiError> {
    let (value, duplicates) = match format {
        BodyFormat::Json => parse_json(body)?,
        BodyFormat::Yaml => {
            let value: Value = serde_yaml_ng::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("error converting YAML to JSON: {e}"))
            })?;
            (value, vec![])
        }
        BodyFormat::Protobuf => (
            crate::api::codec::protobuf::decode(body)
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
            vec![],
        ),
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    Ok((value, duplicates))
}

/// Parses JSON, collecting the paths of duplicate keys.
pub fn parse_json(body: &[u8]) -> Result<(Value, Vec<String>), ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    let mut duplicates = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    // A second pass that only looks for repeated keys; cheap next to the parse.
    let _ = serde::Deserializer::deserialize_any(
        &mut de,
        DuplicateFinder {
            path: String::new(),
            found: &mut duplicates,
        },
    );
    Ok((value, duplicates))
}

struct DuplicateFinder<'a> {
    path: String,
    found: &'a mut Vec<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for DuplicateFinder<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for DuplicateFinder<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if !seen.insert(key) {
                self.found.push(path.clone());
            }
            map.next_value_seed(DuplicateFinder {
                path,
                found: self.found,
            })?;
        }
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while seq
            .next_element_seed(DuplicateFinder {
                path: format!("{}[{index}]", self.path),
                found: self.found,
            })?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_duplicate_keys() {
        let (value, dups) =
            parse_json(br#"{"a":1,"b":{"c":1,"c":2},"l":[{"x":1,"x":1}]}"#).expect("parse");
        assert_eq!(value["b"]["c"], 2);
        assert_eq!(dups, ["b.c", "l[0].x"]);
    }

    #[test]
    fn rejects_garbage_and_unknown_types() {
        assert_eq!(
            parse_json(b"{nope").expect_err("bad").code_and_reason().0,
            400
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(
            decode_object(&headers, b"{}")
                .expect_err("415")
                .code_and_reason()
                .0,
            415
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/yaml"),
        );
        let (v, _) =
            decode_object(&headers, b"kind: ConfigMap\nmetadata:\n  name: x\n").expect("yaml");
        assert_eq!(v["metadata"]["name"], "x");
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert_eq!(
            decode_object(&headers, b"[1]")
                .expect_err("array")
                .code_and_reason()
                .0,
            400
        );
    }
}
