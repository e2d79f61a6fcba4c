//! JSON Schemas of every wire type, generated from the Rust types.
//!
//! `proto-schemas/schemas/` holds their output; a test in `herald-tests`
//! regenerates them and fails when the checked-in files differ.

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value};

use crate::{
    api::{DeadLetter, PublishAccepted},
    envelope::{Envelope, Notification},
    error_code::ErrorBody,
    events::EventType,
    frames::{ClientFrame, ServerFrame},
    rpc::{RpcMethod, RpcReply},
};

/// Every schema file: its path under `proto-schemas/schemas/` and its content.
pub fn all() -> Vec<(String, Value)> {
    let mut files = vec![
        ("envelope.json".to_string(), root::<Envelope>("Envelope")),
        (
            "notification.json".to_string(),
            root::<Notification>("Notification"),
        ),
        ("error.json".to_string(), root::<ErrorBody>("ErrorBody")),
        (
            "publish-accepted.json".to_string(),
            root::<PublishAccepted>("PublishAccepted"),
        ),
        (
            "dead-letter.json".to_string(),
            root::<DeadLetter>("DeadLetter"),
        ),
        ("rpc-reply.json".to_string(), root::<RpcReply>("RpcReply")),
    ];
    for &event_type in EventType::ALL {
        let schema = titled(
            event_type.data_schema(&mut generator()),
            event_type.as_str(),
        );
        files.push((format!("events/{event_type}.json"), schema));
    }
    for &method in RpcMethod::ALL {
        let schema = titled(method.data_schema(&mut generator()), method.as_str());
        files.push((format!("rpc/{method}.json"), schema));
    }
    files.extend(split_frames::<ServerFrame>("server"));
    files.extend(split_frames::<ClientFrame>("client"));
    files
}

fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12().into_generator()
}

fn root<T: JsonSchema>(title: &str) -> Value {
    titled(generator().into_root_schema_for::<T>(), title)
}

fn titled(schema: Schema, title: &str) -> Value {
    let mut value = schema.to_value();
    if let Some(object) = value.as_object_mut() {
        object.insert("title".into(), Value::String(title.into()));
    }
    value
}

/// One file per frame type, from the tagged enum's `oneOf`: `frames/server/welcome.json`.
fn split_frames<T: JsonSchema>(side: &str) -> Vec<(String, Value)> {
    let whole = generator().into_root_schema_for::<T>().to_value();
    let defs = whole.get("$defs").cloned();
    let variants = whole
        .get("oneOf")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    variants
        .into_iter()
        .map(|variant| {
            let name = variant
                .pointer("/properties/type/const")
                .and_then(Value::as_str)
                .expect("every frame variant has a constant `type`")
                .to_string();
            let mut object = Map::new();
            object.insert("$schema".into(), whole["$schema"].clone());
            object.insert(
                "title".into(),
                Value::String(format!("{side} frame `{name}`")),
            );
            if let Value::Object(fields) = variant {
                object.extend(fields);
            }
            if let Some(defs) = &defs {
                object.insert("$defs".into(), defs.clone());
            }
            (format!("frames/{side}/{name}.json"), Value::Object(object))
        })
        .collect()
}
