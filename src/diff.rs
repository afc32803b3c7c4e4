//! Differences between two read-model snapshots, field by field, for
//! `projections rebuild --verify`: each one names the path to the field and both
//! values, so an operator sees exactly what a live model got wrong.

use serde_json::Value;

use crate::snapshot::Snapshot;

/// Every difference between `live` and `rebuilt`; empty when they are equal.
pub fn snapshots(live: &Snapshot, rebuilt: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    if live.digest != rebuilt.digest {
        out.push(format!(
            "ledger digest: live {} at position {}, rebuilt {} at position {}",
            live.digest.hex(),
            live.digest.position,
            rebuilt.digest.hex(),
            rebuilt.digest.position
        ));
    }
    let as_json = |s: &Snapshot| serde_json::to_value(&s.model).expect("the read model serialises");
    values("model", &as_json(live), &as_json(rebuilt), &mut out);
    out
}

/// Appends to `out` every place where `live` and `rebuilt` differ below `path`.
pub fn values(path: &str, live: &Value, rebuilt: &Value, out: &mut Vec<String>) {
    match (live, rebuilt) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let here = format!("{path}/{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => values(&here, x, y, out),
                    (Some(x), None) => out.push(format!("{here}: only in live: {}", short(x))),
                    (None, Some(y)) => out.push(format!("{here}: only in rebuild: {}", short(y))),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                values(&format!("{path}/{i}"), x, y, out);
            }
        }
        (x, y) if x != y => out.push(format!("{path}: live {}, rebuilt {}", short(x), short(y))),
        _ => {}
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_each_differing_field_and_missing_entry() {
        let mut out = Vec::new();
        values(
            "m",
            &json!({"a": {"x": 1, "y": [1, 2]}, "gone": true}),
            &json!({"a": {"x": 2, "y": [1, 3]}, "new": 1}),
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                "m/a/x: live 1, rebuilt 2",
                "m/a/y/1: live 2, rebuilt 3",
                "m/gone: only in live: true",
                "m/new: only in rebuild: 1",
            ]
        );
    }

    #[test]
    fn equal_snapshots_have_no_difference() {
        assert!(snapshots(&Snapshot::default(), &Snapshot::default()).is_empty());
    }
}
