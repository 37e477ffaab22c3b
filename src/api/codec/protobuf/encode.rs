//! Encoding of a JSON object into the protobuf that kube-apiserver stores in etcd and sends as
//! `application/vnd.kubernetes.protobuf`: the inverse of [`super::decode`], driven by the same
//! schema.
//!
//! The bytes are those Go's generated `Marshal` writes for the struct the JSON decodes into:
//! fields in field-number order; value (non-pointer) scalars and structs always, at their zero
//! value when the JSON lacks them; pointers, `[]byte` and collections only when present;
//! repeated scalars unpacked (the protos are proto2); map entries sorted by key. So an object
//! kelp stores reads back, through [`super::decode`], as upstream would serve it, and the same
//! object always encodes to the same bytes (a write that changes nothing can be told by its
//! bytes, as upstream's storage tells it).

use base64::Engine as _;
use serde_json::{Map, Value};

use super::{Card, Field, MAGIC, MAX_DEPTH, Message, Shape, Special, Ty, message_at};

/// Why a JSON object could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The value is not a JSON object with `apiVersion` and `kind`.
    #[error("not an object with apiVersion and kind")]
    NotAnObject,
    /// The group/version/kind has no built-in protobuf schema (custom resources have none).
    #[error("no protobuf schema for {api_version}, Kind={kind}")]
    UnknownKind {
        /// `apiVersion` of the object.
        api_version: String,
        /// `kind` of the object.
        kind: String,
    },
    /// A field holds a JSON value its type cannot take.
    #[error("{field} of {message}: {detail}")]
    InvalidValue {
        /// Full protobuf name of the message.
        message: &'static str,
        /// The JSON name of the field.
        field: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The object nests deeper than [`MAX_DEPTH`].
    #[error("object nests too deeply")]
    TooDeep,
    /// The generated schema is inconsistent (a bug, not bad input).
    #[error("internal protobuf schema error: {0}")]
    Schema(&'static str),
}

/// Encodes a built-in object (with `apiVersion` and `kind`) as `k8s\0` + `runtime.Unknown`.
pub fn encode(object: &Value) -> Result<Vec<u8>, EncodeError> {
    let text = |name: &str| object.get(name).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    if !object.is_object() || kind.is_empty() {
        return Err(EncodeError::NotAnObject);
    }
    let message = super::message_for(api_version, kind).map_err(|_| EncodeError::UnknownKind {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
    })?;
    let raw = message_bytes(message, Some(object), 1)?;
    let mut type_meta = Vec::new();
    put_bytes(&mut type_meta, 1, api_version.as_bytes());
    put_bytes(&mut type_meta, 2, kind.as_bytes());
    let mut out = MAGIC.to_vec();
    put_bytes(&mut out, 1, &type_meta);
    put_bytes(&mut out, 2, &raw);
    // contentEncoding and contentType: empty, written as Go writes value strings.
    put_bytes(&mut out, 3, b"");
    put_bytes(&mut out, 4, b"");
    Ok(out)
}

/// The encoding of one message from its JSON (`None` or `null`: the zero message).
fn message_bytes(
    message: &'static Message,
    json: Option<&Value>,
    depth: usize,
) -> Result<Vec<u8>, EncodeError> {
    if depth > MAX_DEPTH {
        return Err(EncodeError::TooDeep);
    }
    let json = json.filter(|v| !v.is_null());
    let mut out = Vec::new();
    if message.wrapper {
        let field = message
            .field(1)
            .ok_or(EncodeError::Schema("wrapper message without items"))?;
        for item in json.and_then(Value::as_array).into_iter().flatten() {
            put_scalar(&mut out, message, field, field.ty, item)?;
        }
        return Ok(out);
    }
    let invalid = |field: &'static str, detail: String| EncodeError::InvalidValue {
        message: message.name,
        field,
        detail,
    };
    match Special::of(message.name) {
        Special::Plain => plain(&mut out, message, json, depth)?,
        Special::Time | Special::MicroTime => {
            if let Some(value) = json {
                let text = value
                    .as_str()
                    .ok_or_else(|| invalid("time", format!("{value} is not a time")))?;
                let time = chrono::DateTime::parse_from_rfc3339(text)
                    .map_err(|e| invalid("time", format!("{text:?}: {e}")))?;
                put_varint(&mut out, 1, time.timestamp() as u64);
                put_varint(&mut out, 2, u64::from(time.timestamp_subsec_nanos()));
            }
        }
        Special::Duration => {
            let nanos = match json {
                None => 0,
                Some(value) => value
                    .as_str()
                    .and_then(|t| t.parse::<jiff::SignedDuration>().ok())
                    .and_then(|d| i64::try_from(d.as_nanos()).ok())
                    .ok_or_else(|| invalid("duration", format!("{value} is not a duration")))?,
            };
            put_varint(&mut out, 1, nanos as u64);
        }
        Special::Quantity => {
            let text = match json {
                None => "0".to_owned(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(other) => return Err(invalid("quantity", format!("{other} is no quantity"))),
            };
            put_bytes(&mut out, 1, text.as_bytes());
        }
        Special::IntOrString => {
            let (kind, int, text) = match json {
                None => (0, 0, ""),
                Some(Value::String(s)) => (1, 0, s.as_str()),
                Some(value) => (
                    0,
                    integer(value).ok_or_else(|| {
                        invalid("intOrString", format!("{value} is neither int nor string"))
                    })?,
                    "",
                ),
            };
            put_varint(&mut out, 1, kind);
            put_varint(&mut out, 2, int as i32 as i64 as u64);
            put_bytes(&mut out, 3, text.as_bytes());
        }
        Special::FieldsV1 | Special::RawExtension | Special::Json => {
            if let Some(value) = json {
                let raw = serde_json::to_vec(value).map_err(|e| invalid("raw", e.to_string()))?;
                put_bytes(&mut out, 1, &raw);
            }
        }
        Special::PropsOrArray => match json {
            Some(Value::Array(items)) => {
                for item in items {
                    put_message(&mut out, message, 2, Some(item), depth)?;
                }
            }
            Some(schema) => put_message(&mut out, message, 1, Some(schema), depth)?,
            None => {}
        },
        Special::PropsOrBool => match json {
            Some(Value::Bool(allows)) => put_varint(&mut out, 1, u64::from(*allows)),
            Some(schema) => {
                put_varint(&mut out, 1, 1);
                put_message(&mut out, message, 2, Some(schema), depth)?;
            }
            None => put_varint(&mut out, 1, 0),
        },
        Special::PropsOrStringArray => match json {
            Some(Value::Array(items)) => {
                let field = message.field(2).ok_or(EncodeError::Schema(
                    "JSONSchemaPropsOrStringArray without property",
                ))?;
                for item in items {
                    put_scalar(&mut out, message, field, Ty::Str, item)?;
                }
            }
            Some(schema) => put_message(&mut out, message, 1, Some(schema), depth)?,
            None => {}
        },
    }
    Ok(out)
}

/// An ordinary struct: its fields in number order, from the JSON object (or its zero value).
fn plain(
    out: &mut Vec<u8>,
    message: &'static Message,
    json: Option<&Value>,
    depth: usize,
) -> Result<(), EncodeError> {
    let empty = Map::new();
    let object = match json {
        None => &empty,
        Some(Value::Object(object)) => object,
        Some(other) => {
            return Err(EncodeError::InvalidValue {
                message: message.name,
                field: "",
                detail: format!("{other} is not an object"),
            });
        }
    };
    let mut fields: Vec<&'static Field> = message.fields.iter().collect();
    fields.sort_by_key(|f| f.number);
    for field in fields {
        if field.shape == Shape::Inline {
            // An anonymously embedded struct: JSON flattens its fields into this object.
            let target = message_of(field.ty)?;
            let inner = message_bytes(target, json, depth + 1)?;
            put_bytes(out, field.number, &inner);
            continue;
        }
        let value = object.get(field.json).filter(|v| !v.is_null());
        match field.card {
            Card::Repeated => {
                for item in value.and_then(Value::as_array).into_iter().flatten() {
                    put_one(out, message, field, Some(item), depth)?;
                }
            }
            Card::Map => map(out, message, field, value, depth)?,
            Card::One => {
                let pointer = matches!(field.shape, Shape::Ptr | Shape::Nullable);
                // Go writes pointers and `[]byte` only when set, value fields always.
                if value.is_some() || !(pointer || matches!(field.ty, Ty::Bytes)) {
                    put_one(out, message, field, value, depth)?;
                }
            }
        }
    }
    Ok(())
}

/// A map field: one {key=1, value=2} entry per key, in key order.
fn map(
    out: &mut Vec<u8>,
    message: &'static Message,
    field: &'static Field,
    value: Option<&Value>,
    depth: usize,
) -> Result<(), EncodeError> {
    let Some(Value::Object(entries)) = value else {
        return Ok(());
    };
    let mut keys: Vec<&String> = entries.keys().collect();
    keys.sort();
    for key in keys {
        let mut entry = Vec::new();
        put_bytes(&mut entry, 1, key.as_bytes());
        let value = entries.get(key.as_str()).filter(|v| !v.is_null());
        let inner = Field {
            number: 2,
            ..*field
        };
        put_one(&mut entry, message, &inner, value, depth + 1)?;
        put_bytes(out, field.number, &entry);
    }
    Ok(())
}

/// One value of `field` (a singular field, a repeated element or a map value).
fn put_one(
    out: &mut Vec<u8>,
    message: &'static Message,
    field: &Field,
    value: Option<&Value>,
    depth: usize,
) -> Result<(), EncodeError> {
    match field.ty {
        Ty::Msg(_) => {
            let inner = message_bytes(message_of(field.ty)?, value, depth + 1)?;
            put_bytes(out, field.number, &inner);
            Ok(())
        }
        ty => match value {
            Some(value) => put_scalar(out, message, field, ty, value),
            None => {
                put_zero(out, field.number, ty);
                Ok(())
            }
        },
    }
}

/// The message field `number` of `message`, encoded from `value`.
fn put_message(
    out: &mut Vec<u8>,
    message: &'static Message,
    number: u32,
    value: Option<&Value>,
    depth: usize,
) -> Result<(), EncodeError> {
    let field = message
        .field(number)
        .ok_or(EncodeError::Schema("union field missing"))?;
    let inner = message_bytes(message_of(field.ty)?, value, depth + 1)?;
    put_bytes(out, number, &inner);
    Ok(())
}

/// A scalar of type `ty` from its JSON.
fn put_scalar(
    out: &mut Vec<u8>,
    message: &'static Message,
    field: &Field,
    ty: Ty,
    value: &Value,
) -> Result<(), EncodeError> {
    let invalid = || EncodeError::InvalidValue {
        message: message.name,
        field: field.json,
        detail: format!("{value} is not a {ty:?}"),
    };
    match ty {
        Ty::Bool => put_varint(
            out,
            field.number,
            u64::from(value.as_bool().ok_or_else(invalid)?),
        ),
        Ty::Int32 => {
            let v = integer(value).ok_or_else(invalid)?;
            put_varint(out, field.number, v as i32 as i64 as u64);
        }
        Ty::Int64 => put_varint(
            out,
            field.number,
            integer(value).ok_or_else(invalid)? as u64,
        ),
        Ty::Double => {
            let v = value.as_f64().ok_or_else(invalid)?;
            put_key(out, field.number, 1);
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        Ty::Str => put_bytes(
            out,
            field.number,
            value.as_str().ok_or_else(invalid)?.as_bytes(),
        ),
        Ty::Bytes => {
            let bytes = value
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .ok_or_else(invalid)?;
            put_bytes(out, field.number, &bytes);
        }
        Ty::Msg(_) => return Err(EncodeError::Schema("message as scalar")),
    }
    Ok(())
}

/// The zero value of a scalar field, as Go writes an unset value field.
fn put_zero(out: &mut Vec<u8>, number: u32, ty: Ty) {
    match ty {
        Ty::Bool | Ty::Int32 | Ty::Int64 => put_varint(out, number, 0),
        Ty::Double => {
            put_key(out, number, 1);
            out.extend_from_slice(&[0; 8]);
        }
        Ty::Str | Ty::Bytes | Ty::Msg(_) => put_bytes(out, number, b""),
    }
}

/// A JSON number as an integer (integral floats too, as Go's decoder takes them).
fn integer(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.3e18)
            .map(|f| f as i64)
    })
}

fn message_of(ty: Ty) -> Result<&'static Message, EncodeError> {
    match ty {
        Ty::Msg(index) => message_at(index).map_err(|_| EncodeError::Schema("message index")),
        _ => Err(EncodeError::Schema("field is not a message")),
    }
}

fn put_key(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    put_raw_varint(out, u64::from(number) << 3 | u64::from(wire_type));
}

fn put_varint(out: &mut Vec<u8>, number: u32, value: u64) {
    put_key(out, number, 0);
    put_raw_varint(out, value);
}

fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_key(out, number, 2);
    put_raw_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_raw_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}
