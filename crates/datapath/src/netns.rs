//! Network namespaces by name (`/run/netns/NAME`, as `ip netns add` creates them). setns(2)
//! changes only the calling thread, so work in a namespace runs on a dedicated thread; this is
//! also why `ip netns exec` (which remounts /sys) is not used for anything touching bpffs.

use crate::DatapathError;
use std::os::fd::AsRawFd;

fn err(what: String, e: std::io::Error) -> DatapathError {
    DatapathError::Kernel {
        what,
        detail: e.to_string(),
    }
}

/// Moves the calling thread into network namespace `name`.
pub fn enter(name: &str) -> Result<(), DatapathError> {
    let path = format!("/run/netns/{name}");
    let f = std::fs::File::open(&path).map_err(|e| err(format!("opening {path}"), e))?;
    // SAFETY: setns(2) on a valid namespace fd; it affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(err(
            format!("entering network namespace {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Runs `f` on a new thread inside namespace `name` and returns its result.
pub fn run_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DatapathError> {
    let name = name.to_string();
    std::thread::spawn(move || -> Result<T, DatapathError> {
        enter(&name)?;
        Ok(f())
    })
    .join()
    .map_err(|_| DatapathError::Kernel {
        what: "namespace thread".into(),
        detail: "panicked".into(),
    })?
}

/// Runs `f` inside namespace `name` (on a thread of its own, which may borrow from the caller)
/// or, when `name` is `None`, right here.
pub fn within<T: Send>(
    name: Option<&str>,
    f: impl FnOnce() -> Result<T, DatapathError> + Send,
) -> Result<T, DatapathError> {
    let Some(name) = name else { return f() };
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(name)?;
            f()
        })
        .join()
        .map_err(|_| DatapathError::Kernel {
            what: format!("thread in network namespace {name}"),
            detail: "panicked".into(),
        })?
    })
}

/// The index of interface `ifname` in namespace `name` (`None`: the calling thread's).
pub fn ifindex_in(name: Option<&str>, ifname: &str) -> Result<u32, DatapathError> {
    within(name, || ifindex(ifname))
}

/// The index of interface `ifname` in the calling thread's namespace.
pub fn ifindex(ifname: &str) -> Result<u32, DatapathError> {
    let c = std::ffi::CString::new(ifname).map_err(|_| DatapathError::Kernel {
        what: "interface name".into(),
        detail: ifname.into(),
    })?;
    // SAFETY: valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(err(
            format!("finding interface {ifname}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(i)
}

/// Whether this kernel can open SCTP sockets (the module may be absent).
pub fn sctp_available() -> bool {
    // SAFETY: socket(2)/close(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP) };
    if fd >= 0 {
        unsafe { libc::close(fd) };
        true
    } else {
        false
    }
}
