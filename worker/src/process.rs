//! Starting an executor process in its own process group, signalling the whole group, and
//! describing how a process ended.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use crate::config::ExecutorConfig;

/// A started executor with its three pipes taken out.
pub(crate) struct Spawned {
    pub(crate) child: Child,
    /// The process id, which is also the process group id.
    pub(crate) pgid: Pid,
    pub(crate) stdin: ChildStdin,
    pub(crate) stdout: ChildStdout,
    pub(crate) stderr: ChildStderr,
}

/// Starts the executor with no arguments, the given extra environment, piped stdio, in a new
/// process group so that a signal reaches every process it starts.
pub(crate) fn spawn(config: &ExecutorConfig, env: &[(&str, &str)]) -> io::Result<Spawned> {
    let mut command = Command::new(&config.path);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // A safety net only: every path that ends a job signals the group and reaps the child.
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn()?;
    let missing = || io::Error::other("executor pipe missing after spawn");
    let pid = child.id().ok_or_else(missing)?;
    let pgid = Pid::from_raw(i32::try_from(pid).map_err(|_| missing())?);
    let stdin = child.stdin.take().ok_or_else(missing)?;
    let stdout = child.stdout.take().ok_or_else(missing)?;
    let stderr = child.stderr.take().ok_or_else(missing)?;
    Ok(Spawned {
        child,
        pgid,
        stdin,
        stdout,
        stderr,
    })
}

/// Sends `signal` to every process of the group. A group that is already gone is not an error.
pub(crate) fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(error) => {
            tracing::warn!(pgid = pgid.as_raw(), %signal, %error, "cannot signal executor")
        }
    }
}

/// How a process ended, in words: `exited with status N` or `killed by signal N (SIGNAME)`.
pub(crate) fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(number) => match Signal::try_from(number) {
            Ok(signal) => format!("killed by signal {number} ({signal})"),
            Err(_) => format!("killed by signal {number}"),
        },
        None => format!("ended with {status}"),
    }
}
