//! Cross-module tests of the engine over a real SQLite file, driven by a manual clock.

use std::time::{Duration, Instant};

use cueapi::clock::Clock;
use cueapi::store::{CueSpec, ExecutionFilter, ReportedOutcome, LOCAL_OWNER};
use cueapi::{Config, Engine};
use serde_json::{json, Value};

mod postgres;
mod store;

const START: i64 = 1_780_315_200_000; // 2026-06-01T12:00:00Z

fn spec(v: Value) -> CueSpec {
    serde_json::from_value(v).expect("valid spec")
}

fn manual(clock: &Clock) -> &cueapi::clock::ManualClock {
    match clock {
        Clock::Manual(m) => m,
        Clock::System => panic!("manual clock expected"),
    }
}

fn statuses(engine: &Engine) -> Vec<String> {
    let rows = engine
        .executions(LOCAL_OWNER, &ExecutionFilter::default())
        .expect("list");
    rows.iter()
        .map(|r| r["status"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn claim_within(engine: &Engine, secs: u64) -> cueapi::store::Claimed {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(job) = engine.claim(Duration::from_millis(200)).expect("claim") {
            return job;
        }
        assert!(Instant::now() < until, "no job became claimable");
    }
}

/// An engine on `path` driven by `clock`, for which every tick is on time (no grace).
/// A connection of its own to the engine's database file, as an operator's `sqlite3` would be.
fn sql(path: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("sqlite");
    c.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    c
}

fn open_on_time(path: &std::path::Path, clock: &Clock) -> Engine {
    let config = Config {
        grace_ms: 0,
        ..Config::default()
    };
    Engine::open(path, clock.clone(), config).expect("open")
}

#[test]
fn a_tick_is_fired_claimed_and_completed_with_its_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(START);
    let engine = open_on_time(&dir.path().join("e.db"), &clock);
    let id = engine
        .upsert_cue(LOCAL_OWNER, spec(json!({"name": "a", "every": "1m"})))
        .expect("cue");
    engine.start().expect("start");
    manual(&clock).advance(60_000);
    let job = claim_within(&engine, 10);
    assert_eq!(
        (job.cue_id.as_str(), job.scheduled_for, job.attempt),
        (id.as_str(), START + 60_000, 1)
    );
    let outcome = ReportedOutcome {
        success: true,
        external_id: Some("x-1".into()),
        ..Default::default()
    };
    engine
        .complete(&job.execution_id, 1, outcome)
        .expect("complete");
    let ex = engine
        .execution(LOCAL_OWNER, &job.execution_id)
        .expect("get");
    assert_eq!(ex["status"], "success");
    assert_eq!(ex["outcome_state"], "reported_success");
    assert_eq!(ex["evidence"]["external_id"], "x-1");
    // Completing the same attempt twice is a conflict, and changes nothing.
    let again = engine.complete(&job.execution_id, 1, ReportedOutcome::default());
    assert!(matches!(again, Err(cueapi::Error::Conflict(_))));
    engine.close();
}

#[test]
fn a_tick_is_committed_ahead_of_its_instant_and_claimable_only_at_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(START);
    let engine = open_on_time(&dir.path().join("a.db"), &clock);
    engine
        .upsert_cue(LOCAL_OWNER, spec(json!({"name": "a", "every": "1m"})))
        .expect("cue");
    engine.start().expect("start");
    let ahead = Config::default().fire_ahead_ms;
    manual(&clock).advance(60_000 - ahead / 2);
    let until = Instant::now() + Duration::from_secs(10);
    while statuses(&engine).is_empty() {
        assert!(Instant::now() < until, "the tick was not committed ahead");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(statuses(&engine), ["pending"]);
    // Committed, not released: no handler can claim it before its instant.
    assert!(engine
        .claim(Duration::from_millis(200))
        .expect("claim")
        .is_none());
    manual(&clock).advance(ahead / 2);
    let job = claim_within(&engine, 10);
    assert_eq!((job.scheduled_for, job.attempt), (START + 60_000, 1));
    engine.close();
}

#[test]
fn a_run_left_in_flight_is_recovered_as_interrupted_and_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.db");
    let clock = Clock::manual(START);
    {
        let engine = open_on_time(&path, &clock);
        engine
            .upsert_cue(LOCAL_OWNER, spec(json!({"name": "r", "every": "1h"})))
            .expect("cue");
        engine.start().expect("start");
        manual(&clock).advance(3_600_000);
        let job = claim_within(&engine, 10);
        assert_eq!(job.attempt, 1);
        engine.close(); // the handler never reported: as if the process had died
    }
    let engine = Engine::open(&path, clock.clone(), Config::default()).expect("reopen");
    assert_eq!(engine.interrupted_on_open, 1);
    let job = claim_within(&engine, 10);
    assert_eq!(job.attempt, 2);
    let ex = engine
        .execution(LOCAL_OWNER, &job.execution_id)
        .expect("get");
    assert_eq!(ex["attempt_log"][0]["status"], "interrupted");
    assert_eq!(statuses(&engine), ["delivering"]);
    // Deleting the cue takes its executions and their attempts with it.
    engine.delete(&job.cue_id).expect("delete");
    let left: i64 = sql(&path)
        .query_row(
            "SELECT (SELECT count(*) FROM executions) + (SELECT count(*) FROM attempts)",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(left, 0);
    engine.close();
}

#[test]
fn a_bulk_load_is_one_transaction_and_all_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(
        dir.path().join("b.db"),
        Clock::manual(START),
        Config::default(),
    )
    .expect("open");
    let good: Vec<CueSpec> = (0..1000)
        .map(|i| spec(json!({"name": format!("c{i}"), "every": "1h"})))
        .collect();
    assert_eq!(
        engine.create_cues(LOCAL_OWNER, good).expect("bulk").len(),
        1000
    );
    let mixed = vec![
        spec(json!({"name": "new", "every": "1h"})),
        spec(json!({"name": "c1", "every": "1h"})),
    ];
    assert!(matches!(
        engine.create_cues(LOCAL_OWNER, mixed),
        Err(cueapi::Error::Conflict(_))
    ));
    assert_eq!(engine.cues(LOCAL_OWNER).expect("cues").len(), 1000);
    engine.close();
}

#[test]
fn a_row_that_fails_to_fire_delays_only_itself_and_is_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(START);
    let path = dir.path().join("f.db");
    let engine = open_on_time(&path, &clock);
    engine
        .upsert_cue(LOCAL_OWNER, spec(json!({"name": "good", "every": "1m"})))
        .expect("good");
    let bad = engine
        .upsert_cue(
            LOCAL_OWNER,
            spec(json!({"name": "bad", "cron": "* * * * *"})),
        )
        .expect("bad");
    sql(&path)
        .execute(
            "UPDATE cues SET schedule_cron = 'garbage' WHERE id = ?1",
            [&bad],
        )
        .expect("corrupt");
    engine.start().expect("start");
    manual(&clock).advance(60_000);
    let job = claim_within(&engine, 10);
    assert_eq!(job.cue_name, "good");
    sql(&path)
        .execute(
            "UPDATE cues SET schedule_cron = '* * * * *' WHERE id = ?1",
            [&bad],
        )
        .expect("repair");
    manual(&clock).advance(1_000);
    let job = claim_within(&engine, 10);
    assert_eq!(
        (job.cue_name.as_str(), job.scheduled_for),
        ("bad", START + 60_000)
    );
    engine.close();
}

/// One GET over a fresh connection: the status code and the JSON body.
#[cfg(feature = "server")]
fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok());
    (
        status.expect("a status"),
        serde_json::from_str(body).expect("JSON"),
    )
}

#[cfg(feature = "server")]
#[test]
fn health_and_status_answer_503_while_the_fire_loop_is_not_running() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(START);
    let engine = Arc::new(open_on_time(&dir.path().join("h.db"), &clock));
    let options = cueapi::api::Options::default();
    let server =
        cueapi::api::Server::start(Arc::clone(&engine), "127.0.0.1", 0, options).expect("serve");
    // Not started yet: the store is fine, the fire loop is not running.
    let (code, health) = http_get(server.addr(), "/health");
    assert_eq!(code, 503, "{health}");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["failing"], json!(["fire_loop"]));
    assert_eq!(health["checks"]["fire_loop"]["status"], "not_running");
    assert_eq!(health["checks"]["store"]["status"], "ok");
    let (code, status) = http_get(server.addr(), "/status");
    assert_eq!(code, 503);
    assert_eq!(
        status,
        json!({"status": "down", "reason": "the fire loop is not running"})
    );
    engine.start().expect("start");
    let (code, health) = http_get(server.addr(), "/health");
    assert_eq!(
        (code, &health["status"]),
        (200, &json!("healthy")),
        "{health}"
    );
    assert_eq!(health["failing"], json!([]));
    assert_eq!(
        http_get(server.addr(), "/status"),
        (200, json!({"status": "healthy"}))
    );
    // Closed: the loop has stopped.
    engine.close();
    let (code, health) = http_get(server.addr(), "/health");
    assert_eq!(code, 503);
    assert_eq!(health["checks"]["fire_loop"]["status"], "not_running");
    assert_eq!(health["checks"]["store"]["status"], "error");
    server.stop();
}
