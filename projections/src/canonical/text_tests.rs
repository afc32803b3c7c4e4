use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn canonical(text: &str) -> String {
    from_text(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn refused(text: &str) -> TextError {
    from_text(text).expect_err(text)
}

#[test]
fn numbers_are_kept_exactly_as_written() {
    assert_eq!(
        canonical(r#"{ "big": 18446744073709551616, "tiny": 1e-400, "zero": -0 }"#),
        r#"{"big":18446744073709551616,"tiny":1e-400,"zero":-0}"#
    );
    for number in [
        "1.0",
        "1E2",
        "-0.0",
        "1e400",
        "123456789012345678901234567890",
        "0.1e-7",
    ] {
        assert_eq!(canonical(number), number);
    }
}

#[test]
fn keys_are_sorted_whitespace_dropped_and_escapes_normalised() {
    assert_eq!(
        canonical("{\"b\" : [1, {\"z\":true, \"y\":null}],\n\t\"a\":\"\\u00e9\\/\\n\"}"),
        r#"{"a":"é/\n","b":[1,{"y":null,"z":true}]}"#
    );
    // Sorted by UTF-8 bytes, as the stored form always was.
    assert_eq!(
        canonical(r#"{"é":1,"z":2,"A":3,"\u0000":4}"#),
        r#"{"\u0000":4,"A":3,"z":2,"é":1}"#
    );
}

#[test]
fn the_same_json_in_another_order_has_one_canonical_form() {
    assert_eq!(
        canonical(r#"{"status":"failed","responseBody":{"a":1,"b":[2,3]}}"#),
        canonical(r#"{ "responseBody": {"b":[2,3],"a":1}, "status":"failed" }"#)
    );
}

#[test]
fn a_key_given_twice_is_refused_naming_where() {
    let e = refused(r#"{"status":"delivered","x":1,"status":"failed"}"#);
    assert_eq!(e.reason, Reason::DuplicateKey);
    assert_eq!(e.path(), "status");
    let e = refused(r#"{"payload":{"items":[{"id":1},{"id":2,"id":3}]}}"#);
    assert_eq!(e.path(), "payload.items[1].id");
    // Escapes do not hide a repeat.
    assert_eq!(refused(r#"{"a":1,"\u0061":2}"#).path(), "a");
}

#[test]
fn nesting_is_allowed_to_the_limit_and_refused_past_it() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert_eq!(canonical(&deep(MAX_DEPTH)), deep(MAX_DEPTH));
    assert_eq!(refused(&deep(MAX_DEPTH + 1)).reason, Reason::TooDeep);
    // Far past it: refused, not a stack overflow.
    assert_eq!(refused(&deep(1_000_000)).reason, Reason::TooDeep);
    let objects = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
    assert_eq!(refused(&objects).reason, Reason::TooDeep);
}

#[test]
fn what_json_refuses_is_refused_with_the_offset() {
    for (text, offset) in [
        ("", 0),
        ("{", 1),
        ("{\"a\" 1}", 5),
        ("[1,]", 3),
        ("01", 1),
        ("-", 1),
        ("1.", 2),
        ("1e+", 3),
        ("tru", 0),
        ("\"a", 2),
        ("\"\\", 2),
        ("\"\u{1}\"", 1),
        ("\u{feff}{}", 0),
        ("{}\u{0}", 2),
        ("{} {}", 3),
        ("\"\\ud800\"", 0),
        ("\"\\x\"", 0),
        ("NaN", 0),
    ] {
        match refused(text).reason {
            Reason::Syntax { offset: at, .. } => assert_eq!(at, offset, "{text:?}"),
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

/// Any JSON value, numbers as `serde_json` writes them.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,8}|[\\x00-\\x7f]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,6}|[a-c]{0,2}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn text_from_serde_json_canonicalises_as_values_always_did(v in value()) {
        let expected = String::from_utf8(crate::canonical::to_vec(&v)).unwrap();
        prop_assert_eq!(from_text(&serde_json::to_string(&v).unwrap()).unwrap(), expected.clone());
        prop_assert_eq!(from_text(&serde_json::to_string_pretty(&v).unwrap()).unwrap(), expected);
    }

    #[test]
    fn the_canonical_form_is_a_fixed_point(v in value()) {
        let once = from_text(&serde_json::to_string_pretty(&v).unwrap()).unwrap();
        prop_assert_eq!(from_text(&once).unwrap(), once);
    }

    /// Bytes near JSON: never a panic; what is accepted is JSON to
    /// `serde_json` too, and reads back to the same value.
    #[test]
    fn any_text_is_refused_or_read_as_serde_json_reads_it(
        v in value(),
        cut in any::<prop::sample::Index>(),
        junk in "[\\[\\]{}:,\"\\\\0-9eE.+-]{0,3}",
    ) {
        let text = serde_json::to_string(&v).unwrap();
        let at = cut.index(text.len() + 1);
        let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let mangled = format!("{}{junk}{}", &text[..at], &text[at..]);
        if let Ok(canonical) = from_text(&mangled) {
            prop_assert!(serde_json::from_str::<&serde_json::value::RawValue>(&mangled).is_ok());
            if let Ok(read) = serde_json::from_str::<Value>(&mangled) {
                prop_assert_eq!(serde_json::from_str::<Value>(&canonical).unwrap(), read);
            }
        }
    }
}
