//! The repository's documents against the code: `docs/DESIGN.md` §1 states the
//! record-attempt contract the server enforces (the `nextRetryAt` pattern, its
//! examples, the enum, the range and the response's fields), and every citation
//! in the repository names a document, and a section of it, that is here.
//!
//! These read files, not the server: the server is held to the API document by
//! the other tests, and the API document to `docs/DESIGN.md` here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use projections::values::{AttemptStatus, HttpStatusCode, RetryAt};
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn design() -> String {
    std::fs::read_to_string(root().join("docs/DESIGN.md")).expect("docs/DESIGN.md")
}

fn json(path: &str) -> Value {
    let text = std::fs::read_to_string(root().join(path)).expect(path);
    serde_json::from_str(&text).expect(path)
}

/// The text of section `n` of a document whose sections are `## N. Title`.
fn section(doc: &str, n: u32) -> String {
    let heading = format!("## {n}. ");
    let mut lines = doc.lines().skip_while(|l| !l.starts_with(&heading));
    let first = lines.next().unwrap_or_else(|| panic!("no section {n}"));
    std::iter::once(first)
        .chain(lines.take_while(|l| !l.starts_with("## ")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first cell of each body row (below the header and the `|---|` line) of
/// the markdown table that follows `after`, where it is in backticks.
fn table_keys(text: &str, after: &str) -> Vec<String> {
    let start = text.find(after).unwrap_or_else(|| panic!("no {after:?}"));
    text[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .filter_map(|l| l.split('|').nth(1))
        .filter_map(|cell| cell.trim().strip_prefix('`')?.strip_suffix('`'))
        .map(str::to_owned)
        .collect()
}

/// The cells of the table row whose first cell is `` `key` ``.
fn row<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    let start = format!("| `{key}` |");
    let line = text
        .lines()
        .find(|l| l.starts_with(&start))
        .unwrap_or_else(|| panic!("no table row for {key}"));
    line.split('|').map(str::trim).collect()
}

fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn required(schema: &Value) -> BTreeSet<String> {
    schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .map(|v| v.as_str().expect("a name").to_owned())
        .collect()
}

#[test]
fn the_design_document_states_the_contract_the_code_enforces() {
    let contract = section(&design(), 1);
    let openapi = json("schemas/openapi.json");
    let schemas = &openapi["components"]["schemas"];
    let body = &schemas["RecordOutboundWebhookDeliveryAttempt"]["properties"];

    // The pattern, verbatim, in the API document and the event schema.
    let after = &contract[contract.find("The pattern, exactly:").expect("the pattern")..];
    let pattern = after
        .lines()
        .skip_while(|l| !l.starts_with("```"))
        .nth(1)
        .expect("the pattern's line");
    assert_eq!(body["nextRetryAt"]["pattern"], pattern, "openapi.json");
    let event_schema = json("schemas/events/AttemptRecorded.v1.json");
    assert_eq!(
        event_schema["properties"]["nextRetryAt"]["pattern"], pattern,
        "AttemptRecorded.v1.json"
    );

    // Each example is accepted or refused by the pattern and the parser alike.
    let regex = regex::Regex::new(pattern).expect("the pattern compiles");
    let mut verdicts = BTreeSet::new();
    for value in &table_keys(&contract, "| `nextRetryAt` | |") {
        let accepted = row(&contract, value)[2].starts_with("accepted");
        assert_eq!(regex.is_match(value), accepted, "the pattern on {value}");
        assert_eq!(
            RetryAt::parse(value).is_some(),
            accepted,
            "RetryAt on {value}"
        );
        verdicts.insert(accepted);
    }
    assert_eq!(verdicts.len(), 2, "examples of both kinds");

    // The enum and the range.
    let statuses: Vec<&str> = AttemptStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(backticked(row(&contract, "status")[4]), statuses);
    let range = format!("`{} <= x <= {}`", HttpStatusCode::MIN, HttpStatusCode::MAX);
    assert_eq!(row(&contract, "responseStatusCode")[4], range);
    assert_eq!(
        (
            &body["responseStatusCode"]["minimum"],
            &body["responseStatusCode"]["maximum"]
        ),
        (
            &Value::from(HttpStatusCode::MIN),
            &Value::from(HttpStatusCode::MAX)
        )
    );

    // The response: the event snapshot's fields and each delivery's.
    let event_fields: BTreeSet<String> =
        table_keys(&contract, "**Response**").into_iter().collect();
    assert_eq!(
        event_fields,
        required(&schemas["OutboundWebhookEventSnapshot"])
    );
    let prose = contract.split_whitespace().collect::<Vec<_>>().join(" ");
    let listed = prose
        .split("Each `OutboundWebhookDeliverySnapshot` is `{")
        .nth(1)
        .and_then(|rest| rest.split_once("}` plus `status`"))
        .expect("the delivery snapshot's fields")
        .0;
    let mut delivery_fields: BTreeSet<String> = listed.split(", ").map(str::to_owned).collect();
    delivery_fields.insert("status".to_owned());
    assert_eq!(
        delivery_fields,
        required(&schemas["OutboundWebhookDeliverySnapshot"])
    );
}

/// Every file of the repository, but what `.gitignore` leaves out (build
/// output, a local data directory) and git's own.
fn repository_files(dir: &Path, out: &mut Vec<PathBuf>) {
    const IGNORED: [&str; 4] = ["target", "data", ".schemathesis", ".git"];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !IGNORED.contains(&name.as_str()) {
                repository_files(&path, out);
            }
        } else if name != ".git" && !name.ends_with(".profraw") {
            out.push(path);
        }
    }
}

#[test]
fn every_citation_names_a_document_and_section_in_the_repository() {
    let sections: BTreeSet<u32> = design()
        .lines()
        .filter_map(|l| l.strip_prefix("## ")?.split_once(". ")?.0.parse().ok())
        .collect();
    assert!(
        sections.len() >= 8,
        "sections of docs/DESIGN.md: {sections:?}"
    );
    // Papers that were never part of the repository; spelled in pieces so this
    // file does not cite them itself.
    let outside = [
        ["PRODUCT", " §"].concat(),
        ["PRODUCT", ".md"].concat(),
        ["record-attempt", ".txt"].concat(),
        ["STYLE", ".md"].concat(),
        ["contract", " page"].concat(),
    ];
    let citation = regex::Regex::new(r"DESIGN\.md`?((?:,? ?§\d+)+)").unwrap();
    let link = regex::Regex::new(r"\]\(([^)\s#]+)(#[^)]*)?\)").unwrap();

    let mut files = Vec::new();
    repository_files(root(), &mut files);
    let mut checked = 0;
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue; // not text
        };
        let shown = file.strip_prefix(root()).unwrap().display().to_string();
        for (n, line) in text.lines().enumerate() {
            for paper in &outside {
                assert!(
                    !line.contains(paper.as_str()),
                    "{shown}:{}: cites {paper:?}, which is not in the repository: {line}",
                    n + 1
                );
            }
            for cited in citation.captures_iter(line) {
                for number in cited[1].split('§').skip(1) {
                    let number: u32 = number.trim_matches([',', ' ']).parse().unwrap();
                    assert!(
                        sections.contains(&number),
                        "{shown}:{}: cites docs/DESIGN.md §{number}, which has no such section",
                        n + 1
                    );
                    checked += 1;
                }
            }
            if shown.ends_with(".md") {
                for target in link.captures_iter(line) {
                    let target = &target[1];
                    if target.contains("://") || target.starts_with("mailto:") {
                        continue;
                    }
                    let resolved = file.parent().unwrap().join(target);
                    assert!(
                        resolved.exists(),
                        "{shown}:{}: links to {target}, which is not in the repository",
                        n + 1
                    );
                }
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} citations of docs/DESIGN.md found"
    );
}
