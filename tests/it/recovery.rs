//! Recovery under load, on the embedded bus and on each broker: a node killed -9 at random
//! moments of a sustained mixed load and restarted loses no accepted event and applies none
//! twice; then a replay of the whole topic into an empty database, itself killed -9 half-way
//! and resumed, rebuilds a state with the live state's digest.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::brokers::Broker;
use crate::harness::*;
use crate::load::{Load, random_ms};

const KILLS: usize = 3;

/// A mixed load with `KILLS` kill -9s of the node at random moments; the node restarted on
/// the same data directory each time. Returns the node (running) and what the load did.
async fn load_through_kills(dir: &Path, flags: &[String]) -> (Proc, crate::load::Done) {
    let ports = (free_port(), free_port());
    let mut node = Proc::launch_on(dir, ports, flags, &[]).await;
    let load = Load::start(dir.to_owned(), ports).await;
    for kill in 0..KILLS {
        let after = random_ms(300, 2500);
        tokio::time::sleep(after).await;
        let before = load.accepted();
        node.kill9();
        eprintln!("kill {kill} after {after:?}: {before} events accepted so far");
        node = Proc::launch_on(dir, ports, flags, &[]).await;
    }
    tokio::time::sleep(random_ms(300, 1500)).await;
    let done = load.finish().await;
    (node, done)
}

/// Each accepted event applied or refused (polled: the last may still be on their way);
/// none applied twice.
pub async fn accounted(dir: &Path, accepted: &BTreeSet<String>) {
    let store = state_store(dir).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut missing = Vec::new();
        for id in accepted {
            if store.outcome(id).await.unwrap().is_none() {
                missing.push(id.clone());
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "accepted but never applied nor refused: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        store.applied_twice().await.unwrap(),
        Vec::<String>::new(),
        "applied twice"
    );
}

/// Replays the whole topic into a fresh SQLite database, killing the first run -9 once it
/// has applied something and resuming it; its digest.
async fn replay_killed_and_resumed(dir: &Path, bus: &[String]) -> Vec<String> {
    let target = dir.join("replayed.sqlite");
    let into = format!("sqlite://{}?mode=rwc", target.display());
    let mut first = switchyard_command(&replay_args(dir, &into, bus, false))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the target holds some state and before the replay is through.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the replay finished before it could be killed half-way"
        );
        if target.exists()
            && let Ok(store) =
                actors::Store::connect(&format!("sqlite://{}?mode=ro", target.display())).await
            && store.holds_state().await.unwrap_or(false)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replay applied nothing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let resumed = switchyard_command(&replay_args(dir, &into, bus, true))
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", said(&resumed));
    let summary = String::from_utf8_lossy(&resumed.stdout).into_owned();
    assert!(summary.contains(", 0 not applied now"), "{summary}");
    digest(dir, &into, bus)
}

async fn crash_and_replay(bus: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    // A killed node's Kafka group membership expires sooner than the 6 s default, so its
    // successor is given every partition soon.
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "kafka_session_timeout_ms = 3000\n").unwrap();
    let mut bus = bus.to_vec();
    bus.extend(["--config".into(), config.display().to_string()]);
    let bus = &bus[..];
    let (node, done) = load_through_kills(dir.path(), bus).await;
    eprintln!(
        "{} events accepted, {} tasks all done",
        done.accepted.len(),
        done.tasks
    );
    assert!(done.tasks >= 30, "the load ran: {} tasks", done.tasks);
    accounted(dir.path(), &done.accepted).await;
    assert!(node.terminate().success());
    let live = digest(dir.path(), "", bus);
    let replayed = replay_killed_and_resumed(dir.path(), bus).await;
    if replayed != live {
        let replica = dir.path().join("replayed.sqlite");
        let difference = rows_apart(&dir.path().join("state.sqlite"), &replica).await;
        panic!(
            "the replay rebuilt another state:\n live {live:?}\n replay {replayed:?}\n\
             rows only live (-) or only replayed (+):\n{difference}(kept in {})",
            dir.keep().display()
        );
    }
}

/// The canonical rows that one SQLite database holds and the other does not, per table.
async fn rows_apart(live: &Path, replica: &Path) -> String {
    let open = |path: &Path| format!("sqlite://{}?mode=ro", path.display());
    let live = actors::Store::connect(&open(live)).await.unwrap();
    let replica = actors::Store::connect(&open(replica)).await.unwrap();
    let live = live.canonical_rows().await.unwrap();
    let replica = replica.canonical_rows().await.unwrap();
    let mut said = String::new();
    for ((table, ours), (_, theirs)) in live.iter().zip(&replica) {
        let ours: BTreeSet<&String> = ours.iter().collect();
        let theirs: BTreeSet<&String> = theirs.iter().collect();
        for row in ours.difference(&theirs).take(20) {
            said.push_str(&format!("  {table} - {row}\n"));
        }
        for row in theirs.difference(&ours).take(20) {
            said.push_str(&format!("  {table} + {row}\n"));
        }
    }
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_kill_9_under_load_loses_nothing_and_a_replay_rebuilds_the_digest() {
    crash_and_replay(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "tansu 0.6.0 (registry build, the one whose ListOffsets a replay needs) often keeps a \
            killed member's partitions from its successor, so partition 0's owner never assigns \
            again (STACK.md); passes when the broker hands them over: run with --ignored"]
async fn kafka_kill_9_under_load_loses_nothing_and_a_replay_rebuilds_the_digest() {
    if let Some(broker) = Broker::kafka(broker_adapters::testkit::TansuBuild::RegistrySqlite).await
    {
        crash_and_replay(&broker.flags()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_kill_9_under_load_loses_nothing_and_a_replay_rebuilds_the_digest() {
    if let Some(broker) = Broker::rabbit().await {
        crash_and_replay(&broker.flags()).await;
    }
}
