//! The simulation's driver in real time, for the scenario tests
//! (`io.sim_seed`, testing only; `both_drivers!`'s `sim` variant).
//!
//! Each shard runs a [`SimDriver`] over a [`Net`] of its own, with seeded
//! faults (short writes, split reads, receive pauses, completions delayed
//! and reordered across connections, a bounded socket buffer, `ECANCELED`
//! on close), under the wall clock. A bridge accepts the real TCP
//! connections on the shard's listener and pumps bytes between each socket
//! and a pipe: a reader thread (socket to pipe; EOF is the client's FIN, an
//! error its reset) and a writer thread (pipe to socket; the server's
//! shutdown and close become the socket's). So the tests' real clients
//! reach shards that see only this driver. The threads take the net's lock
//! and wait on the pipe's condition variable; the driver signals it when it
//! writes, reads or closes, and the threads wake the shard through an
//! eventfd that `poll` waits on beside the shard's own.
//!
//! The seed fixes the faults, not the schedule: the threads and sockets are
//! real, so a run does not replay (the simulation is where one does).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::Socket;

use super::{Faults, Net, Rng, SimDriver};
use crate::driver::{Driver, DriverConfig, Waker};

/// How soon `poll` looks again when something is held back or left unread.
pub(super) const AGAIN: Duration = Duration::from_millis(1);
/// Bytes a pipe holds from a client before its reader waits (the socket's
/// receive buffer, roughly).
const TO_SERVER_MAX: usize = 256 * 1024;
/// Bytes the writer takes from a pipe for one write to the socket.
const CHUNK: usize = 64 * 1024;
/// How long a bridge thread sleeps before looking again without a signal.
const RECHECK: Duration = Duration::from_millis(100);
const STACK: usize = 128 * 1024;

/// Build shard `shard`'s driver: the simulation's, bridged to `listeners`'
/// first socket. `wake_fd` is the shard's own wake-up (other shards').
pub fn driver(
    mut listeners: Vec<Socket>,
    wake_fd: RawFd,
    cfg: &DriverConfig,
    seed: u64,
    shard: usize,
) -> io::Result<Box<dyn Driver>> {
    let mut rng = Rng::new(seed ^ (shard as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let faults = Faults {
        short_write: 200,
        split_read: 200,
        recv_pause: 100,
        delay: 200,
        socket_bytes: [4096, 65_536][rng.below(2) as usize],
    };
    let net = Arc::new(Mutex::new(Net::new(1)));
    let bufs = cfg.recv_bufs.clamp(4, 256);
    let mut d = SimDriver::new(0, net.clone(), rng.fork(), faults, bufs, 16 * 1024);
    let listener = Arc::new(listeners.swap_remove(0));
    listener.set_nonblocking(false)?;
    // accept(2) honours it: the acceptor looks at its stop flag this often.
    listener.set_read_timeout(Some(RECHECK))?;
    let waker = Arc::new(Waker::new()?);
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let (listener, waker, stop) = (listener.clone(), waker.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("sim-bridge-{shard}"))
            .stack_size(STACK)
            .spawn(move || accept_loop(&listener, &net, &waker, &stop))?
    };
    d.live = Some(Live {
        wake_fd,
        waker,
        stop,
        listener,
        acceptor: Some(acceptor),
    });
    Ok(Box::new(d))
}

/// What the driver holds in real time.
pub(super) struct Live {
    wake_fd: RawFd,
    /// Signalled by the bridge's threads when a pipe moved.
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    listener: Arc<Socket>,
    acceptor: Option<JoinHandle<()>>,
}

impl Live {
    /// Wait up to `timeout` (None: no limit) for the shard's wake-up or the
    /// bridge's; true when it was the shard's (a `Completion::Wake`).
    pub(super) fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let ms = match timeout {
            None => -1,
            Some(d) if d.is_zero() => 0,
            Some(d) => d.as_millis().clamp(1, i32::MAX as u128) as i32,
        };
        let mut fds = [
            libc::pollfd {
                fd: self.wake_fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.waker.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a live array of two pollfds, and its length is passed.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => Ok(false),
                _ => Err(e),
            };
        }
        if fds[1].revents != 0 {
            Waker::drain(self.waker.fd());
        }
        if fds[0].revents != 0 {
            Waker::drain(self.wake_fd);
            return Ok(true);
        }
        Ok(false)
    }

    /// Stop accepting (before the driver closes what it held).
    pub(super) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.listener.shutdown(Shutdown::Read);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &Socket, net: &Arc<Mutex<Net>>, waker: &Arc<Waker>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let sock = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return,
        };
        let stream: TcpStream = sock.into();
        let _ = stream.set_nodelay(true);
        // Inherited from the listener: the threads block without a limit.
        let _ = stream.set_read_timeout(None);
        let cv = Arc::new(Condvar::new());
        let id = {
            let mut n = net.lock().expect("net");
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let id = n.connect(0);
            n.pipe_mut(id).expect("just made").bridge = Some(cv.clone());
            id
        };
        let conn = Arc::new(Conn {
            id,
            stream,
            net: net.clone(),
            cv,
            waker: waker.clone(),
            threads: AtomicUsize::new(2),
        });
        for (name, f) in [("in", Conn::pump_in as fn(&Conn)), ("out", Conn::pump_out)] {
            let c = conn.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sim-{name}-{id}"))
                .stack_size(STACK)
                .spawn(move || {
                    f(&c);
                    c.done();
                });
            if spawned.is_err() {
                conn.done();
            }
        }
        waker.wake();
    }
}

/// One bridged connection, shared by its two threads.
struct Conn {
    id: u32,
    stream: TcpStream,
    net: Arc<Mutex<Net>>,
    cv: Arc<Condvar>,
    waker: Arc<Waker>,
    /// Threads still running; the last lets go of the pipe.
    threads: AtomicUsize,
}

impl Conn {
    fn done(&self) {
        if self.threads.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.net.lock().expect("net").let_go(self.id);
            self.waker.wake();
        }
    }

    /// Socket to pipe: the client's bytes, then its FIN or reset.
    fn pump_in(&self) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match (&self.stream).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.net.lock().expect("net").reset(self.id);
                    self.waker.wake();
                    return;
                }
            };
            let mut net = self.net.lock().expect("net");
            if n == 0 {
                net.fin(self.id);
                drop(net);
                self.waker.wake();
                return;
            }
            loop {
                match net.pipe(self.id) {
                    Some(p) if p.server_closed || p.reset => return,
                    Some(p) if p.to_server.len() >= TO_SERVER_MAX => {}
                    Some(_) => break,
                    None => return,
                }
                net = self.cv.wait_timeout(net, RECHECK).expect("net").0;
            }
            net.write(self.id, &buf[..n]);
            drop(net);
            self.waker.wake();
        }
    }

    /// Pipe to socket: the server's bytes, then its shutdown and close.
    fn pump_out(&self) {
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut fin_sent = false;
        loop {
            let (fin, closed) = {
                let mut net = self.net.lock().expect("net");
                loop {
                    let Some(p) = net.pipe(self.id) else {
                        return;
                    };
                    if p.reset {
                        return;
                    }
                    if !p.to_client.is_empty() || (p.server_fin && !fin_sent) || p.server_closed {
                        break;
                    }
                    net = self.cv.wait_timeout(net, RECHECK).expect("net").0;
                }
                let p = net.pipe_mut(self.id).expect("looked up");
                let n = p.to_client.len().min(CHUNK);
                chunk.extend(p.to_client.drain(..n));
                let flushed = p.to_client.is_empty();
                (p.server_fin && flushed, p.server_closed && flushed)
            };
            if !chunk.is_empty() {
                // Room in the socket buffer: the shard may write again.
                self.waker.wake();
                if (&self.stream).write_all(&chunk).is_err() {
                    if let Some(p) = self.net.lock().expect("net").pipe_mut(self.id) {
                        p.reset = true;
                    }
                    self.waker.wake();
                    return;
                }
                chunk.clear();
            }
            if fin && !fin_sent {
                fin_sent = true;
                let _ = self.stream.shutdown(Shutdown::Write);
            }
            if closed {
                // The reader's `read` returns 0 and it ends too.
                let _ = self.stream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}
