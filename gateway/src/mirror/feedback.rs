//! Prediction quality with delayed labels. Answers to requests that carried an `id` are remembered (bounded: the
//! oldest are forgotten first); `POST /v2/models/{m}/feedback` with the id and the true value joins them and keeps
//! live accuracy (integer outputs: class labels) or absolute error (numeric outputs) per version.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use crate::error::GatewayError;
pub use crate::rollout::stats::Quality;
use crate::tensor::{Tensor, TensorData};

/// Shards keep concurrent requests from queuing on one lock.
const SHARDS: usize = 16;

#[derive(Debug, Clone)]
struct Answer {
    model: String,
    version: u64,
    /// The first output, flattened: the label(s) of a classifier, the value(s) of a regressor.
    prediction: Vec<f64>,
    classes: bool,
}

#[derive(Debug, Default)]
struct Shard {
    /// Remembered answers by id, each with the sequence number of its entry in `order`.
    map: HashMap<String, (u64, Answer)>,
    /// Ids oldest first. A joined id stays here until it comes round, so its entry is counted in `bytes` until
    /// then; the sequence number tells it from a later answer with the same id, which it must not forget.
    order: VecDeque<(u64, String)>,
    next: u64,
    /// Approximate memory held by `map` and `order`.
    bytes: usize,
}

impl Answer {
    /// Approximate memory one remembered answer holds in the map, with its id.
    fn size(&self, id: &str) -> usize {
        const OVERHEAD: usize = 112;
        OVERHEAD + id.len() + self.model.len() + self.prediction.len() * std::mem::size_of::<f64>()
    }
}

/// Approximate memory one entry of `order` holds, with its id.
fn order_size(id: &str) -> usize {
    const OVERHEAD: usize = 48;
    OVERHEAD + id.len()
}

#[derive(Debug)]
pub struct FeedbackBook {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    /// Memory budget of one shard, in bytes: answers are forgotten oldest first past the count or the budget.
    shard_bytes: usize,
    quality: Mutex<BTreeMap<(String, u64), Quality>>,
}

impl FeedbackBook {
    /// Remembers at most `capacity` answers in at most about `max_bytes` of memory.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            shard_bytes: (max_bytes / SHARDS).max(1),
            quality: Mutex::default(),
        }
    }

    /// Approximate memory held by remembered answers, in bytes.
    pub fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).bytes).sum()
    }

    fn shard(&self, id: &str) -> &Mutex<Shard> {
        let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        &self.shards[(h % SHARDS as u64) as usize]
    }

    /// Remembers an answer; called for requests with an id.
    pub fn remember(&self, id: &str, model: &str, version: u64, outputs: &[Tensor]) {
        let Some(first) = outputs.first() else { return };
        let classes = !matches!(first.data, TensorData::F32(_) | TensorData::F64(_));
        let prediction = (0..first.data.len()).map(|i| first.data.get_f64(i)).collect();
        let answer = Answer { model: model.to_string(), version, prediction, classes };
        let size = answer.size(id);
        if size + order_size(id) > self.shard_bytes {
            // One answer larger than its shard's budget would push every other one out: it is not remembered.
            return;
        }
        let mut s = self.shard(id).lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *s;
        if let Some((_, old)) = s.map.get_mut(id) {
            // The same id again: the newer answer counts, in the older one's place.
            s.bytes = s.bytes.saturating_sub(old.size(id)) + size;
            *old = answer;
        } else {
            let seq = s.next;
            s.next += 1;
            s.map.insert(id.to_string(), (seq, answer));
            s.order.push_back((seq, id.to_string()));
            s.bytes += size + order_size(id);
        }
        while s.order.len() > self.per_shard || s.bytes > self.shard_bytes {
            let Some((seq, old)) = s.order.pop_front() else { break };
            s.bytes = s.bytes.saturating_sub(order_size(&old));
            if let Entry::Occupied(kept) = s.map.entry(old)
                && kept.get().0 == seq
            {
                let (id, (_, a)) = kept.remove_entry();
                s.bytes = s.bytes.saturating_sub(a.size(&id));
            }
        }
    }

    /// Joins a true value with the remembered answer. Returns the version that answered and what this joined.
    pub fn join(&self, model: &str, id: &str, truth: &[f64]) -> Result<(u64, Quality), GatewayError> {
        let answer = {
            let mut s = self.shard(id).lock().unwrap_or_else(|p| p.into_inner());
            let a = s.map.get(id).map(|(_, a)| a.clone()).ok_or_else(|| {
                GatewayError::NotFound(format!(
                    "no answer with request id '{id}' is remembered for model '{model}' (unknown, already \
                     labelled, or expired)"
                ))
            })?;
            if a.model != model {
                return Err(GatewayError::invalid(format!(
                    "request id '{id}' was answered by model '{}', not '{model}'",
                    a.model
                )));
            }
            if truth.len() != a.prediction.len() {
                return Err(GatewayError::invalid(format!(
                    "'value' has {} elements; the answer to '{id}' had {}",
                    truth.len(),
                    a.prediction.len()
                )));
            }
            // One label per answer: a second feedback for the same id would count twice. Its entry in `order`
            // (and that entry's bytes) goes when it comes round; the answer's bytes go now.
            if let Some((_, gone)) = s.map.remove(id) {
                s.bytes = s.bytes.saturating_sub(gone.size(id));
            }
            a
        };
        let mut this = Quality { feedback: 1, ..Default::default() };
        for (p, t) in answer.prediction.iter().zip(truth) {
            if answer.classes {
                this.labels += 1;
                this.correct += u64::from(p == t);
            } else {
                this.values += 1;
                this.sum_abs_error += (p - t).abs();
            }
        }
        let mut q = self.quality.lock().unwrap_or_else(|p| p.into_inner());
        q.entry((model.to_string(), answer.version)).or_default().add(&this);
        Ok((answer.version, this))
    }

    pub fn quality(&self, model: &str) -> Vec<(u64, Quality)> {
        let q = self.quality.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().filter(|(k, _)| k.0 == model).map(|(k, v)| (k.1, v.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(v: Vec<i64>) -> Vec<Tensor> {
        vec![Tensor { name: "label".into(), shape: vec![v.len() as i64], data: TensorData::I64(v) }]
    }

    #[test]
    fn joins_compute_accuracy_and_unknown_ids_are_reported() {
        let b = FeedbackBook::new(100, 1 << 20);
        b.remember("a", "m", 1, &label(vec![1]));
        b.remember("b", "m", 1, &label(vec![0, 1]));
        assert_eq!(b.join("m", "a", &[1.0]).expect("joined").0, 1);
        b.join("m", "b", &[1.0, 1.0]).expect("joined");
        let q = &b.quality("m")[0].1;
        assert_eq!((q.feedback, q.labels, q.correct), (2, 3, 2));
        let e = b.join("m", "a", &[1.0]).expect_err("used").to_string();
        assert!(e.contains("no answer with request id 'a'") && e.contains("already labelled"), "{e}");
        assert!(b.join("m", "zzz", &[1.0]).is_err());
    }

    #[test]
    fn memory_is_bounded_oldest_first() {
        let b = FeedbackBook::new(32, 1 << 20);
        for i in 0..1000 {
            b.remember(&format!("id{i}"), "m", 1, &label(vec![1]));
        }
        assert!(b.join("m", "id0", &[1.0]).is_err(), "the oldest were forgotten");
        assert!(b.join("m", "id999", &[1.0]).is_ok());
        let kept: usize = b.shards.iter().map(|s| s.lock().expect("lock").map.len()).sum();
        assert!(kept <= 32 + SHARDS, "{kept}");
    }

    /// Joined ids wait in the order until they come round: their memory is counted until then, so the budget
    /// bounds them, and an old entry of an id answered again does not forget the newer answer.
    #[test]
    fn joined_ids_are_counted_until_they_leave_the_order() {
        let b = FeedbackBook::new(1_000_000, 64 << 10);
        let long = "x".repeat(1000);
        for i in 0..10_000 {
            let id = format!("{i}-{long}");
            b.remember(&id, "m", 1, &label(vec![1]));
            b.join("m", &id, &[1.0]).expect("joined");
        }
        let held: usize =
            b.shards.iter().map(|s| s.lock().expect("lock").order.iter().map(|(_, id)| id.len()).sum::<usize>()).sum();
        assert!(held <= 64 << 10, "{held} bytes of joined ids held for a budget of 64 KiB");
        assert!(b.bytes() >= held, "the bytes held ({held}) are counted ({})", b.bytes());

        let b = FeedbackBook::new(SHARDS * 2, 1 << 20);
        b.remember("again", "m", 1, &label(vec![1]));
        b.join("m", "again", &[1.0]).expect("joined");
        b.remember("again", "m", 2, &label(vec![0]));
        // Push the first entry of "again" out of its shard's order; the second answer must survive that.
        let filler = (0..).map(|i| format!("filler{i}")).find(|id| std::ptr::eq(b.shard(id), b.shard("again")));
        b.remember(&filler.expect("an id in the same shard"), "m", 1, &label(vec![1]));
        assert_eq!(b.join("m", "again", &[0.0]).expect("the newer answer is kept").0, 2);
    }

    /// Large answers (a 4096-row batch, say) are bounded by memory, not only by count.
    #[test]
    fn memory_is_bounded_by_size_too() {
        let budget = 1 << 20;
        let b = FeedbackBook::new(100_000, budget);
        let rows = Tensor { name: "y".into(), shape: vec![4096], data: TensorData::F32(vec![0.5; 4096]) };
        for i in 0..1000 {
            b.remember(&format!("id-{i}-{}", "x".repeat(200)), "m", 1, std::slice::from_ref(&rows));
        }
        assert!(b.bytes() <= budget, "{} bytes kept for a budget of {budget}", b.bytes());
        assert!(b.bytes() > budget / 2, "the budget is used: {}", b.bytes());
        let huge = Tensor { name: "y".into(), shape: vec![1 << 20], data: TensorData::F32(vec![0.5; 1 << 20]) };
        b.remember("huge", "m", 1, std::slice::from_ref(&huge));
        assert!(b.join("m", "huge", &[0.0]).is_err(), "an answer over a shard's budget is not kept");
    }
}
