//! [`Relay`]: a TCP relay to a test server that can be made to stall, for
//! tests of what a client does when its server stops answering without
//! closing the connection (as a server stopped with SIGSTOP does).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay on a loopback port of its own to a server; once
/// [`freeze`](Self::freeze)d it keeps every connection open and forwards
/// nothing more. Its tasks run on the tokio runtime it was started on.
#[derive(Debug)]
pub struct Relay {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl Relay {
    /// A relay to the server at `url` (`nats://host:port` or `host:port`).
    ///
    /// # Panics
    /// When no loopback port can be bound (a test's set-up).
    pub async fn start(url: &str) -> Self {
        let upstream = url.trim_start_matches("nats://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let port = listener.local_addr().expect("its address").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let relaying = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(client_read, server_write, relaying.clone()));
                tokio::spawn(forward(server_read, client_write, relaying.clone()));
            }
        });
        Self { port, frozen }
    }

    /// The URL a client connects to the server through this relay by.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// From now on nothing more is forwarded either way, and no connection
    /// is closed.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

/// Copies bytes from `from` to `to`; once `frozen`, keeps both open and
/// forwards nothing more.
async fn forward(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, frozen: Arc<AtomicBool>) {
    let mut buf = vec![0; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if frozen.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
