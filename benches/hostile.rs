//! Hostile load: one tenant attacks the built `hookledger` binary with the
//! inputs of every finding of "Hostile tenants and hostile clients" while
//! another records attempts, on the embedded store and on a throwaway
//! PostgreSQL cluster started here. The victim's throughput and p99 are
//! printed against a run with no attacker on the same server in the same run,
//! and the server's RSS over both.
//!
//! Three processes per backend: the server (`hookledger serve`, default
//! settings), the victim and the attacker (this bench binary again, in the
//! role `HOOKLEDGER_HOSTILE_ROLE` names), each with its own runtime, so the
//! load is driven over loopback from outside the server.
//!
//! `cargo bench --bench hostile`. `HOOKLEDGER_BENCH_HOSTILE_SECS` (default 60)
//! is each phase's length; `HOOKLEDGER_BENCH_BACKENDS` (`embedded,postgres`)
//! chooses the backends and `HOOKLEDGER_BENCH_ATTACKS` the attacks (default
//! all; see `attacker.rs` for their names). The attacker is paced: what is
//! measured is what its inputs cost the server beyond their number.
//!
//! `HOOKLEDGER_BENCH_ADMISSION` lists the fair admission settings to run, each
//! on a server of its own (default `off,default`): `off` is
//! `--max-requests-in-flight 0`, `default` the server's defaults, and `N:M`
//! is `--max-requests-in-flight N --max-requests-in-flight-per-org M`.
//!
//! Each server runs a warm-up and then three phases: the victim alone, the
//! victim attacked, and the victim alone again. The warm-up is the victim
//! alone for `HOOKLEDGER_BENCH_HOSTILE_WARMUP_SECS` (default: a phase's
//! length), printed but compared with nothing. The baseline of the targets
//! is the mean of the two phases alone, one on each side of the attack (an
//! A-B-A design): the victim's figures drift with time on their own, and a
//! baseline from one side only takes that drift for the attacker's cost or
//! hides it. On PostgreSQL the victim alone ran 4 185 then 7 076 attempts/s
//! either side of one attack, with p99 19.3 then 6.9 ms; on the embedded
//! store the ledger the attack leaves is larger than the one before it
//! (every phase's attempts are kept). Each side is printed on its own too.
//!
//! The ledger grows under attack (every accepted event and attempt is kept),
//! and so does a read model held in memory: the end of each phase prints the
//! head and the data directory beside the RSS, so growth with the history
//! can be told from growth without it.

#[path = "hostile/attacker.rs"]
mod attacker;
mod common;
#[path = "hostile/served.rs"]
mod served;
#[path = "../tests/support/postgres.rs"]
mod support_postgres;
#[path = "hostile/victim.rs"]
mod victim;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Target, figure, num};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use served::{Served, Setup, dir_bytes};

const VICTIM: &str = "org_victim";
const ATTACKER: &str = "org_attacker";
const ROLE: &str = "HOOKLEDGER_HOSTILE_ROLE";
const PLAN: &str = "HOOKLEDGER_HOSTILE_PLAN";

/// What a role process is told: where the server is and what to aim at.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub base: String,
    pub org: String,
    pub key: String,
    pub seconds: u64,
    /// The victim's deliveries, or the attacker's wide-fan-out deliveries.
    pub deliveries: Vec<String>,
    /// The attacker's delivery to flood with attempts.
    pub flood: Option<String>,
    /// The attacks to run, by name; empty for all.
    pub attacks: Vec<String>,
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        let plan: Plan =
            serde_json::from_str(&std::env::var(PLAN).expect("a plan")).expect("a plan in JSON");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let report = match role.as_str() {
            "victim" => runtime.block_on(victim::run(&plan)),
            "attacker" => runtime.block_on(attacker::run(&plan)),
            other => panic!("no role {other}"),
        };
        println!("{report}");
        return;
    }
    common::machine("hostile");
    let seconds = common::env_u64("HOOKLEDGER_BENCH_HOSTILE_SECS", 60);
    let warm_up = common::env_u64("HOOKLEDGER_BENCH_HOSTILE_WARMUP_SECS", seconds);
    let backends =
        std::env::var("HOOKLEDGER_BENCH_BACKENDS").unwrap_or_else(|_| "embedded,postgres".into());
    let settings =
        std::env::var("HOOKLEDGER_BENCH_ADMISSION").unwrap_or_else(|_| "off,default".into());
    for backend in backends.split(',') {
        for setting in settings.split(',') {
            run_backend(backend.trim(), setting.trim(), seconds, warm_up);
        }
    }
    common::done("hostile");
}

/// The `serve` arguments of a fair admission setting (see the module doc).
fn admission_args(setting: &str) -> Vec<String> {
    let args = |in_flight: &str, per_org: &str| {
        [
            "--max-requests-in-flight",
            in_flight,
            "--max-requests-in-flight-per-org",
            per_org,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    match setting {
        "off" => args("0", "1"),
        "default" => Vec::new(),
        other => {
            let (in_flight, per_org) = other
                .split_once(':')
                .unwrap_or_else(|| panic!("no admission setting {other}"));
            args(in_flight, per_org)
        }
    }
}

fn run_backend(backend: &str, setting: &str, seconds: u64, warm_up: u64) {
    let Some(served) = Served::start(backend, &admission_args(setting)) else {
        return;
    };
    let backend = &format!("{backend} (admission {setting})");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let http = reqwest::Client::new();
    runtime.block_on(
        Setup {
            http: http.clone(),
            base: served.base.clone(),
            org: String::new(),
            key: String::new(),
        }
        .wait_ready(),
    );
    let victim_key = served.key(VICTIM);
    let attacker_key = served.key(ATTACKER);
    let (victim_plan, attacker_plan) = runtime.block_on(async {
        let victim = Setup {
            http: http.clone(),
            base: served.base.clone(),
            org: VICTIM.into(),
            key: victim_key,
        };
        victim
            .post(
                "/v1/outbound-webhook-endpoints",
                json!({"name": "victim", "url": "https://victim.example.com/hooks"}),
            )
            .await;
        let mut deliveries = Vec::new();
        for n in 0..64 {
            let event = victim
                .post(
                    "/v1/outbound-webhook-events",
                    json!({"eventType": "invoice.paid", "payload": {"invoice": n}}),
                )
                .await;
            deliveries.push(event["deliveries"][0]["id"].as_str().unwrap().to_owned());
        }
        let attacker = Setup {
            http,
            base: served.base.clone(),
            org: ATTACKER.into(),
            key: attacker_key,
        };
        // As wide as the fan-out limit allows, with long names and URLs,
        // for one event type; and one endpoint of its own for the flood.
        let fan_out = hookledger::limits::Limits::default().fan_out;
        for i in 0..fan_out {
            attacker
                .post(
                    "/v1/outbound-webhook-endpoints",
                    json!({"name": format!("{i:03}{}", "n".repeat(200)),
                           "url": format!("https://wide.example.com/{i}/{}", "u".repeat(1800)),
                           "eventTypes": ["wide"]}),
                )
                .await;
        }
        let mut wide = Vec::new();
        for n in 0..8 {
            let event = attacker
                .post(
                    "/v1/outbound-webhook-events",
                    json!({"eventType": "wide", "payload": {"n": n, "blob": "b".repeat(200_000)}}),
                )
                .await;
            wide.push(event["deliveries"][0]["id"].as_str().unwrap().to_owned());
        }
        attacker
            .post(
                "/v1/outbound-webhook-endpoints",
                json!({"name": "flood", "url": "https://flood.example.com/", "eventTypes": ["flood"]}),
            )
            .await;
        let flood = attacker
            .post(
                "/v1/outbound-webhook-events",
                json!({"eventType": "flood", "payload": {}}),
            )
            .await;
        let flood = flood["deliveries"][0]["id"].as_str().unwrap().to_owned();
        (
            Plan {
                base: served.base.clone(),
                org: VICTIM.into(),
                key: victim.key.clone(),
                seconds,
                deliveries,
                flood: None,
                attacks: Vec::new(),
            },
            Plan {
                base: served.base.clone(),
                org: ATTACKER.into(),
                key: attacker.key.clone(),
                seconds,
                deliveries: wide,
                flood: Some(flood),
                attacks: std::env::var("HOOKLEDGER_BENCH_ATTACKS")
                    .map(|a| a.split(',').map(|a| a.trim().to_owned()).collect())
                    .unwrap_or_default(),
            },
        )
    });
    println!(
        "-- {backend}: {seconds} s per phase after {warm_up} s of warm-up, load average {}, server RSS after setup {} MiB",
        common::loadavg(),
        served.rss_bytes() >> 20
    );

    let warming = (warm_up > 0).then(|| {
        let plan = Plan {
            seconds: warm_up,
            ..victim_plan.clone()
        };
        phase(&served, &plan, None)
    });
    let alone = phase(&served, &victim_plan, None);
    let attacked = phase(&served, &victim_plan, Some(&attacker_plan));
    // The attacked phase runs on a ledger the first phase grew (every
    // attempt is kept): the victim alone once more, on the ledger as the
    // attack left it, tells the attacker's cost from the history's.
    let after = phase(&served, &victim_plan, None);

    let throughput = |r: &Value| r["attempts_per_sec"].as_f64().unwrap_or(0.0);
    let p99 = |r: &Value| r["p99_ms"].as_f64().unwrap_or(0.0);
    let label = |what: &str| format!("{backend}: victim {what}, attacked");
    let either_side = |f: &dyn Fn(&Value) -> f64| (f(&alone.victim) + f(&after.victim)) / 2.0;
    figure(
        &label("record-attempt throughput"),
        throughput(&attacked.victim),
        "attempts/s",
        "no attacker, mean of before and after",
        either_side(&throughput),
        Target::RatioAtLeast(0.8),
    );
    let p99_baseline = either_side(&p99);
    let p99_ratio = p99(&attacked.victim) / p99_baseline.max(1e-9);
    println!(
        "figure: {} = {} ms | baseline no attacker, mean of before and after = {} ms | ratio {p99_ratio:.3} | target ratio <= 1.2: {}",
        label("p99"),
        num(p99(&attacked.victim)),
        num(p99_baseline),
        if p99_ratio <= 1.2 { "MET" } else { "NOT MET" }
    );
    for (side, run) in [("before", &alone), ("after", &after)] {
        figure(
            &label(&format!(
                "record-attempt throughput, against the victim alone {side}"
            )),
            throughput(&attacked.victim),
            "attempts/s",
            &format!("no attacker, {side}"),
            throughput(&run.victim),
            Target::None,
        );
        println!(
            "figure: {}, against the victim alone {side} = {} ms | baseline no attacker, {side} = {} ms | ratio {:.3} | no target",
            label("p99"),
            num(p99(&attacked.victim)),
            num(p99(&run.victim)),
            p99(&attacked.victim) / p99(&run.victim).max(1e-9),
        );
    }
    let warm_up_name = format!("warm-up ({warm_up} s, not compared)");
    let phases = [
        (warm_up_name.as_str(), warming.as_ref()),
        ("no attacker", Some(&alone)),
        ("attacked", Some(&attacked)),
        ("no attacker, after", Some(&after)),
    ];
    for (name, run) in phases
        .into_iter()
        .filter_map(|(name, run)| Some((name, run?)))
    {
        println!(
            "{backend} {name}: victim {} | ledger head {} events, data {} MiB | server RSS MiB every {}s: {} (max {})",
            run.victim,
            run.head,
            run.data_bytes >> 20,
            RSS_EVERY.as_secs(),
            run.rss
                .iter()
                .map(|b| (b >> 20).to_string())
                .collect::<Vec<_>>()
                .join(" "),
            run.rss.iter().max().copied().unwrap_or(0) >> 20
        );
    }
    if let Some(attacker) = &attacked.attacker {
        println!("{backend} attacker: {attacker}");
    }
    println!("-- {backend} done: load average {}", common::loadavg());
}

const RSS_EVERY: Duration = Duration::from_secs(5);

struct Phase {
    victim: Value,
    attacker: Option<Value>,
    /// The server's RSS every [`RSS_EVERY`].
    rss: Vec<u64>,
    /// Events in the ledger and bytes in the data directory at the end.
    head: u64,
    data_bytes: u64,
}

/// Runs the victim, and the attacker if given, as processes of their own
/// until both report; samples the server's RSS meanwhile.
fn phase(served: &Served, victim: &Plan, attacker: Option<&Plan>) -> Phase {
    let spawn = |role: &str, plan: &Plan| {
        Command::new(std::env::current_exe().expect("this bench"))
            .env(ROLE, role)
            .env(PLAN, serde_json::to_string(plan).expect("a plan"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("a role process starts")
    };
    let attacking = attacker.map(|plan| spawn("attacker", plan));
    // The attacker's slow and non-reading clients settle in first.
    if attacking.is_some() {
        std::thread::sleep(Duration::from_secs(2));
    }
    let mut victim = spawn("victim", victim);
    let mut rss = vec![served.rss_bytes()];
    let started = Instant::now();
    let mut next = RSS_EVERY;
    // Reports are a line of JSON, far less than a pipe holds, so the child
    // exits without anyone reading it first.
    loop {
        if victim.try_wait().expect("the victim runs").is_some() {
            break;
        }
        if started.elapsed() >= next {
            rss.push(served.rss_bytes());
            next += RSS_EVERY;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let victim = read_report(victim);
    let attacker = attacking.map(read_report);
    rss.push(served.rss_bytes());
    Phase {
        victim,
        attacker,
        rss,
        head: served.head(),
        data_bytes: dir_bytes(served.data()),
    }
}

fn read_report(child: std::process::Child) -> Value {
    let output = child.wait_with_output().expect("a role process ends");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| json!({"error": format!("no report: {}", text.trim())}))
}
