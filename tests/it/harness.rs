//! Starting nodes (as processes or in-process) and talking to them over HTTP and gRPC.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use schemas::proto::cluster_client::ClusterClient;
use schemas::proto::tasks_client::TasksClient;
use schemas::proto::{
    ActorNode, GetSupervisionTreeRequest, GetTaskRequest, ListTasksRequest, Task,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

pub const WAIT: Duration = Duration::from_secs(30);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `switchyard node` process on its own data directory and ports.
pub struct Proc {
    child: Child,
    pub dir: PathBuf,
    pub http: u16,
    pub grpc: u16,
}

impl Proc {
    /// Starts the binary on `dir` and waits until `/ready` answers 200.
    pub async fn start(dir: &Path) -> Proc {
        Proc::start_with(dir, &[]).await
    }

    /// Starts the binary on `dir` with more variables and waits until it is ready.
    pub async fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> Proc {
        Proc::launch(dir, &[], env).await
    }

    /// Starts the binary on `dir` with more flags (`--bus`, say) and waits until it is ready.
    pub async fn start_with(dir: &Path, flags: &[String]) -> Proc {
        Proc::launch(dir, flags, &[]).await
    }

    async fn launch(dir: &Path, flags: &[String], env: &[(&str, &str)]) -> Proc {
        Proc::launch_on(dir, (free_port(), free_port()), flags, env).await
    }

    /// Starts the binary on `dir` listening on `(http, grpc)`, with more flags and variables.
    pub async fn launch_on(
        dir: &Path,
        (http, grpc): (u16, u16),
        flags: &[String],
        env: &[(&str, &str)],
    ) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["node", "--data-dir"])
            .arg(dir)
            .args([
                "--http",
                &format!("127.0.0.1:{http}"),
                "--grpc",
                &format!("127.0.0.1:{grpc}"),
            ])
            .args(flags)
            // The agents of these tests are events posted by hand, without heartbeats: they
            // stay online through slow broker restarts unless a test sets its own timeout.
            .env("SWITCHYARD_AGENT_TIMEOUT_MS", "600000")
            .envs(env.iter().copied())
            .env("SWITCHYARD_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let proc = Proc {
            child,
            dir: dir.to_owned(),
            http,
            grpc,
        };
        if !ready(http).await {
            let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
            panic!("node did not become ready on port {http}; its log:\n{log}");
        }
        proc
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.sigterm()
    }

    /// SIGTERM, then waits for the process to exit.
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }

    pub async fn client(&self) -> Client {
        Client::new(&self.dir, self.http, self.grpc).await
    }

    /// A client of this node holding the admin key of `admin`'s data directory (the node that
    /// created the shared database's key).
    pub async fn client_of(&self, admin: &Proc) -> Client {
        Client::new(&admin.dir, self.http, self.grpc).await
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use actors::testkit::postgres_schema;

/// The `switchyard` binary with `args`, logging only warnings.
pub fn switchyard_command<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command.args(args).env("SWITCHYARD_LOG", "warn");
    command
}

/// What a command printed, stdout then stderr.
pub fn said(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The lines `switchyard digest` prints for `database` (the data directory's own SQLite file
/// when empty), with the node's `bus` flags.
pub fn digest(dir: &Path, database: &str, bus: &[String]) -> Vec<String> {
    let mut args = vec![
        "digest".into(),
        "--data-dir".into(),
        dir.display().to_string(),
    ];
    args.extend(bus.iter().cloned());
    if !database.is_empty() {
        args.extend(["--database".into(), database.into()]);
    }
    let output = switchyard_command(&args).output().unwrap();
    assert!(output.status.success(), "{}", said(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The arguments of `switchyard replay --from start --into <into>` of the node on `dir` with
/// its `bus` flags, resumed when `resume`.
pub fn replay_args(dir: &Path, into: &str, bus: &[String], resume: bool) -> Vec<String> {
    let mut args: Vec<String> = ["replay", "--from", "start", "--into", into, "--data-dir"]
        .map(String::from)
        .into();
    args.push(dir.display().to_string());
    args.extend(bus.iter().cloned());
    if resume {
        args.push("--resume".into());
    }
    args
}

/// The `/ready` status code, if the node answers at all.
pub async fn ready_status(http: u16) -> Option<u16> {
    let url = format!("http://127.0.0.1:{http}/ready");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    Some(client.get(&url).send().await.ok()?.status().as_u16())
}

/// Whether `/ready` answers 200 within `WAIT`.
pub async fn ready(http: u16) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    let url = format!("http://127.0.0.1:{http}/ready");
    loop {
        if let Ok(r) = reqwest::get(&url).await
            && r.status() == 200
        {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// HTTP and gRPC clients of one node, holding its admin key.
pub struct Client {
    http: reqwest::Client,
    base: String,
    pub token: String,
    pub tasks: TasksClient<Channel>,
    pub cluster: ClusterClient<Channel>,
    pub grpc_url: String,
}

impl Client {
    pub async fn new(dir: &Path, http: u16, grpc: u16) -> Client {
        let token = std::fs::read_to_string(dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        let grpc_url = format!("http://127.0.0.1:{grpc}");
        // A node that stops answering fails the call, not the test run.
        let channel = tonic::transport::Channel::from_shared(grpc_url.clone())
            .unwrap()
            .timeout(WAIT)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting to {grpc_url}: {e}"));
        Client {
            http: reqwest::Client::builder().timeout(WAIT).build().unwrap(),
            base: format!("http://127.0.0.1:{http}"),
            token,
            tasks: TasksClient::new(channel.clone()),
            cluster: ClusterClient::new(channel),
            grpc_url,
        }
    }

    /// POSTs a body to `/v1/events`; returns (status, JSON answer), or `None` if the request failed.
    pub async fn post_raw(
        &self,
        content_type: &str,
        body: Vec<u8>,
        token: Option<&str>,
    ) -> Option<(u16, Value)> {
        let mut request = self
            .http
            .post(format!("{}/v1/events", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// `GET /cluster/status` with the admin key.
    pub async fn cluster_status(&self) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/cluster/status", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// POSTs a JSON envelope with the admin key; returns the status.
    pub async fn post(&self, envelope: &Value) -> Option<u16> {
        let (status, _) = self
            .post_raw(
                "application/json",
                serde_json::to_vec(envelope).unwrap(),
                Some(&self.token),
            )
            .await?;
        Some(status)
    }

    pub fn authed<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        request
    }

    pub async fn task(&mut self, task_id: &str) -> Result<Task, tonic::Status> {
        let request = self.authed(GetTaskRequest {
            task_id: task_id.into(),
        });
        self.tasks.get_task(request).await.map(|r| r.into_inner())
    }

    /// The node's supervision tree, from `Cluster.GetSupervisionTree`.
    pub async fn tree(&mut self) -> Result<ActorNode, tonic::Status> {
        let request = self.authed(GetSupervisionTreeRequest {});
        let tree = self
            .cluster
            .get_supervision_tree(request)
            .await?
            .into_inner();
        Ok(tree.root.expect("a tree has a root"))
    }

    /// The task mailboxes live on the node: in its tree, below their partition's shard.
    pub async fn task_mailboxes(&mut self) -> std::collections::BTreeSet<String> {
        let tree = self.tree().await.unwrap();
        tree.children
            .iter()
            .filter(|c| c.name == "orchestrator")
            .flat_map(|c| c.children.iter())
            .filter(|c| c.name == "tasks")
            .flat_map(|c| c.children.iter())
            .flat_map(|shard| shard.children.iter().map(|m| m.name.clone()))
            .collect()
    }

    /// Polls the live task mailboxes until `want` holds for them (idle ones passivate, say),
    /// or panics after `WAIT`.
    pub async fn wait_mailboxes(
        &mut self,
        want: impl Fn(&std::collections::BTreeSet<String>) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let live = self.task_mailboxes().await;
            if want(&live) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task mailboxes stayed {live:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every task, following pages.
    pub async fn all_tasks(&mut self, state: Option<&str>) -> Vec<Task> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = self.authed(ListTasksRequest {
                state: state.map(str::to_owned),
                page_size: 100,
                page_token,
                agent_id: None,
            });
            let page = self.tasks.list_tasks(request).await.unwrap().into_inner();
            out.extend(page.tasks);
            if page.next_page_token.is_empty() {
                return out;
            }
            page_token = page.next_page_token;
        }
    }

    /// Polls the task until `want` holds for it, or panics after `WAIT`.
    pub async fn wait_task(&mut self, task_id: &str, want: impl Fn(&Task) -> bool) -> Task {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(task) = self.task(task_id).await
                && want(&task)
            {
                return task;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "task {task_id} never got there: {:?}",
                    self.task(task_id).await
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A JSON envelope of `kind` for user `u1`, with an explicit id.
pub fn event(id: &str, kind: &str, key: &str, body: Value) -> Value {
    json!({ "id": id, "type": kind, "key": key, "user": "u1", "body": body })
}

pub fn agent_registered(id: &str, agent: &str, max: u32) -> Value {
    event(
        id,
        "agent.registered",
        &format!("agent/{agent}"),
        json!({ "agent_id": agent, "name": agent, "max_concurrent": max }),
    )
}

pub fn task_created(id: &str, task: &str) -> Value {
    event(
        id,
        "task.created",
        &format!("task/{task}"),
        json!({ "task_id": task, "title": format!("title {task}"), "spec": "true" }),
    )
}

pub fn task_started(id: &str, task: &str, agent: &str) -> Value {
    event(
        id,
        "task.started",
        &format!("task/{task}"),
        json!({ "task_id": task, "agent_id": agent }),
    )
}

pub fn task_completed(id: &str, task: &str) -> Value {
    event(
        id,
        "task.completed",
        &format!("task/{task}"),
        json!({ "task_id": task, "result": { "ok": true } }),
    )
}

/// The state database of a data directory (readable while the node runs: SQLite WAL).
pub async fn state_store(dir: &Path) -> actors::Store {
    actors::Store::connect(&format!(
        "sqlite://{}?mode=rw",
        dir.join("state.sqlite").display()
    ))
    .await
    .unwrap()
}

/// One in-process node at a time: actor names are global to the process.
pub static IN_PROCESS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An in-process node on a fresh data directory.
pub async fn in_process(dir: &Path) -> (switchyard::Node, u16, u16) {
    in_process_with(dir, |_| {}).await
}

/// An in-process node on a fresh data directory, configured further by `configure`.
pub async fn in_process_with(
    dir: &Path,
    configure: impl FnOnce(&mut switchyard::Config),
) -> (switchyard::Node, u16, u16) {
    in_process_at(dir, actors::Clock::system(), configure).await
}

/// `in_process_with`, the node's timed work (retries, quiet hours) following `clock`.
pub async fn in_process_at(
    dir: &Path,
    clock: actors::Clock,
    configure: impl FnOnce(&mut switchyard::Config),
) -> (switchyard::Node, u16, u16) {
    let (http, grpc) = (free_port(), free_port());
    let mut config = switchyard::Config {
        data_dir: dir.to_owned(),
        http: format!("127.0.0.1:{http}").parse().unwrap(),
        grpc: format!("127.0.0.1:{grpc}").parse().unwrap(),
        ..Default::default()
    };
    configure(&mut config);
    let node = switchyard::Node::start_with_clock(&config, clock)
        .await
        .unwrap();
    assert!(ready(http).await, "in-process node did not become ready");
    (node, http, grpc)
}

/// A gRPC channel to `url`, connected.
pub async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// A Python server of a test's own on loopback: `script` (run with `args`) binds port 0 and
/// prints the port as its first line; what it prints after is the test's to read.
pub struct PythonServer {
    /// Held: dropping it stops the server.
    _child: tokio::process::Child,
    pub lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    pub port: u16,
}

impl PythonServer {
    /// Starts `script`, or panics saying that `package` (from PyPI) is what it needs.
    pub async fn start(script: &str, args: &[&std::ffi::OsStr], package: &str) -> PythonServer {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        match tokio::time::timeout(WAIT, lines.next_line()).await {
            Ok(Ok(Some(port))) => PythonServer {
                _child: child,
                lines,
                port: port.trim().parse().unwrap(),
            },
            _ => {
                let output = child.wait_with_output().await.unwrap();
                panic!(
                    "a loopback server did not start; it needs {package} \
                     (python3 -m pip install {package}; ./scripts/test installs it): {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
}

/// A clock for an in-process node that the test moves: the system's time shifted by the ms
/// the returned cell holds.
pub fn shifted_clock() -> (actors::Clock, std::sync::Arc<std::sync::atomic::AtomicI64>) {
    use std::sync::atomic::Ordering;
    let shift = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let moved = shift.clone();
    let clock = actors::Clock::from_fn(move || {
        (actors::store::now_ms() as i64 + moved.load(Ordering::SeqCst)) as u64
    });
    (clock, shift)
}

/// Every series (name and labels, as Prometheus prints them) of the `/metrics` at `base`,
/// with its value.
pub async fn metrics_at(base: &str, token: &str) -> std::collections::BTreeMap<String, f64> {
    let text = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(name, value)| Some((name.to_owned(), value.parse().ok()?)))
        .collect()
}

/// The value of the series `series` in the node's `/metrics`, 0 if it is not there yet.
pub async fn metric(http: u16, token: &str, series: &str) -> f64 {
    let all = metrics_at(&format!("http://127.0.0.1:{http}"), token).await;
    all.get(series).copied().unwrap_or(0.0)
}
