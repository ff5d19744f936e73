//! The orchestration domain through a real node: DAGs run by real `switchyard agent` workers over
//! the gRPC link, workers and nodes killed mid-work, every verb and its scoping through a real
//! gRPC client, on SQLite and on PostgreSQL.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use schemas::proto::agents_client::AgentsClient;
use schemas::proto::keys_client::KeysClient;
use schemas::proto::tasks_client::TasksClient;
use schemas::proto::{
    AddDependencyRequest, CreateKeyRequest, CreateTaskRequest, Dependency, GetAgentRequest,
    GetTaskRequest, ListAgentsRequest, ListTasksRequest, RevokeKeyRequest, SubmitDagRequest, Task,
    TaskRef, TaskResult, TaskText, WatchRequest,
};
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::{Proc, WAIT, free_port, postgres_schema};

/// A gRPC caller holding one key.
#[derive(Clone)]
struct Caller {
    token: String,
    tasks: TasksClient<Channel>,
    agents: AgentsClient<Channel>,
    keys: KeysClient<Channel>,
}

impl Caller {
    async fn new(grpc: u16, token: &str) -> Caller {
        let url = format!("http://127.0.0.1:{grpc}");
        let channel = crate::harness::channel(&url).await;
        Caller {
            token: token.to_owned(),
            tasks: TasksClient::new(channel.clone()),
            agents: AgentsClient::new(channel.clone()),
            keys: KeysClient::new(channel),
        }
    }

    async fn admin(node: &Proc) -> Caller {
        let token = std::fs::read_to_string(node.dir.join("admin.token")).unwrap();
        Caller::new(node.grpc, token.trim()).await
    }

    fn req<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let bearer = format!("Bearer {}", self.token).parse().unwrap();
        request.metadata_mut().insert("authorization", bearer);
        request
    }

    /// A new key (admin callers only).
    async fn key(&mut self, role: &str, user: &str, agent_id: &str) -> String {
        let request = self.req(CreateKeyRequest {
            role: role.into(),
            user: user.into(),
            agent_id: agent_id.into(),
        });
        self.keys
            .create_key(request)
            .await
            .unwrap()
            .into_inner()
            .key
    }

    async fn get(&mut self, task_id: &str) -> Result<Task, tonic::Status> {
        let request = self.req(GetTaskRequest {
            task_id: task_id.into(),
        });
        self.tasks.get_task(request).await.map(|r| r.into_inner())
    }

    async fn all(&mut self) -> Vec<Task> {
        let request = self.req(ListTasksRequest {
            page_size: 500,
            ..Default::default()
        });
        self.tasks
            .list_tasks(request)
            .await
            .unwrap()
            .into_inner()
            .tasks
    }

    /// Polls until every task in `ids` is in `state`, or fails naming the rest.
    async fn wait_all(
        &mut self,
        ids: &[String],
        state: &str,
        wait: Duration,
    ) -> BTreeMap<String, Task> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let tasks: BTreeMap<String, Task> = self
                .all()
                .await
                .into_iter()
                .map(|t| (t.task_id.clone(), t))
                .collect();
            let behind: Vec<String> = ids
                .iter()
                .filter(|id| tasks.get(*id).is_none_or(|t| t.state != state))
                .map(|id| {
                    format!(
                        "{id}:{}",
                        tasks.get(id).map_or("absent", |t| t.state.as_str())
                    )
                })
                .collect();
            if behind.is_empty() {
                return tasks;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not {state} in time: {behind:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until task `task_id` satisfies `ok`.
    async fn wait_task(&mut self, task_id: &str, what: &str, ok: impl Fn(&Task) -> bool) -> Task {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(task) = self.get(task_id).await
                && ok(&task)
            {
                return task;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {task_id} never became {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A `switchyard agent` process, killed when dropped.
struct Worker(Child);

impl Worker {
    fn start(node: &Proc, name: &str, token: &str, exec: &str) -> Worker {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join(format!("worker-{name}.log")))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["agent", "--name", name, "--exec", exec, "--node"])
            .arg(format!("127.0.0.1:{}", node.grpc))
            .env("SWITCHYARD_TOKEN", token)
            .env("SWITCHYARD_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Worker(child)
    }

    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Answers with its own contract value and what it received as inputs.
const ECHO: &str =
    r#"printf '{"out": "%s-value", "saw": %s}' "$SWITCHYARD_TASK_ID" "$SWITCHYARD_TASK_INPUTS""#;

fn dependency(upstream: &str, kind: &str, key: &str) -> Dependency {
    Dependency {
        task_id: upstream.into(),
        r#type: kind.into(),
        contract_key: key.into(),
        ..Default::default()
    }
}

fn create(task_id: &str, depends_on: Vec<Dependency>) -> CreateTaskRequest {
    CreateTaskRequest {
        task_id: task_id.into(),
        title: format!("step {task_id}"),
        spec: "echo".into(),
        depends_on,
        contracts: vec!["out".into()],
        ..Default::default()
    }
}

/// A graph of `n` tasks named `{prefix}{i}`: the first five are roots; each later one takes
/// `out` from an earlier task as input and, from the tenth on, waits for another.
fn graph(prefix: &str, n: usize) -> Vec<CreateTaskRequest> {
    (0..n)
        .map(|i| {
            let mut deps = Vec::new();
            if i >= 5 {
                deps.push(dependency(
                    &format!("{prefix}{}", (i * 7 + 3) % i),
                    "input",
                    "out",
                ));
            }
            if i >= 10 {
                let other = (i * 13 + 1) % i;
                if deps.iter().all(|d| d.task_id != format!("{prefix}{other}")) {
                    deps.push(dependency(&format!("{prefix}{other}"), "blocks", ""));
                }
            }
            create(&format!("{prefix}{i}"), deps)
        })
        .collect()
}

/// The state database of a node started with `database` (empty: SQLite in `dir`).
async fn store_of(dir: &Path, database: &str) -> actors::Store {
    if database.is_empty() {
        crate::harness::state_store(dir).await
    } else {
        actors::Store::connect(database).await.unwrap()
    }
}

/// Checks a finished graph: every input edge delivered its contract value to the task and to
/// its worker, every downstream started after its upstream completed, nothing applied twice.
async fn check_graph(
    store: &actors::Store,
    requests: &[CreateTaskRequest],
    tasks: &BTreeMap<String, Task>,
) {
    let mut position = BTreeMap::new();
    for row in store.activity_after(0, None, None, 100_000).await.unwrap() {
        position.insert((row.entity.clone(), row.kind.clone()), row.id);
    }
    let at = |task: &str, kind: &str| {
        position
            .get(&(format!("task/{task}"), kind.to_owned()))
            .copied()
    };
    for request in requests {
        let task = &tasks[&request.task_id];
        for d in &request.depends_on {
            let (done, started) = (
                at(&d.task_id, "task.completed"),
                at(&task.task_id, "task.started"),
            );
            assert!(
                done.is_some() && started > done,
                "{} started before {} completed",
                task.task_id,
                d.task_id
            );
            if d.r#type == "input" {
                let expected = format!("{}-value", d.task_id);
                let inputs = gateways::from_struct(task.inputs.as_ref().unwrap());
                assert_eq!(
                    inputs["out"],
                    expected.as_str(),
                    "{} received its input",
                    task.task_id
                );
                let result = gateways::from_struct(task.result.as_ref().unwrap());
                assert_eq!(
                    result["saw"]["out"],
                    expected.as_str(),
                    "{}'s worker saw its input",
                    task.task_id
                );
            }
        }
    }
    assert_eq!(
        store.applied_twice().await.unwrap(),
        Vec::<String>::new(),
        "nothing applied twice"
    );
}

/// The variables that point a node at `database` (none for SQLite in its data directory),
/// with `more` after them.
fn node_env<'a>(database: &'a str, more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = Vec::new();
    if !database.is_empty() {
        env.push(("SWITCHYARD_DATABASE_URL", database));
    }
    env.extend_from_slice(more);
    env
}

/// Two tests of `$test`: on SQLite, and on a fresh PostgreSQL schema of its own.
macro_rules! on_both_databases {
    ($test:ident, $sqlite:ident, $postgres:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            $test("").await;
        }

        #[tokio::test]
        async fn $postgres() {
            let Some(database) = postgres_schema(stringify!($test)).await else {
                return;
            };
            $test(&database).await;
        }
    };
}

async fn a_dag_runs_on_five_workers(database: &str) {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::start_with_env(dir.path(), &node_env(database, &[])).await;
    let mut admin = Caller::admin(&node).await;
    let user_key = admin.key("user", "u1", "").await;
    let mut user = Caller::new(node.grpc, &user_key).await;
    let mut workers = Vec::new();
    for i in 0..5 {
        let token = admin.key("agent", "u1", &format!("w{i}")).await;
        workers.push(Worker::start(&node, &format!("worker-{i}"), &token, ECHO));
    }

    // Refused with their names, and nothing of them created.
    let mut cycle = graph("c", 3);
    cycle[0].depends_on.push(dependency("c2", "blocks", ""));
    cycle[2].depends_on.push(dependency("c0", "blocks", ""));
    let refused = user
        .tasks
        .submit_dag(user.req(SubmitDagRequest { tasks: cycle }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(refused.message(), "the graph has a cycle: c0 → c2 → c0");
    let mut missing = graph("m", 6);
    missing[5].depends_on[0].contract_key = "schema".into();
    let refused = user
        .tasks
        .submit_dag(user.req(SubmitDagRequest { tasks: missing }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("contract `schema`"),
        "{}",
        refused.message()
    );
    let unknown = vec![create("u0", vec![dependency("ghost", "blocks", "")])];
    let refused = user
        .tasks
        .submit_dag(user.req(SubmitDagRequest { tasks: unknown }))
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("unknown task `ghost`"),
        "{}",
        refused.message()
    );
    assert!(user.all().await.is_empty());

    let requests = graph("t", 50);
    let ids: Vec<String> = requests.iter().map(|r| r.task_id.clone()).collect();
    let created = user
        .tasks
        .submit_dag(user.req(SubmitDagRequest {
            tasks: requests.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.tasks.len(), 50);
    let tasks = user.wait_all(&ids, "done", Duration::from_secs(60)).await;
    let store = store_of(dir.path(), database).await;
    check_graph(&store, &requests, &tasks).await;
    let agents: std::collections::BTreeSet<&str> =
        tasks.values().map(|t| t.agent_id.as_str()).collect();
    assert!(
        agents.len() >= 3,
        "ready tasks ran in parallel on several workers: {agents:?}"
    );
    let listed = user
        .agents
        .list_agents(user.req(ListAgentsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(listed.iter().filter(|a| a.online).count(), 5);
    drop(workers);
}

on_both_databases!(
    a_dag_runs_on_five_workers,
    a_dag_of_50_tasks_runs_in_dependency_order_on_five_workers_on_sqlite,
    a_dag_of_50_tasks_runs_in_dependency_order_on_five_workers_on_postgres
);

on_both_databases!(
    a_killed_worker_goes_offline,
    a_worker_killed_mid_task_goes_offline_and_another_finishes_its_task_on_sqlite,
    a_worker_killed_mid_task_goes_offline_and_another_finishes_its_task_on_postgres
);

async fn a_killed_worker_goes_offline(database: &str) {
    let dir = tempfile::tempdir().unwrap();
    let env = node_env(database, &[("SWITCHYARD_AGENT_TIMEOUT_MS", "1500")]);
    let node = Proc::start_with_env(dir.path(), &env).await;
    let mut admin = Caller::admin(&node).await;
    let mut user = Caller::new(node.grpc, &admin.key("user", "u1", "").await).await;
    let mut slow = Worker::start(
        &node,
        "slow",
        &admin.key("agent", "u1", "slow").await,
        "sleep 60",
    );
    let create = user.req(create("job", Vec::new()));
    user.tasks.create_task(create).await.unwrap();
    user.wait_task("job", "running on slow", |t| {
        t.state == "running" && t.agent_id == "slow"
    })
    .await;
    slow.kill9();
    let _quick = Worker::start(
        &node,
        "quick",
        &admin.key("agent", "u1", "quick").await,
        ECHO,
    );
    let done = user
        .wait_task("job", "done by quick", |t| t.state == "done")
        .await;
    assert_eq!(done.agent_id, "quick");
    let slow_agent = user
        .agents
        .get_agent(user.req(GetAgentRequest {
            agent_id: "slow".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!slow_agent.online, "the silent agent went offline");
    let store = store_of(dir.path(), database).await;
    let kinds: Vec<String> = store
        .activity_after(0, Some("task/job"), None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "task.created",
            "task.assigned",
            "task.started",
            "task.requeued",
            "task.assigned",
            "task.started",
            "task.output",
            "task.completed"
        ]
    );
    assert!(store.applied_twice().await.unwrap().is_empty());
}

on_both_databases!(
    kill_9_mid_dag,
    kill_9_of_the_node_mid_dag_then_restart_finishes_the_dag_with_nothing_lost_or_doubled_on_sqlite,
    kill_9_of_the_node_mid_dag_then_restart_finishes_the_dag_with_nothing_lost_or_doubled_on_postgres
);

async fn kill_9_mid_dag(database: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let env = node_env(database, &[]);
    let mut node = Proc::launch_on(dir.path(), ports, &[], &env).await;
    let mut admin = Caller::admin(&node).await;
    let user_key = admin.key("user", "u1", "").await;
    let mut user = Caller::new(node.grpc, &user_key).await;
    let slow_echo = format!("sleep 0.1; {ECHO}");
    let mut workers = Vec::new();
    for i in 0..3 {
        let token = admin.key("agent", "u1", &format!("w{i}")).await;
        workers.push(Worker::start(
            &node,
            &format!("worker-{i}"),
            &token,
            &slow_echo,
        ));
    }
    let requests = graph("k", 30);
    let ids: Vec<String> = requests.iter().map(|r| r.task_id.clone()).collect();
    user.tasks
        .submit_dag(user.req(SubmitDagRequest {
            tasks: requests.clone(),
        }))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while user
        .all()
        .await
        .iter()
        .filter(|t| t.state == "done")
        .count()
        < 8
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the DAG did not get going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.kill9();
    let node = Proc::launch_on(dir.path(), ports, &[], &env).await;
    let mut user = Caller::new(node.grpc, &user_key).await;
    let tasks = user.wait_all(&ids, "done", Duration::from_secs(90)).await;
    let store = store_of(dir.path(), database).await;
    check_graph(&store, &requests, &tasks).await;
    for id in &ids {
        let completed = store
            .activity_after(0, Some(&format!("task/{id}")), None, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == "task.completed")
            .count();
        assert_eq!(completed, 1, "{id} completed once");
    }
    drop(workers);
}

/// Registers agent `agent_id` of `user` over HTTP and waits until it is online.
async fn register(node: &Proc, caller: &mut Caller, user_token: &str, user: &str, agent_id: &str) {
    let envelope = serde_json::json!({
        "type": "agent.registered", "user": user, "key": format!("agent/{agent_id}"),
        "body": {"agent_id": agent_id, "name": agent_id, "max_concurrent": 1},
    });
    let client = node.client().await;
    let (status, _) = client
        .post_raw(
            "application/json",
            serde_json::to_vec(&envelope).unwrap(),
            Some(user_token),
        )
        .await
        .unwrap();
    assert_eq!(status, 202);
    let deadline = tokio::time::Instant::now() + WAIT;
    while caller
        .agents
        .get_agent(caller.req(GetAgentRequest {
            agent_id: agent_id.into(),
        }))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent {agent_id} never registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn text(task_id: &str, text: &str) -> TaskText {
    TaskText {
        task_id: task_id.into(),
        text: text.into(),
    }
}

fn task_ref(task_id: &str) -> TaskRef {
    TaskRef {
        task_id: task_id.into(),
    }
}

on_both_databases!(
    every_verb,
    every_verb_over_grpc_with_refusals_and_scoping_on_sqlite,
    every_verb_over_grpc_with_refusals_and_scoping_on_postgres
);

async fn every_verb(database: &str) {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::start_with_env(dir.path(), &node_env(database, &[])).await;
    let mut admin = Caller::admin(&node).await;
    let (a_key, b_key) = (
        admin.key("user", "alice", "").await,
        admin.key("user", "bob", "").await,
    );
    let (mut alice, mut bob) = (
        Caller::new(node.grpc, &a_key).await,
        Caller::new(node.grpc, &b_key).await,
    );
    let mut agent = Caller::new(node.grpc, &admin.key("agent", "alice", "a1").await).await;
    let mut stranger = Caller::new(node.grpc, &admin.key("agent", "alice", "a2").await).await;
    let forbidden = alice
        .keys
        .create_key(alice.req(CreateKeyRequest {
            role: "user".into(),
            user: "alice".into(),
            agent_id: String::new(),
        }))
        .await;
    assert_eq!(
        forbidden.unwrap_err().code(),
        Code::PermissionDenied,
        "keys need the admin key"
    );

    let mut watch = alice
        .tasks
        .watch(alice.req(WatchRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let new = CreateTaskRequest {
        require_plan_approval: true,
        ..create("p1", Vec::new())
    };
    let created = alice
        .tasks
        .create_task(alice.req(new))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (created.state.as_str(), created.user.as_str()),
        ("pending", "alice")
    );
    register(&node, &mut alice, &a_key, "alice", "a1").await;
    alice
        .wait_task("p1", "assigned to a1", |t| {
            t.state == "assigned" && t.agent_id == "a1"
        })
        .await;

    // Bob sees nothing of Alice's, and cannot act on it.
    for status in [
        bob.get("p1").await.unwrap_err(),
        bob.tasks
            .cancel_task(bob.req(text("p1", "mine now")))
            .await
            .unwrap_err(),
        bob.tasks
            .watch(bob.req(WatchRequest {
                task_id: "p1".into(),
            }))
            .await
            .err()
            .unwrap(),
    ] {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    assert!(bob.all().await.is_empty());
    assert_eq!(
        bob.agents
            .get_agent(bob.req(GetAgentRequest {
                agent_id: "a1".into()
            }))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // Another agent's key does not reach a1's task; a1's key does not approve its own plan.
    assert_eq!(
        stranger
            .tasks
            .start_task(stranger.req(task_ref("p1")))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert!(
        stranger.all().await.is_empty(),
        "an agent lists only its own assignments"
    );

    let step = |t: Result<tonic::Response<Task>, tonic::Status>| t.unwrap().into_inner().state;
    assert_eq!(
        step(agent.tasks.start_task(agent.req(task_ref("p1"))).await),
        "planning"
    );
    assert_eq!(
        step(
            agent
                .tasks
                .submit_plan(agent.req(text("p1", "plan A")))
                .await
        ),
        "plan_review"
    );
    assert_eq!(
        agent
            .tasks
            .approve_plan(agent.req(task_ref("p1")))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        step(
            alice
                .tasks
                .reject_plan(alice.req(text("p1", "smaller")))
                .await
        ),
        "planning"
    );
    assert_eq!(
        step(
            agent
                .tasks
                .submit_plan(agent.req(text("p1", "plan B")))
                .await
        ),
        "plan_review"
    );
    assert_eq!(
        step(alice.tasks.approve_plan(alice.req(task_ref("p1"))).await),
        "running"
    );
    assert_eq!(
        step(
            agent
                .tasks
                .request_help(agent.req(text("p1", "which db?")))
                .await
        ),
        "needs_human"
    );
    let answered = alice
        .tasks
        .answer_task(alice.req(text("p1", "postgres")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (answered.state.as_str(), answered.note.as_str()),
        ("running", "postgres")
    );
    let result = |value: &str| {
        let map = serde_json::json!({"out": value, "n": 2})
            .as_object()
            .unwrap()
            .clone()
            .into_iter()
            .collect();
        Some(gateways::to_struct(&map))
    };
    let huge = TaskResult {
        task_id: "p1".into(),
        result: result(&"x".repeat(schemas::MAX_ENVELOPE_BYTES)),
    };
    let refused = agent
        .tasks
        .complete_task(agent.req(huge))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("at most 1048576 are taken"),
        "{}",
        refused.message()
    );
    let lacking = TaskResult {
        task_id: "p1".into(),
        result: Some(gateways::to_struct(&Default::default())),
    };
    let refused = agent
        .tasks
        .request_review(agent.req(lacking))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("contract `out`"),
        "{}",
        refused.message()
    );
    let review = TaskResult {
        task_id: "p1".into(),
        result: result("v1"),
    };
    assert_eq!(
        step(agent.tasks.request_review(agent.req(review)).await),
        "review"
    );
    assert_eq!(
        step(
            alice
                .tasks
                .request_revision(alice.req(text("p1", "more")))
                .await
        ),
        "running"
    );
    let review = TaskResult {
        task_id: "p1".into(),
        result: result("v2"),
    };
    assert_eq!(
        step(agent.tasks.request_review(agent.req(review)).await),
        "review"
    );
    let done = alice
        .tasks
        .approve_task(alice.req(task_ref("p1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, "done");
    assert_eq!(
        gateways::from_struct(done.result.as_ref().unwrap())["n"],
        2,
        "the result is a structured value"
    );

    // An invalid transition names both states.
    let refused = alice
        .tasks
        .cancel_task(alice.req(text("p1", "")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        "task.cancelled: task `p1` is done, which is final"
    );
    let refused = alice
        .tasks
        .retry_task(alice.req(task_ref("p1")))
        .await
        .unwrap_err();
    assert_eq!(
        refused.message(),
        "task.retried: task `p1` is done, but must be failed"
    );

    // Fail, retry, cancel; a dependent of a cancelled task stays blocked, saying why.
    alice
        .tasks
        .create_task(alice.req(create("f1", Vec::new())))
        .await
        .unwrap();
    alice
        .wait_task("f1", "assigned", |t| t.state == "assigned")
        .await;
    assert_eq!(
        step(
            agent
                .tasks
                .fail_task(agent.req(text("f1", "disk full")))
                .await
        ),
        "failed"
    );
    assert_eq!(
        step(alice.tasks.retry_task(alice.req(task_ref("f1"))).await),
        "pending"
    );
    let downstream = create("d1", vec![dependency("f1", "input", "out")]);
    assert_eq!(
        alice
            .tasks
            .create_task(alice.req(downstream))
            .await
            .unwrap()
            .into_inner()
            .state,
        "blocked"
    );
    assert_eq!(
        step(
            alice
                .tasks
                .cancel_task(alice.req(text("f1", "not needed")))
                .await
        ),
        "cancelled"
    );
    let blocked = alice
        .wait_task("d1", "told", |t| !t.blocked_reason.contains("waiting"))
        .await;
    assert_eq!(
        (blocked.state.as_str(), blocked.blocked_reason.as_str()),
        ("blocked", "upstream `f1` was cancelled")
    );

    // Alice's watch saw her events, in order, and nothing of anyone else's.
    let mut kinds = Vec::new();
    while kinds.last().map(String::as_str) != Some("task.dependency_failed") {
        let event = tokio::time::timeout(WAIT, watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(event.task.unwrap().user, "alice");
        kinds.push(event.r#type);
    }
    assert_eq!(
        kinds[..3],
        ["task.created", "task.assigned", "task.started"]
    );
    assert!(
        kinds.contains(&"task.approved".to_owned()) && kinds.contains(&"task.retried".to_owned())
    );
}

/// Every page of `caller`'s `ListTasks` with `page_size` (and `agent_id`), in order.
async fn pages(caller: &mut Caller, page_size: u32, agent_id: Option<&str>) -> Vec<Vec<Task>> {
    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = caller.req(ListTasksRequest {
            page_size,
            page_token: page_token.clone(),
            agent_id: agent_id.map(Into::into),
            ..Default::default()
        });
        let page = caller.tasks.list_tasks(request).await.unwrap().into_inner();
        pages.push(page.tasks);
        if page.next_page_token.is_empty() {
            return pages;
        }
        page_token = page.next_page_token;
    }
}

/// Posts `envelope` over HTTP with `token`; the status.
async fn post_as(node: &Proc, token: &str, envelope: serde_json::Value) -> u16 {
    let client = node.client().await;
    let body = serde_json::to_vec(&envelope).unwrap();
    client
        .post_raw("application/json", body, Some(token))
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn keys_reach_only_their_own_user_and_agent_across_lists_watches_dependencies_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::start(dir.path()).await;
    let mut admin = Caller::admin(&node).await;
    let (a_key, b_key) = (
        admin.key("user", "alice", "").await,
        admin.key("user", "bob", "").await,
    );
    let (mut alice, mut bob) = (
        Caller::new(node.grpc, &a_key).await,
        Caller::new(node.grpc, &b_key).await,
    );
    let watch = |caller: &Caller| {
        let (mut caller, request) = (caller.clone(), caller.req(WatchRequest::default()));
        async move { caller.tasks.watch(request).await.unwrap().into_inner() }
    };
    let (mut alice_watch, mut bob_watch) = (watch(&alice).await, watch(&bob).await);

    // Interleaved tasks of two users: each lists full pages of its own only.
    for i in 0..7 {
        let mine = create(&format!("a{i}"), Vec::new());
        alice.tasks.create_task(alice.req(mine)).await.unwrap();
        if i < 5 {
            let theirs = create(&format!("b{i}"), Vec::new());
            bob.tasks.create_task(bob.req(theirs)).await.unwrap();
        }
    }
    let sizes = |pages: &[Vec<Task>]| pages.iter().map(Vec::len).collect::<Vec<_>>();
    let alice_pages = pages(&mut alice, 3, None).await;
    assert_eq!(sizes(&alice_pages), [3, 3, 1]);
    let listed: std::collections::BTreeSet<String> = alice_pages
        .iter()
        .flatten()
        .map(|t| {
            assert_eq!(t.user, "alice");
            t.task_id.clone()
        })
        .collect();
    assert_eq!(listed.len(), 7, "no task twice");
    assert_eq!(sizes(&pages(&mut bob, 2, None).await), [2, 2, 1]);
    assert_eq!(sizes(&pages(&mut bob, 2, Some("nobody")).await), [0]);
    let forged = alice.req(ListTasksRequest {
        page_token: "page two, please".into(),
        ..Default::default()
    });
    let refused = alice.tasks.list_tasks(forged).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    // Each watch saw its own user's creations and nothing of the other's.
    for (watch, user, count) in [(&mut alice_watch, "alice", 7), (&mut bob_watch, "bob", 5)] {
        for _ in 0..count {
            let event = tokio::time::timeout(WAIT, watch.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(
                (event.r#type.as_str(), event.task.unwrap().user.as_str()),
                ("task.created", user)
            );
        }
    }

    // Dependencies: added and refused when they would loop; another user's task is unknown.
    let add = |caller: &Caller, task: &str, upstream: &str| {
        caller.req(AddDependencyRequest {
            task_id: task.into(),
            dependency: Some(dependency(upstream, "blocks", "")),
        })
    };
    let blocked = alice
        .tasks
        .add_dependency(add(&alice, "a1", "a0"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (blocked.state.as_str(), blocked.blocked_reason.as_str()),
        ("blocked", "waiting for `a0`")
    );
    let looping = alice
        .tasks
        .add_dependency(add(&alice, "a0", "a1"))
        .await
        .unwrap_err();
    assert_eq!(looping.code(), Code::FailedPrecondition);
    assert_eq!(
        looping.message(),
        "the dependency would close a cycle: a0 → a1 → a0"
    );
    let foreign = bob
        .tasks
        .add_dependency(add(&bob, "b0", "a0"))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound, "{foreign:?}");

    // Over HTTP: users publish for themselves and not what the node publishes; agent keys
    // only their own agent's reports.
    let agent_key = admin.key("agent", "alice", "w1").await;
    let body = |kind: &str, key: &str, user: &str, body: serde_json::Value| json!({"type": kind, "key": key, "user": user, "body": body});
    let a2 = |kind: &str, fields| body(kind, "task/a2", "alice", fields);
    let cases = [
        // What only the node publishes, even on one's own task.
        (
            &a_key,
            a2("task.assigned", json!({"task_id": "a2", "agent_id": "w1"})),
            403,
        ),
        // For another user.
        (&b_key, a2("task.cancelled", json!({"task_id": "a2"})), 403),
        // An agent's key: none of the owner's verbs, no reports as another agent.
        (
            &agent_key,
            a2("task.cancelled", json!({"task_id": "a2"})),
            403,
        ),
        (
            &agent_key,
            a2("task.started", json!({"task_id": "a2", "agent_id": "w9"})),
            403,
        ),
        (
            &agent_key,
            body(
                "agent.heartbeat",
                "agent/w1",
                "alice",
                json!({"agent_id": "w1"}),
            ),
            202,
        ),
    ];
    for (key, envelope, status) in cases {
        assert_eq!(
            post_as(&node, key, envelope.clone()).await,
            status,
            "{envelope}"
        );
    }
    assert_eq!(
        alice.get("a2").await.unwrap().state,
        "pending",
        "nothing reached a2"
    );

    // A dependency made straight on the bus on another user's task hears nothing of it.
    let steal = body(
        "task.created",
        "task/steal",
        "bob",
        serde_json::json!({"task_id": "steal", "title": "steal", "spec": "x",
                           "depends_on": [{"task_id": "a3", "type": "input", "contract_key": "out"}]}),
    );
    assert_eq!(post_as(&node, &b_key, steal).await, 202);
    bob.wait_task("steal", "blocked", |t| t.state == "blocked")
        .await;
    let fair = create("a-after", vec![dependency("a3", "input", "out")]);
    alice.tasks.create_task(alice.req(fair)).await.unwrap();
    let _worker = Worker::start(&node, "w1", &agent_key, ECHO);
    alice
        .wait_task("a-after", "done with a3's value", |t| t.state == "done")
        .await;
    let steal = bob.get("steal").await.unwrap();
    assert_eq!(
        (steal.state.as_str(), steal.blocked_reason.as_str()),
        ("blocked", "waiting for `a3`")
    );
    assert!(
        steal.inputs.as_ref().is_none_or(|i| i.fields.is_empty()),
        "{:?}",
        steal.inputs
    );

    // A revoked key is refused from then on; revoking it again finds nothing.
    let created = admin
        .keys
        .create_key(admin.req(CreateKeyRequest {
            role: "user".into(),
            user: "carol".into(),
            agent_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let mut carol = Caller::new(node.grpc, &created.key).await;
    assert!(carol.all().await.is_empty(), "carol's key works");
    let revoke = || {
        admin.req(RevokeKeyRequest {
            key_id: created.key_id.clone(),
        })
    };
    let mut keys = admin.keys.clone();
    assert!(
        keys.revoke_key(revoke())
            .await
            .unwrap()
            .into_inner()
            .revoked
    );
    assert!(
        !keys
            .revoke_key(revoke())
            .await
            .unwrap()
            .into_inner()
            .revoked
    );
    assert_eq!(
        carol.get("a0").await.unwrap_err().code(),
        Code::Unauthenticated
    );
}
