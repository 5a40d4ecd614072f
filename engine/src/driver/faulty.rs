//! A fault injector around a real driver, for tests (`io.fault_seed`).
//!
//! The deterministic simulation (`driver/sim.rs`) runs the engine over an
//! in-memory network; the scenario tests run it over real loopback sockets
//! with tungstenite clients. This wrapper gives the second kind some of the
//! first's faults, on the real epoll or io_uring driver underneath:
//! - short writes: a `send` hands the driver a random prefix of its bytes, so
//!   the `Sent` that follows reports fewer bytes than the shard queued, and the
//!   shard resubmits the rest (the path a full socket buffer takes);
//! - delayed completions: some completions wait for the next `poll`, and the
//!   later ones of the same connection with them, so completions are reordered
//!   across connections but never within one (`Closed` stays last).
//!
//! The faults are seeded, but the sockets and threads are real, so a run does
//! not replay exactly; for that, see the simulation.

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::time::Duration;

use bytes::Bytes;

use super::sim::Rng;
use super::{BufId, Completion, ConnKey, Driver, DriverKind, Sock};

/// Per mille of sends cut short, and of completions delayed by one poll.
const SHORT_WRITE: u32 = 200;
const DELAY: u32 = 200;

/// Wrap `inner` when `seed` is not 0 (the default, production: no wrapper).
pub fn wrap(inner: Box<dyn Driver>, seed: u64, shard: usize) -> Box<dyn Driver> {
    if seed == 0 {
        return inner;
    }
    Box::new(FaultyDriver {
        inner,
        rng: Rng::new(seed ^ (shard as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        held: VecDeque::new(),
        fresh: Vec::new(),
        cut: Vec::new(),
    })
}

pub struct FaultyDriver {
    inner: Box<dyn Driver>,
    rng: Rng,
    /// Completions held back from the last poll, in order.
    held: VecDeque<Completion>,
    fresh: Vec<Completion>,
    cut: Vec<Bytes>,
}

impl Driver for FaultyDriver {
    fn kind(&self) -> DriverKind {
        self.inner.kind()
    }

    fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()> {
        // Held completions go out now: do not sleep on them.
        let timeout = if self.held.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let res = self.inner.poll(timeout, &mut self.fresh);
        // What was held last time goes first, all of it: a delay is one poll.
        out.extend(self.held.drain(..));
        let mut holding: BTreeSet<ConnKey> = BTreeSet::new();
        for c in self.fresh.drain(..) {
            match c.conn() {
                Some(k) if holding.contains(&k) || self.rng.chance(DELAY) => {
                    holding.insert(k);
                    self.held.push_back(c);
                }
                _ => out.push(c),
            }
        }
        res
    }

    fn start_recv(&mut self, sock: Sock, conn: ConnKey) {
        self.inner.start_recv(sock, conn)
    }

    fn recv_buf(&mut self, buf: BufId, len: u32) -> &mut [u8] {
        self.inner.recv_buf(buf, len)
    }

    fn release(&mut self, buf: BufId) {
        self.inner.release(buf)
    }

    fn send(&mut self, sock: Sock, conn: ConnKey, bufs: &[Bytes]) {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total < 2 || !self.rng.chance(SHORT_WRITE) {
            return self.inner.send(sock, conn, bufs);
        }
        let mut left = self.rng.range(1, total as u64 - 1) as usize;
        self.cut.clear();
        for b in bufs {
            let take = left.min(b.len());
            if take == 0 {
                break;
            }
            self.cut.push(b.slice(..take));
            left -= take;
        }
        self.inner.send(sock, conn, &self.cut);
        self.cut.clear();
    }

    fn shutdown_write(&mut self, sock: Sock, conn: ConnKey) {
        self.inner.shutdown_write(sock, conn)
    }

    fn close(&mut self, sock: Sock, conn: ConnKey) {
        self.inner.close(sock, conn)
    }

    fn open_sockets(&self) -> usize {
        self.inner.open_sockets()
    }

    fn trim(&mut self) {
        self.inner.trim()
    }
}
