//! The OpenAPI v2 (Swagger 2.0) document, built from the same schemas as
//! the v3 documents: JSON, and the protobuf form kubectl asks for
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, gnostic's
//! `openapi.v2.Document`). kubectl validates `kind: List` documents against
//! its definitions (their `x-kubernetes-group-version-kind` names the kinds).
//! Only definitions are published: paths are the v3 documents' business.

use prost::encoding::{WireType, encode_key, encode_varint};
use serde_json::{Map, Value, json};

const V3_REFS: &str = "#/components/schemas/";
const V2_REFS: &str = "#/definitions/";

/// The Swagger 2.0 document over `definitions` (v3-style schemas, whose
/// references are rewritten to `#/definitions/`).
pub fn document(definitions: &Map<String, Value>, version: &str) -> Value {
    let definitions: Map<String, Value> = definitions
        .iter()
        .map(|(name, schema)| (name.clone(), v2_schema(schema)))
        .collect();
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": version},
        "paths": {},
        "definitions": definitions,
    })
}

/// A v3 schema as v2 has it: references into `#/definitions/`, and what v2
/// cannot say (`x-kubernetes-preserve-unknown-fields` objects, `anyOf`,
/// `oneOf`, `nullable`) left open, as upstream publishes CRDs in v2.
fn v2_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let preserve = map
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
            let mut out = Map::new();
            for (key, value) in map {
                let dropped = matches!(key.as_str(), "anyOf" | "oneOf" | "nullable" | "not")
                    || (preserve
                        && matches!(
                            key.as_str(),
                            "type" | "properties" | "required" | "additionalProperties"
                        ));
                if dropped {
                    continue;
                }
                let value = match (key.as_str(), value) {
                    ("$ref", Value::String(r)) => Value::String(r.replace(V3_REFS, V2_REFS)),
                    // `properties` is a map of names, not a schema.
                    ("properties", Value::Object(props)) => Value::Object(
                        props
                            .iter()
                            .map(|(k, v)| (k.clone(), v2_schema(v)))
                            .collect(),
                    ),
                    (k, v)
                        if k.starts_with("x-")
                            || k == "enum"
                            || k == "default"
                            || k == "example" =>
                    {
                        v.clone()
                    }
                    (_, v) => v2_schema(v),
                };
                out.insert(key.clone(), value);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(v2_schema).collect()),
        other => other.clone(),
    }
}

/// The document in gnostic's protobuf form (`openapi.v2.Document`).
pub fn encode(doc: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string(&mut out, 1, doc["swagger"].as_str().unwrap_or("2.0"));
    let mut info = Vec::new();
    string(
        &mut info,
        1,
        doc["info"]["title"].as_str().unwrap_or_default(),
    );
    string(
        &mut info,
        2,
        doc["info"]["version"].as_str().unwrap_or_default(),
    );
    message(&mut out, 2, &info);
    message(&mut out, 8, &[]);
    let mut definitions = Vec::new();
    for (name, schema) in doc["definitions"].as_object().into_iter().flatten() {
        named_schema(&mut definitions, 1, name, schema);
    }
    message(&mut out, 9, &definitions);
    out
}

/// `openapi.v2.Schema`.
fn schema_message(schema: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(map) = schema.as_object() else {
        return out;
    };
    // A described reference (`allOf: [{$ref}]`) is the reference itself.
    let reference = map.get("$ref").and_then(Value::as_str).or_else(|| {
        match map
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            Some([only]) => only.get("$ref").and_then(Value::as_str),
            _ => None,
        }
    });
    if let Some(reference) = reference {
        string(&mut out, 1, reference);
    }
    string(
        &mut out,
        2,
        map.get("format")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    string(
        &mut out,
        4,
        map.get("description")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    for required in map
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        string(&mut out, 19, required.as_str().unwrap_or_default());
    }
    match map.get("additionalProperties") {
        Some(Value::Bool(allowed)) => {
            let mut item = Vec::new();
            boolean(&mut item, 2, *allowed);
            message(&mut out, 21, &item);
        }
        Some(inner @ Value::Object(_)) => {
            let mut item = Vec::new();
            message(&mut item, 1, &schema_message(inner));
            message(&mut out, 21, &item);
        }
        _ => {}
    }
    if reference.is_none() {
        let kind = match map.get("type") {
            Some(Value::String(t)) => Some(t.as_str()),
            // `["string", "null"]`: the one that is not null.
            Some(Value::Array(types)) => types
                .iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null"),
            _ => None,
        };
        if let Some(kind) = kind {
            let mut item = Vec::new();
            string(&mut item, 1, kind);
            message(&mut out, 22, &item);
        }
    }
    if let Some(items) = map.get("items").filter(|i| i.is_object()) {
        let mut item = Vec::new();
        message(&mut item, 1, &schema_message(items));
        message(&mut out, 23, &item);
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object)
        && !props.is_empty()
    {
        let mut properties = Vec::new();
        for (name, value) in props {
            named_schema(&mut properties, 1, name, value);
        }
        message(&mut out, 25, &properties);
    }
    for (key, value) in map.iter().filter(|(k, _)| k.starts_with("x-")) {
        let mut any = Vec::new();
        // gnostic keeps extension values as YAML; JSON is YAML.
        string(&mut any, 2, &value.to_string());
        let mut named = Vec::new();
        string(&mut named, 1, key);
        message(&mut named, 2, &any);
        message(&mut out, 31, &named);
    }
    out
}

/// A `NamedSchema` as field `tag`.
fn named_schema(out: &mut Vec<u8>, tag: u32, name: &str, schema: &Value) {
    let mut named = Vec::new();
    string(&mut named, 1, name);
    message(&mut named, 2, &schema_message(schema));
    message(out, tag, &named);
}

/// A length-delimited field (written even when empty: presence matters
/// for sub-messages).
fn message(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A string field; proto3 leaves empty strings out.
fn string(out: &mut Vec<u8>, tag: u32, text: &str) {
    if !text.is_empty() {
        message(out, tag, text.as_bytes());
    }
}

fn boolean(out: &mut Vec<u8>, tag: u32, value: bool) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(u64::from(value), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definitions() -> Map<String, Value> {
        let pod = json!({
            "description": "A pod.",
            "type": "object",
            "required": ["spec"],
            "properties": {
                "metadata": {"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}], "description": "meta"},
                "spec": {"type": "object", "properties": {"containers": {"type": "array", "items": {"type": "string"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "x-kubernetes-group-version-kind": [{"group": "", "kind": "Pod", "version": "v1"}],
        });
        let mut map = Map::new();
        map.insert("io.k8s.api.core.v1.Pod".into(), pod);
        map.insert(
            "com.example.v1.Widget".into(),
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"a": {"type": "string"}}}),
        );
        map
    }

    #[test]
    fn references_point_into_definitions_and_open_schemas_stay_open() {
        let doc = document(&definitions(), "v1.33.0");
        assert_eq!(doc["swagger"], "2.0");
        let pod = &doc["definitions"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["properties"]["metadata"]["allOf"][0]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        let widget = &doc["definitions"]["com.example.v1.Widget"];
        assert!(widget.get("type").is_none() && widget.get("properties").is_none());
    }

    /// Reads (tag, bytes) of the length-delimited fields of a message.
    fn fields(mut buf: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let (tag, wire) = prost::encoding::decode_key(&mut buf).expect("key");
            match wire {
                WireType::LengthDelimited => {
                    let len = prost::encoding::decode_varint(&mut buf).expect("len") as usize;
                    out.push((tag, buf[..len].to_vec()));
                    buf = &buf[len..];
                }
                _ => {
                    let value = prost::encoding::decode_varint(&mut buf).expect("varint");
                    out.push((tag, vec![value as u8]));
                }
            }
        }
        out
    }

    fn field(buf: &[u8], tag: u32) -> Vec<Vec<u8>> {
        fields(buf)
            .into_iter()
            .filter(|(t, _)| *t == tag)
            .map(|(_, b)| b)
            .collect()
    }

    #[test]
    fn the_protobuf_form_is_gnostics_document() {
        let bytes = encode(&document(&definitions(), "v1.33.0"));
        assert_eq!(field(&bytes, 1), vec![b"2.0".to_vec()]);
        let info = &field(&bytes, 2)[0];
        assert_eq!(field(info, 2), vec![b"v1.33.0".to_vec()]);
        let definitions = &field(&bytes, 9)[0];
        let named = field(definitions, 1);
        assert_eq!(named.len(), 2);
        let pod = named
            .iter()
            .find(|n| field(n, 1) == vec![b"io.k8s.api.core.v1.Pod".to_vec()])
            .expect("pod");
        let schema = &field(pod, 2)[0];
        assert_eq!(field(schema, 4), vec![b"A pod.".to_vec()]);
        assert_eq!(field(schema, 19), vec![b"spec".to_vec()]);
        assert_eq!(field(&field(schema, 22)[0], 1), vec![b"object".to_vec()]);
        // The kind's extension, as YAML text in an Any.
        let extension = &field(schema, 31)[0];
        assert_eq!(
            field(extension, 1),
            vec![b"x-kubernetes-group-version-kind".to_vec()]
        );
        let any = &field(extension, 2)[0];
        let yaml = String::from_utf8(field(any, 2).remove(0)).expect("utf-8");
        assert!(yaml.contains("\"kind\":\"Pod\""), "{yaml}");
        // Properties: the described reference is a reference; maps carry their values' schema.
        let properties = &field(schema, 25)[0];
        let props = field(properties, 1);
        let prop = |name: &str| {
            let named = props
                .iter()
                .find(|n| field(n, 1) == vec![name.as_bytes().to_vec()])
                .expect("property");
            field(named, 2).remove(0)
        };
        assert_eq!(
            field(&prop("metadata"), 1),
            vec![b"#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".to_vec()]
        );
        assert!(field(&prop("metadata"), 22).is_empty());
        let labels = prop("labels");
        let additional = &field(&labels, 21)[0];
        let value_schema = &field(additional, 1)[0];
        assert_eq!(
            field(&field(value_schema, 22)[0], 1),
            vec![b"string".to_vec()]
        );
        let spec = prop("spec");
        let containers = {
            let props = field(&field(&spec, 25)[0], 1);
            field(&props[0], 2).remove(0)
        };
        let items = &field(&containers, 23)[0];
        assert_eq!(
            field(&field(&field(items, 1)[0], 22)[0], 1),
            vec![b"string".to_vec()]
        );
    }
}
