//! Checks every response the tests receive against `schemas/openapi.json`: the
//! operation is found by method and path template, and the body is validated
//! against the schema the document gives for that status and media type, compiled
//! with the whole document as the resource root so `$ref`s resolve. A status or
//! media type the document does not list fails the test, so the document cannot
//! drift from the code.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use jsonschema::{Draft, Registry, Validator};
use serde_json::Value;

const DOC_URI: &str = "urn:hookledger:openapi";

static DOC: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../../schemas/openapi.json")).expect("openapi.json is JSON")
});

static REGISTRY: LazyLock<Registry<'static>> = LazyLock::new(|| {
    Registry::new()
        .add(DOC_URI, Draft::Draft202012.create_resource(DOC.clone()))
        .expect("the document registers")
        .prepare()
        .expect("the registry prepares")
});

static VALIDATORS: LazyLock<Mutex<HashMap<String, Arc<Validator>>>> =
    LazyLock::new(Default::default);

/// Escapes one JSON Pointer token and makes it safe inside a URI fragment.
fn token(text: &str) -> String {
    text.replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D")
}

fn validator(pointer: &str) -> Arc<Validator> {
    let mut cache = VALIDATORS.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(pointer.to_owned())
        .or_insert_with(|| {
            let schema = serde_json::json!({ "$ref": format!("{DOC_URI}#{pointer}") });
            let validator = jsonschema::options()
                .with_draft(Draft::Draft202012)
                .with_registry(&REGISTRY)
                .should_validate_formats(true)
                .build(&schema)
                .unwrap_or_else(|e| panic!("schema at {pointer} does not compile: {e}"));
            Arc::new(validator)
        })
        .clone()
}

/// The document's path template matching `path`, if any (literal segments first).
fn template_for(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    let paths = DOC["paths"].as_object()?;
    let mut matches: Vec<&'static str> = paths
        .keys()
        .map(String::as_str)
        .filter(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s)
        })
        .collect();
    matches.sort_by_key(|t| t.matches('{').count());
    matches.first().copied()
}

/// Fails the test unless the response is what the document says this operation answers.
pub fn check_response(
    method: &str,
    path: &str,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) {
    let media = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim().to_owned())
        .unwrap_or_default();
    let operation = template_for(path).and_then(|t| {
        DOC["paths"][t]
            .get(method.to_ascii_lowercase())
            .map(|_| format!("/paths/{}/{}", token(t), method.to_ascii_lowercase()))
    });
    let pointer = match operation {
        // No such route or method: the fallbacks answer a plain problem; a
        // request head the server refuses before routing (a body declared
        // over the limit, a URI or headers too long) gets that answer first.
        None => {
            assert!(
                matches!(status, 404 | 405 | 413 | 414 | 431),
                "{method} {path} has no operation in openapi.json but answered {status}"
            );
            assert_eq!(
                media, "application/problem+json",
                "{method} {path}: {status} is not a problem"
            );
            "/components/schemas/Problem".to_owned()
        }
        Some(op) => {
            let op_value = resolve(&op);
            let response = &op_value["responses"][status.to_string()];
            assert!(
                !response.is_null(),
                "{method} {path} answered {status}, which openapi.json does not list for it"
            );
            let response = follow_ref(response);
            let content = &response["content"][&media];
            assert!(
                !content.is_null(),
                "{method} {path} answered {status} as {media:?}, which openapi.json does not list"
            );
            if !media.ends_with("json") {
                return;
            }
            match follow_ref_pointer(&response["content"][&media]["schema"]) {
                Some(pointer) => pointer,
                None => {
                    let code = status.to_string();
                    let response_pointer = match op_value["responses"][&code].get("$ref") {
                        Some(Value::String(r)) => r.trim_start_matches('#').to_owned(),
                        _ => format!("{op}/responses/{code}"),
                    };
                    format!("{response_pointer}/content/{}/schema", token(&media))
                }
            }
        }
    };
    let instance: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!("{method} {path} answered {status} with a body that is not JSON: {e}")
    });
    let validator = validator(&pointer);
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} answered {status} with a body that does not match {pointer}:\n{}\nbody: {instance}",
        errors.join("\n")
    );
}

fn resolve(pointer: &str) -> &'static Value {
    let unescaped = pointer.replace("%7B", "{").replace("%7D", "}");
    DOC.pointer(&unescaped).unwrap_or(&Value::Null)
}

fn follow_ref(value: &'static Value) -> &'static Value {
    match value.get("$ref") {
        Some(Value::String(r)) => resolve(r.trim_start_matches('#')),
        _ => value,
    }
}

/// The pointer a schema `$ref`s, when it is a plain reference.
fn follow_ref_pointer(schema: &Value) -> Option<String> {
    match schema.get("$ref") {
        Some(Value::String(r)) if schema.as_object().is_some_and(|o| o.len() == 1) => {
            Some(r.trim_start_matches('#').to_owned())
        }
        _ => None,
    }
}
