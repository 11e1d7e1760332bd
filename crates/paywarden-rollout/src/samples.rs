//! Per-deployment time series: `DATA_DIR/rollout/samples/DEPLOYMENT_ID.jsonl`, one line per
//! judge tick (every second by default) with, per instance (canary, baseline, stable): its
//! version, heap and RSS from its `/metrics`, its leak state, the requests and errors the
//! proxy counted for it (cumulative), and the latency percentiles of the requests it answered
//! since the previous line. Reviews draw memory, latency and error rate per version from it.
//!
//! Bounded: at most [`SAMPLES_MAX`] lines per deployment (10 hours at 1 s); past it the
//! writer stops and says so once. Lines are flushed as they are written and synced when the
//! deployment ends; a torn last line (a crash) is skipped by [`read_samples`].

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Most lines per deployment.
pub const SAMPLES_MAX: usize = 36_000;
/// Longest deployment id accepted from a user (`dep_` + 13 digits + 10 characters is 27).
pub const DEPLOYMENT_ID_MAX: usize = 64;

/// One instance at one tick.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceSample {
    /// `canary`, `baseline` or `stable`.
    pub role: String,
    pub version: String,
    /// `paywarden_heap_allocated_bytes`; None when the scrape failed.
    pub heap_allocated_bytes: Option<f64>,
    /// `process_resident_memory_bytes`.
    pub resident_bytes: Option<f64>,
    /// memguard's leak state: 0 ok, 1 suspect, 2 leaking.
    pub leak_state: Option<u8>,
    /// Requests the proxy sent it since it was first routed (cumulative).
    pub requests: u64,
    /// Of those, 5xx answers and failed attempts (cumulative).
    pub errors: u64,
    /// Percentiles of the latencies of the requests it answered since the previous tick.
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// How many latencies those percentiles are drawn from.
    pub latency_samples: usize,
}

/// One tick of a deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub unix_ms: u64,
    /// 1-based step; 0 before the first.
    pub step: usize,
    pub canary_weight_pct: f64,
    pub instances: Vec<InstanceSample>,
}

/// Whether `id` can name a deployment (and a file): `dep_` then ASCII letters, digits and
/// `_`, at most [`DEPLOYMENT_ID_MAX`] bytes.
pub fn check_deployment_id(id: &str) -> Result<(), String> {
    let ok = id.len() <= DEPLOYMENT_ID_MAX
        && id.len() > 4
        && id.starts_with("dep_")
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a deployment id: ids look like dep_1764000000000abcdefghij (see `paywarden history`)"
        ))
    }
}

/// Where a deployment's samples are, under the rollout directory.
pub fn samples_path(rollout_dir: &Path, id: &str) -> PathBuf {
    rollout_dir.join("samples").join(format!("{id}.jsonl"))
}

/// Appends a deployment's samples.
pub struct SampleWriter {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    written: usize,
}

impl SampleWriter {
    /// Creates (or appends to) the deployment's file. A failure is logged and the writer
    /// writes nothing: samples feed reviews, never the rollout's decisions.
    pub fn open(rollout_dir: &Path, id: &str) -> SampleWriter {
        let path = samples_path(rollout_dir, id);
        let file = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| OpenOptions::new().create(true).append(true).open(&path));
        let file = match file {
            Ok(f) => Some(BufWriter::new(f)),
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot write the deployment's samples; its review will have no charts");
                None
            }
        };
        SampleWriter { path, file, written: 0 }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&mut self, sample: &Sample) {
        let Some(f) = self.file.as_mut() else { return };
        if self.written >= SAMPLES_MAX {
            tracing::warn!(path = %self.path.display(), "the deployment's samples reached {SAMPLES_MAX} lines; later ones are not kept");
            self.file = None;
            return;
        }
        let mut line = serde_json::to_vec(sample).unwrap_or_default();
        line.push(b'\n');
        if let Err(e) = f.write_all(&line).and_then(|()| f.flush()) {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot append a sample");
            self.file = None;
            return;
        }
        self.written += 1;
    }

    /// Flushes and syncs (the deployment ended).
    pub fn finish(&mut self) {
        if let Some(mut f) = self.file.take() {
            let _ = f.flush();
            let _ = f.get_ref().sync_data();
        }
    }
}

impl Drop for SampleWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Reads a deployment's samples (at most [`SAMPLES_MAX`]); none if the file is missing.
/// Lines that do not parse (a torn last line) are skipped.
pub fn read_samples(rollout_dir: &Path, id: &str) -> std::io::Result<Vec<Sample>> {
    check_deployment_id(id).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let file = match File::open(samples_path(rollout_dir, id)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        let Ok(s) = serde_json::from_str::<Sample>(&line?) else { continue };
        out.push(s);
        if out.len() == SAMPLES_MAX {
            break;
        }
    }
    Ok(out)
}

/// The `q` quantile (0..=1) of `v` by nearest rank, sorting `v`; None when empty.
pub fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reads_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SampleWriter::open(dir.path(), "dep_1abc");
        let s = Sample {
            unix_ms: 5,
            step: 1,
            canary_weight_pct: 1.0,
            instances: vec![InstanceSample { role: "canary".into(), version: "v2".into(), heap_allocated_bytes: Some(1e6), requests: 3, ..Default::default() }],
        };
        w.append(&s);
        w.append(&Sample { unix_ms: 6, ..s.clone() });
        w.finish();
        std::fs::OpenOptions::new().append(true).open(w.path()).unwrap().write_all(b"{\"unix_ms\":").unwrap();
        let back = read_samples(dir.path(), "dep_1abc").unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], s);
        assert_eq!(back[1].unix_ms, 6);
        assert!(read_samples(dir.path(), "dep_2none").unwrap().is_empty());
    }

    #[test]
    fn deployment_ids_cannot_name_other_files() {
        for bad in ["", "dep_", "../etc/passwd", "dep_../../x", "dep_a/b", "DEP_1", "x_1", &format!("dep_{}", "a".repeat(61))] {
            assert!(check_deployment_id(bad).is_err(), "{bad}");
        }
        assert!(check_deployment_id(&format!("dep_{}", "a".repeat(60))).is_ok());
        assert!(check_deployment_id("dep_1764000000000abcdefghij").is_ok());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_samples(dir.path(), "../x").unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), Some(50.0));
        assert_eq!(quantile(&mut v, 0.99), Some(99.0));
        assert_eq!(quantile(&mut v, 1.0), Some(100.0));
        assert_eq!(quantile(&mut v, 0.0), Some(1.0));
        assert_eq!(quantile(&mut [], 0.5), None);
        assert_eq!(quantile(&mut [7.0], 0.99), Some(7.0));
    }
}
