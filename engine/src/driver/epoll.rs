//! epoll fallback driver, for hosts where io_uring cannot be set up
//! (container seccomp, `kernel.io_uring_disabled`), or by `--driver epoll`.
//!
//! It presents the same completion model as io_uring: readiness is turned into
//! completions inside `poll`. Receive buffers come from one small per-shard pool,
//! so an idle connection holds no read buffer here either. Level-triggered
//! readiness lets a connection wait when the pool is empty without losing data.

use std::collections::HashMap;
use std::io;
use std::os::fd::{IntoRawFd, RawFd};
use std::time::Duration;

use bytes::Bytes;

use super::recv_pool::RecvPool;
use super::{
    BufId, Completion, ConnKey, Driver, DriverConfig, DriverKind, Sock, Waker, SEND_IOVECS_MAX,
};

const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_WAKE: u64 = u64::MAX - 1;
/// Accepts per readiness event, so a connect storm cannot starve established connections.
const ACCEPTS_PER_TURN: usize = 256;
const EVENTS_MAX: usize = 1024;
const READ_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;

/// A connection's epoll token carries both its key and its fd, so no lookup table is needed.
fn token(conn: ConnKey, fd: RawFd) -> u64 {
    ((conn as u64) << 32) | fd as u32 as u64
}

fn untoken(t: u64) -> (ConnKey, RawFd) {
    ((t >> 32) as ConnKey, t as u32 as RawFd)
}

/// A send that hit EAGAIN: retried when the socket becomes writable.
struct ParkedSend {
    sock: Sock,
    bufs: Vec<Bytes>,
}

pub struct EpollDriver {
    epfd: RawFd,
    listener_fd: RawFd,
    wake_fd: RawFd,
    events: Vec<libc::epoll_event>,
    /// Receive buffers, reads packed into the current one (see `recv_pool.rs`).
    pool: RecvPool,
    /// Completions produced synchronously (sends, closes) waiting for the next `poll`.
    ready: Vec<Completion>,
    parked: HashMap<ConnKey, ParkedSend>,
    /// Accepted sockets not yet closed.
    open: usize,
    accept_paused: bool,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

impl EpollDriver {
    pub fn new(
        listener: socket2::Socket,
        wake_fd: RawFd,
        cfg: &DriverConfig,
    ) -> io::Result<EpollDriver> {
        listener.set_nonblocking(true)?;
        // SAFETY: plain syscall without pointers.
        let epfd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        let listener_fd = listener.into_raw_fd();
        let pool = RecvPool::new(cfg.recv_bufs, cfg.recv_buf_bytes)?;
        let d = EpollDriver {
            epfd,
            listener_fd,
            wake_fd,
            events: Vec::with_capacity(EVENTS_MAX),
            pool,
            ready: Vec::new(),
            parked: HashMap::new(),
            open: 0,
            accept_paused: false,
        };
        d.ctl(
            libc::EPOLL_CTL_ADD,
            listener_fd,
            libc::EPOLLIN as u32,
            TOKEN_LISTENER,
        )?;
        d.ctl(
            libc::EPOLL_CTL_ADD,
            wake_fd,
            libc::EPOLLIN as u32,
            TOKEN_WAKE,
        )?;
        Ok(d)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a live epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.epfd, op, fd, &mut ev) }).map(|_| ())
    }

    fn accept_some(&mut self, out: &mut Vec<Completion>) {
        for _ in 0..ACCEPTS_PER_TURN {
            // SAFETY: null address pointers are allowed by accept4.
            let fd = unsafe {
                libc::accept4(
                    self.listener_fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                self.open += 1;
                out.push(Completion::Accepted {
                    sock: Sock(fd as u32),
                });
                continue;
            }
            match errno() {
                libc::EAGAIN | libc::ECONNABORTED | libc::EINTR => return,
                e @ (libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    // Out of descriptors or memory: stop accepting until a connection
                    // closes, instead of spinning on a listener that stays readable.
                    tracing::warn!(
                        errno = e,
                        open = self.open,
                        "accept failed, pausing accepts"
                    );
                    self.pause_accept(true);
                    return;
                }
                e => {
                    tracing::warn!(errno = e, "accept failed");
                    return;
                }
            }
        }
    }

    fn pause_accept(&mut self, pause: bool) {
        if self.accept_paused == pause {
            return;
        }
        let events = if pause { 0 } else { libc::EPOLLIN as u32 };
        if self
            .ctl(
                libc::EPOLL_CTL_MOD,
                self.listener_fd,
                events,
                TOKEN_LISTENER,
            )
            .is_ok()
        {
            self.accept_paused = pause;
        }
    }

    fn read_some(&mut self, fd: RawFd, conn: ConnKey, out: &mut Vec<Completion>) {
        let Some((id, offset, room)) = self.pool.room() else {
            // Every buffer holds reads the shard has not released yet:
            // level-triggered epoll reports this socket again next turn.
            return;
        };
        let buf = self.pool.slice_mut(id, offset, room);
        // SAFETY: reads at most buf.len() bytes into a live, exclusively borrowed buffer.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 {
            self.pool.filled(id, n as usize);
            out.push(Completion::Recv {
                conn,
                buf: BufId {
                    id,
                    ring: 0,
                    offset: offset as u32,
                },
                len: n as u32,
            });
            return;
        }
        let err = if n == 0 { None } else { Some(errno()) };
        if matches!(err, Some(libc::EAGAIN | libc::EINTR)) {
            return;
        }
        // Read side over: stop read readiness (keep EPOLLOUT if a send is parked).
        let keep = if self.parked.contains_key(&conn) {
            libc::EPOLLOUT as u32
        } else {
            0
        };
        let _ = self.ctl(libc::EPOLL_CTL_MOD, fd, keep, token(conn, fd));
        out.push(Completion::RecvClosed { conn, err });
    }

    fn retry_parked(&mut self, fd: RawFd, conn: ConnKey, out: &mut Vec<Completion>) {
        let Some(p) = self.parked.remove(&conn) else {
            return;
        };
        match self.try_send(p.sock, &p.bufs) {
            Some(result) => {
                out.push(Completion::Sent { conn, result });
                let _ = self.ctl(libc::EPOLL_CTL_MOD, fd, READ_EVENTS, token(conn, fd));
            }
            None => {
                self.parked.insert(conn, p);
            }
        }
    }

    fn try_send(&mut self, sock: Sock, bufs: &[Bytes]) -> Option<Result<usize, i32>> {
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; SEND_IOVECS_MAX];
        let n = bufs.len().min(SEND_IOVECS_MAX);
        for (v, b) in iov.iter_mut().zip(&bufs[..n]) {
            v.iov_base = b.as_ptr() as *mut _;
            v.iov_len = b.len();
        }
        let msg = libc::msghdr {
            msg_name: std::ptr::null_mut(),
            msg_namelen: 0,
            msg_iov: iov.as_mut_ptr(),
            msg_iovlen: n,
            msg_control: std::ptr::null_mut(),
            msg_controllen: 0,
            msg_flags: 0,
        };
        // SAFETY: the iovecs point into `bufs`, which outlive the call; MSG_NOSIGNAL
        // turns a peer reset into EPIPE instead of SIGPIPE.
        let r = unsafe { libc::sendmsg(sock.0 as RawFd, &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Some(Ok(r as usize));
        }
        match errno() {
            libc::EAGAIN => None,
            libc::EINTR => self.try_send(sock, bufs),
            e => Some(Err(e)),
        }
    }
}

impl Driver for EpollDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Epoll
    }

    fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()> {
        let timeout_ms = if !self.ready.is_empty() {
            0
        } else {
            timeout
                .map(|t| t.as_millis().min(i32::MAX as u128) as i32)
                .unwrap_or(-1)
        };
        out.append(&mut self.ready);
        // SAFETY: the kernel writes at most EVENTS_MAX events into the vector's spare capacity.
        let n = unsafe {
            self.events.set_len(0);
            libc::epoll_wait(
                self.epfd,
                self.events.as_mut_ptr(),
                EVENTS_MAX as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: epoll_wait initialised the first n entries.
        unsafe { self.events.set_len(n as usize) };
        let events = std::mem::take(&mut self.events);
        for ev in &events {
            let (flags, token) = (ev.events, ev.u64);
            match token {
                TOKEN_LISTENER => self.accept_some(out),
                TOKEN_WAKE => {
                    Waker::drain(self.wake_fd);
                    out.push(Completion::Wake);
                }
                _ => {
                    let (conn, fd) = untoken(token);
                    if flags & libc::EPOLLOUT as u32 != 0 {
                        self.retry_parked(fd, conn, out);
                    }
                    let readable =
                        libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP;
                    if flags & readable as u32 != 0 {
                        self.read_some(fd, conn, out);
                    }
                }
            }
        }
        self.events = events;
        Ok(())
    }

    fn start_recv(&mut self, sock: Sock, conn: ConnKey) {
        let fd = sock.0 as RawFd;
        if let Err(e) = self.ctl(libc::EPOLL_CTL_ADD, fd, READ_EVENTS, token(conn, fd)) {
            // Reported as a dead read side so the shard closes the connection.
            self.ready.push(Completion::RecvClosed {
                conn,
                err: e.raw_os_error(),
            });
        }
    }

    fn recv_buf(&mut self, buf: BufId, len: u32) -> &mut [u8] {
        self.pool
            .slice_mut(buf.id, buf.offset as usize, len as usize)
    }

    fn release(&mut self, buf: BufId) {
        if !self.pool.release(buf.id) {
            tracing::error!(
                buf = buf.id,
                "release of a buffer not lent to the shard; ignored"
            );
        }
    }

    fn send(&mut self, sock: Sock, conn: ConnKey, bufs: &[Bytes]) {
        match self.try_send(sock, bufs) {
            Some(result) => self.ready.push(Completion::Sent { conn, result }),
            None => {
                self.parked.insert(
                    conn,
                    ParkedSend {
                        sock,
                        bufs: bufs.to_vec(),
                    },
                );
                let fd = sock.0 as RawFd;
                let _ = self.ctl(
                    libc::EPOLL_CTL_MOD,
                    fd,
                    READ_EVENTS | libc::EPOLLOUT as u32,
                    token(conn, fd),
                );
            }
        }
    }

    fn shutdown_write(&mut self, sock: Sock, _conn: ConnKey) {
        // SAFETY: plain syscall on an fd this driver owns.
        unsafe { libc::shutdown(sock.0 as RawFd, libc::SHUT_WR) };
    }

    fn close(&mut self, sock: Sock, conn: ConnKey) {
        self.parked.remove(&conn);
        // SAFETY: the fd was accepted by this driver and is closed exactly once;
        // closing also removes it from the epoll set.
        unsafe { libc::close(sock.0 as RawFd) };
        self.open -= 1;
        self.pause_accept(false);
        self.ready.push(Completion::Closed { conn });
    }

    fn open_sockets(&self) -> usize {
        self.open
    }

    /// A heartbeat round or a broadcast puts a `Sent` per connection in
    /// `ready` (24 bytes each); keep that peak no longer than a second.
    fn trim(&mut self) {
        self.pool.trim();
        crate::alloc_trim::shrink_vec(&mut self.ready);
        if self.parked.is_empty() && self.parked.capacity() > 256 {
            self.parked = HashMap::new();
        }
    }
}

impl Drop for EpollDriver {
    fn drop(&mut self) {
        // SAFETY: both fds are owned by the driver and closed once.
        unsafe {
            libc::close(self.epfd);
            libc::close(self.listener_fd);
        }
    }
}
