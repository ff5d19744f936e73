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
    let mut last = 0;
    for kill in 0..KILLS {
        let after = random_ms(300, 2500);
        tokio::time::sleep(after).await;
        let before = load.accepted();
        assert!(
            before > last,
            "the node accepted nothing between kills ({last} before kill {kill})"
        );
        last = before;
        node.kill9();
        eprintln!("kill {kill} after {after:?}: {before} events accepted so far");
        node = Proc::launch_on(dir, ports, flags, &[]).await;
    }
    tokio::time::sleep(random_ms(300, 1500)).await;
    let done = load.finish().await;
    (node, done)
}

/// Each accepted event applied (polled: the last may still be on their way): none refused,
/// for the load sends only what its state allows, and none applied twice.
pub async fn accounted(dir: &Path, accepted: &BTreeSet<String>) {
    let store = state_store(dir).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut missing = Vec::new();
        let mut refused = Vec::new();
        for id in accepted {
            match store.outcome(id).await.unwrap() {
                None => missing.push(id.clone()),
                Some(actors::store::Outcome::Refused(why)) => refused.push(format!("{id}: {why}")),
                Some(actors::store::Outcome::Applied) => {}
            }
        }
        assert_eq!(refused, Vec::<String>::new(), "accepted, then refused");
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
/// has saved a checkpoint and before it is through, and resuming it past that checkpoint;
/// its digest.
async fn replay_killed_and_resumed(dir: &Path, bus: &[String]) -> Vec<String> {
    let target = dir.join("replayed.sqlite");
    let into = format!("sqlite://{}?mode=rwc", target.display());
    let first_log = std::fs::File::create(dir.join("replay-first.log")).unwrap();
    let mut first = switchyard_command(&replay_args(dir, &into, bus, false))
        .stdout(Stdio::null())
        .stderr(first_log)
        .spawn()
        .unwrap();
    let live_applied = applied(&state_store(dir).await).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let applied_at_kill = loop {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the replay finished before it could be killed half-way"
        );
        if target.exists()
            && let Ok(store) =
                actors::Store::connect(&format!("sqlite://{}?mode=ro", target.display())).await
            && let Ok((_, checkpoint)) = store.replay_checkpoint(schemas::EVENTS_TOPIC).await
            && !checkpoint.is_empty()
            && applied(&store).await >= live_applied / 4
        {
            first.kill().unwrap();
            first.wait().unwrap();
            break applied(&store).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replay saved no checkpoint"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        applied_at_kill < live_applied,
        "killed half-way: {applied_at_kill} of {live_applied} messages applied"
    );
    let resumed = switchyard_command(&replay_args(dir, &into, bus, true))
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", said(&resumed));
    let summary = String::from_utf8_lossy(&resumed.stdout).into_owned();
    eprintln!("killed at {applied_at_kill} applied; resumed: {summary}");
    assert!(
        summary.contains("resumed past the checkpoint, from offset:")
            && summary.contains(", 0 not applied now"),
        "{summary}"
    );
    // A replay run through reads every record; the resumed one, only those past its
    // checkpoint.
    let whole = dir.join("replayed-whole.sqlite");
    let whole = format!("sqlite://{}?mode=rwc", whole.display());
    let through = switchyard_command(&replay_args(dir, &whole, bus, false))
        .output()
        .unwrap();
    assert!(through.status.success(), "{}", said(&through));
    let all = records_read(&String::from_utf8_lossy(&through.stdout));
    assert!(
        records_read(&summary) < all,
        "the resumed replay read all {all} records again"
    );
    assert_eq!(digest(dir, &whole, bus), digest(dir, &into, bus));
    digest(dir, &into, bus)
}

/// N of a replay's "replayed N records" line.
fn records_read(summary: &str) -> u64 {
    summary
        .lines()
        .find_map(|l| l.strip_prefix("replayed ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no count in {summary:?}"))
}

/// How many messages `store` holds as applied.
async fn applied(store: &actors::Store) -> u64 {
    let digest = store.digest().await.unwrap();
    let (_, rows) = digest
        .tables
        .iter()
        .find(|(table, _)| *table == "processed_messages")
        .unwrap();
    *rows
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

/// On the calfkit tansu build: a killed member's partitions go to its successor (the registry
/// build keeps some from it, STACK.md), and its replay reads every partition to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_kill_9_under_load_loses_nothing_and_a_replay_rebuilds_the_digest() {
    if let Some(broker) = Broker::kafka(broker_adapters::testkit::TansuBuild::CalfkitMemory).await {
        crash_and_replay(&broker.flags()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_kill_9_under_load_loses_nothing_and_a_replay_rebuilds_the_digest() {
    if let Some(broker) = Broker::rabbit().await {
        crash_and_replay(&broker.flags()).await;
    }
}
