//! A sustained mixed load for the recovery tests: agents registering and beating, three-task
//! DAGs created, notifications requested, and a worker starting and completing whatever is assigned, against a node that may be down
//! for a while (what was not accepted is sent again under its own id until it is).

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::harness::*;

/// A load running against the node on fixed ports.
pub struct Load {
    accepted: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    driver: JoinHandle<usize>,
}

/// What a finished load did.
pub struct Done {
    /// Ids of every event that got its 202.
    pub accepted: BTreeSet<String>,
    /// Tasks created (all done by the end).
    pub tasks: usize,
}

impl Load {
    /// Starts the load against the node of data directory `dir` on `(http, grpc)`.
    pub async fn start(dir: PathBuf, (http, grpc): (u16, u16)) -> Load {
        let accepted = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let client = Client::new(&dir, http, grpc).await;
        let driver = tokio::spawn(drive(client, accepted.clone(), stop.clone()));
        Load {
            accepted,
            stop,
            driver,
        }
    }

    /// Events accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    /// Stops creating work and waits until every task created is done.
    pub async fn finish(self) -> Done {
        self.stop.store(true, Ordering::SeqCst);
        // The driver gives up by itself after its own deadline; this is for a call that hangs.
        let tasks = tokio::time::timeout(4 * WAIT, self.driver)
            .await
            .expect("the load hung")
            .unwrap();
        Done {
            accepted: std::mem::take(&mut *self.accepted.lock().unwrap()),
            tasks,
        }
    }
}

fn created(id: &str, task: &str, after: &[String]) -> Value {
    let depends: Vec<Value> = after
        .iter()
        .map(|t| json!({"task_id": t, "type": "blocks"}))
        .collect();
    event(
        id,
        "task.created",
        &format!("task/{task}"),
        json!({"task_id": task, "title": task, "spec": "true", "depends_on": depends}),
    )
}

/// Tasks in `state`, every page, or `None` while the node does not answer.
async fn listed(client: &mut Client, state: &str) -> Option<Vec<schemas::proto::Task>> {
    let mut tasks = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = client.authed(schemas::proto::ListTasksRequest {
            state: Some(state.into()),
            page_size: 500,
            page_token,
            agent_id: None,
        });
        let page = client.tasks.list_tasks(request).await.ok()?.into_inner();
        tasks.extend(page.tasks);
        if page.next_page_token.is_empty() {
            return Some(tasks);
        }
        page_token = page.next_page_token;
    }
}

async fn drive(
    mut client: Client,
    accepted: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
) -> usize {
    let mut outbox: VecDeque<(String, Value)> = VecDeque::new();
    let mut rounds = 0usize;
    let mut deadline = None;
    let mut refused = None;
    loop {
        if stop.load(Ordering::SeqCst) {
            let at = *deadline.get_or_insert(tokio::time::Instant::now() + 2 * WAIT);
            if tokio::time::Instant::now() > at {
                let mut stuck = Vec::new();
                for state in ["pending", "blocked", "assigned", "running", "failed"] {
                    for task in listed(&mut client, state).await.unwrap_or_default() {
                        stuck.push(format!("{} {state} {}", task.task_id, task.agent_id));
                    }
                }
                panic!(
                    "the load did not finish: {} events unsent (last answer {refused:?}), \
                     not done: {stuck:?}",
                    outbox.len()
                );
            }
        } else {
            // Each round a DAG a → b → c (c also after a), a heartbeat and a notification;
            // every tenth round an agent more.
            let n = rounds / 10;
            if rounds.is_multiple_of(10) {
                let id = format!("register-{n}");
                outbox.push_back((id.clone(), agent_registered(&id, &format!("a{n}"), 20)));
            }
            let agent = format!("a{n}");
            let beat = format!("beat-{rounds}");
            let body = json!({"agent_id": agent});
            outbox.push_back((
                beat.clone(),
                event(&beat, "agent.heartbeat", &format!("agent/{agent}"), body),
            ));
            let note = format!("note-{rounds}");
            let body = json!({"channel": "webhook", "to": "ops", "subject": note, "text": "hi",
                              "dedupe_key": note});
            outbox.push_back((
                note.clone(),
                event(&note, "notification.requested", "notify/u1", body),
            ));
            let [a, b, c] = ["a", "b", "c"].map(|s| format!("r{rounds}{s}"));
            outbox.push_back((
                format!("create-{a}"),
                created(&format!("create-{a}"), &a, &[]),
            ));
            let after_a = [a.clone()];
            outbox.push_back((
                format!("create-{b}"),
                created(&format!("create-{b}"), &b, &after_a),
            ));
            outbox.push_back((
                format!("create-{c}"),
                created(&format!("create-{c}"), &c, &[a, b]),
            ));
            rounds += 1;
        }
        // The worker: what is assigned starts, what runs completes.
        let assigned = listed(&mut client, "assigned").await.unwrap_or_default();
        // Ids name the agent too: a task assigned again is started again.
        for task in assigned {
            let id = format!("start-{}-{}", task.task_id, task.agent_id);
            outbox.push_back((id.clone(), task_started(&id, &task.task_id, &task.agent_id)));
        }
        let running = listed(&mut client, "running").await.unwrap_or_default();
        for task in running {
            let id = format!("done-{}-{}", task.task_id, task.agent_id);
            outbox.push_back((id.clone(), task_completed(&id, &task.task_id)));
        }
        while let Some((id, envelope)) = outbox.pop_front() {
            let body = serde_json::to_vec(&envelope).unwrap();
            let token = client.token.clone();
            let answer = client
                .post_raw("application/json", body, Some(&token))
                .await;
            match answer {
                Some((202, _)) => {
                    accepted.lock().unwrap().insert(id);
                }
                // The node is down, not ready yet, or its bus too slow to answer in time (408):
                // not accepted, so the rest waits for it.
                None | Some((503 | 408, _)) => {
                    refused = answer;
                    outbox.push_front((id, envelope));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
                Some(answer) => panic!("{id} was answered {answer:?}"),
            }
        }
        if stop.load(Ordering::SeqCst) && outbox.is_empty() {
            let done = listed(&mut client, "done").await.map(|t| t.len());
            if done == Some(3 * rounds) {
                return 3 * rounds;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A random duration between `low` and `high` milliseconds.
pub fn random_ms(low: u64, high: u64) -> Duration {
    use std::hash::{BuildHasher, RandomState};
    let draw = RandomState::new().hash_one(std::time::SystemTime::now());
    Duration::from_millis(low + draw % (high - low + 1))
}
