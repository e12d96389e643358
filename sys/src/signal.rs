//! Termination signals for the daemon: SIGTERM and SIGINT set a flag the control loop
//! polls (it wakes at least every 100 ms), so shutdown runs on the control thread with
//! everything it needs to clean up.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

/// Install the handlers and return the flag they set.
pub fn install_stop_handlers() -> std::io::Result<&'static AtomicBool> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: sigaction with a handler that only performs an atomic store, and a
        // zeroed (then filled) sigaction struct; no other handler state is touched.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SIGPIPE: a client that hangs up mid-response must not kill the daemon.
    // SAFETY: setting a signal disposition to ignore has no memory effects.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    Ok(&STOP)
}
