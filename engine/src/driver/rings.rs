//! Several io_uring rings behind one shard (`io.rings_per_shard`).
//!
//! Why: a ring's direct-descriptor table is capped by RLIMIT_NOFILE (20,000
//! here), so a process that holds more connections needs more rings. More
//! shards than cores gives each ring a thread, and the threads then take
//! turns on the cores: at 100,000 connections ramped at 10,000/s, 56 shards
//! spent 100 µs of engine CPU per connection where 6 spent 70 µs, a third of
//! it in context switches (docs/ARCHITECTURE.md, "Many rings on few cores").
//! Here one shard thread drives all its rings, so a turn serves every ring
//! that has work with one enter each and the thread sleeps once for all.
//!
//! How the thread waits on all rings at once: each ring signals its own
//! eventfd (`IORING_REGISTER_EVENTFD`) when completion work is queued for
//! it, and an epoll set holds those eventfds. A ring is entered only when it
//! has work: its eventfd fired, the shard gave it something to submit, or
//! `UringDriver::has_work` shows work (after its last enter, and for every
//! ring at the start of each poll: a busy shard never waits, so it never
//! reads the eventfds, and a ring it gave nothing to starved). The
//! check after each enter closes the race with the eventfd: the kernel sets
//! `IORING_SQ_TASKRUN` from the first queued item until the work runs, and
//! signals the eventfd only when the queue was empty, so a ring whose flag is
//! clear after its eventfd was read will signal again.
//!
//! The shard's wake-up eventfd is in the same epoll set, not polled by a
//! ring: a ring's eventfd signal that comes from inside another eventfd's
//! wake-up (a `Waker::wake` completing a ring's poll) is deferred by the
//! kernel (through RCU), and cross-shard answers stalled for seconds behind
//! it in our tests.
//!
//! Names: each ring has its own listener (SO_REUSEPORT spreads connections
//! over all rings of all shards), its own slots and its own keys. A `Sock`
//! carries its ring in the top bits; a `BufId` in `ring`. The shard's keys
//! map to each ring's own dense keys (`KeyMap`), so each ring's table stays
//! as small as its share of the connections (4 bytes per connection there,
//! 8 here).

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use bytes::Bytes;

use super::uring::UringDriver;
use super::{BufId, Completion, ConnKey, Driver, DriverConfig, DriverKind, Sock};

/// A ring's slot numbers stay below 2^20 (the kernel's cap on a table); the
/// ring index goes above them.
const RING_SHIFT: u32 = 24;
const SLOT_MASK: u32 = (1 << RING_SHIFT) - 1;
/// Most rings one shard may drive (fits the `Sock` and `BufId` encodings).
pub const RINGS_MAX: usize = 64;
/// The epoll data of the shard's wake-up eventfd.
const WAKE: u64 = u64::MAX;

pub struct Rings {
    rings: Vec<UringDriver>,
    /// One eventfd per ring, in `epoll_fd`, with the ring index as its data.
    eventfds: Vec<RawFd>,
    epoll_fd: RawFd,
    /// The shard gave the ring work to submit since its last enter.
    touched: Vec<bool>,
    /// The ring had work at its last check, or its eventfd fired.
    ready: Vec<bool>,
    /// The shard's wake-up eventfd, in `epoll_fd` as `WAKE`.
    wake_fd: RawFd,
    /// The wake-up fired since the last `Completion::Wake`.
    woken: bool,
    keys: KeyMap,
    /// Scratch for one ring's completions before their keys are translated.
    batch: Vec<Completion>,
    events: Vec<libc::epoll_event>,
}

impl Rings {
    /// Each listener gets a ring; `wake_fd` is the shard's wake-up eventfd.
    pub fn new(
        listeners: Vec<socket2::Socket>,
        wake_fd: RawFd,
        cfg: &DriverConfig,
    ) -> io::Result<Rings> {
        assert!(
            (1..=RINGS_MAX).contains(&listeners.len()),
            "1..={RINGS_MAX} rings"
        );
        // SAFETY: epoll_create1 takes no pointers; the fd is owned by `Rings`.
        let epoll_fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll_fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut rings = Rings {
            rings: Vec::with_capacity(listeners.len()),
            eventfds: Vec::with_capacity(listeners.len()),
            epoll_fd,
            touched: vec![true; listeners.len()],
            ready: vec![true; listeners.len()],
            wake_fd,
            woken: false,
            keys: KeyMap::new(listeners.len()),
            batch: Vec::new(),
            events: Vec::with_capacity(listeners.len() + 1),
        };
        rings.epoll_add(wake_fd, WAKE)?;
        for (i, listener) in listeners.into_iter().enumerate() {
            let ring = UringDriver::new(listener, -1, cfg)?;
            // SAFETY: eventfd takes no pointers; the fd is owned by `Rings`.
            let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if efd < 0 {
                return Err(io::Error::last_os_error());
            }
            rings.eventfds.push(efd);
            ring.register_eventfd(efd)?;
            rings.epoll_add(efd, i as u64)?;
            rings.rings.push(ring);
        }
        Ok(rings)
    }

    fn epoll_add(&self, fd: RawFd, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: data,
        };
        // SAFETY: `ev` is a live epoll_event; both fds are open.
        if unsafe { libc::epoll_ctl(self.epoll_fd, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Enter every ring with work, without waiting; completions into `out`.
    fn poll_ready(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        for r in 0..self.rings.len() {
            if !(self.touched[r] || self.ready[r]) {
                continue;
            }
            self.touched[r] = false;
            self.batch.clear();
            self.rings[r].poll(Some(Duration::ZERO), &mut self.batch)?;
            for c in self.batch.drain(..) {
                out.push(self.keys.in_shard_names(r, c));
            }
            // Read the eventfd back to zero, then look: work queued after the
            // read shows in `has_work`, work queued after the look signals again.
            super::Waker::drain(self.eventfds[r]);
            self.ready[r] = self.rings[r].has_work();
        }
        Ok(())
    }

    /// Block until a ring's eventfd fires or `timeout` passes.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let ms = match timeout {
            None => -1,
            // Round up: a 0.3 ms wait must not become a busy loop.
            Some(d) => d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
        };
        self.events.clear();
        let cap = self.events.capacity().max(1);
        // SAFETY: the vector has room for `cap` events; the kernel writes at
        // most that many and returns how many it wrote.
        let n =
            unsafe { libc::epoll_wait(self.epoll_fd, self.events.as_mut_ptr(), cap as i32, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::EINTR) {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: the kernel initialised the first `n` entries.
        unsafe { self.events.set_len(n as usize) };
        for ev in &self.events {
            match ev.u64 {
                WAKE => {
                    super::Waker::drain(self.wake_fd);
                    self.woken = true;
                }
                r => self.ready[r as usize] = true,
            }
        }
        Ok(())
    }

    fn ring_of(sock: Sock) -> (usize, Sock) {
        ((sock.0 >> RING_SHIFT) as usize, Sock(sock.0 & SLOT_MASK))
    }
}

impl Driver for Rings {
    fn kind(&self) -> DriverKind {
        DriverKind::Uring
    }

    fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()> {
        let start = out.len();
        // A busy shard returns below without waiting, so it never reads the
        // rings' eventfds: a ring with work and nothing the shard gave it
        // would wait until the shard idles (10 s in a test whose shard never
        // did). Looking costs a few loads of shared memory per ring.
        for r in 0..self.rings.len() {
            if !self.ready[r] && self.rings[r].has_work() {
                self.ready[r] = true;
            }
        }
        // Twice: what one enter left to submit (re-arms) goes in with the next.
        for _ in 0..2 {
            self.poll_ready(out)?;
            if out.len() > start || !self.ready.contains(&true) {
                break;
            }
        }
        // Return with completions, when asked not to wait, or while a ring
        // still has work (the shard comes straight back).
        if out.len() > start || timeout == Some(Duration::ZERO) || self.ready.contains(&true) {
            return Ok(());
        }
        // Before sleeping, look at every ring once more (shared memory, no
        // system call): under load, work often arrives on rings this pass
        // already left, and taking it now saves an epoll round trip.
        let mut found = false;
        for r in 0..self.rings.len() {
            if self.rings[r].has_work() {
                self.ready[r] = true;
                found = true;
            }
        }
        if found {
            return self.poll_ready(out);
        }
        self.wait(timeout)?;
        if std::mem::take(&mut self.woken) {
            out.push(Completion::Wake);
        }
        self.poll_ready(out)
    }

    fn start_recv(&mut self, sock: Sock, conn: ConnKey) {
        let (r, slot) = Rings::ring_of(sock);
        let local = self.keys.local(r, conn);
        self.touched[r] = true;
        self.rings[r].start_recv(slot, local);
    }

    fn recv_buf(&mut self, buf: BufId, len: u32) -> &mut [u8] {
        let r = usize::from(buf.ring);
        self.rings[r].recv_buf(BufId { ring: 0, ..buf }, len)
    }

    fn release(&mut self, buf: BufId) {
        let r = usize::from(buf.ring);
        self.touched[r] = true;
        self.rings[r].release(BufId { ring: 0, ..buf });
    }

    fn send(&mut self, sock: Sock, conn: ConnKey, bufs: &[Bytes]) {
        let (r, slot) = Rings::ring_of(sock);
        let local = self.keys.local(r, conn);
        self.touched[r] = true;
        self.rings[r].send(slot, local, bufs);
    }

    fn shutdown_write(&mut self, sock: Sock, conn: ConnKey) {
        let (r, slot) = Rings::ring_of(sock);
        let local = self.keys.local(r, conn);
        self.touched[r] = true;
        self.rings[r].shutdown_write(slot, local);
    }

    fn close(&mut self, sock: Sock, conn: ConnKey) {
        let (r, slot) = Rings::ring_of(sock);
        let local = self.keys.local(r, conn);
        self.touched[r] = true;
        self.rings[r].close(slot, local);
    }

    fn open_sockets(&self) -> usize {
        self.rings.iter().map(|r| r.open_sockets()).sum()
    }

    fn reads_behind(&mut self) -> bool {
        self.rings.iter_mut().any(|r| r.has_work())
    }

    fn trim(&mut self) {
        for r in &mut self.rings {
            r.trim();
        }
        self.keys.trim();
    }
}

impl Drop for Rings {
    fn drop(&mut self) {
        // The rings go first (their teardown waits for cancelled work), then the fds.
        self.rings.clear();
        for &fd in self.eventfds.iter().chain(std::iter::once(&self.epoll_fd)) {
            // SAFETY: each fd was created by `Rings` and is closed once.
            unsafe { libc::close(fd) };
        }
    }
}

/// The shard's keys and each ring's own keys, both ways. A ring's keys are
/// dense (freed ones are reused first), so its tables stay as small as its
/// share of the connections.
struct KeyMap {
    /// By shard key: 0, or (ring + 1) << 24 | ring key.
    local: Vec<u32>,
    /// By ring, then ring key: the shard key.
    shard: Vec<Vec<ConnKey>>,
    /// By ring: ring keys free for reuse.
    free: Vec<Vec<u32>>,
}

const UNMAPPED: ConnKey = ConnKey::MAX;

impl KeyMap {
    fn new(rings: usize) -> KeyMap {
        KeyMap {
            local: Vec::new(),
            shard: vec![Vec::new(); rings],
            free: vec![Vec::new(); rings],
        }
    }

    /// `conn`'s key in ring `r`, given one if it has none yet (a new
    /// connection's `start_recv`, or the `close` of one refused at accept).
    fn local(&mut self, r: usize, conn: ConnKey) -> ConnKey {
        let i = conn as usize;
        if i >= self.local.len() {
            self.local.resize(i + 1, 0);
        }
        let m = self.local[i];
        if m != 0 {
            debug_assert_eq!((m >> 24) as usize, r + 1, "key {conn} used on two rings");
            return m & SLOT_MASK;
        }
        let k = match self.free[r].pop() {
            Some(k) => {
                self.shard[r][k as usize] = conn;
                k
            }
            None => {
                self.shard[r].push(conn);
                (self.shard[r].len() - 1) as u32
            }
        };
        assert!(k <= SLOT_MASK, "ring key past 2^24");
        self.local[i] = ((r as u32 + 1) << 24) | k;
        k
    }

    /// A completion of ring `r`, in the shard's keys and names. `Closed` ends
    /// the mapping: the shard may reuse its key, the ring its own.
    fn in_shard_names(&mut self, r: usize, c: Completion) -> Completion {
        let shard_key = |s: &Self, k: ConnKey| s.shard[r][k as usize];
        match c {
            Completion::Accepted { sock } => Completion::Accepted {
                sock: Sock(((r as u32) << RING_SHIFT) | sock.0),
            },
            Completion::Recv { conn, buf, len } => Completion::Recv {
                conn: shard_key(self, conn),
                buf: BufId {
                    ring: r as u16,
                    ..buf
                },
                len,
            },
            Completion::RecvClosed { conn, err } => Completion::RecvClosed {
                conn: shard_key(self, conn),
                err,
            },
            Completion::Sent { conn, result } => Completion::Sent {
                conn: shard_key(self, conn),
                result,
            },
            Completion::Closed { conn } => {
                let g = shard_key(self, conn);
                self.shard[r][conn as usize] = UNMAPPED;
                self.free[r].push(conn);
                self.local[g as usize] = 0;
                Completion::Closed { conn: g }
            }
            Completion::Wake => Completion::Wake,
        }
    }

    fn trim(&mut self) {
        for f in &mut self.free {
            crate::alloc_trim::shrink_vec(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_both_ways_and_are_reused_per_ring() {
        let mut m = KeyMap::new(3);
        assert_eq!(m.local(2, 10), 0);
        assert_eq!(m.local(2, 11), 1);
        assert_eq!(m.local(0, 12), 0);
        // The same shard key keeps its ring key.
        assert_eq!(m.local(2, 10), 0);
        let c = m.in_shard_names(
            2,
            Completion::Sent {
                conn: 1,
                result: Ok(5),
            },
        );
        assert!(matches!(
            c,
            Completion::Sent {
                conn: 11,
                result: Ok(5)
            }
        ));
        let c = m.in_shard_names(2, Completion::Closed { conn: 0 });
        assert!(matches!(c, Completion::Closed { conn: 10 }));
        // Ring 2's key 0 is reused first; shard key 10 may now go to another ring.
        assert_eq!(m.local(2, 13), 0);
        assert_eq!(m.local(1, 10), 0);
        let c = m.in_shard_names(
            1,
            Completion::Recv {
                conn: 0,
                buf: BufId {
                    id: 3,
                    ring: 0,
                    offset: 64,
                },
                len: 9,
            },
        );
        match c {
            Completion::Recv { conn, buf, len } => {
                assert_eq!((conn, buf.id, buf.ring, buf.offset, len), (10, 3, 1, 64, 9))
            }
            other => panic!("{other:?}"),
        }
    }

    /// Two listeners on one port (SO_REUSEPORT), as the engine binds a shard's rings.
    fn listeners(n: usize) -> (Vec<socket2::Socket>, std::net::SocketAddr) {
        use socket2::{Domain, Protocol, Socket, Type};
        let mut addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut out = Vec::new();
        for i in 0..n {
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
            if i > 0 {
                s.set_reuse_port(true).unwrap();
            }
            s.set_nonblocking(true).unwrap();
            s.bind(&addr.into()).unwrap();
            if i == 0 {
                s.set_reuse_port(true).unwrap();
            }
            s.listen(64).unwrap();
            addr = s.local_addr().unwrap().as_socket().unwrap();
            out.push(s);
        }
        (out, addr)
    }

    #[test]
    fn every_ring_is_served_while_the_shard_never_waits() {
        // A busy shard polls with a zero timeout and never reads the rings'
        // eventfds; a ring it gave nothing to must still be entered when the
        // kernel has work for it (here: the accepts of new connections).
        let (ls, addr) = listeners(2);
        // SAFETY: eventfd takes no pointers; the fd is closed below.
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        assert!(wake >= 0);
        let cfg = DriverConfig {
            conns_max: 64,
            recv_bufs: 16,
            recv_buf_bytes: 4096,
            recv_incremental: false,
            ring_entries: 64,
            cq_entries: 0,
        };
        let mut rings = match Rings::new(ls, wake, &cfg) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("io_uring unavailable here ({e}); skipped");
                return;
            }
        };
        let mut out = Vec::new();
        rings.poll(Some(Duration::ZERO), &mut out).unwrap();
        const CLIENTS: usize = 16;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let mut by_ring = [0usize; 2];
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while by_ring.iter().sum::<usize>() < CLIENTS && std::time::Instant::now() < deadline {
            out.clear();
            rings.poll(Some(Duration::ZERO), &mut out).unwrap();
            for c in &out {
                if let Completion::Accepted { sock } = c {
                    by_ring[Rings::ring_of(*sock).0] += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            by_ring.iter().sum::<usize>(),
            CLIENTS,
            "accepted by ring: {by_ring:?}"
        );
        drop(clients);
        drop(rings);
        // SAFETY: `wake` was opened above and is closed once.
        unsafe { libc::close(wake) };
    }

    #[test]
    fn a_sock_carries_its_ring() {
        let c = KeyMap::new(5).in_shard_names(4, Completion::Accepted { sock: Sock(19_999) });
        let Completion::Accepted { sock } = c else {
            panic!()
        };
        assert_eq!(Rings::ring_of(sock), (4, Sock(19_999)));
    }
}
