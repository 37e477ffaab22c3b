//! Decoding of `application/vnd.kubernetes.protobuf` request bodies into the JSON that the same
//! request would carry as `application/json`.
//!
//! A body is the magic `k8s\0` followed by a `runtime.Unknown` message whose `raw` field holds the
//! object encoded per the `generated.proto` files of k8s.io/api, k8s.io/apimachinery and
//! k8s.io/apiextensions-apiserver.
//!
//! # Approach
//!
//! The protos alone cannot give upstream's JSON: what `encoding/json` emits depends on the Go
//! structs behind them (`omitempty`, pointer vs value fields, anonymously embedded structs that
//! JSON flattens such as `Volume.volumeSource`, JSON names such as `$ref` that proto cannot spell,
//! and types with their own `MarshalJSON`). So the schema is generated from both sources:
//! `tools/gen_schema.py` reads the upstream generated.proto files and Go types of one release
//! and writes [`schema`] (field numbers, wire types, JSON names and emission rules of every
//! built-in message). This module is a small proto2 wire reader driven by that table, plus the
//! handful of Go types with custom JSON (Time, MicroTime, Duration, Quantity, IntOrString,
//! RawExtension, FieldsV1, the apiextensions JSON unions and named string slices).
//! This was preferred over prost-reflect: no published crate ships Kubernetes descriptors
//! (k8s-pb has only prost-generated structs), descriptors would not carry the Go JSON rules
//! anyway, and the wire format itself is a few dozen lines, so one generated table replaces two
//! artifacts that would have to be kept at the same Kubernetes version.
//!
//! Emission rules, as Go's `encoding/json` applies them to the struct the protobuf decoded into:
//! pointer fields are emitted when present on the wire (so `replicas: 0` survives), value scalars
//! with `omitempty` only when non-zero, value scalars without it always; value structs are always
//! emitted (zero struct when absent: `"status": {}`, `"creationTimestamp": null`); empty slices
//! and maps are omitted with `omitempty`, else `null`; maps are emitted with sorted keys.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Number, Value};

mod encode;
#[rustfmt::skip]
mod schema;

pub use encode::{EncodeError, encode};

/// The four bytes that start every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Why a protobuf body could not be turned into JSON.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body does not start with the `k8s\0` magic.
    #[error("protobuf body lacks the k8s envelope")]
    MissingEnvelope,
    /// The bytes are not well-formed protobuf.
    #[error("malformed protobuf: {0}")]
    Malformed(&'static str),
    /// A field arrived with a wire type that its schema does not allow.
    #[error("malformed protobuf: field {field} of {message} has wire type {found}")]
    WireType {
        /// Full protobuf name of the message.
        message: &'static str,
        /// The JSON name of the field.
        field: &'static str,
        /// The wire type found.
        found: u8,
    },
    /// The envelope names no kind.
    #[error("protobuf envelope has no kind")]
    MissingKind,
    /// The envelope's object is compressed or otherwise encoded.
    #[error("unsupported content encoding {0:?} in protobuf envelope")]
    ContentEncoding(String),
    /// The envelope's object is not protobuf.
    #[error("unsupported content type {0:?} in protobuf envelope")]
    ContentType(String),
    /// The group/version/kind has no built-in protobuf schema (custom resources have none).
    #[error("no protobuf schema for {api_version}, Kind={kind}")]
    UnknownKind {
        /// `apiVersion` from the envelope.
        api_version: String,
        /// `kind` from the envelope.
        kind: String,
    },
    /// The kind maps to a message that does not encode as a JSON object.
    #[error("{0} does not encode as a JSON object")]
    NotAnObject(String),
    /// A value that has no JSON form (bad time, bad IntOrString, NaN...).
    #[error("invalid {what} in protobuf body: {detail}")]
    InvalidValue {
        /// The Go type or field concerned.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// Bytes that must hold JSON (RawExtension, FieldsV1, apiextensions JSON) do not.
    #[error("invalid embedded JSON in {what}: {source}")]
    EmbeddedJson {
        /// The Go type concerned.
        what: &'static str,
        /// The parse error.
        source: serde_json::Error,
    },
    /// Messages nest deeper than [`MAX_DEPTH`].
    #[error("protobuf messages nest deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// The generated schema is inconsistent (a bug, not bad input).
    #[error("internal protobuf schema error: {0}")]
    Schema(&'static str),
}

/// How deep messages (including map entries and embedded envelopes) may nest.
pub const MAX_DEPTH: usize = 200;

/// Decodes a `application/vnd.kubernetes.protobuf` body into the JSON object the same request would carry as
/// `application/json`, including "apiVersion" and "kind" from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    decode_at(body, 0)
}

/// [`decode`] at a nesting depth (bodies can nest through `RawExtension`).
fn decode_at(body: &[u8], depth: usize) -> Result<Value, DecodeError> {
    let rest = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or(DecodeError::MissingEnvelope)?;
    let envelope = Envelope::parse(rest)?;
    let message = message_for(&envelope.api_version, &envelope.kind)?;
    let Value::Object(fields) = message_json(message, envelope.raw, depth + 1)? else {
        return Err(DecodeError::NotAnObject(envelope.kind));
    };
    let mut object = Map::with_capacity(fields.len() + 2);
    object.insert("kind".into(), Value::String(envelope.kind));
    object.insert("apiVersion".into(), Value::String(envelope.api_version));
    object.extend(fields);
    Ok(Value::Object(object))
}

/// The `runtime.Unknown` wrapper of a protobuf body.
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Parses `runtime.Unknown` {typeMeta{apiVersion=1, kind=2}=1, raw=2, contentEncoding=3,
    /// contentType=4}.
    fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let fields = parse_wire(buf)?;
        let type_meta = parse_wire(last_bytes(&fields, 1)?.unwrap_or_default())?;
        let api_version = last_string(&type_meta, 1)?.unwrap_or_default();
        let kind = last_string(&type_meta, 2)?.unwrap_or_default();
        let encoding = last_string(&fields, 3)?.unwrap_or_default();
        let content_type = last_string(&fields, 4)?.unwrap_or_default();
        if kind.is_empty() {
            return Err(DecodeError::MissingKind);
        }
        if !encoding.is_empty() {
            return Err(DecodeError::ContentEncoding(encoding));
        }
        if !content_type.is_empty() && content_type != "application/vnd.kubernetes.protobuf" {
            return Err(DecodeError::ContentType(content_type));
        }
        let raw = last_bytes(&fields, 2)?.unwrap_or_default();
        Ok(Envelope {
            api_version,
            kind,
            raw,
        })
    }
}

/// Kinds of meta.k8s.io/v1 that every group version accepts (e.g. DeleteOptions in apps/v1).
const META_KINDS: &[&str] = &[
    "CreateOptions",
    "DeleteOptions",
    "GetOptions",
    "ListOptions",
    "PatchOptions",
    "Status",
    "UpdateOptions",
    "WatchEvent",
];

/// Protobuf package of meta.k8s.io/v1.
const META_PACKAGE: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

/// Finds the schema message of `apiVersion` + `kind`.
fn message_for(api_version: &str, kind: &str) -> Result<&'static Message, DecodeError> {
    let package = schema::GROUP_VERSIONS
        .binary_search_by(|(gv, _)| (*gv).cmp(api_version))
        .ok()
        .and_then(|i| schema::GROUP_VERSIONS.get(i))
        .map(|(_, package)| *package);
    let in_package = package.and_then(|p| find_message(&format!("{p}.{kind}")));
    let found = in_package.or_else(|| {
        META_KINDS
            .contains(&kind)
            .then(|| find_message(&format!("{META_PACKAGE}.{kind}")))
            .flatten()
    });
    found.ok_or_else(|| DecodeError::UnknownKind {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
    })
}

/// Looks a message up by full protobuf name.
fn find_message(name: &str) -> Option<&'static Message> {
    let i = schema::MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .ok()?;
    schema::MESSAGES.get(i)
}

// ---------------------------------------------------------------------------------------------
// Schema types (the data is in schema.rs)

/// Protobuf type of a field (or of a map's values).
#[derive(Clone, Copy, Debug)]
enum Ty {
    Bool,
    Int32,
    Int64,
    Double,
    Str,
    Bytes,
    /// A message, by index into [`schema::MESSAGES`].
    Msg(u16),
}

/// Cardinality of a field; map keys are always strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Card {
    One,
    Repeated,
    Map,
}

/// When Go's `encoding/json` emits a field of the struct the protobuf decoded into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// `omitempty` value: omitted when zero/empty.
    Omit,
    /// No `omitempty`, or a value struct: always emitted (zero value, `null` for an empty slice).
    Always,
    /// Pointer with `omitempty`: emitted when present on the wire.
    Ptr,
    /// Pointer without `omitempty`: `null` when absent from the wire.
    Nullable,
    /// Anonymously embedded struct: its fields are flattened into the parent.
    Inline,
}

/// One field of a message.
#[derive(Debug)]
struct Field {
    number: u32,
    json: &'static str,
    ty: Ty,
    card: Card,
    shape: Shape,
}

/// Constructor used by the generated schema.
const fn f(number: u32, json: &'static str, ty: Ty, card: Card, shape: Shape) -> Field {
    Field {
        number,
        json,
        ty,
        card,
        shape,
    }
}

/// One message; `wrapper` marks named string slices (`ExtraValue`, `Verbs`) that JSON shows as
/// their `items`.
#[derive(Debug)]
struct Message {
    name: &'static str,
    wrapper: bool,
    fields: &'static [Field],
}

impl Message {
    /// The schema of one of this message's fields, by number.
    fn field(&self, number: u32) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.number == number)
    }
}

/// Looks up a message of the schema by index.
fn message_at(index: u16) -> Result<&'static Message, DecodeError> {
    schema::MESSAGES
        .get(usize::from(index))
        .ok_or(DecodeError::Schema("message index out of range"))
}

// ---------------------------------------------------------------------------------------------
// Messages to JSON

/// Go types whose JSON is not their fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Special {
    Plain,
    Time,
    MicroTime,
    Duration,
    FieldsV1,
    Quantity,
    IntOrString,
    RawExtension,
    Json,
    PropsOrArray,
    PropsOrBool,
    PropsOrStringArray,
}

impl Special {
    /// The special JSON form of a message, by full name.
    fn of(name: &str) -> Special {
        if let Some(rest) = name.strip_prefix("k8s.io.apimachinery.pkg.") {
            return match rest {
                "apis.meta.v1.Time" => Special::Time,
                "apis.meta.v1.MicroTime" => Special::MicroTime,
                "apis.meta.v1.Duration" => Special::Duration,
                "apis.meta.v1.FieldsV1" => Special::FieldsV1,
                "api.resource.Quantity" | "api.resource.QuantityValue" => Special::Quantity,
                "util.intstr.IntOrString" => Special::IntOrString,
                "runtime.RawExtension" => Special::RawExtension,
                _ => Special::Plain,
            };
        }
        let apiextensions = name
            .strip_prefix("k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.")
            .and_then(|rest| rest.split_once('.'))
            .map(|(_, type_name)| type_name);
        match apiextensions {
            Some("JSON") => Special::Json,
            Some("JSONSchemaPropsOrArray") => Special::PropsOrArray,
            Some("JSONSchemaPropsOrBool") => Special::PropsOrBool,
            Some("JSONSchemaPropsOrStringArray") => Special::PropsOrStringArray,
            _ => Special::Plain,
        }
    }
}

/// Converts the encoding of one message to its JSON.
fn message_json(message: &'static Message, buf: &[u8], depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    let wire = parse_wire(buf)?;
    if message.wrapper {
        return wrapper_json(message, &wire);
    }
    match Special::of(message.name) {
        Special::Plain => plain_json(message, &wire, depth),
        Special::Time => time_json(buf, &wire, false),
        Special::MicroTime => time_json(buf, &wire, true),
        Special::Duration => Ok(Value::String(crate::gofmt::duration(
            last_varint(&wire, 1)? as i64,
        ))),
        Special::FieldsV1 => raw_json(&wire, "FieldsV1", depth),
        Special::Quantity => quantity_json(&wire),
        Special::IntOrString => int_or_string_json(&wire),
        Special::RawExtension => raw_json(&wire, "RawExtension", depth),
        Special::Json => raw_json(&wire, "JSON", depth),
        Special::PropsOrArray => props_or_array_json(message, &wire, depth),
        Special::PropsOrBool => props_or_bool_json(message, &wire, depth),
        Special::PropsOrStringArray => props_or_string_array_json(message, &wire, depth),
    }
}

/// An ordinary struct: its fields by the emission rules of [`Shape`].
fn plain_json(
    message: &'static Message,
    wire: &[Wire<'_>],
    depth: usize,
) -> Result<Value, DecodeError> {
    let mut object = Map::new();
    for field in message.fields {
        let occurrences: Vec<&Wire<'_>> =
            wire.iter().filter(|w| w.number == field.number).collect();
        if field.shape == Shape::Inline {
            let buf = merged_bytes(message, field, &occurrences)?;
            if let Value::Object(inner) = message_json(message_at_ty(field.ty)?, &buf, depth + 1)? {
                for (key, value) in inner {
                    object.entry(key).or_insert(value);
                }
            }
            continue;
        }
        if let Some(value) = field_json(message, field, &occurrences, depth)? {
            object.insert(field.json.to_owned(), value);
        }
    }
    Ok(Value::Object(object))
}

/// The JSON of one field, `None` when Go would omit it.
fn field_json(
    message: &'static Message,
    field: &'static Field,
    occurrences: &[&Wire<'_>],
    depth: usize,
) -> Result<Option<Value>, DecodeError> {
    match field.card {
        Card::Repeated => {
            let items = repeated_json(message, field, occurrences, depth)?;
            Ok(collection(
                field.shape,
                items.is_empty(),
                Value::Array(items),
            ))
        }
        Card::Map => {
            let entries = map_json(message, field, occurrences, depth)?;
            Ok(collection(
                field.shape,
                entries.is_empty(),
                Value::Object(entries),
            ))
        }
        Card::One => single_json(message, field, occurrences, depth),
    }
}

/// A slice or map: omitted when empty with `omitempty`, else `null` when empty (a nil Go slice).
fn collection(shape: Shape, empty: bool, value: Value) -> Option<Value> {
    match (empty, shape) {
        (false, _) => Some(value),
        (true, Shape::Omit) => None,
        (true, _) => Some(Value::Null),
    }
}

/// A non-repeated field.
fn single_json(
    message: &'static Message,
    field: &'static Field,
    occurrences: &[&Wire<'_>],
    depth: usize,
) -> Result<Option<Value>, DecodeError> {
    match field.ty {
        Ty::Msg(index) => single_message_json(message, field, index, occurrences, depth),
        Ty::Bytes => single_bytes_json(message, field, occurrences),
        ty => single_scalar_json(message, field, ty, occurrences),
    }
}

/// A non-repeated message field: absent pointers are omitted (or `null` without `omitempty`),
/// absent values are the zero struct.
fn single_message_json(
    message: &'static Message,
    field: &'static Field,
    index: u16,
    occurrences: &[&Wire<'_>],
    depth: usize,
) -> Result<Option<Value>, DecodeError> {
    let target = message_at(index)?;
    match (occurrences.is_empty(), field.shape) {
        (true, Shape::Ptr) => return Ok(None),
        (true, Shape::Nullable) => return Ok(Some(Value::Null)),
        _ => {}
    }
    let buf = merged_bytes(message, field, occurrences)?;
    let value = message_json(target, &buf, depth + 1)?;
    let omit = field.shape == Shape::Omit && target.wrapper && value.is_null();
    Ok((!omit).then_some(value))
}

/// A `[]byte` field: base64, omitted when empty with `omitempty`.
fn single_bytes_json(
    message: &'static Message,
    field: &'static Field,
    occurrences: &[&Wire<'_>],
) -> Result<Option<Value>, DecodeError> {
    let Some(last) = occurrences.last() else {
        return Ok(collection(field.shape, true, Value::Null));
    };
    let bytes = expect_bytes(message, field, last)?;
    if bytes.is_empty() && field.shape == Shape::Omit {
        return Ok(None);
    }
    Ok(Some(Value::String(BASE64.encode(bytes))))
}

/// A bool, number or string field; the last occurrence wins.
fn single_scalar_json(
    message: &'static Message,
    field: &'static Field,
    ty: Ty,
    occurrences: &[&Wire<'_>],
) -> Result<Option<Value>, DecodeError> {
    let value = match (occurrences.last(), field.shape) {
        (Some(last), _) => scalar_json(message, field, ty, last)?,
        (None, Shape::Always) => zero_scalar(ty),
        (None, Shape::Nullable) => Value::Null,
        (None, _) => return Ok(None),
    };
    if field.shape == Shape::Omit && is_zero(&value) {
        return Ok(None);
    }
    Ok(Some(value))
}

/// The elements of a repeated field, unpacking packed scalars.
fn repeated_json(
    message: &'static Message,
    field: &'static Field,
    occurrences: &[&Wire<'_>],
    depth: usize,
) -> Result<Vec<Value>, DecodeError> {
    let mut items = Vec::with_capacity(occurrences.len());
    for wire in occurrences {
        match (field.ty, &wire.value) {
            (Ty::Msg(index), _) => {
                let buf = expect_bytes(message, field, wire)?;
                items.push(message_json(message_at(index)?, buf, depth + 1)?);
            }
            (Ty::Bool | Ty::Int32 | Ty::Int64 | Ty::Double, WireValue::Bytes(packed)) => {
                for value in unpack(field.ty, packed)? {
                    items.push(scalar_json(message, field, field.ty, &value)?);
                }
            }
            _ => items.push(scalar_json(message, field, field.ty, wire)?),
        }
    }
    Ok(items)
}

/// A map field: entries {key=1, value=2}, keys sorted as Go's encoding/json sorts them.
fn map_json(
    message: &'static Message,
    field: &'static Field,
    occurrences: &[&Wire<'_>],
    depth: usize,
) -> Result<Map<String, Value>, DecodeError> {
    if depth + 1 > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    let mut sorted = BTreeMap::new();
    for wire in occurrences {
        let entry = parse_wire(expect_bytes(message, field, wire)?)?;
        let key = last_string(&entry, 1)?.unwrap_or_default();
        let value_wire: Vec<&Wire<'_>> = entry.iter().filter(|w| w.number == 2).collect();
        let value = map_value_json(message, field, &value_wire, depth)?;
        sorted.insert(key, value);
    }
    Ok(sorted.into_iter().collect())
}

/// The value of one map entry; an absent value is the zero value.
fn map_value_json(
    message: &'static Message,
    field: &'static Field,
    occurrences: &[&Wire<'_>],
    depth: usize,
) -> Result<Value, DecodeError> {
    match (field.ty, occurrences.last()) {
        (Ty::Msg(index), _) => {
            let buf = merged_bytes(message, field, occurrences)?;
            message_json(message_at(index)?, &buf, depth + 2)
        }
        (Ty::Bytes, Some(last)) => Ok(Value::String(
            BASE64.encode(expect_bytes(message, field, last)?),
        )),
        (Ty::Bytes, None) => Ok(Value::String(String::new())),
        (ty, Some(last)) => scalar_json(message, field, ty, last),
        (ty, None) => Ok(zero_scalar(ty)),
    }
}

/// The bytes of a message field: protobuf merges repeated occurrences of a singular message,
/// which is the same as decoding their concatenation.
fn merged_bytes<'a>(
    message: &'static Message,
    field: &'static Field,
    occurrences: &[&Wire<'a>],
) -> Result<Cow<'a, [u8]>, DecodeError> {
    match occurrences {
        [] => Ok(Cow::Borrowed(&[])),
        [one] => Ok(Cow::Borrowed(expect_bytes(message, field, one)?)),
        many => {
            let mut joined = Vec::new();
            for wire in many {
                joined.extend_from_slice(expect_bytes(message, field, wire)?);
            }
            Ok(Cow::Owned(joined))
        }
    }
}

/// The target message of a message-typed field.
fn message_at_ty(ty: Ty) -> Result<&'static Message, DecodeError> {
    match ty {
        Ty::Msg(index) => message_at(index),
        _ => Err(DecodeError::Schema("inline field is not a message")),
    }
}

/// A scalar value of type `ty` from its wire form.
fn scalar_json(
    message: &'static Message,
    field: &'static Field,
    ty: Ty,
    wire: &Wire<'_>,
) -> Result<Value, DecodeError> {
    let mismatch = || DecodeError::WireType {
        message: message.name,
        field: field.json,
        found: wire.value.wire_type(),
    };
    match (ty, &wire.value) {
        (Ty::Bool, WireValue::Varint(v)) => Ok(Value::Bool(*v != 0)),
        (Ty::Int32, WireValue::Varint(v)) => Ok(Value::from(*v as u32 as i32)),
        (Ty::Int64, WireValue::Varint(v)) => Ok(Value::from(*v as i64)),
        (Ty::Double, WireValue::Fixed64(v)) => double_json(f64::from_bits(*v)),
        (Ty::Str, WireValue::Bytes(b)) => {
            Ok(Value::String(String::from_utf8_lossy(b).into_owned()))
        }
        (Ty::Bytes, WireValue::Bytes(b)) => Ok(Value::String(BASE64.encode(b))),
        _ => Err(mismatch()),
    }
}

/// A float64 as Go prints it: integral values without a fraction, NaN and infinities refused.
fn double_json(v: f64) -> Result<Value, DecodeError> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if v.fract() == 0.0 && v.abs() < EXACT {
        return Ok(Value::from(v as i64));
    }
    Number::from_f64(v)
        .map(Value::Number)
        .ok_or_else(|| DecodeError::InvalidValue {
            what: "float64",
            detail: v.to_string(),
        })
}

/// The zero value of a scalar type, as a value field without `omitempty` shows it.
fn zero_scalar(ty: Ty) -> Value {
    match ty {
        Ty::Bool => Value::Bool(false),
        Ty::Int32 | Ty::Int64 | Ty::Double => Value::from(0),
        Ty::Str => Value::String(String::new()),
        Ty::Bytes | Ty::Msg(_) => Value::Null,
    }
}

/// Whether `omitempty` drops a scalar.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Null => true,
        Value::Array(_) | Value::Object(_) => false,
    }
}

/// A named string slice (`type ExtraValue []string`): its `items`, `null` when empty.
fn wrapper_json(message: &'static Message, wire: &[Wire<'_>]) -> Result<Value, DecodeError> {
    let field = message
        .field(1)
        .ok_or(DecodeError::Schema("wrapper message without items"))?;
    let mut items = Vec::new();
    for w in wire.iter().filter(|w| w.number == 1) {
        items.push(scalar_json(message, field, field.ty, w)?);
    }
    Ok(if items.is_empty() {
        Value::Null
    } else {
        Value::Array(items)
    })
}

// ---------------------------------------------------------------------------------------------
// Go types with their own MarshalJSON

/// Seconds of Go's zero `time.Time` (January 1, year 1, UTC) since the Unix epoch.
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// `metav1.Time` (RFC 3339, seconds) or `metav1.MicroTime` (RFC 3339, microseconds); an empty
/// message or Go's zero time is `null`.
fn time_json(buf: &[u8], wire: &[Wire<'_>], micro: bool) -> Result<Value, DecodeError> {
    if buf.is_empty() {
        return Ok(Value::Null);
    }
    let seconds = last_varint(wire, 1)? as i64;
    let nanos = i64::from(last_varint(wire, 2)? as u32 as i32);
    let seconds = seconds
        .checked_add(nanos.div_euclid(1_000_000_000))
        .ok_or_else(|| invalid_time(seconds))?;
    let nanos = nanos.rem_euclid(1_000_000_000) as u32;
    if seconds == GO_ZERO_TIME && nanos == 0 {
        return Ok(Value::Null);
    }
    let time =
        chrono::DateTime::from_timestamp(seconds, nanos).ok_or_else(|| invalid_time(seconds))?;
    if !(0..=9999).contains(&chrono::Datelike::year(&time)) {
        return Err(invalid_time(seconds));
    }
    let format = if micro {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(Value::String(time.format(format).to_string()))
}

/// The error for a timestamp that RFC 3339 cannot show.
fn invalid_time(seconds: i64) -> DecodeError {
    DecodeError::InvalidValue {
        what: "time",
        detail: format!("{seconds} seconds since the epoch is out of range"),
    }
}

/// `resource.Quantity` {string=1}: its canonical string, "0" for the zero quantity.
fn quantity_json(wire: &[Wire<'_>]) -> Result<Value, DecodeError> {
    match last_string(wire, 1)? {
        None => Ok(Value::String("0".to_owned())),
        Some(s) if s.is_empty() => Err(DecodeError::InvalidValue {
            what: "quantity",
            detail: "empty string".to_owned(),
        }),
        Some(s) => Ok(Value::String(s)),
    }
}

/// `intstr.IntOrString` {type=1, intVal=2, strVal=3}: a number (type 0) or a string (type 1).
fn int_or_string_json(wire: &[Wire<'_>]) -> Result<Value, DecodeError> {
    match last_varint(wire, 1)? as i64 {
        0 => Ok(Value::from(last_varint(wire, 2)? as u32 as i32)),
        1 => Ok(Value::String(last_string(wire, 3)?.unwrap_or_default())),
        other => Err(DecodeError::InvalidValue {
            what: "IntOrString",
            detail: format!("type {other}"),
        }),
    }
}

/// Raw bytes holding JSON (`RawExtension.raw`, `FieldsV1.Raw`, apiextensions `JSON.raw`), or for
/// a RawExtension a nested protobuf body; absent or empty is `null`.
fn raw_json(wire: &[Wire<'_>], what: &'static str, depth: usize) -> Result<Value, DecodeError> {
    let raw = last_bytes(wire, 1)?.unwrap_or_default();
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    if what == "RawExtension" && raw.starts_with(MAGIC) {
        return decode_at(raw, depth);
    }
    serde_json::from_slice(raw).map_err(|source| DecodeError::EmbeddedJson { what, source })
}

/// `JSONSchemaPropsOrArray` {schema=1, jSONSchemas=2}: the array when non-empty, else the schema
/// (or `null`).
fn props_or_array_json(
    message: &'static Message,
    wire: &[Wire<'_>],
    depth: usize,
) -> Result<Value, DecodeError> {
    let array = sub_messages(message, wire, 2, depth)?;
    if !array.is_empty() {
        return Ok(Value::Array(array));
    }
    Ok(sub_messages(message, wire, 1, depth)?
        .pop()
        .unwrap_or(Value::Null))
}

/// `JSONSchemaPropsOrBool` {allows=1, schema=2}: the schema when set, else the boolean.
fn props_or_bool_json(
    message: &'static Message,
    wire: &[Wire<'_>],
    depth: usize,
) -> Result<Value, DecodeError> {
    if let Some(schema) = sub_messages(message, wire, 2, depth)?.pop() {
        return Ok(schema);
    }
    Ok(Value::Bool(last_varint(wire, 1)? != 0))
}

/// `JSONSchemaPropsOrStringArray` {schema=1, property=2}: the strings when any, else the schema
/// (or `null`).
fn props_or_string_array_json(
    message: &'static Message,
    wire: &[Wire<'_>],
    depth: usize,
) -> Result<Value, DecodeError> {
    let field = message.field(2).ok_or(DecodeError::Schema(
        "JSONSchemaPropsOrStringArray without property",
    ))?;
    let mut strings = Vec::new();
    for w in wire.iter().filter(|w| w.number == 2) {
        strings.push(scalar_json(message, field, Ty::Str, w)?);
    }
    if !strings.is_empty() {
        return Ok(Value::Array(strings));
    }
    Ok(sub_messages(message, wire, 1, depth)?
        .pop()
        .unwrap_or(Value::Null))
}

/// The JSON of every occurrence of message field `number` (the last one wins for singular fields).
fn sub_messages(
    message: &'static Message,
    wire: &[Wire<'_>],
    number: u32,
    depth: usize,
) -> Result<Vec<Value>, DecodeError> {
    let field = message
        .field(number)
        .ok_or(DecodeError::Schema("apiextensions union field missing"))?;
    let target = message_at_ty(field.ty)?;
    let mut out = Vec::new();
    for w in wire.iter().filter(|w| w.number == number) {
        out.push(message_json(
            target,
            expect_bytes(message, field, w)?,
            depth + 1,
        )?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Wire format

/// One field occurrence on the wire.
#[derive(Clone, Copy, Debug)]
struct Wire<'a> {
    number: u32,
    value: WireValue<'a>,
}

/// The payload of one field occurrence.
#[derive(Clone, Copy, Debug)]
enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    /// A fixed32 value; no Kubernetes field uses one, so only its size matters.
    Fixed32,
}

impl WireValue<'_> {
    /// The protobuf wire type number.
    fn wire_type(&self) -> u8 {
        match self {
            WireValue::Varint(_) => 0,
            WireValue::Fixed64(_) => 1,
            WireValue::Bytes(_) => 2,
            WireValue::Fixed32 => 5,
        }
    }
}

/// Splits an encoded message into its field occurrences, in wire order.
fn parse_wire(buf: &[u8]) -> Result<Vec<Wire<'_>>, DecodeError> {
    let mut reader = Reader { buf, pos: 0 };
    let mut out = Vec::new();
    while !reader.done() {
        let key = reader.varint()?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|n| *n != 0)
            .ok_or(DecodeError::Malformed("invalid field number"))?;
        let value = match key & 7 {
            0 => WireValue::Varint(reader.varint()?),
            1 => WireValue::Fixed64(u64::from_le_bytes(reader.array()?)),
            2 => {
                let len = usize::try_from(reader.varint()?)
                    .map_err(|_| DecodeError::Malformed("length too large"))?;
                WireValue::Bytes(reader.take(len)?)
            }
            5 => {
                reader.array::<4>()?;
                WireValue::Fixed32
            }
            _ => return Err(DecodeError::Malformed("unsupported wire type")),
        };
        out.push(Wire { number, value });
    }
    Ok(out)
}

/// Decodes a packed repeated scalar field.
fn unpack(ty: Ty, packed: &[u8]) -> Result<Vec<Wire<'_>>, DecodeError> {
    let mut reader = Reader {
        buf: packed,
        pos: 0,
    };
    let mut out = Vec::new();
    while !reader.done() {
        let value = match ty {
            Ty::Double => WireValue::Fixed64(u64::from_le_bytes(reader.array()?)),
            _ => WireValue::Varint(reader.varint()?),
        };
        out.push(Wire { number: 0, value });
    }
    Ok(out)
}

/// A cursor over protobuf bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Whether all bytes were read.
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// A base-128 varint of at most 10 bytes.
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or(DecodeError::Malformed("truncated varint"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed("varint longer than 10 bytes"))
    }

    /// The next `len` bytes.
    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.buf.len())
            .ok_or(DecodeError::Malformed("truncated field"))?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError::Malformed("truncated field"))?;
        self.pos = end;
        Ok(bytes)
    }

    /// The next `N` bytes as an array (fixed32/fixed64).
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| DecodeError::Malformed("truncated field"))
    }
}

/// The last varint of field `number`, 0 when absent.
fn last_varint(wire: &[Wire<'_>], number: u32) -> Result<u64, DecodeError> {
    match wire.iter().rev().find(|w| w.number == number) {
        None => Ok(0),
        Some(Wire {
            value: WireValue::Varint(v),
            ..
        }) => Ok(*v),
        Some(_) => Err(DecodeError::Malformed("expected a varint field")),
    }
}

/// The last length-delimited value of field `number`.
fn last_bytes<'a>(wire: &[Wire<'a>], number: u32) -> Result<Option<&'a [u8]>, DecodeError> {
    match wire.iter().rev().find(|w| w.number == number) {
        None => Ok(None),
        Some(Wire {
            value: WireValue::Bytes(b),
            ..
        }) => Ok(Some(b)),
        Some(_) => Err(DecodeError::Malformed("expected a length-delimited field")),
    }
}

/// The last string of field `number` (invalid UTF-8 replaced, as Go's JSON encoder does).
fn last_string(wire: &[Wire<'_>], number: u32) -> Result<Option<String>, DecodeError> {
    Ok(last_bytes(wire, number)?.map(|b| String::from_utf8_lossy(b).into_owned()))
}

/// The bytes of a length-delimited occurrence of `field`.
fn expect_bytes<'a>(
    message: &'static Message,
    field: &'static Field,
    wire: &Wire<'a>,
) -> Result<&'a [u8], DecodeError> {
    match wire.value {
        WireValue::Bytes(b) => Ok(b),
        other => Err(DecodeError::WireType {
            message: message.name,
            field: field.json,
            found: other.wire_type(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // ---- a minimal protobuf encoder for building bodies (field numbers from upstream generated.proto)

    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
        out
    }

    fn key(number: u32, wire_type: u8) -> Vec<u8> {
        varint(u64::from(number) << 3 | u64::from(wire_type))
    }

    /// A varint field (int32/int64/bool; negative values sign-extended like Go).
    fn int(number: u32, v: i64) -> Vec<u8> {
        [key(number, 0), varint(v as u64)].concat()
    }

    fn bytes(number: u32, b: &[u8]) -> Vec<u8> {
        [key(number, 2), varint(b.len() as u64), b.to_vec()].concat()
    }

    fn text(number: u32, s: &str) -> Vec<u8> {
        bytes(number, s.as_bytes())
    }

    fn double(number: u32, v: f64) -> Vec<u8> {
        [key(number, 1), v.to_bits().to_le_bytes().to_vec()].concat()
    }

    /// A message field made of already-encoded fields.
    fn msg(number: u32, parts: &[Vec<u8>]) -> Vec<u8> {
        bytes(number, &parts.concat())
    }

    /// A map entry {key=1, value=2}; `value` is the encoded field 2.
    fn entry(number: u32, k: &str, value: Vec<u8>) -> Vec<u8> {
        msg(number, &[text(1, k), value])
    }

    /// `k8s\0` + runtime.Unknown{typeMeta, raw, contentEncoding, contentType} as kubectl writes it.
    fn body(api_version: &str, kind: &str, raw: &[Vec<u8>]) -> Vec<u8> {
        let unknown = [
            msg(1, &[text(1, api_version), text(2, kind)]),
            msg(2, raw),
            text(3, ""),
            text(4, ""),
        ]
        .concat();
        [MAGIC.to_vec(), unknown].concat()
    }

    /// An empty message field (e.g. a zero metav1.Time as Go writes it).
    fn empty(number: u32) -> Vec<u8> {
        bytes(number, &[])
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/protobuf/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Every captured kubectl body (tests/fixtures/protobuf/README.md).
    const FIXTURES: &[&str] = &[
        "autoscale-v1",
        "autoscale-v2",
        "canI",
        "canI-subresource",
        "clusterrole",
        "clusterrolebinding",
        "configmap",
        "cronjob",
        "deployment",
        "deployment-kubectl-1.32",
        "deployment-multi",
        "ingress",
        "job",
        "namespace",
        "pdb",
        "priorityclass",
        "quota",
        "role",
        "rolebinding",
        "secret",
        "secret-docker-registry",
        "service",
        "service-nodeport",
        "serviceaccount",
        "token",
        "whoami",
    ];

    // ---- real kubectl bodies

    #[test]
    fn kubectl_bodies_decode_to_the_json_kubectl_sends() {
        for name in FIXTURES {
            let decoded =
                decode(&fixture(&format!("{name}.pb"))).unwrap_or_else(|e| panic!("{name}: {e}"));
            let expected = String::from_utf8(fixture(&format!("{name}.json"))).unwrap();
            let expected_value: Value = serde_json::from_str(&expected).unwrap();
            assert_eq!(decoded, expected_value, "{name}");
            // Same key order as Go's encoder too.
            assert_eq!(
                serde_json::to_string(&decoded).unwrap(),
                expected.trim_end(),
                "{name}"
            );
        }
    }

    #[test]
    fn kubectl_deployment() {
        let expected = json!({
            "kind": "Deployment", "apiVersion": "apps/v1",
            "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "nginx", "image": "nginx:1.25",
                        "ports": [{"containerPort": 80}], "resources": {}
                    }]}
                },
                "strategy": {}
            },
            "status": {}
        });
        assert_eq!(decode(&fixture("deployment.pb")).unwrap(), expected);
        assert_eq!(
            decode(&fixture("deployment-kubectl-1.32.pb")).unwrap(),
            expected
        );
    }

    #[test]
    fn kubectl_deployment_with_zero_replicas_keeps_them() {
        let v = decode(&fixture("deployment-multi.pb")).unwrap();
        assert_eq!(v["spec"]["replicas"], json!(0));
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn kubectl_secret_configmap_service() {
        assert_eq!(
            decode(&fixture("secret.pb")).unwrap(),
            json!({"kind": "Secret", "apiVersion": "v1",
                   "metadata": {"name": "s1", "creationTimestamp": null},
                   "data": {"pass": "cEBzcyB3MHJk", "user": "YWRtaW4="}})
        );
        assert_eq!(
            decode(&fixture("configmap.pb")).unwrap(),
            json!({"kind": "ConfigMap", "apiVersion": "v1",
                   "metadata": {"name": "cfg", "creationTimestamp": null},
                   "data": {"a": "1", "b": "two"}})
        );
        assert_eq!(
            decode(&fixture("service.pb")).unwrap(),
            json!({"kind": "Service", "apiVersion": "v1",
                   "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
                   "spec": {"ports": [
                       {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
                       {"name": "443-https", "protocol": "TCP", "port": 443, "targetPort": "https"}],
                       "selector": {"app": "web"}, "type": "ClusterIP"},
                   "status": {"loadBalancer": {}}})
        );
    }

    #[test]
    fn kubectl_autoscale_auth_and_token() {
        assert_eq!(
            decode(&fixture("autoscale-v1.pb")).unwrap(),
            json!({"kind": "HorizontalPodAutoscaler", "apiVersion": "autoscaling/v1",
                   "metadata": {"name": "web", "creationTimestamp": null},
                   "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                            "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
                   "status": {"currentReplicas": 0, "desiredReplicas": 0}})
        );
        assert_eq!(
            decode(&fixture("canI.pb")).unwrap(),
            json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                   "metadata": {"creationTimestamp": null},
                   "spec": {"resourceAttributes": {"namespace": "prod", "verb": "create",
                                                   "group": "apps", "resource": "deployments"}},
                   "status": {"allowed": false}})
        );
        assert_eq!(
            decode(&fixture("whoami.pb")).unwrap(),
            json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                   "metadata": {"creationTimestamp": null}, "status": {"userInfo": {}}})
        );
        assert_eq!(
            decode(&fixture("token.pb")).unwrap(),
            json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                   "metadata": {"creationTimestamp": null},
                   "spec": {"audiences": ["api"], "expirationSeconds": 600, "boundObjectRef": null},
                   "status": {"token": "", "expirationTimestamp": null}})
        );
    }

    // ---- built bodies: Go JSON rules

    #[test]
    fn deployment_with_pod_details() {
        let container = [
            text(1, "app"),
            text(2, "nginx"),
            msg(6, &[text(1, "http"), int(3, 8080), text(4, "TCP")]), // ContainerPort
            msg(7, &[text(1, "MODE"), text(2, "prod")]),              // EnvVar
            // ResourceRequirements{limits=1, requests=2} map<string, Quantity{string=1}>
            msg(
                8,
                &[
                    entry(2, "memory", msg(2, &[text(1, "64Mi")])),
                    entry(2, "cpu", msg(2, &[text(1, "250m")])),
                    entry(1, "cpu", msg(2, &[text(1, "1")])),
                ],
            ),
            // livenessProbe: Probe{handler(inline)=1{httpGet=2{path=1, port=2}}, periodSeconds=4}
            msg(
                10,
                &[
                    msg(
                        1,
                        &[msg(
                            2,
                            &[text(1, "/healthz"), msg(2, &[int(1, 1), text(3, "http")])],
                        )],
                    ),
                    int(4, 10),
                    int(2, 0),
                ],
            ),
            text(13, ""), // terminationMessagePath "" (omitempty)
            int(16, 0),   // stdin false (omitempty)
        ];
        let pod_spec = [
            // Volume{name=1, volumeSource(inline)=2{configMap=19{localObjectReference(inline)=1{name=1}}}}
            msg(
                1,
                &[
                    text(1, "cfg"),
                    msg(
                        2,
                        &[msg(19, &[msg(1, &[text(1, "app-config")]), int(3, 420)])],
                    ),
                ],
            ),
            msg(2, &container),
            msg(14, &[bytes(4, &[varint(1000), varint(2000)].concat())]), // packed supplementalGroups
        ];
        let raw = [
            msg(
                1,
                &[
                    text(1, "web"),
                    text(3, "default"),
                    msg(8, &[int(1, 1_704_067_200), int(2, 999_999_999)]), // Time drops nanos
                    entry(11, "tier", text(2, "front")),
                    entry(11, "app", text(2, "web")),
                ],
            ),
            msg(
                2,
                &[
                    int(1, 0), // replicas: pointer, present -> kept
                    msg(2, &[entry(1, "app", text(2, "web"))]),
                    msg(3, &[msg(1, &[empty(8)]), msg(2, &pod_spec)]),
                    int(7, 0), // paused false: omitempty
                ],
            ),
            msg(3, &[]),
            text(99, "unknown fields are ignored"),
        ];
        let expected = json!({
            "kind": "Deployment", "apiVersion": "apps/v1",
            "metadata": {"name": "web", "namespace": "default",
                         "creationTimestamp": "2024-01-01T00:00:00Z",
                         "labels": {"app": "web", "tier": "front"}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"creationTimestamp": null},
                    "spec": {
                        "volumes": [{"name": "cfg", "configMap": {"name": "app-config", "defaultMode": 420}}],
                        "containers": [{
                            "name": "app", "image": "nginx",
                            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                            "env": [{"name": "MODE", "value": "prod"}],
                            "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "250m", "memory": "64Mi"}},
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10}
                        }],
                        "securityContext": {"supplementalGroups": [1000, 2000]}
                    }
                },
                "strategy": {}
            },
            "status": {}
        });
        let decoded = decode(&body("apps/v1", "Deployment", &raw)).unwrap();
        assert_eq!(decoded, expected);
        let keys: Vec<&String> = decoded["spec"]["template"]["metadata"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(keys, ["creationTimestamp"]);
    }

    #[test]
    fn repeated_singular_message_fields_merge() {
        let raw = [
            msg(2, &[int(1, 3)]),
            msg(2, &[msg(2, &[entry(1, "app", text(2, "x"))])]),
        ];
        let v = decode(&body("apps/v1", "Deployment", &raw)).unwrap();
        assert_eq!(v["spec"]["replicas"], json!(3));
        assert_eq!(v["spec"]["selector"], json!({"matchLabels": {"app": "x"}}));
        assert_eq!(v["metadata"], json!({"creationTimestamp": null}));
    }

    #[test]
    fn secret_bytes_and_pointer_presence() {
        let raw = [
            msg(1, &[text(1, "s")]),
            entry(2, "bin", bytes(2, &[0, 255, 1])),
            entry(2, "empty", bytes(2, &[])),
            entry(4, "plain", text(2, "text")),
            text(3, "Opaque"),
            int(5, 0), // immutable: *bool, present false -> kept
        ];
        assert_eq!(
            decode(&body("v1", "Secret", &raw)).unwrap(),
            json!({"kind": "Secret", "apiVersion": "v1",
                   "metadata": {"name": "s", "creationTimestamp": null},
                   "immutable": false,
                   "data": {"bin": "AP8B", "empty": ""},
                   "stringData": {"plain": "text"},
                   "type": "Opaque"})
        );
    }

    #[test]
    fn service_ports_int_or_string() {
        let raw = [msg(
            2,
            &[
                msg(1, &[int(3, 80), msg(4, &[int(1, 0), int(2, 8080)])]),
                msg(1, &[int(3, 443), msg(4, &[int(1, 1), text(3, "https")])]),
                msg(1, &[int(3, 53)]), // targetPort absent: a value struct, Go emits 0
            ],
        )];
        let v = decode(&body("v1", "Service", &raw)).unwrap();
        assert_eq!(
            v["spec"]["ports"],
            json!([{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": "https"},
                   {"port": 53, "targetPort": 0}])
        );
        assert_eq!(v["status"], json!({"loadBalancer": {}}));
    }

    #[test]
    fn lease_micro_time_and_present_zero_pointers() {
        let raw = [msg(
            2,
            &[
                text(1, ""), // holderIdentity: *string, present -> ""
                int(2, 0),
                msg(3, &[int(1, 1_704_067_200), int(2, 123_456_789)]),
                empty(4), // renewTime: non-nil pointer to the zero time -> null
            ],
        )];
        assert_eq!(
            decode(&body("coordination.k8s.io/v1", "Lease", &raw)).unwrap(),
            json!({"kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
                   "metadata": {"creationTimestamp": null},
                   "spec": {"holderIdentity": "", "leaseDurationSeconds": 0,
                            "acquireTime": "2024-01-01T00:00:00.123456Z", "renewTime": null}})
        );
    }

    #[test]
    fn custom_resource_definition_schema() {
        let string_schema = [text(5, "string")];
        let props = [
            text(2, "http://json-schema.org/draft-04/schema#"), // $schema
            text(3, "#/definitions/x"),                         // $ref
            text(5, "object"),
            msg(8, &[bytes(1, br#"{"a": 1}"#)]), // default: JSON
            double(9, 10.5),
            double(11, 1.0),
            msg(20, &[bytes(1, br#""x""#)]),
            msg(20, &[bytes(1, b"2")]),
            text(23, "spec"),
            msg(24, &[msg(1, &string_schema)]), // items: one schema
            entry(
                29,
                "spec",
                msg(2, &[text(5, "object"), msg(30, &[int(1, 0)])]),
            ),
            entry(
                29,
                "list",
                msg(
                    2,
                    &[
                        text(5, "array"),
                        msg(24, &[msg(2, &string_schema), msg(2, &[text(5, "integer")])]),
                    ],
                ),
            ),
            entry(
                29,
                "map",
                msg(
                    2,
                    &[
                        text(5, "object"),
                        msg(30, &[int(1, 1), msg(2, &string_schema)]),
                    ],
                ),
            ),
            entry(32, "a", msg(2, &[text(2, "b"), text(2, "c")])),
            entry(32, "d", msg(2, &[msg(1, &string_schema)])),
            int(38, 1),
            text(42, "atomic"),
        ];
        let version = [
            text(1, "v1"),
            int(2, 1),
            int(3, 1),
            msg(4, &[msg(1, &props)]),
        ];
        let raw = [
            msg(1, &[text(1, "widgets.example.com")]),
            msg(
                2,
                &[
                    text(1, "example.com"),
                    msg(3, &[text(1, "widgets"), text(4, "Widget")]),
                    text(4, "Namespaced"),
                    msg(7, &version),
                ],
            ),
        ];
        let schema = json!({
            "$schema": "http://json-schema.org/draft-04/schema#",
            "$ref": "#/definitions/x",
            "type": "object",
            "default": {"a": 1},
            "maximum": 10.5,
            "minimum": 1,
            "enum": ["x", 2],
            "required": ["spec"],
            "items": {"type": "string"},
            "properties": {
                "list": {"type": "array", "items": [{"type": "string"}, {"type": "integer"}]},
                "map": {"type": "object", "additionalProperties": {"type": "string"}},
                "spec": {"type": "object", "additionalProperties": false}
            },
            "dependencies": {"a": ["b", "c"], "d": {"type": "string"}},
            "x-kubernetes-preserve-unknown-fields": true,
            "x-kubernetes-list-type": "atomic"
        });
        assert_eq!(
            decode(&body(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                &raw
            ))
            .unwrap(),
            json!({
                "kind": "CustomResourceDefinition", "apiVersion": "apiextensions.k8s.io/v1",
                "metadata": {"name": "widgets.example.com", "creationTimestamp": null},
                "spec": {
                    "group": "example.com",
                    "names": {"plural": "widgets", "kind": "Widget"},
                    "scope": "Namespaced",
                    "versions": [{"name": "v1", "served": true, "storage": true,
                                  "schema": {"openAPIV3Schema": schema}}]
                },
                "status": {"conditions": null, "acceptedNames": {"plural": "", "kind": ""}, "storedVersions": null}
            })
        );
    }

    #[test]
    fn delete_options_in_any_group_version() {
        let raw = [int(1, 0), text(4, "Foreground"), text(5, "All")];
        for api_version in ["v1", "meta.k8s.io/v1", "apps/v1"] {
            assert_eq!(
                decode(&body(api_version, "DeleteOptions", &raw)).unwrap(),
                json!({"kind": "DeleteOptions", "apiVersion": api_version,
                       "gracePeriodSeconds": 0, "propagationPolicy": "Foreground", "dryRun": ["All"]})
            );
        }
    }

    #[test]
    fn raw_extension_holds_json_or_a_nested_body() {
        let nested = body("v1", "ConfigMap", &[entry(2, "k", text(2, "v"))]);
        let json_raw = [
            msg(1, &[text(1, "r1")]),
            msg(2, &[bytes(1, br#"{"spec":{"x":1}}"#)]),
            int(3, 2),
        ];
        let pb_raw = [msg(2, &[bytes(1, &nested)])];
        let v = decode(&body("apps/v1", "ControllerRevision", &json_raw)).unwrap();
        assert_eq!(v["data"], json!({"spec": {"x": 1}}));
        assert_eq!(v["revision"], json!(2));
        let v = decode(&body("apps/v1", "ControllerRevision", &pb_raw)).unwrap();
        assert_eq!(
            v["data"],
            json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"creationTimestamp": null}, "data": {"k": "v"}})
        );
        let v = decode(&body("apps/v1", "ControllerRevision", &[])).unwrap();
        assert_eq!(v["data"], Value::Null);
        assert_eq!(v["revision"], json!(0));
    }

    #[test]
    fn managed_fields_and_extra_values() {
        let managed = msg(
            17,
            &[
                text(1, "kubectl"),
                text(2, "Update"),
                text(3, "v1"),
                msg(4, &[int(1, 0)]), // the Unix epoch is not Go's zero time
                text(6, "FieldsV1"),
                msg(7, &[bytes(1, br#"{"f:data":{".":{}}}"#)]),
            ],
        );
        let v = decode(&body("v1", "ConfigMap", &[msg(1, &[managed])])).unwrap();
        assert_eq!(
            v["metadata"]["managedFields"],
            json!([{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                    "time": "1970-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:data": {".": {}}}}])
        );
        let spec = [
            text(3, "alice"),
            entry(5, "scopes", msg(2, &[text(1, "a"), text(1, "b")])),
            entry(5, "none", msg(2, &[])),
        ];
        let v = decode(&body(
            "authorization.k8s.io/v1",
            "SubjectAccessReview",
            &[msg(2, &spec)],
        ))
        .unwrap();
        assert_eq!(
            v["spec"],
            json!({"user": "alice", "extra": {"none": null, "scopes": ["a", "b"]}})
        );
        assert_eq!(v["status"], json!({"allowed": false}));
    }

    #[test]
    fn float_formatting_matches_go() {
        assert_eq!(double_json(3.0).unwrap(), json!(3));
        assert_eq!(double_json(-0.25).unwrap(), json!(-0.25));
        assert!(double_json(f64::NAN).is_err());
        assert!(double_json(f64::INFINITY).is_err());
    }

    #[test]
    fn every_group_version_and_message_resolves() {
        for pair in schema::MESSAGES.windows(2) {
            assert!(pair[0].name < pair[1].name, "MESSAGES must be sorted");
        }
        for pair in schema::GROUP_VERSIONS.windows(2) {
            assert!(pair[0].0 < pair[1].0, "GROUP_VERSIONS must be sorted");
        }
        for message in schema::MESSAGES {
            for field in message.fields {
                if let Ty::Msg(i) = field.ty {
                    assert!(message_at(i).is_ok(), "{}.{}", message.name, field.json);
                }
            }
        }
        for (api_version, kind) in [
            ("v1", "Pod"),
            ("apps/v1", "StatefulSet"),
            ("batch/v1", "CronJob"),
            ("autoscaling/v2", "HorizontalPodAutoscaler"),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
            ("policy/v1", "PodDisruptionBudget"),
            ("networking.k8s.io/v1", "NetworkPolicy"),
            ("scheduling.k8s.io/v1", "PriorityClass"),
            ("storage.k8s.io/v1", "StorageClass"),
            ("certificates.k8s.io/v1", "CertificateSigningRequest"),
            ("events.k8s.io/v1", "Event"),
            ("discovery.k8s.io/v1", "EndpointSlice"),
            ("flowcontrol.apiserver.k8s.io/v1", "FlowSchema"),
            (
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration",
            ),
            ("node.k8s.io/v1", "RuntimeClass"),
            ("authentication.k8s.io/v1", "TokenReview"),
        ] {
            let v = decode(&body(api_version, kind, &[])).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(v["kind"], json!(kind));
        }
    }

    // ---- errors

    fn error_of(body: &[u8]) -> String {
        decode(body).unwrap_err().to_string()
    }

    #[test]
    fn envelope_errors() {
        assert_eq!(error_of(b""), "protobuf body lacks the k8s envelope");
        assert_eq!(
            error_of(b"{\"kind\":\"Pod\"}"),
            "protobuf body lacks the k8s envelope"
        );
        assert_eq!(
            error_of(&body("apps/v1", "Foo", &[])),
            "no protobuf schema for apps/v1, Kind=Foo"
        );
        assert_eq!(
            error_of(&body("example.com/v1", "Widget", &[])),
            "no protobuf schema for example.com/v1, Kind=Widget"
        );
        assert_eq!(
            error_of(&body("apps/v1", "", &[])),
            "protobuf envelope has no kind"
        );
        let gzip = [
            MAGIC.to_vec(),
            msg(1, &[text(1, "v1"), text(2, "Pod")]),
            text(3, "gzip"),
        ]
        .concat();
        assert_eq!(
            error_of(&gzip),
            "unsupported content encoding \"gzip\" in protobuf envelope"
        );
        let json_ct = [
            MAGIC.to_vec(),
            msg(1, &[text(1, "v1"), text(2, "Pod")]),
            text(4, "application/json"),
        ]
        .concat();
        assert_eq!(
            error_of(&json_ct),
            "unsupported content type \"application/json\" in protobuf envelope"
        );
    }

    #[test]
    fn value_errors() {
        // metadata.name (string) sent as a varint
        assert!(matches!(
            decode(&body("v1", "ConfigMap", &[msg(1, &[int(1, 5)])])),
            Err(DecodeError::WireType {
                field: "name",
                found: 0,
                ..
            })
        ));
        let bad_int_or_string = [msg(2, &[msg(1, &[int(3, 80), msg(4, &[int(1, 7)])])])];
        assert_eq!(
            error_of(&body("v1", "Service", &bad_int_or_string)),
            "invalid IntOrString in protobuf body: type 7"
        );
        let bad_fields = [msg(1, &[msg(17, &[msg(7, &[bytes(1, b"{not json")])])])];
        assert!(
            error_of(&body("v1", "ConfigMap", &bad_fields))
                .starts_with("invalid embedded JSON in FieldsV1")
        );
        let far_future = [msg(1, &[msg(8, &[int(1, 400_000_000_000)])])];
        assert!(error_of(&body("v1", "ConfigMap", &far_future)).starts_with("invalid time"));
        let empty_quantity = [msg(2, &[entry(1, "cpu", msg(2, &[text(1, "")]))])];
        assert!(
            error_of(&body("v1", "ResourceQuota", &empty_quantity)).starts_with("invalid quantity")
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut schema = vec![text(5, "object")];
        for _ in 0..(MAX_DEPTH + 10) {
            schema = vec![msg(28, &schema)]; // not: JSONSchemaProps
        }
        let version = [text(1, "v1"), msg(4, &[msg(1, &schema)])];
        let raw = [msg(2, &[msg(7, &version)])];
        let err = decode(&body(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            &raw,
        ))
        .unwrap_err();
        assert!(matches!(err, DecodeError::TooDeep), "{err}");
        let mut nested = body("v1", "ConfigMap", &[]);
        for _ in 0..(MAX_DEPTH + 10) {
            nested = body(
                "apps/v1",
                "ControllerRevision",
                &[msg(2, &[bytes(1, &nested)])],
            );
        }
        assert!(matches!(decode(&nested), Err(DecodeError::TooDeep)));
    }

    #[test]
    fn truncated_bodies_fail_without_panicking() {
        for name in FIXTURES {
            let full = fixture(&format!("{name}.pb"));
            for len in 0..full.len() {
                let _ = decode(&full[..len]);
            }
        }
        let full = fixture("deployment.pb");
        assert!(matches!(
            decode(&full[..full.len() - 1]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(&full[..10]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn garbage_bodies_fail_without_panicking() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let bodies: Vec<Vec<u8>> = FIXTURES
            .iter()
            .map(|n| fixture(&format!("{n}.pb")))
            .collect();
        for round in 0..3000 {
            let len = (next() % 300) as usize;
            let mut garbage: Vec<u8> = MAGIC.to_vec();
            garbage.extend((0..len).map(|_| next() as u8));
            let _ = decode(&garbage);
            // and real bodies with a few corrupted bytes
            let mut body = bodies[round % bodies.len()].clone();
            for _ in 0..3 {
                let i = 4 + (next() as usize) % (body.len() - 4);
                body[i] = next() as u8;
            }
            let _ = decode(&body);
        }
        assert!(matches!(
            decode(&[MAGIC.as_slice(), &[0xff; 12]].concat()),
            Err(DecodeError::Malformed(_))
        ));
    }

    // ---- encoding (the inverse, as kelp stores objects in etcd)

    #[test]
    fn kubectl_bodies_encode_back_to_the_same_bytes() {
        for name in FIXTURES {
            let body = fixture(&format!("{name}.pb"));
            let json = decode(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
            let encoded = encode(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(encoded == body, "{name}: encoding differs from Go's");
        }
    }

    /// Every field of `part` is in `whole` with the same value (`whole` may add zero values).
    fn assert_within(part: &Value, whole: &Value, path: &str) {
        match (part, whole) {
            (Value::Object(p), Value::Object(w)) => {
                for (k, v) in p {
                    match w.get(k) {
                        Some(wv) => assert_within(v, wv, &format!("{path}.{k}")),
                        None => assert!(v.is_null(), "{path}.{k} lost"),
                    }
                }
            }
            (Value::Array(p), Value::Array(w)) => {
                assert_eq!(p.len(), w.len(), "{path}");
                for (i, (pv, wv)) in p.iter().zip(w).enumerate() {
                    assert_within(pv, wv, &format!("{path}[{i}]"));
                }
            }
            _ => assert_eq!(part, whole, "{path}"),
        }
    }

    #[test]
    fn stored_objects_read_back_as_written() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "default", "uid": "u-1",
                    "creationTimestamp": "2026-12-06T10:00:00Z", "labels": {"b": "2", "a": "1"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": "web-1", "uid": "u-0", "controller": true}],
                    "managedFields": [{"manager": "kubectl", "operation": "Apply",
                        "apiVersion": "v1", "time": "2026-12-06T10:00:00Z",
                        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
                "spec": {"containers": [{"name": "c", "image": "busybox",
                        "command": ["sh", "-c", "sleep 1"],
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                            "periodSeconds": 5}}],
                    "volumes": [{"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}},
                        {"name": "tmp", "emptyDir": {}}],
                    "terminationGracePeriodSeconds": 0, "nodeName": "n1",
                    "tolerations": [{"key": "k", "operator": "Exists", "tolerationSeconds": 300}]},
                "status": {"phase": "Running", "podIP": "10.42.0.5",
                    "conditions": [{"type": "Ready", "status": "True",
                        "lastTransitionTime": "2026-12-06T10:00:01Z"}],
                    "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0,
                        "image": "busybox", "imageID": "", "started": true,
                        "state": {"running": {"startedAt": "2026-12-06T10:00:01Z"}}}]}}),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "n1", "namespace": "kube-node-lease",
                    "creationTimestamp": "2026-12-06T10:00:00Z"},
                "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40,
                    "renewTime": "2026-12-06T10:00:02.123456Z", "leaseTransitions": 0}}),
            json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "s", "namespace": "default"}, "type": "Opaque",
                "data": {"k": "dmFsdWU=", "empty": ""}, "immutable": false}),
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "svc", "namespace": "default"},
                "spec": {"type": "NodePort", "clusterIP": "10.43.0.10",
                    "clusterIPs": ["10.43.0.10"], "selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080,
                        "nodePort": 30080, "protocol": "TCP"},
                        {"name": "named", "port": 81, "targetPort": "http", "protocol": "TCP"}],
                    "sessionAffinity": "None", "ipFamilies": ["IPv4"]},
                "status": {"loadBalancer": {}}}),
            json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
                "spec": {"podCIDR": "10.42.0.0/24", "taints": [{"key": "k",
                    "effect": "NoSchedule", "timeAdded": "2026-12-06T10:00:00Z"}]},
                "status": {"capacity": {"cpu": "2", "memory": "24Gi", "pods": "110"},
                    "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                    "nodeInfo": {"kubeletVersion": "v1.33.0", "machineID": "m"}}}),
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                        "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50}}}]}}),
            json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": {"name": "r", "namespace": "default"},
                "data": {"spec": {"template": {"spec": {"containers": []}}}}, "revision": 3}),
            json!({"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "e", "namespace": "default"},
                "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
                "reason": "Started", "message": "m", "count": 2, "type": "Normal",
                "eventTime": "2026-12-06T10:00:00.000001Z",
                "source": {"component": "kubelet"}}),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "widgets.example.com"},
                "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "kind": "Widget"},
                    "versions": [{"name": "v1", "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {"type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                            "properties": {"spec": {"type": "object",
                                "additionalProperties": {"type": "string"},
                                "default": {"a": 1}}}}}}]}}),
        ];
        for object in objects {
            let kind = object["kind"].clone();
            let bytes = encode(&object).unwrap_or_else(|e| panic!("{kind}: {e}"));
            let back = decode(&bytes).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_within(&object, &back, &kind.to_string());
            assert!(encode(&back).unwrap() == bytes, "{kind}: not a fixed point");
        }
    }

    #[test]
    fn kinds_without_a_schema_are_not_encoded() {
        let custom = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {}});
        assert!(matches!(
            encode(&custom),
            Err(EncodeError::UnknownKind { .. })
        ));
        assert!(matches!(encode(&json!([1])), Err(EncodeError::NotAnObject)));
        let wrong = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": 1}});
        assert!(matches!(
            encode(&wrong),
            Err(EncodeError::InvalidValue { .. })
        ));
    }
}
