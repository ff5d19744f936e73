//! The command line as an operator meets it: a data directory held by one node at a time,
//! `doctor`'s verdicts, and environment variables that are not settings.

use std::process::{Command, Output};

use crate::harness::said as text;
use crate::harness::*;
use serde_json::json;

fn switchyard(args: &[&str]) -> Output {
    switchyard_command(args).output().unwrap()
}

#[tokio::test]
async fn a_second_node_on_a_held_data_directory_refuses_and_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Proc::start(dir.path()).await;
    let data_dir = dir.path().to_str().unwrap();
    let second = switchyard(&[
        "node",
        "--data-dir",
        data_dir,
        "--http",
        "127.0.0.1:0",
        "--grpc",
        "127.0.0.1:0",
    ]);
    assert!(!second.status.success());
    let said = text(&second);
    assert!(said.contains("in use by another switchyard node"), "{said}");
    assert!(said.contains(&format!("process {}", first.pid())), "{said}");
    assert!(first.alive(), "the first node runs on");
}

#[tokio::test]
async fn doctor_says_ok_for_a_node_s_own_parts_and_names_the_problem_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let node = Proc::start(dir.path()).await;
    let healthy = switchyard(&["doctor", "--data-dir", &data_dir]);
    let said = text(&healthy);
    assert!(healthy.status.success(), "{said}");
    assert!(
        said.contains("topic switchyard.events has 8 partitions"),
        "{said}"
    );
    assert!(said.contains("schema up to date"), "{said}");
    drop(node);

    let nobody = format!("127.0.0.1:{}", free_port());
    let refused = switchyard(&[
        "doctor",
        "--data-dir",
        &data_dir,
        "--bus",
        "kafka",
        "--kafka-brokers",
        &nobody,
    ]);
    let said = text(&refused);
    assert!(!refused.status.success());
    assert!(
        said.contains("PROBLEM") && said.contains("Connection refused"),
        "{said}"
    );
    let amqp = format!("amqp://guest:guest@{nobody}/%2f");
    let refused = switchyard(&[
        "doctor",
        "--data-dir",
        &data_dir,
        "--bus",
        "rabbitmq",
        "--amqp-url",
        &amqp,
    ]);
    let said = text(&refused);
    assert!(!refused.status.success());
    assert!(
        said.contains("PROBLEM") && said.contains("guest:***@"),
        "the password stays out: {said}"
    );
}

#[tokio::test]
async fn a_client_tool_s_variable_with_the_prefix_does_not_stop_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::start_with_env(dir.path(), &[("SWITCHYARD_TOKEN", "a script's key")]).await;
    assert!(
        node.log().contains("SWITCHYARD_TOKEN"),
        "it is named in a warning"
    );
}

#[tokio::test]
async fn a_port_in_use_is_one_plain_line_and_json_logs_are_json() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["--log-format", "json", "node", "--data-dir"])
        .arg(dir.path())
        .args([
            "--http",
            &format!("127.0.0.1:{port}"),
            "--grpc",
            "127.0.0.1:0",
        ])
        .env("SWITCHYARD_LOG", "info")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("switchyard: ")
            && last.contains(&format!("cannot listen for HTTP on 127.0.0.1:{port}"))
            && !last.contains("panicked"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.is_empty(), "no log lines");
    for line in stdout.lines() {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(parsed["level"].is_string(), "{line}");
    }
    assert!(
        !stdout.contains('\u{1b}'),
        "no escape codes when not on a terminal"
    );
}

#[tokio::test]
async fn migrate_goes_up_down_and_says_where_each_migration_stands() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_string_lossy().into_owned();
    let lines = |output: &Output| -> Vec<String> {
        assert!(output.status.success(), "{}", text(output));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let fresh = lines(&switchyard(&["migrate", "status", "--data-dir", &data_dir]));
    assert!(
        fresh.len() >= 9 && fresh.iter().all(|l| l.ends_with(" pending")),
        "{fresh:?}"
    );
    let total = fresh.len();
    let up = lines(&switchyard(&["migrate", "up", "--data-dir", &data_dir]));
    assert_eq!(up[0], format!("applied {total} migration(s)"));
    assert!(up[1..].iter().all(|l| l.ends_with(" applied")), "{up:?}");
    let down = lines(&switchyard(&[
        "migrate",
        "down",
        "1",
        "--data-dir",
        &data_dir,
    ]));
    assert_eq!(down[0], "reverted 1 migration(s)");
    assert!(down.last().unwrap().ends_with(" pending"), "{down:?}");
    assert_eq!(
        down.iter().filter(|l| l.ends_with(" applied")).count(),
        total - 1
    );
    let too_far = switchyard(&["migrate", "down", "99", "--data-dir", &data_dir]);
    assert!(!too_far.status.success());
    assert!(
        text(&too_far).contains("cannot revert 99"),
        "{}",
        text(&too_far)
    );
    let again = lines(&switchyard(&["migrate", "up", "--data-dir", &data_dir]));
    assert_eq!(again[0], "applied 1 migration(s)");
    let help = text(&switchyard(&["migrate", "--help"]));
    for word in ["up", "down", "status"] {
        assert!(help.contains(word), "{help}");
    }
}

/// The same events, with their ids and times, applied by a node on `database_url` (SQLite in
/// the data directory when empty); the digest the command line prints of its state.
async fn digest_after_events(database_url: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url.to_owned();
    let (node, http, grpc) = in_process_with(dir.path(), |c| c.database_url = url).await;
    let mut client = Client::new(dir.path(), http, grpc).await;
    let at = |i: u64| 1_795_500_000_000 + i * 1000;
    let mut events = Vec::new();
    for i in 0..20u64 {
        let mut created = task_created(&format!("c{i}"), &format!("t{i}"));
        created["time"] = json!(at(i));
        events.push(created);
    }
    for i in 0..5u64 {
        let mut cancelled = event(
            &format!("x{i}"),
            "task.cancelled",
            &format!("task/t{i}"),
            json!({"task_id": format!("t{i}"), "reason": "not needed"}),
        );
        cancelled["time"] = json!(at(100 + i));
        events.push(cancelled);
    }
    let mut note = event(
        "n1",
        "notification.requested",
        "notify/u1",
        json!({"channel": "webhook", "to": "ops", "subject": "s", "text": "t", "dedupe_key": "k"}),
    );
    note["time"] = json!(at(200));
    events.push(note);
    let mut spent = event(
        "i1",
        "invocation.recorded",
        "costs/u1",
        json!({"invocation_id": "inv-1", "provider": "p", "model": "m", "tokens_in": 10,
               "tokens_out": 5, "cost": 0.25, "latency_ms": 100}),
    );
    spent["time"] = json!(at(300));
    events.push(spent);
    for envelope in &events {
        assert_eq!(client.post(envelope).await, Some(202));
    }
    client.wait_task("t4", |t| t.state == "cancelled").await;
    for i in 5..20 {
        client
            .wait_task(&format!("t{i}"), |t| t.state == "pending")
            .await;
    }
    let store = if database_url.is_empty() {
        state_store(dir.path()).await
    } else {
        actors::Store::connect(database_url).await.unwrap()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while store.notifications(None).await.unwrap().len() < 6
        || store.ledger("u1").await.unwrap().daily == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "not all applied");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    node.shutdown().await.unwrap();
    digest(dir.path(), database_url, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_events_digest_alike_on_sqlite_and_postgres() {
    let _one_at_a_time = crate::harness::IN_PROCESS.lock().await;
    let on_sqlite = digest_after_events("").await;
    assert!(
        on_sqlite[0].starts_with("digest ") && on_sqlite[0].len() == 7 + 64,
        "{on_sqlite:?}"
    );
    for (table, rows) in [
        ("tasks", 20),
        ("notifications", 6),
        ("invocations", 1),
        ("cost_ledgers", 1),
    ] {
        assert!(
            on_sqlite.contains(&format!("{table} {rows}")),
            "{table}: {on_sqlite:?}"
        );
    }
    let Some(postgres) = actors::testkit::postgres_schema("digest").await else {
        return;
    };
    let on_postgres = digest_after_events(&postgres).await;
    assert_eq!(on_sqlite, on_postgres);
    // Without a database there is nothing to digest.
    let missing = tempfile::tempdir().unwrap();
    let nothing = switchyard(&["digest", "--data-dir", &missing.path().to_string_lossy()]);
    assert!(!nothing.status.success());
    assert!(
        text(&nothing).contains("there is no state database"),
        "{}",
        text(&nothing)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_the_whole_topic_rebuilds_the_same_state() {
    let _one_at_a_time = IN_PROCESS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, http, grpc) = in_process(dir.path()).await;
    let mut client = Client::new(dir.path(), http, grpc).await;
    let t2 = event(
        "e3",
        "task.created",
        "task/t2",
        json!({"task_id": "t2", "title": "after t1", "spec": "true",
               "depends_on": [{"task_id": "t1", "type": "blocks"}]}),
    );
    for envelope in [
        agent_registered("e1", "a1", 4),
        task_created("e2", "t1"),
        t2,
        event(
            "e4",
            "notification.requested",
            "notify/u1",
            json!({"channel": "webhook", "to": "ops", "subject": "s", "text": "t"}),
        ),
        event(
            "e5",
            "invocation.recorded",
            "costs/u1",
            json!({"invocation_id": "i1", "provider": "p", "model": "m", "tokens_in": 1,
                   "tokens_out": 1, "cost": 0.5}),
        ),
    ] {
        assert_eq!(client.post(&envelope).await, Some(202));
    }
    // The orchestrator assigns t1; a1 works it; its completion resolves t2, which is assigned.
    client.wait_task("t1", |t| t.state == "assigned").await;
    assert_eq!(
        client.post(&task_started("e6", "t1", "a1")).await,
        Some(202)
    );
    client.wait_task("t1", |t| t.state == "running").await;
    assert_eq!(client.post(&task_completed("e7", "t1")).await, Some(202));
    client.wait_task("t2", |t| t.state == "assigned").await;
    node.shutdown().await.unwrap();

    let live = digest(dir.path(), "", &[]);
    let target = dir.path().join("replayed.sqlite");
    let into = format!("sqlite://{}?mode=rwc", target.display());
    let replay = |resume: bool| {
        switchyard_command(&replay_args(dir.path(), &into, &[], resume))
            .output()
            .unwrap()
    };
    let first = replay(false);
    assert!(first.status.success(), "{}", text(&first));
    let summary = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        summary.contains(" 0 refused, 0 not applied now"),
        "{summary}"
    );
    assert_eq!(
        digest(dir.path(), &into, &[]),
        live,
        "the replay rebuilt another state"
    );

    // A second run is refused, unless told to resume; resumed, it goes on past the first
    // run's checkpoint, which is the topic's end: nothing to read, nothing changed.
    let again = replay(false);
    assert!(!again.status.success());
    assert!(text(&again).contains("--resume"), "{}", text(&again));
    let resumed = replay(true);
    assert!(resumed.status.success(), "{}", text(&resumed));
    let summary = String::from_utf8_lossy(&resumed.stdout).into_owned();
    assert!(
        summary.contains("resumed past the checkpoint, from offset:")
            && summary.contains("replayed 0 records"),
        "{summary}"
    );
    assert_eq!(digest(dir.path(), &into, &[]), live);
    // The checkpoint belongs to a replay from the start: resumed from elsewhere, it is refused.
    let mut elsewhere = replay_args(dir.path(), &into, &[], true);
    elsewhere[2] = "offset:0=1".into();
    let elsewhere = switchyard_command(&elsewhere).output().unwrap();
    assert!(!elsewhere.status.success());
    assert!(
        text(&elsewhere).contains("resume it with --from start"),
        "{}",
        text(&elsewhere)
    );
    // Into PostgreSQL: the same state.
    if let Some(postgres) = actors::testkit::postgres_schema("replay").await {
        let output = switchyard_command(&replay_args(dir.path(), &postgres, &[], false))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
        assert_eq!(
            digest(dir.path(), &postgres, &[]),
            live,
            "replayed into PostgreSQL"
        );
    }
    let bad = switchyard(&["replay", "--from", "yesterday", "--into", &into]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("none of start"), "{}", text(&bad));
}
