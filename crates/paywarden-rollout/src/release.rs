//! Releases and the deployment history, on disk in `DATA_DIR/rollout/`:
//!
//! | file | what | written |
//! |---|---|---|
//! | `stable.json` | the stable release (`up` restarts it) and the one before it (`rollback` after a promotion) | atomically (temp file, fsync, rename) on promotion |
//! | `deployments.jsonl` | one line when a deployment starts and one when it ends; the last line per id wins | appended and synced |
//! | `admin-token.sha256` | SHA-256 of the admin token, mode 0600 | at `up` |

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest version label.
pub const VERSION_CHARS_MAX: usize = 64;
/// Most instance arguments, and the longest one.
pub const ARGS_MAX: usize = 64;
pub const ARG_CHARS_MAX: usize = 1024;
/// Most deployments `history` returns (the newest).
pub const HISTORY_MAX: usize = 1_000;

/// What runs: a binary (and its hash, so a changed file is noticed), its instance arguments,
/// and the operator's label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub version: String,
    pub binary: PathBuf,
    pub sha256: String,
    pub args: Vec<String>,
}

impl Release {
    /// Checks the label and arguments and hashes the binary.
    pub fn new(version: &str, binary: &Path, args: Vec<String>) -> Result<Release, String> {
        check_version(version)?;
        if args.len() > ARGS_MAX || args.iter().any(|a| a.chars().count() > ARG_CHARS_MAX) {
            return Err(format!("at most {ARGS_MAX} instance arguments of at most {ARG_CHARS_MAX} characters"));
        }
        for a in &args {
            if ["--listen", "--data-dir"].iter().any(|f| a == f || a.starts_with(&format!("{f}="))) {
                return Err(format!("instance argument {a}: the controller sets --listen and --data-dir itself"));
            }
        }
        let binary = std::fs::canonicalize(binary).map_err(|e| format!("binary {}: {e}", binary.display()))?;
        let meta = std::fs::metadata(&binary).map_err(|e| format!("binary {}: {e}", binary.display()))?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(format!("binary {} is not an executable file", binary.display()));
        }
        let sha256 = hash_file(&binary).map_err(|e| format!("reading binary {}: {e}", binary.display()))?;
        Ok(Release { version: version.to_string(), binary, sha256, args })
    }
}

/// A version label: 1 to 64 of `A-Z a-z 0-9 . _ - +`.
pub fn check_version(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.chars().count() <= VERSION_CHARS_MAX
        && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(format!("version {v:?}: use 1 to {VERSION_CHARS_MAX} of letters, digits, '.', '_', '-', '+' (e.g. v1.4.2)"))
    }
}

/// SHA-256 of a file, hex.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// SHA-256 of a token, hex.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StableState {
    pub stable: Release,
    pub previous: Option<Release>,
}

/// The rollout directory inside a data dir.
pub fn rollout_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("rollout")
}

pub fn load_stable(dir: &Path) -> Result<Option<StableState>, String> {
    let path = dir.join("stable.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{}: {e}; fix or delete it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

pub fn save_stable(dir: &Path, state: &StableState) -> std::io::Result<()> {
    write_atomically(&dir.join("stable.json"), &serde_json::to_vec_pretty(state).unwrap_or_default(), 0o644)
}

/// Writes a file whole or not at all: temp file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Appends a deployment record (any JSON object with an `id`) to the history.
pub fn append_history(dir: &Path, record: &serde_json::Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(record).unwrap_or_default();
    line.push(b'\n');
    let mut f = OpenOptions::new().create(true).append(true).open(dir.join("deployments.jsonl"))?;
    f.write_all(&line)?;
    f.sync_data()
}

/// The history: the last record of each deployment, oldest first, at most [`HISTORY_MAX`].
pub fn read_history(dir: &Path) -> std::io::Result<Vec<serde_json::Value>> {
    let f = match std::fs::File::open(dir.join("deployments.jsonl")) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut order: Vec<String> = Vec::new();
    let mut last: std::collections::HashMap<String, serde_json::Value> = std::collections::HashMap::new();
    for line in BufReader::new(f).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line?) else { continue };
        let Some(id) = v.get("id").and_then(|i| i.as_str()).map(str::to_string) else { continue };
        if !last.contains_key(&id) {
            order.push(id.clone());
        }
        last.insert(id, v);
    }
    let skip = order.len().saturating_sub(HISTORY_MAX);
    Ok(order.into_iter().skip(skip).filter_map(|id| last.remove(&id)).collect())
}

/// The admin token's hash file, mode 0600.
pub fn admin_token_path(dir: &Path) -> PathBuf {
    dir.join("admin-token.sha256")
}

pub fn save_admin_token_hash(dir: &Path, hash: &str) -> std::io::Result<()> {
    write_atomically(&admin_token_path(dir), format!("{hash}\n").as_bytes(), 0o600)?;
    std::fs::set_permissions(admin_token_path(dir), std::fs::Permissions::from_mode(0o600))
}

pub fn load_admin_token_hash(dir: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(admin_token_path(dir)) {
        Ok(s) => {
            let h = s.trim().to_string();
            if h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()) {
                Ok(Some(h))
            } else {
                Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is not a SHA-256; delete it and pass --admin-token", admin_token_path(dir).display())))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_labels() {
        for ok in ["v1", "1.4.2-rc.1+build.7", "a_b"] {
            check_version(ok).unwrap();
        }
        for bad in ["", "v 1", "v1/../x", &"x".repeat(65), "vé"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
        check_version(&"x".repeat(64)).unwrap();
    }

    #[test]
    fn a_release_hashes_its_binary_and_refuses_controller_flags() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("gw");
        std::fs::write(&bin, b"#!/bin/sh\n").unwrap();
        assert!(Release::new("v1", &bin, vec![]).unwrap_err().contains("not an executable"));
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = Release::new("v1", &bin, vec!["--fault".into(), "leak=1".into()]).unwrap();
        assert_eq!(r.sha256, hex::encode(Sha256::digest(b"#!/bin/sh\n")));
        assert!(Release::new("v1", &bin, vec!["--listen=1".into()]).unwrap_err().contains("sets --listen"));
        assert!(Release::new("v1", &dir.path().join("nope"), vec![]).unwrap_err().contains("nope"));
    }

    #[test]
    fn history_keeps_the_last_record_per_deployment_in_order() {
        let dir = tempfile::tempdir().unwrap();
        append_history(dir.path(), &serde_json::json!({"id": "d1", "outcome": "in_progress"})).unwrap();
        append_history(dir.path(), &serde_json::json!({"id": "d2", "outcome": "in_progress"})).unwrap();
        append_history(dir.path(), &serde_json::json!({"id": "d1", "outcome": "promoted"})).unwrap();
        let h = read_history(dir.path()).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!((h[0]["id"].as_str(), h[0]["outcome"].as_str()), (Some("d1"), Some("promoted")));
        assert_eq!(h[1]["outcome"], "in_progress");
    }

    #[test]
    fn the_token_hash_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_admin_token_hash(dir.path()).unwrap(), None);
        let h = hash_token("a-long-admin-token");
        save_admin_token_hash(dir.path(), &h).unwrap();
        assert_eq!(load_admin_token_hash(dir.path()).unwrap(), Some(h));
        let mode = std::fs::metadata(admin_token_path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn stable_state_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_stable(dir.path()).unwrap(), None);
        let r = Release { version: "v1".into(), binary: "/bin/true".into(), sha256: "00".into(), args: vec![] };
        let s = StableState { stable: r.clone(), previous: Some(r) };
        save_stable(dir.path(), &s).unwrap();
        assert_eq!(load_stable(dir.path()).unwrap(), Some(s));
        std::fs::write(dir.path().join("stable.json"), b"{").unwrap();
        assert!(load_stable(dir.path()).unwrap_err().contains("fix or delete"));
    }
}
