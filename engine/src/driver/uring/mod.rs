//! io_uring driver: multishot accept into direct descriptors, multishot recv on a
//! provided-buffer ring, vectored sends batched into one `io_uring_enter`.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use bytes::Bytes;

use super::{BufId, Completion, ConnKey, Driver, DriverConfig, DriverKind, Sock};

pub struct UringDriver {}

impl UringDriver {
    pub fn new(listener: socket2::Socket, wake_fd: RawFd, cfg: &DriverConfig) -> io::Result<UringDriver> {
        let _ = (listener, wake_fd, cfg);
        Err(io::Error::new(io::ErrorKind::Unsupported, "io_uring driver not built yet"))
    }
}

/// The likely cause of a failed ring setup, for the start-up log.
pub fn setup_failure_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSYS) => "kernel without io_uring, or blocked by seccomp",
        Some(libc::EPERM) => "kernel.io_uring_disabled is set, or seccomp denies io_uring",
        Some(libc::ENOMEM) => "RLIMIT_MEMLOCK too low for the rings",
        _ => "see docs/operations.md",
    }
}

impl Driver for UringDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Uring
    }
    fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()> {
        let _ = (timeout, out);
        unimplemented!()
    }
    fn start_recv(&mut self, sock: Sock, conn: ConnKey) {
        let _ = (sock, conn);
        unimplemented!()
    }
    fn recv_buf(&mut self, buf: BufId, len: u32) -> &mut [u8] {
        let _ = (buf, len);
        unimplemented!()
    }
    fn release(&mut self, buf: BufId) {
        let _ = buf;
        unimplemented!()
    }
    fn send(&mut self, sock: Sock, conn: ConnKey, bufs: &[Bytes]) {
        let _ = (sock, conn, bufs);
        unimplemented!()
    }
    fn shutdown_write(&mut self, sock: Sock, conn: ConnKey) {
        let _ = (sock, conn);
        unimplemented!()
    }
    fn close(&mut self, sock: Sock, conn: ConnKey) {
        let _ = (sock, conn);
        unimplemented!()
    }
    fn open_sockets(&self) -> usize {
        0
    }
}
