//! The few system calls the event loop needs: epoll, and non-blocking TCP
//! sockets bound to a chosen source address before connecting.
//!
//! All `unsafe` of the crate lives here.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Readable (or peer hung up).
pub const READ: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
/// Writable (a non-blocking connect finished, or the send buffer has room).
pub const WRITE: u32 = libc::EPOLLOUT as u32;
/// Error or hang-up; always reported, never requested.
pub const FAIL: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;

/// Events one `Epoll::wait` returns at most.
pub const EVENTS_MAX: usize = 512;

/// An epoll instance (level-triggered).
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

/// One readiness event: the token given at registration and the event bits.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub token: u64,
    pub bits: u32,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new fd we own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, bits: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: bits,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn add(&self, fd: RawFd, token: u64, bits: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, bits)
    }

    pub fn modify(&self, fd: RawFd, token: u64, bits: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, bits)
    }

    /// Wait at most `timeout_ms` and append the ready events to `out` (cleared first).
    /// At most `EVENTS_MAX` events per call.
    pub fn wait(&self, out: &mut Vec<Event>, timeout_ms: i32) -> io::Result<()> {
        out.clear();
        let mut raw = [libc::epoll_event { events: 0, u64: 0 }; EVENTS_MAX];
        // SAFETY: `raw` has room for `raw.len()` events and outlives the call.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                raw.as_mut_ptr(),
                raw.len() as i32,
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
        out.extend(raw[..n as usize].iter().map(|e| Event {
            token: e.u64,
            bits: e.events,
        }));
        Ok(())
    }
}

/// Start a non-blocking connect from `source` to `dest`. Port 0 in `source`: the
/// port is chosen at connect time, so one source address serves every
/// destination with its own ephemeral range; a port that is taken (a socket
/// of an earlier run in TIME_WAIT, say) falls back to that. `Ok` means
/// connected or in progress; the socket becomes writable when it is done.
pub fn start_connect(source: Option<SocketAddr>, dest: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::for_address(dest),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    s.set_tcp_nodelay(true)?;
    if let Some(src) = source {
        if src.is_ipv4() {
            set_bind_no_port(&s)?;
        }
        let explicit = src.port() != 0 && s.bind(&SockAddr::from(src)).is_ok();
        if !explicit {
            s.bind(&SockAddr::from(SocketAddr::new(src.ip(), 0)))?;
        }
    }
    match s.connect(&SockAddr::from(dest)) {
        Ok(()) => Ok(s),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(s),
        Err(e) => Err(e),
    }
}

/// IP_BIND_ADDRESS_NO_PORT: defer the port choice to connect(), which picks a port
/// unique per 4-tuple instead of per source address.
fn set_bind_no_port(s: &Socket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the option value points at a live c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Read into `buf`; `Ok(0)` is end of stream. EAGAIN comes back as `WouldBlock`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Write from `buf` (MSG_NOSIGNAL: a closed peer is an error, not a signal).
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The soft limit on open descriptors of this process.
pub fn fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } < 0 {
        return 1024;
    }
    r.rlim_cur
}

/// CPU time (user + system) this process has used, in seconds.
pub fn cpu_seconds_self() -> f64 {
    // SAFETY: rusage is plain data, zeroed is a valid value; getrusage fills it in.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `r` is a valid rusage for the call to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) } < 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(r.ru_utime) + tv(r.ru_stime)
}

/// Resident memory of this process, bytes: (VmRSS, RssAnon). RssAnon leaves out
/// the binary's and libraries' pages, which every worker process shares.
pub fn rss_self() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/self/status") else {
        return (0, 0);
    };
    let field = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| {
                l[key.len()..]
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

/// Send `sig` to process `pid` (the suite's drain step: SIGTERM to the server).
pub fn signal(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    if pid <= 1 {
        return Err(io::Error::other("refusing to signal pid 0 or 1"));
    }
    // SAFETY: kill takes no pointers.
    if unsafe { libc::kill(pid, sig) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Wall clock in nanoseconds since the Unix epoch (comparable across processes).
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Short name for an I/O error, used as the error-kind key in reports.
pub fn error_kind(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "refused".into(),
        Some(libc::ETIMEDOUT) => "timed out".into(),
        Some(libc::ECONNRESET) => "reset".into(),
        Some(libc::EPIPE) => "broken pipe".into(),
        Some(libc::EADDRNOTAVAIL) => "address not available (ephemeral ports exhausted?)".into(),
        Some(libc::EADDRINUSE) => "address in use".into(),
        Some(libc::EMFILE) | Some(libc::ENFILE) => "file descriptor limit".into(),
        Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH) => "unreachable".into(),
        Some(code) => format!("errno {code}"),
        None => e.kind().to_string(),
    }
}

/// The pending error of a socket whose non-blocking connect reported readiness.
pub fn take_socket_error(s: &Socket) -> Option<io::Error> {
    match s.take_error() {
        Ok(e) => e,
        Err(e) => Some(e),
    }
}

/// Run the calling thread at nice -5 if the process may (CAP_SYS_NICE; as
/// root, say): the publisher's two threads, light and on a schedule. On one
/// core shared with 56 busy worker processes and the coordinator's merging of
/// their histograms, the publisher sent 412 of 500 publications a second at
/// the million. Best effort: without the capability nothing changes.
pub fn raise_thread_priority() {
    // SAFETY: gettid and setpriority take no pointers; setpriority on our own
    // thread id changes only this thread's nice value (Linux: per thread).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, -5);
    }
}
