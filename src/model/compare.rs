//! Two read-model stores compared row by row, for `projections rebuild
//! --verify`: every table, walked in key order on both sides at once. Each
//! difference names the table, the row and the field with both values, so an
//! operator sees exactly what a live model got wrong.

use std::ops::Bound;

use projections::model::{ApiKey, Attempt, Delivery, Endpoint, IdempotencyRecord, WebhookEvent};
use serde_json::Value;

use super::Error;
use super::tables::{self, Row};
use crate::kv::{Flow, KvRead, Table};

/// Every difference between `live` and `rebuilt`; empty when they are equal.
pub fn stores(live: &dyn KvRead, rebuilt: &dyn KvRead) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for table in tables::ALL {
        let mut a = Cursor::new(live, table);
        let mut b = Cursor::new(rebuilt, table);
        let here = |key: &[u8]| format!("{}/{}", table.0, show_key(key));
        loop {
            let order = match (a.peek()?, b.peek()?) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
            };
            match order {
                std::cmp::Ordering::Equal => {
                    let (key, va) = a.next()?;
                    let (_, vb) = b.next()?;
                    if va != vb {
                        values(
                            &here(&key),
                            &as_json(table, &va),
                            &as_json(table, &vb),
                            &mut out,
                        );
                    }
                }
                std::cmp::Ordering::Less => {
                    let (key, va) = a.next()?;
                    out.push(format!(
                        "{}: only in live: {}",
                        here(&key),
                        short(&as_json(table, &va))
                    ));
                }
                std::cmp::Ordering::Greater => {
                    let (key, vb) = b.next()?;
                    out.push(format!(
                        "{}: only in rebuild: {}",
                        here(&key),
                        short(&as_json(table, &vb))
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// A table walked in key order a chunk at a time, so a comparison holds a
/// few thousand entries in memory whatever the size of the model.
/// A key and its stored value.
type Pair = (Vec<u8>, Vec<u8>);

struct Cursor<'a> {
    kv: &'a dyn KvRead,
    table: Table,
    chunk: std::collections::VecDeque<Pair>,
    after: Option<Vec<u8>>,
    done: bool,
}

const CHUNK: usize = 4096;

impl<'a> Cursor<'a> {
    fn new(kv: &'a dyn KvRead, table: Table) -> Cursor<'a> {
        Cursor {
            kv,
            table,
            chunk: Default::default(),
            after: None,
            done: false,
        }
    }

    fn fill(&mut self) -> Result<(), Error> {
        if !self.chunk.is_empty() || self.done {
            return Ok(());
        }
        let from = match &self.after {
            Some(key) => Bound::Excluded(key.as_slice()),
            None => Bound::Unbounded,
        };
        let chunk = &mut self.chunk;
        self.kv
            .scan(self.table, from, Bound::Unbounded, false, &mut |k, v| {
                chunk.push_back((k.to_vec(), v.to_vec()));
                Ok(if chunk.len() >= CHUNK {
                    Flow::Stop
                } else {
                    Flow::Continue
                })
            })?;
        self.done = self.chunk.len() < CHUNK;
        self.after = self.chunk.back().map(|(k, _)| k.clone());
        Ok(())
    }

    fn peek(&mut self) -> Result<Option<&Pair>, Error> {
        self.fill()?;
        Ok(self.chunk.front())
    }

    fn next(&mut self) -> Result<Pair, Error> {
        self.fill()?;
        self.chunk
            .pop_front()
            .ok_or_else(|| Error::Inconsistent("a table ended while being compared".into()))
    }
}

/// A row as JSON, for showing it; bytes that do not decode are shown as hex.
fn as_json(table: Table, bytes: &[u8]) -> Value {
    fn row<R: Row + serde::Serialize>(bytes: &[u8]) -> Value {
        R::decode(bytes)
            .ok()
            .and_then(|r| serde_json::to_value(r).ok())
            .unwrap_or_else(|| Value::String(hex::encode(bytes)))
    }
    match table {
        tables::ENDPOINTS | tables::ENDPOINT_VERSIONS => row::<Endpoint>(bytes),
        tables::EVENTS => row::<WebhookEvent>(bytes),
        tables::DELIVERIES | tables::RETRY_QUEUE => row::<Delivery>(bytes),
        tables::ATTEMPTS => row::<Attempt>(bytes),
        tables::API_KEYS => row::<ApiKey>(bytes),
        tables::IDEMPOTENCY => row::<IdempotencyRecord>(bytes),
        tables::ENDPOINT_TALLIES => row::<projections::health::Tally>(bytes),
        tables::ERASURES => row::<projections::model::Erasures>(bytes),
        tables::SOURCE_KEYS => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        _ if bytes.is_empty() => Value::Bool(true),
        _ => Value::String(hex::encode(bytes)),
    }
}

/// A key as text: its string parts as they are, other bytes escaped.
fn show_key(key: &[u8]) -> String {
    key.split(|&b| b == 0)
        .map(|part| String::from_utf8_lossy(part).escape_debug().to_string())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("/")
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
