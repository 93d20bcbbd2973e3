//! The capture log: a sampled share of requests and their answers, appended as JSON Lines to files in a
//! directory, rotated by size with the total size capped (oldest files deleted first). The request path only
//! clones the tensors of a sampled request into a bounded queue; a writer thread serializes and writes. When the
//! queue is full (a slow disk) the record is dropped and counted: capturing never slows serving.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use prometheus::IntCounter;
use serde::Serialize;

use crate::tensor::{DataType, Tensor, TensorData};

/// One captured request and its answer.
pub struct Record {
    pub at: SystemTime,
    pub request_id: Option<String>,
    pub model: Arc<str>,
    pub version: Arc<str>,
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<Tensor>,
}

#[derive(Serialize)]
struct TensorOut<'a> {
    name: &'a str,
    datatype: DataType,
    shape: &'a [i64],
    data: &'a TensorData,
}

#[derive(Serialize)]
struct Line<'a> {
    at: String,
    request_id: Option<&'a str>,
    model: &'a str,
    version: &'a str,
    inputs: Vec<TensorOut<'a>>,
    outputs: Vec<TensorOut<'a>>,
}

fn tensors(ts: &[Tensor]) -> Vec<TensorOut<'_>> {
    ts.iter().map(|t| TensorOut { name: &t.name, datatype: t.datatype(), shape: &t.shape, data: &t.data }).collect()
}

#[derive(Debug, Clone)]
pub struct CaptureSettings {
    pub dir: PathBuf,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    pub queue_capacity: usize,
}

pub struct CaptureLog {
    tx: Sender<Record>,
    dropped: IntCounter,
}

impl std::fmt::Debug for CaptureLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaptureLog")
    }
}

impl CaptureLog {
    pub fn start(s: CaptureSettings, written: IntCounter, dropped: IntCounter) -> std::io::Result<Self> {
        fs::create_dir_all(&s.dir)?;
        let (tx, rx) = crossbeam_channel::bounded(s.queue_capacity.max(1));
        std::thread::Builder::new().name("capture".into()).spawn(move || writer(rx, s, written))?;
        Ok(Self { tx, dropped })
    }

    /// Queues a record; never waits.
    pub fn offer(&self, r: Record) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(r) {
            self.dropped.inc();
        }
    }
}

/// Capture files sorted oldest first (names carry the creation time).
pub fn capture_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut v: Vec<(PathBuf, u64)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name().to_string_lossy().starts_with("capture-")
                && e.file_name().to_string_lossy().ends_with(".jsonl")
        })
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
        .collect();
    v.sort();
    v
}

struct Sink {
    s: CaptureSettings,
    file: Option<(BufWriter<File>, u64)>,
    seq: u64,
}

impl Sink {
    fn open(&mut self) -> std::io::Result<()> {
        let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis();
        self.seq += 1;
        let path = self.s.dir.join(format!("capture-{stamp:015}-{:06}.jsonl", self.seq));
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        self.file = Some((BufWriter::new(f), 0));
        self.enforce_cap();
        Ok(())
    }

    /// The largest a file may grow: no larger than the whole directory's cap.
    fn file_cap(&self) -> u64 {
        self.s.max_file_bytes.min(self.s.max_total_bytes)
    }

    /// Deletes the oldest closed files until they leave room for the new file to grow to its cap, so the
    /// directory never holds more than `max_total_bytes` (the open file is never deleted).
    fn enforce_cap(&self) {
        let files = capture_files(&self.s.dir);
        let closed = &files[..files.len().saturating_sub(1)];
        let mut total: u64 = closed.iter().map(|f| f.1).sum();
        for (path, len) in closed {
            if total + self.file_cap() <= self.s.max_total_bytes {
                break;
            }
            if fs::remove_file(path).is_ok() {
                total -= len;
            }
        }
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        if line.len() as u64 > self.file_cap() {
            return Err(std::io::Error::other(format!(
                "a record of {} bytes is larger than a capture file may be ({} bytes)",
                line.len(),
                self.file_cap()
            )));
        }
        if self.file.as_ref().is_none_or(|(_, n)| *n + line.len() as u64 > self.file_cap()) {
            if let Some((mut w, _)) = self.file.take() {
                w.flush()?;
            }
            self.open()?;
        }
        if let Some((w, n)) = self.file.as_mut() {
            w.write_all(line)?;
            *n += line.len() as u64;
        }
        Ok(())
    }

    fn flush(&mut self) {
        if let Some((w, _)) = self.file.as_mut() {
            let _ = w.flush();
        }
    }
}

fn writer(rx: Receiver<Record>, s: CaptureSettings, written: IntCounter) {
    let mut sink = Sink { s, file: None, seq: 0 };
    let mut buf = Vec::with_capacity(4096);
    loop {
        // Flush whenever the queue runs dry, so a reader sees records within moments, without a syscall each.
        let r = match rx.try_recv() {
            Ok(r) => r,
            Err(_) => {
                sink.flush();
                match rx.recv() {
                    Ok(r) => r,
                    Err(_) => return,
                }
            }
        };
        buf.clear();
        let line = Line {
            at: crate::clock::rfc3339(r.at),
            request_id: r.request_id.as_deref(),
            model: &r.model,
            version: &r.version,
            inputs: tensors(&r.inputs),
            outputs: tensors(&r.outputs),
        };
        if serde_json::to_writer(&mut buf, &line).is_err() {
            continue;
        }
        buf.push(b'\n');
        match sink.write(&buf) {
            Ok(()) => written.inc(),
            Err(e) => tracing::warn!(error = %e, "capture write failed; record dropped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> Record {
        Record {
            at: SystemTime::now(),
            request_id: Some(format!("r{i}")),
            model: "m".into(),
            version: "1".into(),
            inputs: vec![Tensor {
                name: "x".into(),
                shape: vec![1, 4],
                data: TensorData::F32(vec![1.0, 2.0, 3.0, i as f32]),
            }],
            outputs: vec![Tensor { name: "y".into(), shape: vec![1], data: TensorData::I64(vec![i as i64]) }],
        }
    }

    #[test]
    fn files_rotate_by_size_and_the_total_is_capped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = CaptureSettings {
            dir: dir.path().to_path_buf(),
            max_file_bytes: 2_000,
            max_total_bytes: 6_000,
            queue_capacity: 10_000,
        };
        let (written, dropped) = (IntCounter::new("w", "w").expect("c"), IntCounter::new("d", "d").expect("c"));
        let log = CaptureLog::start(s, written.clone(), dropped.clone()).expect("start");
        for i in 0..500 {
            log.offer(record(i));
        }
        drop(log);
        for _ in 0..200 {
            if written.get() + dropped.get() == 500 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(written.get() + dropped.get(), 500);
        let files = capture_files(dir.path());
        assert!(files.len() >= 3, "rotated into several files: {files:?}");
        assert!(files.iter().all(|f| f.1 <= 2_000), "{files:?}");
        let total: u64 = files.iter().map(|f| f.1).sum();
        assert!(total <= 6_000, "the cap is a cap: {total} bytes in {files:?}");
        let last = fs::read_to_string(&files.last().expect("a file").0).expect("read");
        let v: serde_json::Value = serde_json::from_str(last.lines().last().expect("a line")).expect("json line");
        assert_eq!(v["model"], "m");
        assert_eq!(v["inputs"][0]["data"][3], 499.0);
        assert_eq!(v["outputs"][0]["datatype"], "INT64");
    }
}
