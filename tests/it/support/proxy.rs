//! `TcpProxy`: a TCP proxy owned by one test, put in front of MariaDB (or anything) to make
//! outages real: `cut()` closes every connection and refuses new ones, `freeze()` keeps
//! connections open but forwards nothing (a hanging server), `open()` forwards again.
//! It runs on its own thread with its own tokio runtime, so it keeps working while the
//! test's runtime is blocked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    Cut,
    Frozen,
    Shutdown,
}

pub struct TcpProxy {
    port: u16,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl TcpProxy {
    /// An open proxy on a free port of 127.0.0.1 forwarding to `target` (`host:port`).
    pub fn new(target: &str) -> TcpProxy {
        let target: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(target)
            .expect("resolvable target")
            .next()
            .expect("an address");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("local addr").port();
        let (mode, rx) = watch::channel(Mode::Open);
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                accept_loop(listener, target, rx, counter).await;
            });
        });
        TcpProxy {
            port,
            mode,
            accepted,
            thread: Some(thread),
        }
    }

    /// A proxy in front of the shared MariaDB.
    pub fn to_mysql() -> TcpProxy {
        let b = super::env::backends();
        TcpProxy::new(&format!("{}:{}", b.mysql_host, b.mysql_port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far (whatever the mode).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Forwards again (frozen connections resume; new ones connect to the target).
    pub fn open(&self) {
        self.mode.send_replace(Mode::Open);
    }

    /// Closes every live connection and accepts-and-closes new ones.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Keeps existing connections and accepts new ones, but forwards nothing either way.
    pub fn freeze(&self) {
        self.mode.send_replace(Mode::Frozen);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    accepted: Arc<AtomicUsize>,
) {
    loop {
        tokio::select! {
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow() == Mode::Shutdown {
                    return;
                }
            }
            accepted_now = listener.accept() => {
                let Ok((client, _)) = accepted_now else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                if *mode.borrow() == Mode::Cut {
                    drop(client);
                    continue;
                }
                tokio::spawn(connection(client, target, mode.clone()));
            }
        }
    }
}

/// Forwards one connection while open, holds it while frozen, drops it when cut.
async fn connection(mut client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let _ = client.set_nodelay(true);
    let mut upstream: Option<TcpStream> = None;
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_upstream = vec![0u8; 16 * 1024];
    loop {
        let current = *mode.borrow_and_update();
        match current {
            Mode::Cut | Mode::Shutdown => return,
            Mode::Frozen => {
                if mode.changed().await.is_err() {
                    return;
                }
            }
            Mode::Open => {
                if upstream.is_none() {
                    match TcpStream::connect(target).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            upstream = Some(s);
                        }
                        Err(_) => return,
                    }
                }
                let up = upstream.as_mut().expect("connected above");
                tokio::select! {
                    changed = mode.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    n = client.read(&mut from_client) => match n {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if up.write_all(&from_client[..n]).await.is_err() {
                                return;
                            }
                        }
                    },
                    n = up.read(&mut from_upstream) => match n {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if client.write_all(&from_upstream[..n]).await.is_err() {
                                return;
                            }
                        }
                    },
                }
            }
        }
    }
}
