//! The raw-send baseline of bench/compare: the physical limit for fan-out on this machine.
//!
//! The sender accepts N loopback connections and then writes one pre-built,
//! unmasked WebSocket text frame to each of them in turn, as fast as it can:
//! - `--mode uring` (default): io_uring SEND operations, up to `--batch` in flight
//!   and submitted together, one frame per socket at a time;
//! - `--mode send`: one blocking `send()` per socket, for reference.
//!
//! `--frames-per-send K` (default 1) puts K copies of the frame in each write, as
//! a server does when several publications wait for the same connection.
//!
//! A reader process (this binary again, `--reader`) opens the N connections from
//! several loopback source addresses and drains them with epoll, counting bytes.
//! It measures for `--seconds` after `--warmup` seconds of traffic, then reports;
//! the figure is what reached the reader: bytes ÷ frame length ÷ seconds.
//!
//! There is no server logic at all: no parsing, no registry, no per-connection
//! queue. A server's fan-out cannot beat this on the same machine.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use io_uring::{opcode, types, IoUring};

const USAGE: &str =
    "usage: rawsend [--connections N] [--payload-bytes B] [--warmup S] [--seconds S]
               [--mode uring|send] [--batch K] [--source-ips 127.0.0.2-127.0.0.17] [--json FILE]";

#[derive(Clone, Debug)]
struct Args {
    connections: usize,
    payload_bytes: usize,
    frames_per_send: usize,
    warmup: f64,
    seconds: f64,
    mode: String,
    batch: u32,
    source_first: Ipv4Addr,
    source_last: Ipv4Addr,
    json: Option<String>,
    /// Internal: run as the reader, connecting to this address.
    reader: Option<SocketAddr>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        connections: 15_000,
        payload_bytes: 1024,
        frames_per_send: 1,
        warmup: 2.0,
        seconds: 10.0,
        mode: "uring".into(),
        batch: 4096,
        source_first: Ipv4Addr::new(127, 0, 0, 2),
        source_last: Ipv4Addr::new(127, 0, 0, 17),
        json: None,
        reader: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        let num = |s: String| s.parse::<f64>().map_err(|_| format!("bad number {s}"));
        match k.as_str() {
            "--connections" => a.connections = num(v()?)? as usize,
            "--payload-bytes" => a.payload_bytes = num(v()?)? as usize,
            "--frames-per-send" => a.frames_per_send = num(v()?)? as usize,
            "--warmup" => a.warmup = num(v()?)?,
            "--seconds" => a.seconds = num(v()?)?,
            "--batch" => a.batch = num(v()?)? as u32,
            "--mode" => a.mode = v()?,
            "--json" => a.json = Some(v()?),
            "--source-ips" => {
                let s = v()?;
                let (x, y) = s.split_once('-').unwrap_or((&s, &s));
                a.source_first = x.trim().parse().map_err(|_| format!("bad address {x}"))?;
                a.source_last = y.trim().parse().map_err(|_| format!("bad address {y}"))?;
            }
            "--reader" => {
                let s = v()?;
                a.reader = Some(s.parse().map_err(|_| format!("bad address {s}"))?);
            }
            "--help" | "-h" => return Err(USAGE.into()),
            _ => return Err(format!("unknown argument {k}\n{USAGE}")),
        }
    }
    let loopback = |ip: Ipv4Addr| ip.is_loopback();
    if !loopback(a.source_first)
        || !loopback(a.source_last)
        || u32::from(a.source_last) < u32::from(a.source_first)
    {
        return Err("--source-ips: a range of loopback addresses".into());
    }
    if let Some(r) = a.reader {
        if !r.ip().is_loopback() {
            return Err("--reader: loopback only".into());
        }
    }
    if !["uring", "send"].contains(&a.mode.as_str()) {
        return Err("--mode is uring or send".into());
    }
    if a.connections == 0
        || a.batch == 0
        || a.frames_per_send == 0
        || a.seconds <= 0.0
        || a.warmup < 0.0
    {
        return Err(
            "--connections, --batch, --frames-per-send and --seconds must be positive".into(),
        );
    }
    Ok(a)
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rawsend: {e}");
            std::process::exit(2);
        }
    };
    let r = match a.reader {
        Some(addr) => reader(&a, addr),
        None => sender(&a),
    };
    if let Err(e) = r {
        eprintln!("rawsend: {e}");
        std::process::exit(1);
    }
}

/// User + system CPU time of this process, in seconds.
fn cpu_s() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Clock ticks per second of /proc's CPU figures.
fn clk_tck() -> f64 {
    // SAFETY: sysconf takes no pointers.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// User + system CPU seconds of process `pid` (all its threads), from /proc.
fn proc_cpu_s(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|w| w.parse().unwrap_or(0.0))
        .collect();
    // After the command name: state is field 3; utime and stime are fields 14 and 15.
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / clk_tck()
}

/// Non-idle CPU seconds of the whole machine, from /proc/stat.
fn machine_busy_s() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|w| w.parse().unwrap_or(0.0))
        .collect();
    if v.len() < 8 {
        return 0.0;
    }
    // user nice system idle iowait irq softirq steal
    (v.iter().sum::<f64>() - v[3] - v[4]) / clk_tck()
}

fn last_os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// An unmasked, final text frame (server → client) carrying a loadgen-style payload.
fn build_frame(payload_bytes: usize) -> Vec<u8> {
    let mut p = br#"{"ts":0,"seq":0,"pad":""#.to_vec();
    p.resize(payload_bytes.saturating_sub(2).max(p.len()), b'x');
    p.extend_from_slice(br#""}"#);
    let mut f = vec![0x81];
    match p.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&p);
    f
}

fn sender(a: &Args) -> Result<(), String> {
    let frame = build_frame(a.payload_bytes);
    let write = frame.repeat(a.frames_per_send);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    // std listens with a small backlog; widen it (listen() again updates it).
    // SAFETY: a valid listening socket; listen takes no pointers.
    unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("own binary: {e}"))?;
    let mut child = Command::new(exe)
        .args(["--reader", &addr.to_string()])
        .args(["--connections", &a.connections.to_string()])
        .args(["--payload-bytes", &a.payload_bytes.to_string()])
        .args(["--warmup", &a.warmup.to_string()])
        .args(["--seconds", &a.seconds.to_string()])
        .args([
            "--source-ips",
            &format!("{}-{}", a.source_first, a.source_last),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("reader: {e}"))?;
    let result = run_sender(a, &listener, &write, frame.len(), &mut child);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn run_sender(
    a: &Args,
    listener: &TcpListener,
    frame: &[u8],
    frame_len: usize,
    child: &mut std::process::Child,
) -> Result<(), String> {
    let stdout = child.stdout.take().ok_or("reader stdout")?;
    let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
    let stop = Arc::new(AtomicBool::new(false));
    let result: Arc<Mutex<Option<String>>> = Arc::default();
    {
        let stop = stop.clone();
        let result = result.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("result ") {
                    *result.lock().unwrap_or_else(|e| e.into_inner()) = Some(line);
                    stop.store(true, Ordering::Relaxed);
                } else {
                    let _ = line_tx.send(line);
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
    // Accept every connection (the reader connects them one by one).
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut fds: Vec<RawFd> = Vec::with_capacity(a.connections);
    while fds.len() < a.connections {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                fds.push(s.into_raw_fd());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
                    return Err(format!(
                        "only {} of {} connections arrived",
                        fds.len(),
                        a.connections
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
    match line_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(l) if l == "ready" => {}
        other => return Err(format!("reader not ready: {other:?}")),
    }
    eprintln!(
        "rawsend: {} connections up; sending {}-byte frames, {} per write ({} mode)",
        fds.len(),
        frame_len,
        a.frames_per_send,
        a.mode
    );
    let bound = Duration::from_secs_f64(a.warmup + a.seconds + 20.0);
    let t0 = Instant::now();
    let c0 = cpu_s();
    let sent = if a.mode == "uring" {
        send_uring(&fds, frame, a.batch, &stop, t0 + bound)?
    } else {
        send_plain(&fds, frame, &stop, t0 + bound)
    };
    let wall = t0.elapsed().as_secs_f64();
    let sender_cpu_pct = 100.0 * (cpu_s() - c0) / wall;
    let line = result
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or("the reader gave no result")?;
    // result <bytes> <seconds> <reader cpu %> <sender cpu %> <machine busy %>, over the reader's window
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|w| w.parse().ok())
        .collect();
    let [bytes, secs, reader_cpu_pct, window_sender_pct, machine_pct] = f[..] else {
        return Err(format!("bad reader result {line:?}"));
    };
    let rest_pct = (machine_pct - reader_cpu_pct - window_sender_pct).max(0.0);
    let deliveries_per_s = bytes / frame_len as f64 / secs;
    println!(
        "rawsend: {deliveries_per_s:.0} deliveries/s ({:.0} MB/s) of {frame_len}-byte frames, {} per write, to {} sockets, {} mode; sender CPU {window_sender_pct:.0}%, reader CPU {reader_cpu_pct:.0}%, rest of the machine {rest_pct:.0}% (of one core)",
        bytes / secs / 1e6,
        a.frames_per_send,
        fds.len(),
        a.mode
    );
    if let Some(path) = &a.json {
        let json = format!(
            "{{\"mode\":\"{}\",\"connections\":{},\"frame_bytes\":{frame_len},\"frames_per_send\":{},\"payload_bytes\":{},\"seconds\":{secs:.3},\"bytes\":{bytes},\"deliveries_per_s\":{deliveries_per_s:.1},\"writes_completed\":{sent},\"sender_cpu_pct\":{window_sender_pct:.1},\"sender_cpu_pct_whole_run\":{sender_cpu_pct:.1},\"reader_cpu_pct\":{reader_cpu_pct:.1},\"rest_cpu_pct\":{rest_pct:.1}}}\n",
            a.mode,
            fds.len(),
            a.frames_per_send,
            a.payload_bytes
        );
        std::fs::write(path, json).map_err(|e| format!("{path}: {e}"))?;
    }
    for fd in fds {
        // SAFETY: each fd came from into_raw_fd and is closed once.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// io_uring: keep up to `batch` SENDs in flight, one per socket, cycling over the sockets.
fn send_uring(
    fds: &[RawFd],
    frame: &[u8],
    batch: u32,
    stop: &AtomicBool,
    until: Instant,
) -> Result<u64, String> {
    let entries = batch.next_power_of_two().min(32768);
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_defer_taskrun()
        .build(entries)
        .map_err(|e| format!("io_uring setup: {e}"))?;
    let n = fds.len();
    let cap = (entries as usize).min(n);
    let len = frame.len() as u32;
    let mut busy = vec![false; n];
    let mut off = vec![0u32; n];
    let mut again: Vec<usize> = Vec::new();
    let (mut next, mut inflight, mut done, mut errors) = (0usize, 0usize, 0u64, 0u64);
    let mut stopping = false;
    loop {
        if !stopping && (stop.load(Ordering::Relaxed) || Instant::now() >= until) {
            stopping = true;
        }
        if stopping && inflight == 0 {
            break;
        }
        {
            let mut sq = ring.submission();
            while let Some(i) = again.pop() {
                let at = off[i] as usize;
                let e = opcode::Send::new(types::Fd(fds[i]), frame[at..].as_ptr(), len - off[i])
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(i as u64);
                // SAFETY: `frame` outlives the ring's use of it (we reap every op before returning).
                if unsafe { sq.push(&e) }.is_err() {
                    again.push(i);
                    break;
                }
                inflight += 1;
            }
            let mut scanned = 0;
            while !stopping && inflight < cap && !sq.is_full() && scanned < n {
                let i = next;
                next = (next + 1) % n;
                scanned += 1;
                if busy[i] {
                    continue;
                }
                let e = opcode::Send::new(types::Fd(fds[i]), frame.as_ptr(), len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(i as u64);
                // SAFETY: as above.
                if unsafe { sq.push(&e) }.is_err() {
                    break;
                }
                busy[i] = true;
                inflight += 1;
            }
        }
        ring.submit_and_wait(1)
            .map_err(|e| format!("io_uring submit: {e}"))?;
        for cqe in ring.completion() {
            inflight -= 1;
            let i = cqe.user_data() as usize;
            let res = cqe.result();
            if res < 0 {
                errors += 1;
                busy[i] = false;
                off[i] = 0;
                if !stopping && errors > n as u64 {
                    return Err(format!("send: {}", std::io::Error::from_raw_os_error(-res)));
                }
                continue;
            }
            off[i] += res as u32;
            if off[i] < len {
                again.push(i);
            } else {
                off[i] = 0;
                busy[i] = false;
                done += 1;
            }
        }
    }
    Ok(done)
}

/// One blocking `send()` per socket in turn.
fn send_plain(fds: &[RawFd], frame: &[u8], stop: &AtomicBool, until: Instant) -> u64 {
    let mut done = 0u64;
    'outer: loop {
        for &fd in fds {
            let mut at = 0;
            while at < frame.len() {
                // SAFETY: the pointer and length stay inside `frame`.
                let r = unsafe {
                    libc::send(
                        fd,
                        frame[at..].as_ptr().cast(),
                        frame.len() - at,
                        libc::MSG_NOSIGNAL,
                    )
                };
                if r < 0 {
                    break 'outer;
                }
                at += r as usize;
            }
            done += 1;
        }
        if stop.load(Ordering::Relaxed) || Instant::now() >= until {
            break;
        }
    }
    done
}

/// The reader process: open the connections, drain them, measure, report on stdout.
fn reader(a: &Args, target: SocketAddr) -> Result<(), String> {
    let first = u32::from(a.source_first);
    let span = u32::from(a.source_last) - first + 1;
    let mut fds: Vec<RawFd> = Vec::with_capacity(a.connections);
    for k in 0..a.connections {
        let src = Ipv4Addr::from(first + (k as u32 % span));
        fds.push(connect_from(src, target)?);
    }
    // SAFETY: plain syscall.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(last_os_error("epoll_create1"));
    }
    for &fd in &fds {
        // SAFETY: fcntl on a socket we own.
        unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: `ev` is a valid epoll_event for the call's duration.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(last_os_error("epoll_ctl"));
        }
    }
    println!("ready");
    std::io::stdout().flush().map_err(|e| e.to_string())?;

    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    let mut first_at: Option<Instant> = None;
    let mut window: Option<(Instant, u64, f64, f64, f64)> = None;
    let sender = std::os::unix::process::parent_id();
    let give_up = Instant::now() + Duration::from_secs_f64(a.warmup + a.seconds + 30.0);
    loop {
        // SAFETY: `events` has room for its length.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 100) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("epoll_wait: {e}"));
        }
        for ev in &events[..n as usize] {
            let fd = ev.u64 as RawFd;
            // SAFETY: reading into our own buffer.
            let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if r > 0 {
                bytes += r as u64;
            } else if r == 0 {
                // SAFETY: deregister a socket the sender closed.
                unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
            }
        }
        let now = Instant::now();
        if now > give_up {
            return Err("no traffic".into());
        }
        if first_at.is_none() && bytes > 0 {
            first_at = Some(now);
        }
        let Some(f) = first_at else { continue };
        match window {
            None if now.duration_since(f).as_secs_f64() >= a.warmup => {
                window = Some((now, bytes, cpu_s(), proc_cpu_s(sender), machine_busy_s()));
            }
            Some((t0, b0, c0, s0, m0)) => {
                let secs = now.duration_since(t0).as_secs_f64();
                if secs >= a.seconds {
                    let pct = |d: f64| 100.0 * d / secs;
                    println!(
                        "result {} {secs:.6} {:.1} {:.1} {:.1}",
                        bytes - b0,
                        pct(cpu_s() - c0),
                        pct(proc_cpu_s(sender) - s0),
                        pct(machine_busy_s() - m0)
                    );
                    std::io::stdout().flush().map_err(|e| e.to_string())?;
                    return Ok(());
                }
            }
            None => {}
        }
    }
}

/// A blocking connect from `src` (port chosen at connect time, so many sources share the range).
fn connect_from(src: Ipv4Addr, target: SocketAddr) -> Result<RawFd, String> {
    const IP_BIND_ADDRESS_NO_PORT: libc::c_int = 24;
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_os_error("socket"));
    }
    let one: libc::c_int = 1;
    let sa = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let SocketAddr::V4(t) = target else {
        return Err("IPv4 target only".into());
    };
    let local = sa(SocketAddrV4::new(src, 0));
    let remote = sa(t);
    let slen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: pointers to live locals of the sizes given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            4,
        );
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), slen) < 0 {
            return Err(last_os_error("bind"));
        }
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), slen) < 0 {
            return Err(last_os_error("connect"));
        }
    }
    Ok(fd)
}
