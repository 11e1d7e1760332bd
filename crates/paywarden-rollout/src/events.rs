//! The event log: append-only JSON lines in `DATA_DIR/rollout/events.jsonl`, one per step,
//! verdict, alert, rollback and promotion, each timestamped to the millisecond. Reviews and
//! incident reports are built from it.
//!
//! Each line is a JSON object with `ts` (RFC 3339, UTC, milliseconds), `unix_ms`, `kind`,
//! `deployment` (or null for events outside a deployment) and the kind's own fields. Lines are
//! written whole with one `write` and synced (`fdatasync`): events are rare (a few per second at
//! most) and a review must not miss the last one before a crash. A line is at most
//! [`EVENT_BYTES_MAX`]; a bigger payload (a huge leak report) is cut and marked `truncated`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

/// Longest event line, bytes.
pub const EVENT_BYTES_MAX: usize = 256 * 1024;
/// Most events [`EventLog::read`] returns.
pub const READ_EVENTS_MAX: usize = 10_000;

pub struct EventLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl EventLog {
    /// Opens (creating) the log in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<EventLog> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("events.jsonl");
        let mut file = OpenOptions::new().create(true).append(true).read(true).open(&path)?;
        // A line torn by a crash must not swallow the next event: end it first.
        let len = file.metadata()?.len();
        if len > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                file.sync_data()?;
            }
        }
        Ok(EventLog { path, file: Mutex::new(file) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event and returns it. `fields` must be a JSON object; its keys go beside
    /// `ts`, `unix_ms`, `kind` and `deployment`.
    pub fn append(&self, kind: &str, deployment: Option<&str>, fields: Value) -> Value {
        let now = SystemTime::now();
        let unix_ms = now.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let mut obj = Map::new();
        obj.insert("ts".into(), json!(humantime::format_rfc3339_millis(now).to_string()));
        obj.insert("unix_ms".into(), json!(unix_ms));
        obj.insert("kind".into(), json!(kind));
        obj.insert("deployment".into(), json!(deployment));
        if let Value::Object(m) = fields {
            for (k, v) in m {
                obj.entry(k).or_insert(v);
            }
        }
        let mut event = Value::Object(obj);
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        if line.len() > EVENT_BYTES_MAX {
            let keep: Map<String, Value> = event
                .as_object()
                .map(|m| m.iter().filter(|(k, _)| ["ts", "unix_ms", "kind", "deployment"].contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            event = Value::Object(keep);
            event["truncated"] = json!(format!("the event was {} bytes, over the {EVENT_BYTES_MAX}-byte limit", line.len()));
            line = serde_json::to_vec(&event).unwrap_or_default();
        }
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(&line).and_then(|()| f.sync_data()) {
            tracing::error!(error = %e, path = %self.path.display(), "cannot append to the event log");
        }
        tracing::info!(target: "paywarden::events", kind, deployment, "event");
        event
    }

    /// Reads the log: events of `deployment` (or all), the last [`READ_EVENTS_MAX`]. A torn last
    /// line (a crash mid-write) is skipped.
    pub fn read(&self, deployment: Option<&str>) -> std::io::Result<Vec<Value>> {
        read_events(&self.path, deployment)
    }
}

/// Reads an event log file (see [`EventLog::read`]).
pub fn read_events(path: &Path, deployment: Option<&str>) -> std::io::Result<Vec<Value>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = std::collections::VecDeque::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
        if deployment.is_some_and(|d| v.get("deployment").and_then(Value::as_str) != Some(d)) {
            continue;
        }
        if out.len() == READ_EVENTS_MAX {
            out.pop_front();
        }
        out.push_back(v);
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_reads_filters_and_survives_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path()).unwrap();
        log.append("step_started", Some("dep_1"), json!({"step": 1, "weight_pct": 1.0}));
        log.append("alert", None, json!({"alertname": "MemoryLeak"}));
        std::fs::OpenOptions::new().append(true).open(log.path()).unwrap().write_all(b"{\"kind\":\"tor").unwrap();
        let all = log.read(None).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0]["kind"], "step_started");
        assert_eq!(all[0]["step"], 1);
        assert!(all[0]["ts"].as_str().unwrap().ends_with('Z'));
        let one = log.read(Some("dep_1")).unwrap();
        assert_eq!(one.len(), 1);
        // Reopening appends after what is there.
        drop(log);
        let log = EventLog::open(dir.path()).unwrap();
        log.append("x", Some("dep_1"), json!({}));
        assert_eq!(log.read(Some("dep_1")).unwrap().len(), 2);
    }

    #[test]
    fn an_oversized_event_is_cut_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path()).unwrap();
        let big = "x".repeat(EVENT_BYTES_MAX + 1);
        let e = log.append("leak_report", Some("d"), json!({ "report": big }));
        assert!(e["truncated"].as_str().unwrap().contains("limit"));
        let back = log.read(None).unwrap();
        assert_eq!(back[0]["kind"], "leak_report");
        assert!(back[0].get("report").is_none());
    }

    #[test]
    fn caller_fields_cannot_overwrite_the_envelope() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path()).unwrap();
        let e = log.append("real", Some("d"), json!({"kind": "fake", "extra": 1}));
        assert_eq!(e["kind"], "real");
        assert_eq!(e["extra"], 1);
    }
}
