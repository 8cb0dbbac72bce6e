//! A TCP proxy between one controller replica and the API server: the
//! replica's network, which the chaos run can hold or cut. TLS passes
//! through untouched (the replica's kubeconfig names
//! https://127.0.0.1:PORT; the API server's certificate holds 127.0.0.1).
//!
//! Three states, and a way to drop every connection:
//! - `open`: bytes flow both ways;
//! - `hold_requests`: nothing more reaches the API server, but its answers
//!   still reach the replica. Before a SIGKILL: every request the server
//!   got is answered (and counted by the replica) before the last scrape,
//!   and no write can complete after it;
//! - `cut`: nothing flows either way and new connections wait (a network
//!   partition). `heal` then drops every connection that lived through the
//!   cut (what was buffered is discarded, as after TCP gave up) and opens.

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    /// Replica -> API server.
    up: bool,
    /// API server -> replica.
    down: bool,
    /// Bumped to drop every connection accepted before.
    epoch: u64,
}

#[derive(Clone)]
pub struct Proxy {
    pub port: u16,
    state: Arc<watch::Sender<State>>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (an ephemeral port) and forwards to `upstream`.
    pub async fn start(upstream: String) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (tx, _) = watch::channel(State {
            up: true,
            down: true,
            epoch: 0,
        });
        let state = Arc::new(tx);
        let p = Proxy { port, state };
        let rx = p.state.subscribe();
        tokio::spawn(accept(listener, upstream, rx));
        Ok(p)
    }

    pub fn open(&self) {
        self.state.send_modify(|s| {
            s.up = true;
            s.down = true;
        });
    }

    pub fn hold_requests(&self) {
        self.state.send_modify(|s| s.up = false);
    }

    pub fn cut(&self) {
        self.state.send_modify(|s| {
            s.up = false;
            s.down = false;
        });
    }

    /// Drops every connection (they reconnect through a fresh one).
    pub fn drop_connections(&self) {
        self.state.send_modify(|s| s.epoch += 1);
    }

    /// The end of a cut: every connection dropped, then open.
    pub fn heal(&self) {
        self.state.send_modify(|s| {
            s.epoch += 1;
            s.up = true;
            s.down = true;
        });
    }
}

async fn accept(listener: TcpListener, upstream: String, rx: watch::Receiver<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        tokio::spawn(connection(client, upstream.clone(), rx.clone()));
    }
}

/// Waits until `ok` holds; false when the epoch moved on meanwhile.
async fn until(rx: &mut watch::Receiver<State>, epoch: u64, ok: impl Fn(&State) -> bool) -> bool {
    match rx.wait_for(|s| s.epoch != epoch || ok(s)).await {
        Ok(s) => s.epoch == epoch,
        Err(_) => false,
    }
}

async fn connection(client: TcpStream, upstream: String, mut rx: watch::Receiver<State>) {
    let epoch = rx.borrow().epoch;
    // A new connection waits while the network is cut.
    if !until(&mut rx, epoch, |s| s.up && s.down).await {
        return;
    }
    let Ok(server) = TcpStream::connect(&upstream).await else {
        // The API server is down: the replica sees its connection closed.
        return;
    };
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let mut dropped = rx.clone();
    let up = pump(cr, sw, rx.clone(), epoch, |s| s.up);
    let down = pump(sr, cw, rx.clone(), epoch, |s| s.down);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    // Until both sides closed cleanly, one failed, or the epoch moved on.
    while !(up_done && down_done) {
        tokio::select! {
            clean = &mut up, if !up_done => { if !clean { break } up_done = true; }
            clean = &mut down, if !down_done => { if !clean { break } down_done = true; }
            _ = dropped.wait_for(|s| s.epoch != epoch) => break,
        }
    }
    // Both halves drop here: the connection is closed on both sides.
}

/// Copies `from` to `to` while `allowed`; a chunk read while not allowed
/// waits (it is discarded if the connection is dropped first). True when
/// `from` ended cleanly (the end passed on to `to`).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut rx: watch::Receiver<State>,
    epoch: u64,
    allowed: fn(&State) -> bool,
) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => return to.shutdown().await.is_ok(),
            Err(_) => return false,
            Ok(n) => n,
        };
        if !until(&mut rx, epoch, allowed).await {
            return false;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return false;
        }
    }
}
