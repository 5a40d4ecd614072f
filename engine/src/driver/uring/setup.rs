//! Ring creation and the sizes derived from the environment.

use std::io;

use io_uring::IoUring;

/// Extra direct-descriptor slots beyond `conns_max`: a shard at its limit still
/// accepts (and then closes) while old slots are being released, instead of
/// having the kernel refuse with ENFILE and drop the connection itself.
fn slot_headroom(conns_max: u32) -> u32 {
    conns_max / 32 + 16
}

/// The kernel's hard cap on a fixed-file table (`IORING_MAX_FIXED_FILES`).
const KERNEL_FIXED_FILES_MAX: u32 = 1 << 20;

/// Build the ring. The preferred flags cut the cost of every completion:
/// SINGLE_ISSUER lets the kernel skip locking, DEFER_TASKRUN runs completion
/// work only when we enter to reap (so no IPI interrupts the shard mid-work),
/// COOP_TASKRUN avoids forced task-work interrupts, and TASKRUN_FLAG tells a
/// plain `submit` that deferred work is waiting. Older kernels reject some of
/// these with EINVAL, so fall back step by step.
///
/// With SINGLE_ISSUER the ring belongs to the creating thread: the driver must be
/// created on the shard thread that polls it (it is not `Send` anyway).
pub(super) fn build_ring(sq_entries: u32, cq_entries: u32) -> io::Result<IoUring> {
    let sq_entries = sq_entries.max(8);
    // A larger CQ than SQ (IORING_SETUP_CQSIZE): multishot ops post many CQEs
    // per SQE, a turn's sends can outnumber the SQ, and overflowing the CQ
    // pushes completions onto a slow kernel-side list (see `send_budget`).
    let cq_entries = if cq_entries == 0 {
        sq_entries.saturating_mul(4)
    } else {
        cq_entries.max(sq_entries)
    };
    let attempts: [fn(&mut io_uring::Builder); 3] = [
        |b| {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_coop_taskrun()
                .setup_taskrun_flag();
        },
        |b| {
            b.setup_coop_taskrun().setup_taskrun_flag();
        },
        |_| {},
    ];
    let mut last = None;
    for configure in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq_entries).setup_clamp();
        configure(&mut builder);
        match builder.build(sq_entries) {
            Ok(ring) => return Ok(ring),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(error = %e, "io_uring setup flags rejected, trying fewer");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
}

/// Completions kept free for everything but sends: one per receive buffer
/// (each data CQE of a multishot recv takes one), plus the terminal CQEs of
/// recvs, accepts, wake-ups, shutdowns, cancels and closes.
fn cq_reserve(recv_bufs: u32) -> u32 {
    recv_bufs + 1024
}

/// Sends the driver keeps in the kernel (submitted, CQE not yet reaped) at
/// once. Each one owes a CQE; past the CQ's size the kernel would queue them
/// on its overflow list (FEAT_NODROP), which is slow, stalls new submissions
/// with EBUSY, and ends multishot recvs and accepts. Further sends wait in the
/// driver, in order, and go in as completions are reaped. At least a quarter
/// of the CQ, so a small CQ with a large pool still sends.
pub(super) fn send_budget(cq_entries: u32, recv_bufs: u32) -> usize {
    cq_entries
        .saturating_sub(cq_reserve(recv_bufs))
        .max(cq_entries / 4)
        .max(1) as usize
}

/// Slots for the direct-descriptor table: `conns_max` plus headroom, clamped to
/// the RLIMIT_NOFILE soft limit, which the kernel applies per ring to this table
/// (asking for more fails with EMFILE).
pub(super) fn fixed_file_slots(conns_max: u32) -> io::Result<u32> {
    let want = conns_max.saturating_add(slot_headroom(conns_max));
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the live local `rl`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let soft = if rl.rlim_cur == libc::RLIM_INFINITY {
        u32::MAX
    } else {
        u32::try_from(rl.rlim_cur).unwrap_or(u32::MAX)
    };
    let slots = want.min(soft).min(KERNEL_FIXED_FILES_MAX);
    if slots < conns_max {
        tracing::warn!(
            conns_max,
            slots,
            "RLIMIT_NOFILE caps this shard's direct-descriptor table below conns_max; \
             accepts beyond it fail with ENFILE"
        );
    }
    Ok(slots)
}

/// Features the driver cannot work without, checked at start so that an old
/// kernel falls back to epoll at once instead of failing on the first op.
/// (Multishot recv with a buffer ring needs 6.0; nothing here probes for it
/// directly, but every kernel with EXT_ARG and buffer rings below 6.0 is EOL.)
pub(super) fn check_features(ring: &IoUring) -> io::Result<()> {
    let p = ring.params();
    // NODROP: an overflowing CQ must queue completions, never lose them, or the
    // per-connection op counts (and so `Closed`) would be wrong.
    // EXT_ARG: `poll` waits with a timeout passed to io_uring_enter.
    if !p.is_feature_nodrop() || !p.is_feature_ext_arg() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring lacks FEAT_NODROP or FEAT_EXT_ARG (kernel too old)",
        ));
    }
    Ok(())
}
