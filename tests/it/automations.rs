//! Automations: a cron schedule in a time zone fires on time under a test clock, a run-now
//! fires at once, a run's tasks are ordinary tasks with their dependencies, definitions that
//! cannot run are refused with the reason, and after kill -9 across scheduled times each
//! automation's missed-run policy decides.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actors::domain::automation::{self, Schedule};
use actors::store::{Outcome, now_ms};
use chrono::NaiveDateTime;
use serde_json::{Value, json};

use crate::harness::*;

fn defined(id: &str, automation: &str, schedule: &str, zone: &str, missed: &str) -> Value {
    event(
        id,
        "automation.defined",
        &format!("automation/{automation}"),
        json!({"automation_id": automation, "schedule": schedule, "time_zone": zone,
               "missed": missed, "tasks": [
                   {"task_id": "build", "title": "build", "spec": "make"},
                   {"task_id": "deploy", "title": "deploy", "spec": "make deploy",
                    "depends_on": [{"task_id": "build", "type": "blocks"}]}]}),
    )
}

/// Polls the stored automation until `done` holds, or panics after `WAIT`.
async fn wait_automation(
    store: &actors::Store,
    id: &str,
    done: impl Fn(&actors::store::Automation) -> bool,
) -> actors::store::Automation {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(a) = store.automation(id).await.unwrap()
            && done(&a)
        {
            return a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "automation {id} never got there: {:?}",
            store.automation(id).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_automation_fires_on_schedule_and_run_now_fires_at_once() {
    let _one_at_a_time = IN_PROCESS.lock().await;
    let (clock, shift) = shifted_clock();
    let dir = tempfile::tempdir().unwrap();
    let (node, http, grpc) = in_process_at(dir.path(), clock, |_| {}).await;
    let mut client = Client::new(dir.path(), http, grpc).await;
    let store = state_store(dir.path()).await;

    let defined_at = now_ms();
    let schedule = Schedule::parse("0 9 * * *", "Europe/Paris").unwrap();
    let nine = schedule.next_after(defined_at).unwrap();
    let envelope = defined("d1", "daily", "0 9 * * *", "Europe/Paris", "skip");
    assert_eq!(client.post(&envelope).await, Some(202));
    let stored = wait_automation(&store, "daily", |_| true).await;
    assert_eq!(stored.next_run_at, Some(nine), "09:00 in Paris, next");

    // A second after nine, by the node's clock.
    shift.store(nine as i64 - now_ms() as i64 + 1_000, Ordering::SeqCst);
    let run = automation::scheduled_run(nine);
    let build = automation::run_task_id("daily", &run, "build");
    let deploy = automation::run_task_id("daily", &run, "deploy");
    client.wait_task(&build, |t| t.state == "pending").await;
    let waiting = client.wait_task(&deploy, |_| true).await;
    assert_eq!(waiting.state, "blocked", "{waiting:?}");
    assert_eq!(waiting.dependencies[0].task_id, build);
    let after = wait_automation(&store, "daily", |a| a.last_run.is_some()).await;
    assert_eq!(after.last_run.as_deref(), Some(run.as_str()));
    assert!(after.last_run_at.unwrap() >= nine, "fired before its time");
    assert_eq!(after.next_run_at, schedule.next_after(nine));

    // Run now: at once, under the request's own run.
    let now = event(
        "rn1",
        "automation.run_requested",
        "automation/daily",
        json!({"automation_id": "daily"}),
    );
    assert_eq!(client.post(&now).await, Some(202));
    let requested = automation::requested_run("rn1");
    let id = automation::run_task_id("daily", &requested, "build");
    client.wait_task(&id, |t| t.state == "pending").await;

    // What cannot run is refused with the reason.
    for (id, body, reason) in [
        (
            "bad1",
            json!({"automation_id": "x", "schedule": "at nine", "tasks": [
                {"task_id": "a", "title": "a", "spec": "a"}]}),
            "schedule `at nine`",
        ),
        (
            "bad2",
            json!({"automation_id": "x", "schedule": "0 9 * * *", "tasks": [
                {"task_id": "a", "title": "a", "spec": "a",
                 "depends_on": [{"task_id": "elsewhere", "type": "blocks"}]}]}),
            "depends on unknown task `elsewhere`",
        ),
        (
            "bad3",
            json!({"automation_id": "x", "schedule": "0 9 * * *", "missed": "twice",
                   "tasks": [{"task_id": "a", "title": "a", "spec": "a"}]}),
            "neither `skip` nor `catch_up`",
        ),
    ] {
        let envelope = event(id, "automation.defined", "automation/x", body);
        assert_eq!(client.post(&envelope).await, Some(202));
        let deadline = tokio::time::Instant::now() + WAIT;
        let outcome = loop {
            if let Some(outcome) = store.outcome(id).await.unwrap() {
                break outcome;
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} never decided");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        match outcome {
            Outcome::Refused(why) => assert!(why.contains(reason), "{id}: {why}"),
            other => panic!("{id} was {other:?}"),
        }
    }
    let unknown = event(
        "rn2",
        "automation.run_requested",
        "automation/nobody",
        json!({"automation_id": "nobody"}),
    );
    assert_eq!(client.post(&unknown).await, Some(202));
    let deadline = tokio::time::Instant::now() + WAIT;
    let outcome = loop {
        if let Some(outcome) = store.outcome("rn2").await.unwrap() {
            break outcome;
        }
        assert!(tokio::time::Instant::now() < deadline, "rn2 never decided");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        outcome,
        Outcome::Refused("automation.run_requested: no automation `nobody`".into())
    );
    node.shutdown().await.unwrap();
}

/// The scheduled time a run label names, ms.
fn run_time(label: &str) -> Option<u64> {
    NaiveDateTime::parse_from_str(label, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc().timestamp_millis() as u64)
}

/// The scheduled runs of `automation` among `tasks`' ids, by time.
fn runs(tasks: &[schemas::proto::Task], automation: &str) -> BTreeSet<u64> {
    tasks
        .iter()
        .filter_map(|t| t.task_id.strip_prefix(&format!("{automation}.")))
        .filter_map(|rest| run_time(rest.split('.').next()?))
        .collect()
}

/// Sleeps until the wall clock is `offset` ms past a multiple of `every` ms.
async fn until_phase(every: u64, offset: u64) {
    let now = now_ms();
    let target = (now / every + 1) * every + offset;
    tokio::time::sleep(Duration::from_millis(target - now)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_a_missed_run_is_skipped_or_caught_up_once() {
    // Runs ten seconds apart: the node is back well before the run after those it missed.
    const EVERY: u64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let env = [("SWITCHYARD_AUTOMATION_GRACE_MS", "1000")];
    let mut node = Proc::start_with_env(dir.path(), &env).await;
    let mut client = node.client().await;
    for (id, automation, missed) in [("s1", "skipper", "skip"), ("c1", "catcher", "catch_up")] {
        let envelope = defined(id, automation, "*/10 * * * * *", "UTC", missed);
        assert_eq!(client.post(&envelope).await, Some(202));
    }
    // Both fire while the node runs.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let tasks = client.all_tasks(None).await;
        if !runs(&tasks, "skipper").is_empty() && !runs(&tasks, "catcher").is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no runs: {tasks:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Down from a second after one run until three seconds after the third one after it:
    // the last run missed is three seconds late when the node is back, past the grace.
    until_phase(EVERY, 1_000).await;
    node.kill9();
    let killed = now_ms();
    until_phase(EVERY, 0).await;
    until_phase(EVERY, 0).await;
    until_phase(EVERY, 3_000).await;
    let restarted = now_ms();
    let node = Proc::launch_on(dir.path(), (node.http, node.grpc), &[], &env).await;
    let mut client = node.client().await;
    let missed: Vec<u64> = (killed / EVERY + 1..=restarted / EVERY)
        .map(|slot| slot * EVERY)
        .collect();
    assert_eq!(missed.len(), 3, "{missed:?}");

    // The catcher catches up once, with the latest missed run; the skipper does not.
    let latest = *missed.last().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let tasks = client.all_tasks(None).await;
        if runs(&tasks, "catcher").contains(&latest) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no catch-up run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And both go on with the schedule.
    let next = latest + EVERY;
    let deadline = tokio::time::Instant::now() + WAIT;
    let tasks = loop {
        let tasks = client.all_tasks(None).await;
        if runs(&tasks, "skipper").contains(&next) && runs(&tasks, "catcher").contains(&next) {
            break tasks;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the schedule stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let in_downtime = |automation| -> Vec<u64> {
        runs(&tasks, automation)
            .into_iter()
            .filter(|t| missed.contains(t))
            .collect()
    };
    assert_eq!(in_downtime("skipper"), Vec::<u64>::new(), "skipped");
    assert_eq!(in_downtime("catcher"), vec![latest], "caught up once");
    drop(node);
}
