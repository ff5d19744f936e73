//! Supervisor behaviour with real ractor actors: restarts, strategies, intensity, dynamic children.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, ActorStatus as Ractor};
use supervisor::*;

/// A child that panics, fails or stops on request.
#[derive(Clone)]
struct Worker;

enum WorkerMsg {
    Panic,
    Fail,
    Stop,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<WorkerMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Panic => panic!("worker told to panic"),
            WorkerMsg::Fail => Err("worker told to fail".into()),
            WorkerMsg::Stop => {
                me.stop(None);
                Ok(())
            }
        }
    }
}

fn worker(name: &str, restart: Restart) -> ChildSpec {
    ChildSpec::actor(name, restart, Worker, || ())
}

fn fast(strategy: Strategy, max_restarts: u32) -> SupervisorConfig {
    SupervisorConfig {
        strategy,
        max_restarts,
        within: Duration::from_secs(10),
        backoff: Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
        },
    }
}

struct Harness {
    tree: Tree,
    root: String,
    sup: ActorRef<SupervisorMsg>,
}

impl Harness {
    async fn start(root: &str, config: SupervisorConfig, children: Vec<ChildSpec>) -> Harness {
        let tree = Tree::default();
        let args = SupervisorArgs {
            path: root.to_owned(),
            tree: tree.clone(),
            config,
            children,
        };
        let (sup, _) = Actor::spawn(Some(root.to_owned()), SupervisorActor, args)
            .await
            .unwrap();
        Harness {
            tree,
            root: root.to_owned(),
            sup,
        }
    }

    fn send(&self, child: &str, msg: WorkerMsg) {
        let cell = ractor::registry::where_is(format!("{}/{child}", self.root))
            .expect("child is registered");
        ActorRef::<WorkerMsg>::from(cell).send_message(msg).unwrap();
    }

    /// (status, restarts) of each child of `path`, polled until `want` holds or 5 s pass.
    async fn wait(
        &self,
        path: &str,
        want: impl Fn(&[(String, &str, u32)]) -> bool,
    ) -> Vec<(String, &'static str, u32)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let node = self.tree.snapshot(path);
            let seen: Vec<_> = node
                .map(|n| {
                    n.children
                        .into_iter()
                        .map(|c| (c.name, c.status.as_str(), c.restarts))
                        .collect()
                })
                .unwrap_or_default();
            if want(&seen) || tokio::time::Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Harness {
    /// Waits until every child of `path` runs with these restart counts, or fails.
    async fn expect_running(&self, path: &str, restarts: &[u32]) {
        let seen = self.wait(path, |s| all_running(s, restarts)).await;
        assert!(all_running(&seen, restarts), "{path}: {seen:?}");
    }
}

fn all_running(seen: &[(String, &str, u32)], restarts: &[u32]) -> bool {
    seen.len() == restarts.len()
        && seen
            .iter()
            .zip(restarts)
            .all(|((_, s, r), want)| *s == "running" && r == want)
}

#[tokio::test]
async fn a_panicking_child_is_restarted_and_counted() {
    let h = Harness::start(
        "t1",
        fast(Strategy::OneForOne, 5),
        vec![
            worker("a", Restart::Permanent),
            worker("b", Restart::Permanent),
        ],
    )
    .await;
    h.send("a", WorkerMsg::Panic);
    h.expect_running("t1", &[1, 0]).await;
    h.send("a", WorkerMsg::Fail);
    h.expect_running("t1", &[2, 0]).await;
    h.sup.stop(None);
}

/// Three permanent workers under `strategy`; `b` panics; each then has `restarts`.
async fn check_strategy(root: &str, strategy: Strategy, restarts: &[u32]) {
    let workers = ["a", "b", "c"].map(|name| worker(name, Restart::Permanent));
    let h = Harness::start(root, fast(strategy, 5), workers.to_vec()).await;
    h.send("b", WorkerMsg::Panic);
    h.expect_running(root, restarts).await;
    h.sup.stop(None);
}

#[tokio::test]
async fn one_for_all_restarts_every_sibling() {
    check_strategy("t2", Strategy::OneForAll, &[1, 1, 1]).await;
}

#[tokio::test]
async fn rest_for_one_restarts_the_child_and_those_after_it() {
    check_strategy("t3", Strategy::RestForOne, &[0, 1, 1]).await;
}

#[tokio::test]
async fn restart_policies_decide_who_comes_back() {
    let h = Harness::start(
        "t4",
        fast(Strategy::OneForOne, 5),
        vec![
            worker("perm", Restart::Permanent),
            worker("trans", Restart::Transient),
            worker("temp", Restart::Temporary),
        ],
    )
    .await;
    h.send("perm", WorkerMsg::Stop);
    h.send("trans", WorkerMsg::Stop);
    h.send("temp", WorkerMsg::Panic);
    let want = |s: &[(String, &str, u32)]| {
        s == [
            ("perm".into(), "running", 1),
            ("temp".into(), "failed", 0),
            ("trans".into(), "stopped", 0),
        ]
    };
    let seen = h.wait("t4", want).await;
    assert!(want(&seen), "{seen:?}");
    h.sup.stop(None);
}

#[tokio::test]
async fn exceeding_the_intensity_escalates_to_the_parent() {
    let tree = Tree::default();
    let inner_tree = tree.clone();
    let inner = ChildSpec::actor("inner", Restart::Permanent, SupervisorActor, move || {
        SupervisorArgs {
            path: "t5/inner".into(),
            tree: inner_tree.clone(),
            config: fast(Strategy::OneForOne, 2),
            children: vec![worker("w", Restart::Permanent)],
        }
    });
    let args = SupervisorArgs {
        path: "t5".into(),
        tree: tree.clone(),
        config: fast(Strategy::OneForOne, 5),
        children: vec![inner],
    };
    let (root, _) = Actor::spawn(Some("t5".into()), SupervisorActor, args)
        .await
        .unwrap();
    let h = Harness {
        tree,
        root: "t5/inner".into(),
        sup: root.clone(),
    };
    for restarts in 1..=2 {
        h.send("w", WorkerMsg::Panic);
        h.expect_running("t5/inner", &[restarts]).await;
    }
    // The third failure within the window is one too many for `inner`: it fails to `t5`,
    // which restarts it with a fresh worker.
    h.send("w", WorkerMsg::Panic);
    h.expect_running("t5", &[1]).await;
    h.expect_running("t5/inner", &[0]).await;
    assert_eq!(root.get_status(), Ractor::Running);
    root.stop(None);
}

#[tokio::test]
async fn dynamic_children_start_and_terminate_on_request() {
    let h = Harness::start("t6", fast(Strategy::OneForOne, 5), vec![]).await;
    let timeout = Duration::from_secs(2);
    start_child(&h.sup, worker("x", Restart::Transient), timeout)
        .await
        .unwrap();
    let duplicate = start_child(&h.sup, worker("x", Restart::Transient), timeout).await;
    assert!(
        matches!(duplicate, Err(SupervisorError::Duplicate(_))),
        "{duplicate:?}"
    );
    assert!(all_running(&h.wait("t6", |s| s.len() == 1).await, &[0]));
    terminate_child(&h.sup, "x", timeout).await.unwrap();
    assert!(h.wait("t6", |s| s.is_empty()).await.is_empty());
    assert!(matches!(
        terminate_child(&h.sup, "x", timeout).await,
        Err(SupervisorError::NotFound(_))
    ));
    // A dynamic transient child that stops normally is forgotten.
    start_child(&h.sup, worker("y", Restart::Transient), timeout)
        .await
        .unwrap();
    h.send("y", WorkerMsg::Stop);
    assert!(h.wait("t6", |s| s.is_empty()).await.is_empty());
    h.sup.stop(None);
}
