//! epoll fallback driver (stub, being written).
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use bytes::Bytes;

use super::{BufId, Completion, ConnKey, Driver, DriverConfig, DriverKind, Sock};

pub struct EpollDriver {}

impl EpollDriver {
    pub fn new(listener: socket2::Socket, wake_fd: RawFd, cfg: &DriverConfig) -> io::Result<EpollDriver> {
        let _ = (listener, wake_fd, cfg);
        Err(io::Error::new(io::ErrorKind::Unsupported, "todo"))
    }
}

impl Driver for EpollDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Epoll
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
