//! One owner per data dir: a `serve` on SQLite or an `up` holds an advisory lock on
//! `DATA_DIR/paywarden.lock` for its whole life, so a second one on the same directory is
//! refused before it writes anything, with the holder's pid and command in the message. The
//! instances `up` starts share its directory by design and take no lock; neither do replicas
//! on PostgreSQL (their data dir holds only keys), nor `keys create` and `ledger verify`,
//! which are safe beside a running server.
//!
//! The lock is `flock(2)`: the kernel drops it when the process ends, however it ends
//! (`kill -9` included), so a stale lock file never blocks a restart.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};

/// The lock file's name inside the data dir.
pub(crate) const LOCK_FILE: &str = "paywarden.lock";

/// Held for the process's life; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _lock: Flock<File>,
}

/// Takes the data dir's lock for `command` (e.g. `paywarden up`), or says who holds it.
pub(crate) fn lock(dir: &Path, command: &str) -> anyhow::Result<DataDirLock> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            lock.set_len(0)?;
            lock.rewind()?;
            writeln!(lock, "{}\n{command}", std::process::id())?;
            lock.flush()?;
            Ok(DataDirLock { _lock: lock })
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let mut lines = text.lines();
            let (pid, holder) = (lines.next().unwrap_or("unknown").trim(), lines.next().unwrap_or("paywarden").trim());
            bail!(
                "--data-dir {} is in use by {holder} (pid {pid}); stop it first, or give this one another --data-dir",
                dir.display()
            )
        }
        Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_released_lock_can_be_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path(), "paywarden up").unwrap();
        let e = lock(dir.path(), "paywarden serve").unwrap_err().to_string();
        assert!(e.contains("in use by paywarden up") && e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        lock(dir.path(), "paywarden serve").expect("free again once the holder is gone");
    }
}
