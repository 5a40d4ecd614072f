//! The I/O driver: io_uring (default) or epoll (fallback) behind one small trait.
//!
//! The driver is completion-based for both backends: the shard submits work
//! (`start_recv`, `send`, `shutdown_write`, `close`) and later reaps
//! [`Completion`]s from [`Driver::poll`]. The shard never runs protocol logic
//! while the driver is reaping: `poll` only appends to a vector, and the shard
//! handles that vector afterwards.
//!
//! Ownership rules shared by both backends:
//! - A socket is named by a [`Sock`]: an ordinary fd (epoll) or a direct
//!   descriptor slot (io_uring). The shard stores it; the driver interprets it.
//! - A connection is named by a [`ConnKey`] chosen by the shard (its slab index).
//!   Every completion for that socket carries it.
//! - `send` buffers are `Bytes` clones: the driver holds them until the
//!   matching [`Completion::Sent`] is produced, so a buffer is never freed
//!   while the kernel may still read it.
//! - After `close`, exactly one [`Completion::Closed`] follows, and it is the
//!   last completion for that `ConnKey`: only then may the shard reuse the key.
//!   Receive buffers reported before it must still be released.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use bytes::Bytes;

pub mod epoll;
pub mod faulty;
pub(crate) mod mapping;
pub(crate) mod recv_pool;
pub mod rings;
pub mod sim;
pub mod uring;

pub use crate::payload::ConnKey;

/// A socket as the driver knows it: a raw fd (epoll) or a direct-descriptor slot (io_uring).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sock(pub u32);

/// Handle to received bytes owned by the driver until [`Driver::release`]:
/// a buffer, and where in it they start (io_uring may put several reads into
/// one buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufId {
    pub id: u16,
    /// Which ring of the shard lent it (`rings.rs`); 0 with one ring.
    pub ring: u16,
    pub offset: u32,
}

/// Most `Bytes` one `send` call may carry (one vectored write).
pub const SEND_IOVECS_MAX: usize = 64;

#[derive(Debug)]
pub enum Completion {
    /// A new connection on this shard's listener. The shard must either
    /// `start_recv` it under a fresh key or `close` it.
    Accepted { sock: Sock },
    /// `len` bytes arrived for `conn` in `buf`; see [`Driver::recv_buf`].
    Recv { conn: ConnKey, buf: BufId, len: u32 },
    /// The read side ended: `err` is None for EOF, else the errno.
    /// No further `Recv` follows for `conn`.
    RecvClosed { conn: ConnKey, err: Option<i32> },
    /// One `send` finished: bytes written (possibly fewer than submitted) or errno.
    Sent {
        conn: ConnKey,
        result: Result<usize, i32>,
    },
    /// The last completion for `conn`: the key may be reused.
    Closed { conn: ConnKey },
    /// Another thread signalled this shard's wake-up (see [`Waker`]).
    Wake,
}

impl Completion {
    /// The connection a completion is for (`Accepted` and `Wake` have none yet).
    pub fn conn(&self) -> Option<ConnKey> {
        match self {
            Completion::Accepted { .. } | Completion::Wake => None,
            Completion::Recv { conn, .. }
            | Completion::RecvClosed { conn, .. }
            | Completion::Sent { conn, .. }
            | Completion::Closed { conn } => Some(*conn),
        }
    }
}

/// Which backend is running (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    Uring,
    Epoll,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Uring => "uring",
            DriverKind::Epoll => "epoll",
        }
    }
}

/// Sizes the driver needs; from the engine config.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Connections this shard may hold (sizes the direct-descriptor table).
    pub conns_max: u32,
    /// Receive buffers shared by all connections of the shard (power of two for io_uring).
    pub recv_bufs: u16,
    /// Size of each receive buffer.
    pub recv_buf_bytes: u32,
    /// io_uring: let reads take only what they need from a buffer where the
    /// kernel supports it (`IOU_PBUF_RING_INC`, 6.12+).
    pub recv_incremental: bool,
    /// Submission queue entries (io_uring).
    pub ring_entries: u32,
    /// Completion queue entries (io_uring); 0: four times `ring_entries`.
    /// Sends in flight are kept within what the CQ can hold (see the uring driver).
    pub cq_entries: u32,
}

pub trait Driver {
    fn kind(&self) -> DriverKind;

    /// Wait up to `timeout` (None: until something happens) for completions and
    /// append them to `out`. Submits everything queued since the last call first.
    /// Returns immediately when completions are already pending.
    fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()>;

    /// Start receiving on an accepted socket; its completions will carry `conn`.
    fn start_recv(&mut self, sock: Sock, conn: ConnKey);

    /// The bytes of a `Recv` completion. Mutable so frames can be unmasked in place.
    fn recv_buf(&mut self, buf: BufId, len: u32) -> &mut [u8];

    /// Give a receive buffer back (exactly once per `Recv`).
    fn release(&mut self, buf: BufId);

    /// Write `bufs` (at most [`SEND_IOVECS_MAX`]) in one vectored write.
    /// At most one send may be outstanding per connection; exactly one `Sent` follows.
    fn send(&mut self, sock: Sock, conn: ConnKey, bufs: &[Bytes]);

    /// Half-close: send FIN after queued data (used after our close frame).
    fn shutdown_write(&mut self, sock: Sock, conn: ConnKey);

    /// Cancel outstanding work on the socket and close it; `Closed` follows last.
    fn close(&mut self, sock: Sock, conn: ConnKey);

    /// Sockets currently open through this driver (accepted and not yet closed).
    fn open_sockets(&self) -> usize;

    /// Give back memory kept from a past burst; the shard calls it about once a second.
    fn trim(&mut self) {}

    /// Whether received data may be waiting in the kernel that the last poll
    /// did not hand over (io_uring runs a bounded batch of completion work per
    /// enter). The heartbeat does not blame a client for a pong its shard has
    /// not read yet.
    fn reads_behind(&mut self) -> bool {
        false
    }
}

/// Wakes a shard blocked in [`Driver::poll`] from another thread (an eventfd).
#[derive(Debug)]
pub struct Waker {
    fd: RawFd,
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd takes no pointers; the returned fd is owned by the Waker.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Waker { fd })
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Signal the shard. Coalesces: many wakes before one read cost one wake-up.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own. EAGAIN
        // (counter saturated) means a wake-up is already pending, which is fine.
        unsafe { libc::write(self.fd, (&one as *const u64).cast(), 8) };
    }

    /// Reset the counter (called by the driver when the eventfd is readable).
    pub fn drain(fd: RawFd) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from the eventfd.
        unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        // SAFETY: the fd was created by this Waker and is closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// Build the requested driver, falling back to epoll (with the reason logged)
/// when io_uring cannot be set up and the choice was automatic. Several
/// listeners: one io_uring ring on each, driven together (`rings.rs`); epoll
/// uses the first.
pub fn build(
    want: Option<DriverKind>,
    mut listeners: Vec<socket2::Socket>,
    wake_fd: RawFd,
    cfg: &DriverConfig,
) -> io::Result<Box<dyn Driver>> {
    let uring = |mut ls: Vec<socket2::Socket>| -> io::Result<Box<dyn Driver>> {
        if ls.len() > 1 {
            Ok(Box::new(rings::Rings::new(ls, wake_fd, cfg)?))
        } else {
            Ok(Box::new(uring::UringDriver::new(
                ls.remove(0),
                wake_fd,
                cfg,
            )?))
        }
    };
    match want {
        Some(DriverKind::Epoll) => Ok(Box::new(epoll::EpollDriver::new(
            listeners.swap_remove(0),
            wake_fd,
            cfg,
        )?)),
        Some(DriverKind::Uring) => uring(listeners),
        None => {
            let clones = listeners
                .iter()
                .map(|l| l.try_clone())
                .collect::<io::Result<Vec<_>>>()?;
            match uring(clones) {
                Ok(d) => Ok(d),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        hint = uring::setup_failure_hint(&e),
                        "io_uring unavailable, falling back to epoll"
                    );
                    // The other rings' listeners close here and leave the port's group.
                    Ok(Box::new(epoll::EpollDriver::new(
                        listeners.swap_remove(0),
                        wake_fd,
                        cfg,
                    )?))
                }
            }
        }
    }
}
