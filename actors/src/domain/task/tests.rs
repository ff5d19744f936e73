use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::domain::DependencyKind;

fn new_task(id: &str) -> NewTask {
    NewTask {
        task_id: id.into(),
        title: "compile".into(),
        spec: "cargo build".into(),
        priority: Priority::Normal,
        requirements: Capabilities::default(),
        dependencies: Vec::new(),
        contracts: Vec::new(),
        require_plan_approval: false,
        preferred_agent: None,
        max_attempts: None,
    }
}

fn dep(upstream: &str, kind: DependencyKind, key: Option<&str>) -> Dependency {
    Dependency {
        upstream: upstream.into(),
        kind,
        contract_key: key.map(Into::into),
        state: DependencyState::Waiting,
    }
}

fn map(pairs: &[(&str, Value)]) -> Map {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Applies `commands` in order from nothing; the final step, or the first refusal.
fn run(new: NewTask, commands: &[Command]) -> Result<TaskStep, String> {
    let mut last = step(None, "u1", &Command::Create(new), 0).map_err(|r| r.0)?;
    for (i, command) in commands.iter().enumerate() {
        last = step(Some(&last.task), "u1", command, i as u64 + 1).map_err(|r| r.0)?;
    }
    Ok(last)
}

fn assign(agent: &str) -> Command {
    Command::Assign {
        agent_id: agent.into(),
    }
}

fn start(agent: &str) -> Command {
    Command::Start {
        agent_id: agent.into(),
    }
}

fn complete(pairs: &[(&str, Value)]) -> Command {
    Command::Complete {
        agent_id: None,
        result: map(pairs),
    }
}

#[test]
fn the_happy_path_ends_done_and_tells_dependents_and_agents() {
    let s = run(
        new_task("t1"),
        &[assign("a1"), start("a1"), complete(&[("ok", json!(true))])],
    )
    .unwrap();
    assert_eq!(
        (s.task.state, s.task.agent_id.as_deref(), s.task.attempts),
        (TaskState::Done, Some("a1"), 1)
    );
    assert_eq!(s.notifications[0].subject, "task t1 done");
    assert!(
        matches!(&s.effects[0], Effect::Cascade(Finished::Completed(r)) if r["ok"] == json!(true))
    );
    assert!(
        s.effects.contains(&Effect::Assign),
        "the agent has room again"
    );
    assert_eq!(
        s.task.updated_at, 3,
        "times come from the commands, not a clock"
    );
}

#[test]
fn plan_mode_goes_through_review() {
    let mut new = new_task("t1");
    new.require_plan_approval = true;
    let plan = |p: &str| Command::SubmitPlan {
        agent_id: "a1".into(),
        plan: p.into(),
    };
    let rejected = Command::RejectPlan {
        feedback: "smaller".into(),
    };
    let s = run(
        new.clone(),
        &[assign("a1"), start("a1"), plan("v1"), rejected],
    )
    .unwrap();
    assert_eq!(
        (s.task.state, s.task.note.as_deref()),
        (TaskState::Planning, Some("smaller"))
    );
    let s = run(
        new,
        &[assign("a1"), start("a1"), plan("v1"), Command::ApprovePlan],
    )
    .unwrap();
    assert_eq!(s.task.state, TaskState::Running);
    assert_eq!(s.effects, [Effect::NotifyAgent("a1".into())]);
}

#[test]
fn interventions_and_reviews() {
    let help = Command::RequestHelp {
        agent_id: "a1".into(),
        question: "which db?".into(),
    };
    let answer = Command::Answer {
        answer: "postgres".into(),
    };
    let s = run(new_task("t1"), &[assign("a1"), start("a1"), help.clone()]).unwrap();
    assert_eq!(
        (s.task.state, s.notifications.len()),
        (TaskState::NeedsHuman, 1)
    );
    let s = run(new_task("t1"), &[assign("a1"), start("a1"), help, answer]).unwrap();
    assert_eq!(
        (s.task.state, s.task.note.as_deref()),
        (TaskState::Running, Some("postgres"))
    );
    let review = Command::RequestReview {
        agent_id: "a1".into(),
        result: map(&[("pr", json!(7))]),
    };
    let revise = Command::RequestRevision {
        feedback: "tests".into(),
    };
    let s = run(
        new_task("t1"),
        &[assign("a1"), start("a1"), review.clone(), revise],
    )
    .unwrap();
    assert_eq!(s.task.state, TaskState::Running);
    let s = run(
        new_task("t1"),
        &[assign("a1"), start("a1"), review, Command::Approve],
    )
    .unwrap();
    assert_eq!(
        (s.task.state, s.task.result.unwrap()["pr"].clone()),
        (TaskState::Done, json!(7))
    );
}

#[test]
fn a_task_requeued_after_its_last_attempt_fails_instead() {
    let requeue = Command::Requeue {
        agent_id: "a1".into(),
        reason: "its agent went offline".into(),
    };
    let mut new = new_task("t1");
    new.max_attempts = Some(2);
    let once = [assign("a1"), start("a1"), requeue.clone()];
    let s = run(new.clone(), &once).unwrap();
    assert_eq!((s.task.state, s.task.attempts), (TaskState::Pending, 1));
    let twice = [&once[..], &once[..]].concat();
    let s = run(new, &twice).unwrap();
    assert_eq!((s.task.state, s.task.attempts), (TaskState::Failed, 2));
    assert_eq!(
        s.task.error.as_deref(),
        Some("its agent went offline, after all 2 attempts were started")
    );
    assert!(matches!(
        &s.effects[0],
        Effect::Cascade(Finished::Failed(_))
    ));
}

#[test]
fn an_agent_reporting_completion_must_hold_the_task() {
    let report = |agent: &str| Command::Complete {
        agent_id: Some(agent.into()),
        result: Map::new(),
    };
    let running = [assign("a1"), start("a1")];
    assert_eq!(
        run(new_task("t1"), &[&running[..], &[report("a2")]].concat()).unwrap_err(),
        "task.completed: task `t1` is assigned to `a1`, not `a2`"
    );
    let s = run(new_task("t1"), &[&running[..], &[report("a1")]].concat()).unwrap();
    assert_eq!(s.task.state, TaskState::Done);
}

#[test]
fn cancel_from_anywhere_but_the_end_and_retry_within_attempts() {
    let cancel = Command::Cancel {
        reason: Some("not needed".into()),
    };
    for path in [vec![], vec![assign("a1")], vec![assign("a1"), start("a1")]] {
        let mut commands = path.clone();
        commands.push(cancel.clone());
        assert_eq!(
            run(new_task("t1"), &commands).unwrap().task.state,
            TaskState::Cancelled
        );
    }
    let done = [assign("a1"), start("a1"), complete(&[]), cancel];
    assert_eq!(
        run(new_task("t1"), &done).unwrap_err(),
        "task.cancelled: task `t1` is done, which is final"
    );
    let fail = Command::Fail {
        agent_id: None,
        error: "exit 1".into(),
    };
    let mut new = new_task("t1");
    new.max_attempts = Some(2);
    let once = [assign("a1"), start("a1"), fail.clone(), Command::Retry];
    let s = run(new.clone(), &once).unwrap();
    assert_eq!(
        (s.task.state, s.task.agent_id.clone(), s.task.generation),
        (TaskState::Pending, None, 2)
    );
    let twice = [
        &once[..],
        &[assign("a2"), start("a2"), fail, Command::Retry],
    ]
    .concat();
    assert_eq!(
        run(new, &twice).unwrap_err(),
        "task.retried: task `t1` used all 2 attempts"
    );
}

#[test]
fn refusals_name_the_current_and_the_attempted() {
    assert_eq!(
        run(new_task("t1"), &[start("a1")]).unwrap_err(),
        "task.started: task `t1` is pending, but must be assigned"
    );
    assert_eq!(
        run(new_task("t1"), &[assign("a1"), start("a2")]).unwrap_err(),
        "task.started: task `t1` is assigned to `a1`, not `a2`"
    );
    assert_eq!(
        run(new_task("t1"), &[Command::Create(new_task("t1"))]).unwrap_err(),
        "task.created: task `t1` already exists"
    );
    assert_eq!(
        step(None, "u1", &assign("a1"), 0).unwrap_err().0,
        "task.assigned: no such task"
    );
    let foreign = step(
        Some(&run(new_task("t1"), &[]).unwrap().task),
        "u2",
        &assign("a1"),
        1,
    );
    assert!(foreign.unwrap_err().0.contains("another user"));
}

#[test]
fn a_promised_contract_is_required_at_completion() {
    let mut new = new_task("t1");
    new.contracts = vec!["api_schema".into()];
    let s = run(new.clone(), &[assign("a1"), start("a1"), complete(&[])]);
    assert_eq!(
        s.unwrap_err(),
        "task.completed: task `t1` promised contract `api_schema`, which the result lacks"
    );
    let s = run(
        new,
        &[
            assign("a1"),
            start("a1"),
            complete(&[("api_schema", json!({"v": 1}))]),
        ],
    );
    assert_eq!(s.unwrap().task.state, TaskState::Done);
}

#[test]
fn dependencies_block_until_resolved_and_hand_over_inputs() {
    let mut new = new_task("b");
    new.dependencies = vec![
        dep("a", DependencyKind::Input, Some("schema")),
        dep("c", DependencyKind::Blocks, None),
        dep("r", DependencyKind::Related, None),
    ];
    let created = run(new.clone(), &[]).unwrap();
    assert_eq!(created.task.state, TaskState::Blocked);
    assert_eq!(
        created.task.blocked_reason.as_deref(),
        Some("waiting for `a`, `c`")
    );
    assert_eq!(
        created.effects,
        [Effect::CheckUpstreams],
        "no assignment while blocked"
    );
    let resolve = |u: &str, v: Option<Value>| Command::ResolveDependency {
        upstream: u.into(),
        value: v,
    };
    let s = run(
        new.clone(),
        &[resolve("a", Some(json!({"v": 2}))), resolve("c", None)],
    )
    .unwrap();
    assert_eq!(
        (s.task.state, s.task.inputs["schema"].clone()),
        (TaskState::Pending, json!({"v": 2}))
    );
    assert_eq!(s.effects, [Effect::Assign]);
    // An upstream that completed without the contract leaves it visibly blocked.
    let s = run(new.clone(), &[resolve("a", None), resolve("c", None)]).unwrap();
    assert_eq!(s.task.state, TaskState::Blocked);
    assert_eq!(
        s.task.blocked_reason.as_deref(),
        Some("upstream `a` completed without contract `schema`")
    );
    // A failed upstream too; its retry and completion unblock it after all.
    let failed = Command::FailDependency {
        upstream: "c".into(),
        reason: "failed: exit 1".into(),
    };
    let s = run(new.clone(), &[resolve("a", Some(json!(1))), failed.clone()]).unwrap();
    assert_eq!(
        s.task.blocked_reason.as_deref(),
        Some("upstream `c` failed: exit 1")
    );
    let s = run(
        new,
        &[resolve("a", Some(json!(1))), failed, resolve("c", None)],
    )
    .unwrap();
    assert_eq!(s.task.state, TaskState::Pending);
}

#[test]
fn a_new_dependency_blocks_a_pending_task() {
    let add = |u: &str| Command::AddDependency(dep(u, DependencyKind::Blocks, None));
    let s = run(new_task("t1"), &[add("t0")]).unwrap();
    assert_eq!(
        (s.task.state, s.effects.clone()),
        (TaskState::Blocked, vec![Effect::CheckUpstreams])
    );
    assert_eq!(
        run(new_task("t1"), &[add("t1")]).unwrap_err(),
        "task.dependency_added: task `t1` cannot depend on itself"
    );
    assert_eq!(
        run(new_task("t1"), &[add("t0"), add("t0")]).unwrap_err(),
        "task.dependency_added: task `t1` already depends on `t0`"
    );
    assert!(
        run(new_task("t1"), &[assign("a1"), add("t0")]).is_err(),
        "too late once assigned"
    );
}

#[test]
fn a_requeue_frees_the_task_only_from_its_agent() {
    let requeue = |a: &str| Command::Requeue {
        agent_id: a.into(),
        reason: "agent offline".into(),
    };
    let s = run(new_task("t1"), &[assign("a1"), start("a1"), requeue("a1")]).unwrap();
    assert_eq!(
        (s.task.state, s.task.agent_id.clone()),
        (TaskState::Pending, None)
    );
    assert!(run(new_task("t1"), &[assign("a1"), requeue("a2")]).is_err());
}

#[test]
fn an_upstream_s_end_resolves_or_fails_its_dependents() {
    let input = dep("a", DependencyKind::Input, Some("k"));
    let done = Finished::Completed(map(&[("k", json!(5))]));
    assert_eq!(
        resolution(&input, "a", &done),
        Command::ResolveDependency {
            upstream: "a".into(),
            value: Some(json!(5))
        }
    );
    assert_eq!(
        resolution(&input, "a", &Finished::Cancelled),
        Command::FailDependency {
            upstream: "a".into(),
            reason: "was cancelled".into()
        }
    );
}

#[test]
fn state_names_round_trip() {
    for s in TaskState::ALL {
        assert_eq!(TaskState::parse(s.as_str()), Some(s));
    }
}

/// Every transition of seed 003's table, with this core's additions (blocked, requeue, retry,
/// cancel); `(from, command, to)`.
fn allowed(from: TaskState, command: &Command, to: TaskState) -> bool {
    use TaskState::*;
    if from == to {
        // Commands that record without moving: dependency news, output.
        return matches!(
            command,
            Command::ResolveDependency { .. }
                | Command::FailDependency { .. }
                | Command::Output { .. }
                | Command::AddDependency(_)
        );
    }
    match (from, command, to) {
        (_, Command::Cancel { .. }, Cancelled) => !from.is_final(),
        (Pending, Command::Assign { .. }, Assigned)
        | (Assigned, Command::Start { .. }, Running | Planning)
        | (Planning, Command::SubmitPlan { .. }, PlanReview)
        | (PlanReview, Command::ApprovePlan, Running)
        | (PlanReview, Command::RejectPlan { .. }, Planning)
        | (Running, Command::RequestHelp { .. }, NeedsHuman)
        | (NeedsHuman, Command::Answer { .. }, Running)
        | (Running, Command::RequestReview { .. }, Review)
        | (Review, Command::Approve, Done)
        | (Review, Command::RequestRevision { .. }, Running)
        | (Running, Command::Complete { .. }, Done)
        | (Assigned | Running | Planning, Command::Fail { .. }, Failed)
        | (Failed, Command::Retry, Pending)
        | (Assigned | Running | Planning, Command::Requeue { .. }, Pending | Failed)
        | (Pending, Command::AddDependency(_), Blocked)
        | (Blocked, Command::ResolveDependency { .. }, Pending) => true,
        _ => false,
    }
}

/// Any command, most often one of a lifecycle (assign, start, requeue, fail, retry), so that
/// sequences use up attempts.
fn command() -> impl Strategy<Value = Command> {
    let lifecycle = prop_oneof![
        Just(assign("a1")),
        Just(start("a1")),
        Just(Command::Requeue {
            agent_id: "a1".into(),
            reason: "r".into()
        }),
        Just(Command::Fail {
            agent_id: Some("a1".into()),
            error: "e".into()
        }),
        Just(Command::Retry),
    ];
    prop_oneof![3 => lifecycle, 2 => any_command()]
}

fn any_command() -> impl Strategy<Value = Command> {
    let agent = prop_oneof![Just("a1".to_string()), Just("a2".to_string())];
    let upstream = prop_oneof![Just("u1".to_string()), Just("u2".to_string())];
    prop_oneof![
        agent
            .clone()
            .prop_map(|agent_id| Command::Assign { agent_id }),
        agent
            .clone()
            .prop_map(|agent_id| Command::Start { agent_id }),
        agent.clone().prop_map(|agent_id| Command::SubmitPlan {
            agent_id,
            plan: "p".into()
        }),
        Just(Command::ApprovePlan),
        Just(Command::RejectPlan {
            feedback: "f".into()
        }),
        agent.clone().prop_map(|agent_id| Command::RequestHelp {
            agent_id,
            question: "q".into()
        }),
        Just(Command::Answer { answer: "a".into() }),
        agent.clone().prop_map(|agent_id| Command::RequestReview {
            agent_id,
            result: Map::new()
        }),
        Just(Command::Approve),
        Just(Command::RequestRevision {
            feedback: "f".into()
        }),
        prop::option::of(agent.clone()).prop_map(|agent_id| Command::Complete {
            agent_id,
            result: Map::new()
        }),
        prop::option::of(agent.clone()).prop_map(|agent_id| Command::Fail {
            agent_id,
            error: "e".into()
        }),
        Just(Command::Cancel { reason: None }),
        Just(Command::Retry),
        agent.clone().prop_map(|agent_id| Command::Requeue {
            agent_id,
            reason: "r".into()
        }),
        upstream.clone().prop_map(|u| Command::AddDependency(dep(
            &u,
            DependencyKind::Blocks,
            None
        ))),
        upstream.clone().prop_map(|u| Command::ResolveDependency {
            upstream: u,
            value: None
        }),
        upstream.prop_map(|u| Command::FailDependency {
            upstream: u,
            reason: "r".into()
        }),
        agent.prop_map(|agent_id| Command::Output {
            agent_id,
            lines: vec!["line".into()]
        }),
    ]
}

proptest! {
    #[test]
    fn no_sequence_leaves_the_table_and_the_end_stays_the_end(
        plan in any::<bool>(),
        max_attempts in 1u32..4,
        commands in proptest::collection::vec(command(), 0..60),
    ) {
        let mut new = new_task("t1");
        new.require_plan_approval = plan;
        new.max_attempts = Some(max_attempts);
        let mut task = step(None, "u1", &Command::Create(new), 0).unwrap().task;
        for (i, command) in commands.iter().enumerate() {
            let Ok(next) = step(Some(&task), "u1", command, i as u64 + 1) else { continue };
            prop_assert!(
                allowed(task.state, command, next.task.state),
                "{:?} --{}--> {:?}", task.state, command.name(), next.task.state
            );
            prop_assert!(!task.state.is_final() || next.task.state == task.state, "left {:?}", task.state);
            prop_assert!(next.task.attempts <= next.task.max_attempts);
            // A resent command changes nothing more.
            if let Ok(again) = step(Some(&next.task), "u1", command, i as u64 + 1) {
                prop_assert_eq!(&again.task, &next.task, "{} applied twice", command.name());
            }
            task = next.task;
        }
    }
}
