//! Actors of a running node that panic are restarted, and their supervisors escalate when the
//! restart intensity is exceeded; the counts show in `Cluster.GetSupervisionTree` over gRPC.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use schemas::proto::ActorNode;
use supervisor::{
    Backoff, ChildSpec, Restart, Strategy, SupervisorActor, SupervisorArgs, SupervisorConfig,
    SupervisorMsg,
};

use crate::harness::*;

#[derive(Clone)]
struct Crashy;

impl Actor for Crashy {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, _: ActorRef<()>, _: (), _: &mut ()) -> Result<(), ActorProcessingErr> {
        panic!("crashy was told to crash")
    }
}

fn find<'a>(node: &'a ActorNode, path: &[&str]) -> Option<&'a ActorNode> {
    match path.split_first() {
        None => Some(node),
        Some((first, rest)) => find(node.children.iter().find(|c| c.name == *first)?, rest),
    }
}

/// Polls the tree over gRPC until the actor at `path` runs with `restarts` restarts.
async fn wait_restarts(c: &mut Client, path: &[&str], restarts: u32) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // While the servers restart, the call itself fails: that is "not yet".
        let root = c.tree().await;
        let seen = root
            .ok()
            .and_then(|root| find(&root, path).map(|n| (n.status.clone(), n.restart_count)));
        if seen == Some(("running".into(), restarts)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path:?}: {seen:?}, wanted {restarts} restarts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn crash(path: &str) {
    let cell = ractor::registry::where_is(path).unwrap_or_else(|| panic!("{path} is not running"));
    ActorRef::<()>::from(cell).send_message(()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_are_restarted_and_escalate_past_the_intensity() {
    let _one_at_a_time = IN_PROCESS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, http, grpc) = in_process(dir.path()).await;
    let mut c = Client::new(dir.path(), http, grpc).await;

    // A group under the node's `tasks` supervisor that tolerates one restart per minute.
    let tasks = ActorRef::<SupervisorMsg>::from(
        ractor::registry::where_is("node/orchestrator/tasks").unwrap(),
    );
    let tree = node.tree().clone();
    let group = ChildSpec::actor("group", Restart::Permanent, SupervisorActor, move || {
        SupervisorArgs {
            path: "node/orchestrator/tasks/group".into(),
            tree: tree.clone(),
            config: SupervisorConfig {
                strategy: Strategy::OneForOne,
                max_restarts: 1,
                within: Duration::from_secs(60),
                backoff: Backoff {
                    initial: Duration::from_millis(10),
                    max: Duration::from_millis(50),
                },
            },
            children: vec![ChildSpec::actor(
                "crashy",
                Restart::Permanent,
                Crashy,
                || (),
            )],
        }
    });
    supervisor::start_child(&tasks, group, Duration::from_secs(5))
        .await
        .unwrap();

    crash("node/orchestrator/tasks/group/crashy");
    wait_restarts(&mut c, &["orchestrator", "tasks", "group", "crashy"], 1).await;
    // The second panic within the window exceeds the group's intensity: it fails to `tasks`,
    // which restarts the group (with a fresh crashy).
    crash("node/orchestrator/tasks/group/crashy");
    wait_restarts(&mut c, &["orchestrator", "tasks", "group"], 1).await;
    wait_restarts(&mut c, &["orchestrator", "tasks", "group", "crashy"], 0).await;
    wait_restarts(&mut c, &["orchestrator", "tasks"], 0).await;

    // A node actor that stops abnormally is restarted the same way.
    ractor::registry::where_is("node/orchestrator/scheduler")
        .unwrap()
        .stop(Some("test".into()));
    wait_restarts(&mut c, &["orchestrator", "scheduler"], 1).await;
    // ... and keeps working: a task still gets assigned.
    assert_eq!(c.post(&agent_registered("e1", "a1", 1)).await, Some(202));
    assert_eq!(c.post(&task_created("e2", "t1")).await, Some(202));
    c.wait_task("t1", |t| t.state == "assigned").await;

    // Killed servers free their ports and come back on them.
    ractor::registry::where_is("node/servers").unwrap().kill();
    wait_restarts(&mut c, &["servers"], 1).await;
    assert!(ready(http).await, "HTTP serves again after the restart");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_root_is_reported_so_the_process_can_exit() {
    let _one_at_a_time = IN_PROCESS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut node, _, _) = in_process(dir.path()).await;
    let failed = tokio::time::timeout(Duration::from_millis(200), node.failed()).await;
    assert!(failed.is_err(), "a healthy node has not failed");
    ractor::registry::where_is("node").unwrap().kill();
    tokio::time::timeout(WAIT, node.failed())
        .await
        .expect("the root's death is noticed");
}
