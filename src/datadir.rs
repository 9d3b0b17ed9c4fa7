//! One process per data directory: `serve` takes an exclusive lock on its data directory (and on the SQLite file
//! and local asset directory where those live elsewhere) before it opens anything, so an accidental second start
//! on the same files exits at once instead of double-polling jobs and resubmitting paid generations.
//!
//! The lock is an OS file lock (`flock`, through `std::fs::File::try_lock`) on a small file that also records the
//! holder's pid and host. The OS releases it when the holder exits, however it exits (a kill -9 included), so a
//! stale file never blocks a restart.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside a locked directory.
pub const LOCK_FILE: &str = "sora-shim.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{what} {dir} is in use by another sora-shim process ({holder}; lock file {file}). One process serves a \
         data directory at a time: stop that process first (for a rolling update on one machine, stop the old \
         process before starting the new one)"
    )]
    Held {
        what: &'static str,
        dir: String,
        file: String,
        holder: String,
    },
    #[error("cannot lock {file}: {source}")]
    Io { file: String, source: std::io::Error },
}

/// What to lock: a directory (a `sora-shim.lock` inside it) or a file (a `.lock` file beside it).
#[derive(Debug, Clone)]
pub struct LockTarget {
    /// For messages: "data directory", "SQLite database", "asset directory".
    pub what: &'static str,
    pub path: PathBuf,
    pub is_dir: bool,
}

/// Held locks; dropping this releases them.
#[derive(Debug)]
pub struct DataDirLock {
    _files: Vec<File>,
}

impl DataDirLock {
    /// Locks every target, in order, creating directories as needed. Each is locked even inside another (a second
    /// process may share only the database, through an absolute `[store] path`). Fails on the first target
    /// another process holds, naming its pid.
    pub fn acquire(targets: &[LockTarget]) -> Result<DataDirLock, LockError> {
        let mut files = Vec::new();
        let mut locked: Vec<PathBuf> = Vec::new();
        for target in targets {
            let path = absolute(&target.path);
            let file_path = if target.is_dir {
                std::fs::create_dir_all(&path).map_err(|e| io_error(&path, e))?;
                path.join(LOCK_FILE)
            } else {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
                }
                let mut name = path.file_name().unwrap_or_default().to_owned();
                name.push(".lock");
                path.with_file_name(name)
            };
            // The same file twice (assets in the data directory itself) would be refused by our own lock.
            if locked.contains(&file_path) {
                continue;
            }
            files.push(lock_one(target.what, &path, &file_path)?);
            locked.push(file_path);
        }
        Ok(DataDirLock { _files: files })
    }
}

fn lock_one(what: &'static str, dir: &Path, file_path: &Path) -> Result<File, LockError> {
    // Not truncated on open: the holder's pid must survive a second process opening the file to report it.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(file_path)
        .map_err(|e| io_error(file_path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "pid unknown".to_owned(),
                h => h.to_owned(),
            };
            return Err(LockError::Held {
                what,
                dir: dir.display().to_string(),
                file: file_path.display().to_string(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_error(file_path, e)),
    }
    let me = format!("pid {} on {}\n", std::process::id(), hostname());
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(me.as_bytes()))
        .and_then(|()| file.flush());
    written.map_err(|e| io_error(file_path, e))?;
    Ok(file)
}

fn io_error(path: &Path, source: std::io::Error) -> LockError {
    LockError::Io {
        file: path.display().to_string(),
        source,
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// The host name, so a holder on another machine sharing the volume is recognisable ("unknown host" if unreadable).
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn dir_target(path: &Path) -> LockTarget {
        LockTarget {
            what: "data directory",
            path: path.to_owned(),
            is_dir: true,
        }
    }

    #[test]
    fn a_second_lock_on_the_same_directory_names_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(&[dir_target(tmp.path())]).unwrap();
        let err = DataDirLock::acquire(&[dir_target(tmp.path())]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        assert!(text.contains("in use by another sora-shim process"), "{text}");
        drop(first);
        DataDirLock::acquire(&[dir_target(tmp.path())]).unwrap();
    }

    #[test]
    fn a_file_outside_the_directory_is_locked_beside_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("elsewhere/jobs.db");
        let targets = [
            dir_target(&tmp.path().join("data")),
            LockTarget {
                what: "SQLite database",
                path: db.clone(),
                is_dir: false,
            },
        ];
        let _held = DataDirLock::acquire(&targets).unwrap();
        assert!(tmp.path().join("elsewhere/jobs.db.lock").exists());
        let err = DataDirLock::acquire(&targets[1..]).unwrap_err();
        assert!(err.to_string().contains("SQLite database"), "{err}");
    }
}
