//! A real `switchyard` process: an agent registers, a task runs its course, a notification is
//! recorded, and everything is read back through real HTTP and gRPC clients.

use schemas::proto::GetSupervisionTreeRequest;
use serde_json::json;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::harness::*;

/// The services a reflection client of the given version lists.
macro_rules! reflected_services {
    ($version:ident, $url:expr) => {{
        use tonic_reflection::pb::$version::*;
        let mut client = server_reflection_client::ServerReflectionClient::new(channel($url).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut answers = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        let Some(server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            answer.message_response
        else {
            panic!("{answer:?}")
        };
        list.service
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<String>>()
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_its_course_over_http_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::start(dir.path()).await;
    let mut c = node.client().await;

    assert_eq!(c.post(&agent_registered("e1", "a1", 2)).await, Some(202));
    assert_eq!(c.post(&task_created("e2", "t1")).await, Some(202));
    let task = c.wait_task("t1", |t| t.state == "assigned").await;
    assert_eq!(
        (
            task.agent_id.as_str(),
            task.user.as_str(),
            task.title.as_str()
        ),
        ("a1", "u1", "title t1")
    );
    assert_eq!(c.post(&task_started("e3", "t1", "a1")).await, Some(202));
    c.wait_task("t1", |t| t.state == "running").await;
    assert_eq!(c.post(&task_completed("e4", "t1")).await, Some(202));
    let task = c.wait_task("t1", |t| t.state == "done").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&task.result_json).unwrap(),
        json!({"ok": true})
    );

    let store = state_store(dir.path()).await;
    let notifications = store.notifications(None).await.unwrap();
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    assert_eq!(
        (
            notifications[0].subject.as_str(),
            notifications[0].dedupe_key.as_str()
        ),
        ("task t1 done", "task/t1/finished/1")
    );

    // Resent events (same ids) change nothing.
    for resent in [
        task_created("e2", "t1"),
        task_completed("e4", "t1"),
        agent_registered("e1", "a1", 2),
    ] {
        assert_eq!(c.post(&resent).await, Some(202));
    }
    // A marker event behind the resends on the same key shows they were all consumed.
    assert_eq!(c.post(&task_created("e5", "t2")).await, Some(202));
    c.wait_task("t2", |t| t.state == "assigned").await;
    assert_eq!(c.task("t1").await.unwrap().state, "done");
    assert_eq!(store.notifications(None).await.unwrap().len(), 1);

    // Reads: not found, filters, pagination.
    assert_eq!(c.task("nope").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(c.all_tasks(Some("done")).await.len(), 1);
    assert_eq!(c.all_tasks(None).await.len(), 2);
    let bad_state = c.authed(schemas::proto::ListTasksRequest {
        state: Some("sleeping".into()),
        ..Default::default()
    });
    assert_eq!(
        c.tasks.list_tasks(bad_state).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // The tree of DESIGN §4, live.
    let root = c.tree().await.unwrap();
    let mut names: Vec<_> = root.children.iter().map(|n| n.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "agents",
            "cluster",
            "conversations",
            "ingress",
            "integrations",
            "notifier",
            "orchestrator",
            "servers"
        ]
    );
    assert!(
        root.children
            .iter()
            .all(|n| n.status == "running" && n.restart_count == 0),
        "{root:?}"
    );
    let orchestrator = root
        .children
        .iter()
        .find(|n| n.name == "orchestrator")
        .unwrap();
    let mut under: Vec<&str> = orchestrator
        .children
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    under.sort();
    assert_eq!(
        under,
        ["automations", "scheduler", "tasks"],
        "tasks live under the orchestrator (DESIGN §4)"
    );
    let tasks = orchestrator
        .children
        .iter()
        .find(|n| n.name == "tasks")
        .unwrap();
    // Below `tasks`, a shard per partition holds a mailbox per live task.
    assert!(
        tasks
            .children
            .iter()
            .flat_map(|shard| shard.children.iter())
            .any(|n| n.name == "t1"),
        "a live mailbox per task: {tasks:?}"
    );

    node.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_required_except_for_probes_health_and_reflection() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::start(dir.path()).await;
    let mut c = node.client().await;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("admin.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let body = serde_json::to_vec(&task_created("x1", "t1")).unwrap();
    for token in [None, Some("sy_wrong")] {
        let (status, answer) = c
            .post_raw("application/json", body.clone(), token)
            .await
            .unwrap();
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("missing or invalid bearer key"))
        );
    }
    let anonymous = tonic::Request::new(schemas::proto::GetTaskRequest {
        task_id: "t1".into(),
    });
    assert_eq!(
        c.tasks.get_task(anonymous).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let tree = c
        .cluster
        .get_supervision_tree(GetSupervisionTreeRequest {})
        .await;
    assert_eq!(tree.unwrap_err().code(), Code::Unauthenticated);

    assert_eq!(
        reqwest::get(format!("http://127.0.0.1:{}/health", node.http))
            .await
            .unwrap()
            .status(),
        200
    );
    let mut health = HealthClient::new(channel(&c.grpc_url).await);
    for service in ["", "switchyard.v1.Tasks", "switchyard.v1.Cluster"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }
    assert!(reflected_services!(v1, &c.grpc_url).contains(&"switchyard.v1.Tasks".to_owned()));
    assert!(
        reflected_services!(v1alpha, &c.grpc_url).contains(&"switchyard.v1.Cluster".to_owned())
    );
    node.terminate();
}

async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A node whose idle mailboxes passivate after a second, with task t1 assigned to agent a1 and
/// t1's mailbox, live once, passivated.
async fn t1_assigned_and_passivated(dir: &std::path::Path) -> (Proc, Client) {
    let node = Proc::start_with_env(dir, &[("SWITCHYARD_PASSIVATE_AFTER_SECS", "1")]).await;
    let mut c = node.client().await;
    assert_eq!(c.post(&agent_registered("e1", "a1", 2)).await, Some(202));
    assert_eq!(c.post(&task_created("e2", "t1")).await, Some(202));
    c.wait_task("t1", |t| t.state == "assigned").await;
    assert!(c.task_mailboxes().await.contains("t1"));
    c.wait_mailboxes(|live| !live.contains("t1")).await;
    (node, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_mailbox_passivates_and_comes_back_with_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let (node, mut c) = t1_assigned_and_passivated(dir.path()).await;

    // Started only if the mailbox, activated again, knows the task is assigned to a1.
    assert_eq!(c.post(&task_started("e3", "t1", "a1")).await, Some(202));
    let task = c.wait_task("t1", |t| t.state == "running").await;
    assert_eq!(task.agent_id, "a1");
    assert!(c.task_mailboxes().await.contains("t1"));
    node.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_task_answers_the_same_from_a_live_mailbox_and_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::start_with_env(dir.path(), &[("SWITCHYARD_PASSIVATE_AFTER_SECS", "1")]).await;
    let mut c = node.client().await;

    // Upstreams named out of order, a result with numbers and nesting handed over as input,
    // requirements, contracts and a preferred agent: whatever a store round trip could change.
    assert_eq!(c.post(&agent_registered("e1", "a1", 4)).await, Some(202));
    for (id, task) in [("e2", "up-b"), ("e3", "up-a")] {
        let mut created = task_created(id, task);
        created["body"]["contracts"] = json!(["out"]);
        assert_eq!(c.post(&created).await, Some(202));
    }
    let downstream = event(
        "e4",
        "task.created",
        "task/down",
        json!({
            "task_id": "down", "title": "down", "spec": "run it", "priority": "high",
            "requirements": { "languages": ["rust", "go"], "tools": ["cargo"] },
            "depends_on": [
                { "task_id": "up-b", "type": "input", "contract_key": "out" },
                { "task_id": "up-a", "type": "blocks" }
            ],
            "contracts": ["report", "log"],
            "preferred_agent": "a9",
            "max_attempts": 3
        }),
    );
    assert_eq!(c.post(&downstream).await, Some(202));
    c.wait_task("up-b", |t| t.state == "assigned").await;
    assert_eq!(c.post(&task_started("e5", "up-b", "a1")).await, Some(202));
    let mut completed = task_completed("e6", "up-b");
    completed["body"]["result"] = json!({ "out": { "n": 1.5, "list": [1, "two", null] } });
    assert_eq!(c.post(&completed).await, Some(202));
    c.wait_task("down", |t| {
        !t.inputs.as_ref().is_none_or(|i| i.fields.is_empty())
    })
    .await;

    let live = (c.task("down").await.unwrap(), c.task("up-b").await.unwrap());
    c.wait_mailboxes(|live| live.is_empty()).await;
    let stored = (c.task("down").await.unwrap(), c.task("up-b").await.unwrap());
    assert_eq!(live, stored);
    node.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_create_does_not_hide_the_task_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let (node, mut c) = t1_assigned_and_passivated(dir.path()).await;

    // A create of the stored t1 that the domain refuses (it depends on itself) activates t1's
    // mailbox without loading t1: the mailbox must not take t1 for missing afterwards.
    let mut again = task_created("e3", "t1");
    again["body"]["depends_on"] = json!([{ "task_id": "t1", "type": "blocks" }]);
    assert_eq!(c.post(&again).await, Some(202));
    assert_eq!(c.post(&task_started("e4", "t1", "a1")).await, Some(202));
    c.wait_task("t1", |t| t.state == "running").await;
    node.terminate();
}
