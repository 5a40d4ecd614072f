//! Where an idle subscribed connection's bytes go: a counting allocator around
//! the engine, live bytes and live allocations by size before the clients
//! connect, once they are subscribed, and after a heartbeat round.
//!
//! This binary holds one test so nothing else allocates meanwhile (the test
//! clients are plain sockets reading into a stack buffer). It prints the table
//! (`cargo test -p shardcast --test idle_heap -- --nocapture`) and asserts
//! the heap an idle subscribed connection keeps beyond its slab record (which
//! is reserved at start, so not counted here): its 4 bytes in the channel's
//! subscriber list (heartbeats need no timer entry: the shard sweeps its slab),
//! with the vectors' spare capacity, and no allocation of its own left behind
//! by the handshake, the subscribe reply or the heartbeat.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use shardcast::{Config, DriverKind, Engine};

/// Exact sizes up to this many bytes get their own counter; larger ones share one.
const SMALL: usize = 1024;

struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_COUNT: AtomicI64 = AtomicI64::new(0);
static BY_SIZE: [AtomicI64; SMALL + 2] = [const { AtomicI64::new(0) }; SMALL + 2];
/// Bytes of the blocks larger than `SMALL`, by power of two (the shard's vectors).
static LARGE_BYTES: [AtomicI64; 64] = [const { AtomicI64::new(0) }; 64];

fn note(size: usize, sign: i64) {
    LIVE_BYTES.fetch_add(sign * size as i64, Relaxed);
    LIVE_COUNT.fetch_add(sign, Relaxed);
    BY_SIZE[size.min(SMALL + 1)].fetch_add(sign, Relaxed);
    if size > SMALL {
        let b = (usize::BITS - (size - 1).leading_zeros()) as usize;
        LARGE_BYTES[b].fetch_add(sign * size as i64, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters are plain atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size(), 1);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size(), 1);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note(l.size(), -1);
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(l.size(), -1);
        note(new, 1);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

struct Snap {
    bytes: i64,
    count: i64,
    by_size: Vec<i64>,
    large: Vec<i64>,
}

fn snap() -> Snap {
    Snap {
        bytes: LIVE_BYTES.load(Relaxed),
        count: LIVE_COUNT.load(Relaxed),
        by_size: BY_SIZE.iter().map(|c| c.load(Relaxed)).collect(),
        large: LARGE_BYTES.iter().map(|c| c.load(Relaxed)).collect(),
    }
}

/// Print what grew between two snapshots; returns bytes and allocations per connection.
fn report(what: &str, a: &Snap, b: &Snap, n: usize) -> (f64, f64) {
    let per = (b.bytes - a.bytes) as f64 / n as f64;
    let allocs = (b.count - a.count) as f64 / n as f64;
    println!("{what}: live heap {per:+.1} B/conn, {allocs:+.3} allocations/conn");
    for (size, (x, y)) in a.by_size.iter().zip(&b.by_size).enumerate() {
        let d = y - x;
        if d.unsigned_abs() as usize * 20 >= n || (size > SMALL && d != 0) {
            let label = if size > SMALL {
                format!("> {SMALL} B")
            } else {
                format!("{size} B")
            };
            println!(
                "  {label:>9}: {d:+} allocations ({:+.3}/conn)",
                d as f64 / n as f64
            );
        }
    }
    for (b, (x, y)) in a.large.iter().zip(&b.large).enumerate() {
        if x != y {
            println!(
                "  blocks of {}-{} B: {:+} bytes ({:+.1} B/conn)",
                (1u64 << b) / 2 + 1,
                1u64 << b,
                y - x,
                (y - x) as f64 / n as f64
            );
        }
    }
    (per, allocs)
}

const REQUEST: &[u8] = b"GET /ws?subscribe=idle HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

/// Read until the subscribe reply arrived (stack buffer: the client allocates nothing).
fn wait_subscribed(s: &mut TcpStream) {
    let mut buf = [0u8; 512];
    let mut have = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !buf[..have].windows(9).any(|w| w == b"\"offset\":") {
        assert!(Instant::now() < deadline, "no subscribe reply");
        if have == buf.len() {
            have = 0;
        }
        let n = s.read(&mut buf[have..]).expect("read");
        assert!(n > 0, "closed before the subscribe reply");
        have += n;
    }
}

fn measure(driver: DriverKind, n: usize) {
    let mut cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 1,
        pin_cores: false,
        driver: Some(driver),
        ..Config::default()
    };
    cfg.io.recv_bufs = 64;
    cfg.io.ring_entries = 256;
    cfg.limits.conns_per_shard_max = (n + 64) as u32;
    cfg.limits.ping_interval_ms = 3_000;
    cfg.limits.pong_timeout_ms = 60_000;
    // The handshake timeout stays at its default (10 s): each accepted
    // connection's deadline entry must go once it upgrades (the shard's trim),
    // not when the deadline passes, long after the first sample below.
    let h = Engine::start(cfg).expect("engine starts");
    if h.driver() != driver {
        println!("{driver:?} not available here: skipped");
        h.shutdown();
        return;
    }
    let addr = h.local_addr();
    let mut clients: Vec<TcpStream> = Vec::with_capacity(n);
    std::thread::sleep(Duration::from_millis(300));
    let before = snap();
    let large = |s: &Snap| s.by_size[SMALL + 1];
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(REQUEST).expect("write");
        clients.push(s);
    }
    for s in &mut clients {
        wait_subscribed(s);
    }
    // The first writes settle and the driver's once-a-second trim runs.
    std::thread::sleep(Duration::from_millis(2_200));
    let subscribed = snap();
    println!("--- {driver:?}, {n} idle subscribed connections, 1 shard");
    let (up, up_allocs) = report("subscribed", &before, &subscribed, n);
    // One heartbeat round (3 s interval): every connection gets a ping.
    std::thread::sleep(Duration::from_millis(3_500));
    let pinged = snap();
    let (beat, beat_allocs) = report("after a ping round", &before, &pinged, n);
    println!(
        "large blocks (> {SMALL} B): {} before, {} subscribed, {} after a ping round",
        large(&before),
        large(&subscribed),
        large(&pinged)
    );
    let stats = h.stats();
    assert_eq!(stats.ws_open, n as u64, "every connection still open");
    drop(clients);
    h.shutdown();
    // io_uring keeps 16 warm send entries per shard whatever the load (a
    // msghdr box and two small vectors each): a fixed cost, not one per
    // connection, taken off before dividing.
    let (warm_bytes, warm_allocs) = match driver {
        DriverKind::Uring => (16.0 * 512.0, 3.0 * 16.0),
        _ => (0.0, 0.0),
    };
    let up = up - warm_bytes / n as f64;
    let beat = beat - warm_bytes / n as f64;
    let up_allocs = up_allocs - warm_allocs / n as f64;
    let beat_allocs = beat_allocs - warm_allocs / n as f64;
    // The subscriber list's 4 bytes, and the shard's vectors' spare room.
    let bound = 20.0;
    assert!(up <= bound, "{driver:?}: {up:.1} B/conn once subscribed");
    assert!(
        beat <= bound,
        "{driver:?}: {beat:.1} B/conn after a ping round"
    );
    // No allocation per connection: what is left is a few vectors per shard.
    assert!(
        up_allocs < 0.05,
        "{driver:?}: {up_allocs:.3} allocations/conn"
    );
    assert!(
        beat_allocs < 0.05,
        "{driver:?}: {beat_allocs:.3} allocations/conn"
    );
}

#[test]
fn idle_subscribed_connection_heap() {
    measure(DriverKind::Epoll, 2_000);
    measure(DriverKind::Uring, 2_000);
}
