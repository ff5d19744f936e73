//! `switchyard agent`: the reference worker. It links to a node over `switchyard.v1.Worker/Link`
//! with an agent's key, runs a shell command once per assigned task, streams the command's
//! output, and completes the task with its stdout (a JSON object becomes the result map;
//! anything else is `{"output": …}`) or fails it with the exit status. It reconnects with
//! backoff when the link drops, and reports what it is still running so the node requeues
//! only what it lost.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::domain::{Capabilities, Map, Value};
use anyhow::Context;
use schemas::proto::{
    self, Hello, NodeMessage, TaskLines, TaskRef, TaskResult, TaskText, WorkerMessage,
    node_message, worker_client::WorkerClient, worker_message,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Endpoint;

/// The longest value passed in an environment variable (Linux takes at most 128 KiB each).
const MAX_VARIABLE: usize = 64 * 1024;

/// Longest wait between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a worker runs with.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The node's gRPC address, e.g. `http://127.0.0.1:50051`.
    pub node: String,
    /// Display name of the agent.
    pub name: String,
    /// The agent's bearer key.
    pub token: String,
    /// The shell command run per task.
    pub exec: String,
    /// Tasks run at once, at most.
    pub max_concurrent: u32,
    /// What the agent offers.
    pub capabilities: Capabilities,
}

/// Reports waiting to be sent; they outlive a link, so a reconnect sends what the last one did not.
type Reports = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<WorkerMessage>>>;
/// The tasks being run now, each with the switch that stops its command.
type Running = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

fn report(kind: worker_message::Kind) -> WorkerMessage {
    WorkerMessage { kind: Some(kind) }
}

/// The first backoff, and the one after a link that worked.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Runs the worker until the process is stopped.
pub async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let reports: Reports = Arc::new(tokio::sync::Mutex::new(receiver));
    let running: Running = Arc::default();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let error = link(&config, &sender, &reports, &running, &mut backoff).await;
        tracing::warn!(error = format!("{error:#}"), node = %config.node, "link down; reconnecting");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One link: hello, then assignments in and reports out until it drops (why, it returns).
/// A link that was welcomed starts the backoff over.
async fn link(
    config: &WorkerConfig,
    sender: &mpsc::UnboundedSender<WorkerMessage>,
    reports: &Reports,
    running: &Running,
    backoff: &mut Duration,
) -> anyhow::Error {
    let welcomed = async {
        let channel = Endpoint::from_shared(config.node.clone())
            .context("the node address")?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .context("connecting")?;
        let (out, stream) = mpsc::channel(64);
        let hello = Hello {
            name: config.name.clone(),
            capabilities: Some(proto::Capabilities {
                repos: config.capabilities.repos.clone(),
                languages: config.capabilities.languages.clone(),
                environments: config.capabilities.environments.clone(),
                tools: config.capabilities.tools.clone(),
                tags: config.capabilities.tags.clone(),
            }),
            max_concurrent: config.max_concurrent,
            running: running
                .lock()
                .map(|r| r.keys().cloned().collect())
                .unwrap_or_default(),
        };
        out.send(report(worker_message::Kind::Hello(hello))).await?;
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(stream));
        let bearer = format!("Bearer {}", config.token)
            .parse()
            .context("the token is not valid in a header")?;
        request.metadata_mut().insert("authorization", bearer);
        let mut inbound = WorkerClient::new(channel)
            .link(request)
            .await
            .context("linking")?
            .into_inner();
        match inbound.message().await? {
            Some(NodeMessage {
                kind: Some(node_message::Kind::Welcome(w)),
            }) => {
                tracing::info!(agent_id = %w.agent_id, node = %config.node, "linked");
                let every = Duration::from_millis(u64::from(w.heartbeat_ms.max(100)));
                anyhow::Ok((out, inbound, w.agent_id, every))
            }
            other => anyhow::bail!("expected a welcome, got {other:?}"),
        }
    };
    let (out, mut inbound, agent_id, heartbeat) = match welcomed.await {
        Ok(linked) => linked,
        Err(error) => return error,
    };
    *backoff = FIRST_BACKOFF;
    let forward = tokio::spawn(forward(out, reports.clone(), heartbeat));
    let result = async {
        while let Some(message) = inbound.message().await? {
            match message.kind {
                Some(node_message::Kind::Assignment(task)) => {
                    let (stop, stopped) = oneshot::channel();
                    let fresh = running.lock().is_ok_and(|mut r| {
                        !r.contains_key(&task.task_id) && r.insert(task.task_id.clone(), stop).is_none()
                    });
                    if fresh {
                        tokio::spawn(run_task(
                            config.exec.clone(),
                            task,
                            sender.clone(),
                            running.clone(),
                            stopped,
                        ));
                    }
                }
                Some(node_message::Kind::Refused(r)) => {
                    tracing::warn!(task = %r.task_id, reason = %r.reason, "report refused");
                    // A result the task will never take (a promised contract missing) fails
                    // it, rather than leaving it running with nobody on it.
                    if r.reason.starts_with("task.completed:")
                        && r.reason.ends_with(actors::domain::task::CONTRACT_MISSING)
                    {
                        let text = format!("the result was refused: {}", r.reason);
                        let failed = TaskText { task_id: r.task_id, text };
                        let _ = sender.send(report(worker_message::Kind::Failed(failed)));
                    }
                }
                Some(node_message::Kind::Update(task)) => {
                    tracing::debug!(task = %task.task_id, state = %task.state, "task changed");
                    if !still_ours(&task, &agent_id) {
                        // Cancelled or requeued: stop its command; the node wants no report.
                        if let Some(stop) = running.lock().ok().and_then(|mut r| r.remove(&task.task_id)) {
                            tracing::info!(task = %task.task_id, state = %task.state, "stopping its command");
                            let _ = stop.send(());
                        }
                    }
                }
                Some(node_message::Kind::Welcome(_)) | None => {}
            }
        }
        anyhow::Ok(())
    }
    .await;
    forward.abort();
    match result {
        Ok(()) => anyhow::anyhow!("the node closed the link"),
        Err(error) => error,
    }
}

/// Whether `task`, as the node tells it now, is still this agent's to work on.
fn still_ours(task: &proto::Task, agent_id: &str) -> bool {
    let held = [
        "assigned",
        "running",
        "planning",
        "plan_review",
        "review",
        "needs_human",
    ];
    task.agent_id == agent_id && held.contains(&task.state.as_str())
}

/// Sends queued reports and a heartbeat every `every` until the link closes.
async fn forward(out: mpsc::Sender<WorkerMessage>, reports: Reports, every: Duration) {
    let mut reports = reports.lock().await;
    let mut tick = tokio::time::interval(every);
    loop {
        let message = tokio::select! {
            _ = tick.tick() => report(worker_message::Kind::Heartbeat(proto::Heartbeat {})),
            next = reports.recv() => match next {
                Some(message) => message,
                None => return,
            },
        };
        if out.send(message).await.is_err() {
            return;
        }
    }
}

/// Runs the command for `task` and reports its start, output and end, unless `stop` fires
/// first (the task was taken away), which kills the command and reports nothing more.
async fn run_task(
    exec: String,
    task: proto::Task,
    reports: mpsc::UnboundedSender<WorkerMessage>,
    running: Running,
    stop: oneshot::Receiver<()>,
) {
    let task_id = task.task_id.clone();
    let send = |kind| {
        let _ = reports.send(report(kind));
    };
    send(worker_message::Kind::Started(TaskRef {
        task_id: task_id.clone(),
    }));
    let work = execute(&exec, &task, |line| {
        send(worker_message::Kind::Output(TaskLines {
            task_id: task_id.clone(),
            lines: vec![line],
        }))
    });
    let outcome = tokio::select! {
        outcome = work => outcome,
        // Dropping the command's future kills it (`kill_on_drop`).
        Ok(()) = stop => return,
    };
    if let Ok(mut running) = running.lock() {
        running.remove(&task_id);
    }
    match outcome {
        Ok(result) => send(worker_message::Kind::Completed(TaskResult {
            task_id: task_id.clone(),
            result: Some(gateways::to_struct(&result)),
        })),
        Err(error) => send(worker_message::Kind::Failed(TaskText {
            task_id: task_id.clone(),
            text: error,
        })),
    }
}

/// Reads `pipe` line by line (invalid UTF-8 replaced, so odd bytes never stall the command),
/// handing each line to `on_line`.
async fn each_line(pipe: impl tokio::io::AsyncRead + Unpin, mut on_line: impl FnMut(String)) {
    let mut reader = BufReader::new(pipe);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buffer);
                on_line(line.trim_end_matches(['\n', '\r']).to_owned());
            }
        }
    }
}

/// Runs `exec` under `sh -c` with the task in its environment and on stdin; returns the
/// result map, or why it failed.
async fn execute(
    exec: &str,
    task: &proto::Task,
    mut on_line: impl FnMut(String),
) -> Result<Map, String> {
    let inputs = task
        .inputs
        .as_ref()
        .map(gateways::from_struct)
        .unwrap_or_default();
    let inputs = serde_json::to_string(&inputs).unwrap_or_else(|_| "{}".into());
    let mut command = tokio::process::Command::new("sh");
    command.arg("-c").arg(exec);
    for (name, value) in [
        ("SWITCHYARD_TASK_ID", task.task_id.as_str()),
        ("SWITCHYARD_TASK_TITLE", &task.title),
        ("SWITCHYARD_TASK_SPEC", &task.spec),
        ("SWITCHYARD_TASK_INPUTS", &inputs),
    ] {
        // The kernel refuses to start a program with a larger variable; stdin has it all.
        if value.len() <= MAX_VARIABLE {
            command.env(name, value);
        }
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{exec}`: {e}"))?;
    let stdin = serde_json::json!({
        "task_id": task.task_id, "title": task.title, "spec": task.spec, "inputs": serde_json::from_str::<Value>(&inputs).unwrap_or_default(),
    });
    // Written beside the reading of stdout, so a command that prints before it reads all of a
    // large task cannot stall on a full pipe.
    if let Some(mut pipe) = child.stdin.take() {
        tokio::spawn(async move {
            // A command that does not read its stdin closes it early; that is its business.
            let _ = pipe.write_all(format!("{stdin}\n").as_bytes()).await;
        });
    }
    let stderr = child.stderr.take().map(|pipe| {
        tokio::spawn(async move {
            let mut last = String::new();
            each_line(pipe, |line| last = line).await;
            last
        })
    });
    let mut stdout = String::new();
    if let Some(pipe) = child.stdout.take() {
        each_line(pipe, |line| {
            stdout.push_str(&line);
            stdout.push('\n');
            on_line(line);
        })
        .await;
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for `{exec}`: {e}"))?;
    let last_error = match stderr {
        Some(handle) => handle.await.unwrap_or_default(),
        None => String::new(),
    };
    if !status.success() {
        let code = status
            .code()
            .map_or("a signal".to_owned(), |c| c.to_string());
        return Err(format!("exit status {code}: {last_error}")
            .trim_end_matches(": ")
            .to_owned());
    }
    Ok(match serde_json::from_str::<Value>(stdout.trim()) {
        Ok(Value::Object(map)) => map.into_iter().collect(),
        _ => Map::from([(
            "output".to_owned(),
            Value::String(stdout.trim_end().to_owned()),
        )]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(inputs: Map) -> proto::Task {
        proto::Task {
            task_id: "t1".into(),
            spec: "the spec".into(),
            inputs: Some(gateways::to_struct(&inputs)),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_command_sees_its_task_and_its_stdout_becomes_the_result() {
        let inputs = Map::from([("schema".to_owned(), Value::from("v1"))]);
        let mut lines = Vec::new();
        let script =
            r#"printf '{"id": "%s", "got": %s}\n' "$SWITCHYARD_TASK_ID" "$SWITCHYARD_TASK_INPUTS""#;
        let result = execute(script, &task(inputs), |l| lines.push(l))
            .await
            .unwrap();
        assert_eq!(
            serde_json::to_value(&result).unwrap(),
            serde_json::json!({"id": "t1", "got": {"schema": "v1"}})
        );
        assert_eq!(lines.len(), 1);
        let plain = execute(
            "head -c 9 | tr -d '{'; echo; echo done",
            &task(Map::new()),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(
            plain["output"],
            Value::from("\"inputs\"\ndone"),
            "stdin carries the task as JSON"
        );
    }

    #[tokio::test]
    async fn a_failing_command_fails_the_task_with_its_status_and_last_error_line() {
        let error = execute("echo oops >&2; exit 3", &task(Map::new()), |_| {})
            .await
            .unwrap_err();
        assert_eq!(error, "exit status 3: oops");
    }

    #[tokio::test]
    async fn odd_bytes_and_a_large_task_do_not_stall_the_command() {
        let mut big = task(Map::new());
        big.spec = "x".repeat(1 << 20);
        // Prints before reading its stdin, then prints invalid UTF-8.
        let script = r#"seq 1 20000; printf 'ok \377\n'; cat >/dev/null"#;
        let mut lines = 0;
        let result = tokio::time::timeout(
            Duration::from_secs(30),
            execute(script, &big, |_| lines += 1),
        )
        .await
        .expect("the command finished")
        .unwrap();
        assert_eq!(lines, 20001);
        let output = result["output"].as_str().unwrap();
        assert!(
            output.ends_with("ok \u{fffd}"),
            "{}",
            &output[output.len() - 10..]
        );
    }
}
