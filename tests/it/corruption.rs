//! Torn writes and corruption, through the real binary. A log cut at any byte
//! of its last frames opens and loses only the frames the cut went through
//! (which a crash can only leave unacknowledged); damage in the middle of a
//! segment makes `serve` refuse to start naming the file and offset, and `audit
//! verify` exit 1 naming the position; a damaged read model is rebuilt from the
//! log, never served; damage that appears under a running server is refused,
//! never served.
//!
//! The store keeps no index file: it rebuilds its index from the log on every
//! open, so there is no index to damage (see RELIABILITY.md).

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::binary::{
    Client, Server, copy_data, create_key, hookledger, log_lines, record_figures, stderr, stdout,
    succeeds,
};
use hookledger::store::embedded::FRAME_HEADER_LEN;

use crate::support_frames::frames;

const ORG: &str = "org_corrupt";

/// A stopped ledger: one delivery with `attempts` attempts, each its own frame
/// at the end of the log, in order.
struct Ledger {
    dir: tempfile::TempDir,
    key: String,
    delivery: String,
    /// How many events the log holds.
    head: u64,
}

impl Ledger {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn segment(&self) -> PathBuf {
        let mut segments: Vec<PathBuf> = std::fs::read_dir(self.data().join("log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        segments.sort();
        segments.pop().expect("a segment")
    }

    fn attempts_path(&self) -> String {
        format!("/v1/outbound-webhook-deliveries/{}/attempts", self.delivery)
    }
}

async fn ledger(attempts: usize) -> Ledger {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, ORG);
    let server = Server::start(&data).await;
    let client = Client::new(&server, ORG, &key);
    let delivery = client.one_delivery().await;
    for i in 0..attempts {
        client
            .post(
                &format!("/v1/outbound-webhook-deliveries/{delivery}/attempts"),
                json!({"status": "failed", "lastError": format!("a{i}")}),
            )
            .await;
    }
    let head = client.get("/readyz").await["head"].as_u64().unwrap();
    server.stop();
    Ledger {
        dir,
        key,
        delivery,
        head,
    }
}

/// The position a segment's frame `k` holds.
fn position_of(segment: &Path, k: usize) -> u64 {
    let first: u64 = segment
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    first + k as u64
}

fn flip(file: &Path, at: u64) -> Vec<u8> {
    let original = std::fs::read(file).unwrap();
    let mut damaged = original.clone();
    damaged[at as usize] ^= 0x40;
    std::fs::write(file, &damaged).unwrap();
    original
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_at_any_byte_of_its_last_frames_loses_only_the_cut_frames() {
    let ledger = ledger(3).await;
    let segment = ledger.segment();
    let frames = frames(&segment);
    let last3 = &frames[frames.len() - 3..];
    let (start, _) = last3[0];
    let len = last3.iter().map(|(o, l)| o + l).max().unwrap();
    let relative = segment.strip_prefix(ledger.data()).unwrap().to_owned();

    // Every byte, with the auditor's tool: the log up to the cut frame checks out.
    let cuts: Vec<u64> = (start..len).collect();
    let check_cut = |cut: u64| {
        let copy = tempfile::tempdir().unwrap();
        copy_data(&ledger.data(), copy.path());
        let file = copy.path().join(&relative);
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..cut as usize]).unwrap();
        let whole = last3.iter().filter(|(o, l)| o + l <= cut).count() as u64;
        let expected = ledger.head - 3 + whole;
        let out = hookledger(copy.path(), &["audit", "verify"]);
        assert!(
            out.status.success() && stdout(&out).starts_with(&format!("ok: {expected} events")),
            "cut at {cut}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    };
    std::thread::scope(|s| {
        let (even, odd): (Vec<u64>, Vec<u64>) = cuts.iter().partition(|c| *c % 2 == 0);
        s.spawn(|| even.into_iter().for_each(check_cut));
        s.spawn(|| odd.into_iter().for_each(check_cut));
    });

    // At the places that matter, the server: it cuts the torn bytes, sets aside
    // the read model that is ahead of the log and rebuilds it, serves the whole
    // frames and goes on.
    let mut served = 0;
    for &(offset, frame_len) in last3 {
        for cut in [
            offset + 1,
            offset + FRAME_HEADER_LEN,
            offset + frame_len / 2,
            offset + frame_len - 1,
        ] {
            let copy = tempfile::tempdir().unwrap();
            let data = copy.path().join("data");
            copy_data(&ledger.data(), &data);
            let file = data.join(&relative);
            let bytes = std::fs::read(&file).unwrap();
            std::fs::write(&file, &bytes[..cut as usize]).unwrap();
            let whole = last3.iter().filter(|(o, l)| o + l <= cut).count();

            let server = Server::start(&data).await;
            let client = Client::new(&server, ORG, &ledger.key);
            let history = client.all(&ledger.attempts_path()).await;
            let markers: Vec<&str> = history
                .iter()
                .map(|a| a["lastError"].as_str().unwrap())
                .collect();
            assert_eq!(markers, ["a0", "a1", "a2"][..whole], "cut at {cut}");
            let log = server.log();
            assert!(
                !log_lines(&log, "cutting off a torn tail left by a crash").is_empty(),
                "{log}"
            );
            assert!(
                !log_lines(
                    &log,
                    "setting the read model aside; it is rebuilt from the log"
                )
                .is_empty(),
                "a read model ahead of the log was trusted: {log}"
            );
            client
                .post(&ledger.attempts_path(), json!({"status": "delivered"}))
                .await;
            server.stop();
            succeeds(hookledger(&data, &["audit", "verify"]));
            served += 1;
        }
    }
    record_figures(
        "torn",
        &format!(
            "torn tails: {} cuts (every byte of the last 3 frames) verified, {served} of them served",
            cuts.len()
        ),
    );
}

#[tokio::test]
async fn damage_in_the_middle_is_refused_naming_the_file_offset_and_position() {
    let ledger = ledger(8).await;
    let segment = ledger.segment();
    let frames = frames(&segment);
    let k = frames.len() / 2;
    let (offset, len) = frames[k];
    let position = position_of(&segment, k);
    let mut flips = 0;
    for at in [
        offset,
        offset + 2,
        offset + 5,
        offset + len / 2,
        offset + len - 1,
    ] {
        let original = flip(&segment, at);

        let server = Server::spawn(&ledger.data(), &[], &[]);
        let log = server.log.clone();
        assert_eq!(server.wait_refused(), Some(2), "a refusal is a setup error");
        let log = std::fs::read_to_string(log).unwrap();
        let refusal = log.lines().last().unwrap_or_default();
        for needle in [
            segment.display().to_string(),
            format!("offset {offset}"),
            format!("position {position}"),
        ] {
            assert!(
                refusal.contains(&needle),
                "flip at {at}: {needle} not named in {refusal}"
            );
        }
        let out = hookledger(&ledger.data(), &["audit", "verify"]);
        assert_eq!(out.status.code(), Some(1), "flip at {at}: {}", stdout(&out));
        assert!(
            stdout(&out).contains(&format!("FAILED at position {position}")),
            "{}",
            stdout(&out)
        );
        std::fs::write(&segment, original).unwrap();
        flips += 1;
    }
    succeeds(hookledger(&ledger.data(), &["audit", "verify"]));
    record_figures(
        "corrupt-middle",
        &format!(
            "middle damage: {flips} flipped bytes (length, checksum, payload) refused by serve and audit verify"
        ),
    );
}

impl Server {
    /// Waits for a server that must refuse to start; returns its exit code.
    fn wait_refused(mut self) -> Option<i32> {
        let status = self.wait_exit();
        assert!(!status.success(), "serve started on a damaged log");
        status.code()
    }
}

/// Where a planted fault goes in the read model's file.
#[derive(Debug, Clone, Copy)]
enum ModelDamage {
    /// The file's first bytes: the store does not open.
    Header,
    /// Every copy of a value's bytes (the endpoint's URL, in the endpoint's
    /// rows and each delivery's): the store opens, and the rows fail their
    /// checksums when read.
    Values,
}

impl ModelDamage {
    fn plant(self, file: &Path) -> usize {
        let mut bytes = std::fs::read(file).unwrap();
        let places: Vec<usize> = match self {
            ModelDamage::Header => (0..64).collect(),
            ModelDamage::Values => bytes
                .windows(URL_MARK.len())
                .enumerate()
                .filter(|(_, w)| *w == URL_MARK)
                .map(|(i, _)| i + 4)
                .collect(),
        };
        for &at in &places {
            bytes[at] ^= 0x40;
        }
        std::fs::write(file, bytes).unwrap();
        places.len()
    }
}

/// The endpoint URL of `Client::one_delivery`, as it lies in the model's rows.
const URL_MARK: &[u8] = b"all.example.com";

#[tokio::test]
async fn a_damaged_read_model_is_detected_and_rebuilt_never_served() {
    let ledger = ledger(4).await;
    let model = hookledger::model::file_in(&ledger.data());
    let server = Server::start(&ledger.data()).await;
    let client = Client::new(&server, ORG, &ledger.key);
    let deliveries = client.all("/v1/outbound-webhook-deliveries").await;
    let attempts = client.all(&ledger.attempts_path()).await;
    server.stop();
    let mut planted = 0;
    for damage in [ModelDamage::Header, ModelDamage::Values] {
        let places = damage.plant(&model);
        assert!(
            places > 0,
            "{damage:?}: nothing to damage in the model file"
        );
        planted += places;

        // `projections rebuild --verify` (on a copy, since it swaps a good
        // model in) reports the damage, naming the file.
        let copy = tempfile::tempdir().unwrap();
        copy_data(&ledger.data(), copy.path());
        let out = hookledger(copy.path(), &["projections", "rebuild", "--verify"]);
        assert_eq!(out.status.code(), Some(1), "{damage:?}: {}", stdout(&out));
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            said.contains("readmodel.redb"),
            "{damage:?}: the file is named: {said}"
        );

        // The server answers from the damaged model never: 503 while it is
        // rebuilt from the log, then exactly what it answered before.
        let earlier =
            std::fs::read_to_string(crate::binary::log_path(&ledger.data())).map_or(0, |l| l.len());
        let server = Server::start(&ledger.data()).await;
        let client = Client::new(&server, ORG, &ledger.key);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut refused = 0;
        loop {
            let (status, body) = client
                .send(
                    reqwest::Method::GET,
                    "/v1/outbound-webhook-deliveries",
                    None,
                )
                .await;
            match status {
                200 => {
                    assert_eq!(
                        body["data"],
                        json!(deliveries),
                        "{damage:?}: served wrong data"
                    );
                    break;
                }
                503 => refused += 1,
                other => panic!("{damage:?}: {other} {body}"),
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{damage:?}: never rebuilt"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            client.all(&ledger.attempts_path()).await,
            attempts,
            "{damage:?}"
        );
        let log = server.log()[earlier..].to_owned();
        let noticed = log_lines(
            &log,
            "setting the read model aside; it is rebuilt from the log",
        )
        .len()
            + log_lines(
                &log,
                "the read model is damaged; rebuilding it from the log",
            )
            .len();
        assert!(
            noticed > 0,
            "{damage:?}: the server does not say why it rebuilt"
        );
        server.stop();
        eprintln!("{damage:?}: {places} bytes flipped, {refused} reads refused while rebuilding");
        succeeds(hookledger(
            &ledger.data(),
            &["projections", "rebuild", "--verify"],
        ));
    }
    record_figures(
        "model-damage",
        &format!(
            "read-model damage: {planted} bytes flipped (header, every copy of a value), each detected and rebuilt, never served"
        ),
    );
}

#[tokio::test]
async fn damage_under_a_running_server_is_refused_never_served() {
    let ledger = ledger(6).await;
    let server = Server::start(&ledger.data()).await;
    let client = Client::new(&server, ORG, &ledger.key);
    let other = client
        .post(
            "/v1/outbound-webhook-events",
            json!({"eventType": "x", "payload": {}}),
        )
        .await;
    let other = other["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let segment = ledger.segment();
    let frames = frames(&segment);
    // The frame of attempt a2, found by its bytes.
    let bytes = std::fs::read(&segment).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == b"\"a2\"")
        .expect("attempt a2 is in the log") as u64;
    let k = frames
        .iter()
        .position(|(o, l)| (*o..o + l).contains(&at))
        .unwrap();
    flip(&segment, at + 2);

    for path in [
        ledger.attempts_path(),
        format!("/v1/outbound-webhook-deliveries/{}/events", ledger.delivery),
    ] {
        let (status, body) = client.send(reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 503, "{path} served damaged data: {body}");
        assert_eq!(body["status"], 503);
    }
    let (status, _) = client
        .send(
            reqwest::Method::GET,
            &format!("/v1/outbound-webhook-deliveries/{other}/attempts"),
            None,
        )
        .await;
    assert_eq!(status, 200, "undamaged streams are still served");
    let out = hookledger(&ledger.data(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(&format!("FAILED at position {}", position_of(&segment, k))),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn a_damaged_index_is_never_trusted_the_log_is_scanned_instead() {
    let ledger = ledger(4).await;
    let index = ledger.data().join("log").join("index.redb");
    assert!(index.exists(), "the log keeps its index on disk");
    let server = Server::start(&ledger.data()).await;
    let client = Client::new(&server, ORG, &ledger.key);
    let before = client.all("/v1/outbound-webhook-deliveries").await;
    server.stop();

    // The file's header: the index does not open, and is rebuilt from the log.
    let original = std::fs::read(&index).unwrap();
    let mut damaged = original.clone();
    for b in &mut damaged[..64] {
        *b ^= 0x5a;
    }
    std::fs::write(&index, &damaged).unwrap();
    let earlier =
        std::fs::read_to_string(crate::binary::log_path(&ledger.data())).map_or(0, |l| l.len());
    let server = Server::start(&ledger.data()).await;
    let log = server.log()[earlier..].to_owned();
    assert!(
        !log_lines(
            &log,
            "the log's index does not open; rebuilding it from the whole log"
        )
        .is_empty(),
        "a damaged index header was not refused:\n{log}"
    );
    let client = Client::new(&server, ORG, &ledger.key);
    assert_eq!(client.all("/v1/outbound-webhook-deliveries").await, before);
    client
        .post(
            &ledger.attempts_path(),
            json!({"status": "failed", "lastError": "after header"}),
        )
        .await;
    server.stop();
    succeeds(hookledger(&ledger.data(), &["audit", "verify"]));

    // A value inside it (every copy of the stream's tip): the append that
    // reads it is refused, never written against a wrong tip; the next start
    // rebuilds the index, and appends go on.
    let server = Server::start(&ledger.data()).await;
    let client = Client::new(&server, ORG, &ledger.key);
    // The tip moved on with the attempt above: find the current one.
    let raw = client
        .all(&format!(
            "/v1/outbound-webhook-deliveries/{}/events",
            ledger.delivery
        ))
        .await;
    let tip_hash = hex::decode(raw.last().unwrap()["hash"].as_str().unwrap()).unwrap();
    // The log's last event is another stream's, so the index's own end (which
    // holds the last event's hash) is not what is damaged.
    client
        .post(
            "/v1/outbound-webhook-events",
            json!({"eventType": "y", "payload": {}}),
        )
        .await;
    server.stop();
    let mut bytes = std::fs::read(&index).unwrap();
    let found: Vec<usize> = bytes
        .windows(tip_hash.len())
        .enumerate()
        .filter(|(_, w)| *w == tip_hash.as_slice())
        .map(|(i, _)| i)
        .collect();
    assert!(!found.is_empty(), "the tip's hash is in the index file");
    for at in &found {
        bytes[at + 7] ^= 0x01;
    }
    std::fs::write(&index, &bytes).unwrap();
    let server = Server::start(&ledger.data()).await;
    let client = Client::new(&server, ORG, &ledger.key);
    let (status, body) = client
        .send(
            reqwest::Method::POST,
            &ledger.attempts_path(),
            Some(json!({"status": "failed", "lastError": "against a damaged tip"})),
        )
        .await;
    assert_eq!(status, 503, "an append against a damaged index: {body}");
    server.kill();
    let earlier =
        std::fs::read_to_string(crate::binary::log_path(&ledger.data())).map_or(0, |l| l.len());
    let server = Server::start(&ledger.data()).await;
    let log = server.log()[earlier..].to_owned();
    assert!(
        !log_lines(
            &log,
            "not using the log's index, found damaged while serving; rebuilding it from the whole log"
        )
        .is_empty(),
        "the index found damaged was trusted again:\n{log}"
    );
    let client = Client::new(&server, ORG, &ledger.key);
    client
        .post(&ledger.attempts_path(), json!({"status": "delivered"}))
        .await;
    let history = client.all(&ledger.attempts_path()).await;
    assert_eq!(
        history.len(),
        6,
        "4 + the one after the header damage + this one"
    );
    server.stop();
    succeeds(hookledger(&ledger.data(), &["audit", "verify"]));
}
