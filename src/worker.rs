//! `switchyard agent`: the reference worker. It links to a node over `switchyard.v1.Worker/Link`
//! with an agent's key, runs a shell command once per assigned task, streams the command's
//! output, and completes the task with its stdout (a JSON object becomes the result map;
//! anything else is `{"output": …}`) or fails it with the exit status. It reconnects with
//! backoff when the link drops, and reports what it is still running so the node requeues
//! only what it lost.

use std::collections::BTreeSet;
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
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

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
/// Ids of the tasks being run now.
type Running = Arc<Mutex<BTreeSet<String>>>;

fn report(kind: worker_message::Kind) -> WorkerMessage {
    WorkerMessage { kind: Some(kind) }
}

/// Runs the worker until the process is stopped.
pub async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let reports: Reports = Arc::new(tokio::sync::Mutex::new(receiver));
    let running: Running = Arc::default();
    let mut backoff = Duration::from_millis(200);
    loop {
        match link(&config, &sender, &reports, &running).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), node = %config.node, "link down; reconnecting")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One link: hello, then assignments in and reports out until it drops.
async fn link(
    config: &WorkerConfig,
    sender: &mpsc::UnboundedSender<WorkerMessage>,
    reports: &Reports,
    running: &Running,
) -> anyhow::Result<()> {
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
            .map(|r| r.iter().cloned().collect())
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
    let heartbeat = match inbound.message().await? {
        Some(NodeMessage {
            kind: Some(node_message::Kind::Welcome(w)),
        }) => {
            tracing::info!(agent_id = %w.agent_id, node = %config.node, "linked");
            Duration::from_millis(u64::from(w.heartbeat_ms.max(100)))
        }
        other => anyhow::bail!("expected a welcome, got {other:?}"),
    };
    let forward = tokio::spawn(forward(out, reports.clone(), heartbeat));
    let result = async {
        while let Some(message) = inbound.message().await? {
            match message.kind {
                Some(node_message::Kind::Assignment(task)) => {
                    let fresh = running
                        .lock()
                        .map(|mut r| r.insert(task.task_id.clone()))
                        .unwrap_or(false);
                    if fresh {
                        tokio::spawn(run_task(
                            config.exec.clone(),
                            task,
                            sender.clone(),
                            running.clone(),
                        ));
                    }
                }
                Some(node_message::Kind::Refused(r)) => {
                    tracing::warn!(task = %r.task_id, reason = %r.reason, "report refused")
                }
                Some(node_message::Kind::Update(task)) => {
                    tracing::debug!(task = %task.task_id, state = %task.state, "task changed")
                }
                Some(node_message::Kind::Welcome(_)) | None => {}
            }
        }
        anyhow::Ok(())
    }
    .await;
    forward.abort();
    result.and(Err(anyhow::anyhow!("the node closed the link")))
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

/// Runs the command for `task` and reports its start, output and end.
async fn run_task(
    exec: String,
    task: proto::Task,
    reports: mpsc::UnboundedSender<WorkerMessage>,
    running: Running,
) {
    let task_id = task.task_id.clone();
    let send = |kind| {
        let _ = reports.send(report(kind));
    };
    send(worker_message::Kind::Started(TaskRef {
        task_id: task_id.clone(),
    }));
    let outcome = execute(&exec, &task, |line| {
        send(worker_message::Kind::Output(TaskLines {
            task_id: task_id.clone(),
            lines: vec![line],
        }))
    })
    .await;
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
    if let Ok(mut running) = running.lock() {
        running.remove(&task_id);
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
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(exec)
        .env("SWITCHYARD_TASK_ID", &task.task_id)
        .env("SWITCHYARD_TASK_TITLE", &task.title)
        .env("SWITCHYARD_TASK_SPEC", &task.spec)
        .env("SWITCHYARD_TASK_INPUTS", &inputs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{exec}`: {e}"))?;
    let stdin = serde_json::json!({
        "task_id": task.task_id, "title": task.title, "spec": task.spec, "inputs": serde_json::from_str::<Value>(&inputs).unwrap_or_default(),
    });
    if let Some(mut pipe) = child.stdin.take() {
        // A command that does not read its stdin closes it early; that is its business.
        let _ = pipe.write_all(format!("{stdin}\n").as_bytes()).await;
    }
    let stderr = child.stderr.take().map(|pipe| {
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            let mut last = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                last = line;
            }
            last
        })
    });
    let mut stdout = String::new();
    if let Some(pipe) = child.stdout.take() {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            stdout.push_str(&line);
            stdout.push('\n');
            on_line(line);
        }
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
}
