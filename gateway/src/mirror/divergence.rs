//! How a shadow's answers differ from the live ones on the same inputs: absolute and relative differences of
//! numeric outputs, and the disagreement rate of class labels (integer outputs), per model and version pair.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::metrics::Metrics;
pub use crate::rollout::stats::PairStats;
use crate::tensor::{Tensor, TensorData};

/// Key: model, live version, shadow version.
pub type PairKey = (String, u64, u64);

#[derive(Debug, Default)]
pub struct DivergenceBook {
    pairs: Mutex<BTreeMap<PairKey, PairStats>>,
}

impl DivergenceBook {
    /// Compares one mirrored pair. Runs on the mirror worker, never on the request path.
    pub fn record(&self, key: PairKey, live: &[Tensor], shadow: &[Tensor], metrics: &Metrics) {
        let mut s = PairStats { pairs: 1, ..Default::default() };
        let (m, v, sv) = (key.0.as_str(), key.1.to_string(), key.2.to_string());
        for a in live {
            let Some(b) = shadow.iter().find(|b| b.name == a.name) else { continue };
            let n = a.data.len().min(b.data.len());
            let labels = !matches!(a.data, TensorData::F32(_) | TensorData::F64(_));
            for i in 0..n {
                let (x, y) = (a.data.get_f64(i), b.data.get_f64(i));
                if labels {
                    s.label_compared += 1;
                    s.label_disagreed += u64::from(x != y);
                } else {
                    let abs = (x - y).abs();
                    let rel = abs / x.abs().max(1e-12);
                    s.values_compared += 1;
                    s.sum_abs_diff += abs;
                    s.sum_rel_diff += rel;
                    s.max_abs_diff = s.max_abs_diff.max(abs);
                    metrics.divergence(m, &v, &sv, abs, rel);
                }
            }
        }
        metrics.mirrored_pair(m, &v, &sv, s.label_compared, s.label_disagreed);
        let mut book = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        book.entry(key).or_default().add(&s);
    }

    /// Totals for one (live, shadow) pair of a model.
    pub fn pair(&self, model: &str, live: u64, shadow: u64) -> PairStats {
        let book = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        book.get(&(model.to_string(), live, shadow)).cloned().unwrap_or_default()
    }

    /// Totals for every pair of one model.
    pub fn for_model(&self, model: &str) -> Vec<(u64, u64, PairStats)> {
        let book = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        book.iter().filter(|(k, _)| k.0 == model).map(|(k, s)| (k.1, k.2, s.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, data: TensorData) -> Tensor {
        Tensor { name: name.into(), shape: vec![data.len() as i64], data }
    }

    #[test]
    fn identical_outputs_show_no_divergence_and_different_ones_do() {
        let book = DivergenceBook::default();
        let metrics = Metrics::new();
        let live = [t("label", TensorData::I64(vec![0, 1, 1, 0])), t("p", TensorData::F32(vec![0.5, 0.25]))];
        book.record(("m".into(), 1, 2), &live, &live, &metrics);
        let other = [t("label", TensorData::I64(vec![0, 0, 1, 0])), t("p", TensorData::F32(vec![0.5, 0.75]))];
        book.record(("m".into(), 1, 3), &live, &other, &metrics);
        let pairs = book.for_model("m");
        let same = &pairs[0].2;
        assert_eq!((same.pairs, same.label_disagreed, same.max_abs_diff), (1, 0, 0.0));
        assert_eq!(same.disagreement_rate(), Some(0.0));
        let diff = &pairs[1].2;
        assert_eq!(diff.disagreement_rate(), Some(0.25));
        assert_eq!(diff.max_abs_diff, 0.5);
        assert_eq!(diff.mean_rel_diff(), Some(1.0));
    }
}
