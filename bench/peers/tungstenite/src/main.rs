//! A tokio-tungstenite broadcast server, written the way its users usually write one:
//! a task per connection, a `tokio::sync::broadcast` channel for the fan-out.
//!
//! Raw-peer convention (docs/loadgen.md), less the sender: every text message
//! received from a client is sent to every other client (bench/README.md says
//! why). With `--echo`, each message goes back to its sender only (the echo
//! scenario).
//!
//! Usage: tungstenite-broadcast-peer [--listen 127.0.0.1:9002] [--echo] [--threads N]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_tungstenite::tungstenite::Message;

/// Messages the broadcast channel keeps for slow receivers; a receiver further
/// behind skips what it missed (the loadgen counts those as missing).
const BUS_MESSAGES: usize = 4096;

/// A broadcast message and the connection it came from.
type Bus = broadcast::Sender<(u64, Message)>;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

struct Args {
    listen: SocketAddr,
    echo: bool,
    threads: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        listen: "127.0.0.1:9002".parse().expect("static address"),
        echo: false,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--listen" => {
                let v = it.next().ok_or("--listen needs host:port")?;
                a.listen = v.parse().map_err(|_| format!("bad --listen {v}"))?;
                if !a.listen.ip().is_loopback() {
                    return Err("--listen: loopback addresses only".into());
                }
            }
            "--threads" => {
                let v = it.next().ok_or("--threads needs a number")?;
                a.threads = v.parse().map_err(|_| format!("bad --threads {v}"))?;
            }
            "--echo" => a.echo = true,
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    Ok(a)
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tungstenite-broadcast-peer: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads.max(1))
        .enable_io()
        .build()
        .expect("tokio runtime");
    rt.block_on(serve(a));
}

async fn serve(a: Args) {
    let sock = match a.listen {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .expect("socket");
    sock.set_reuseaddr(true).expect("SO_REUSEADDR");
    sock.bind(a.listen).expect("bind");
    let listener: TcpListener = sock.listen(4096).expect("listen");
    eprintln!(
        "tungstenite-broadcast-peer: listening on {} ({})",
        a.listen,
        if a.echo { "echo" } else { "broadcast" }
    );
    let (bus, _) = broadcast::channel::<(u64, Message)>(BUS_MESSAGES);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let bus = bus.clone();
        let echo = a.echo;
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            client(stream, bus, echo).await;
        });
    }
}

async fn client(stream: TcpStream, bus: Bus, echo: bool) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut sub = bus.subscribe();
    let (mut tx, mut rx) = ws.split();
    loop {
        tokio::select! {
            m = rx.next() => match m {
                Some(Ok(m @ Message::Text(_))) => {
                    if echo {
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    } else {
                        let _ = bus.send((id, m));
                    }
                }
                // Pings are answered by tungstenite itself on the next write or flush.
                Some(Ok(Message::Ping(_))) => {
                    if tx.flush().await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            r = sub.recv(), if !echo => match r {
                Ok((from, m)) => {
                    // Queue everything already waiting, then one flush.
                    if from != id && tx.feed(m).await.is_err() {
                        return;
                    }
                    while let Ok((from, m)) = sub.try_recv() {
                        if from != id && tx.feed(m).await.is_err() {
                            return;
                        }
                    }
                    if tx.flush().await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
        }
    }
}
