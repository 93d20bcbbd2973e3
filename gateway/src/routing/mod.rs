//! Which version of a model answers a request. Each model's table lives in an `ArcSwap`: a request does one atomic
//! load and keeps its `Arc` to the version it chose, so a swap never disturbs a call in flight; the old version is
//! dropped when its last call finishes.
//!
//! Order of precedence: a version in the URL, then the pin header, then the routing-key header (hashed, so one
//! key always lands on the same side for a given weight, and raising the weight only moves keys from stable to
//! canary), then a fast random draw against the canary weight.

pub mod spec;

use std::sync::Arc;

pub use spec::{RoutingSpec, ShadowSpec, WEIGHT_SCALE, Weight};

/// What the routing table needs to know of a version; the table holds whatever version type the model layer
/// serves, so the rules here stay pure and testable on their own.
pub trait Version {
    /// The version's number (`models/<m>/<number>/`).
    fn number(&self) -> u64;
    /// A candidate is never chosen as the default stable version; only an explicit choice makes it stable.
    fn is_candidate(&self) -> bool;
}

/// The canary: a version and its share of unpinned traffic.
#[derive(Debug)]
pub struct Canary<V> {
    pub version: Arc<V>,
    pub weight: Weight,
}

/// The shadow: receives a sampled copy of live requests; its answers are compared, never returned.
#[derive(Debug)]
pub struct Shadow<V> {
    pub version: Arc<V>,
    pub share: Weight,
}

/// The live routing table of one model, built from its [`RoutingSpec`] and the versions that are ready.
#[derive(Debug)]
pub struct Routing<V> {
    /// The version that answers requests that do not name one (and are not sent to the canary).
    pub stable: Option<Arc<V>>,
    pub canary: Option<Canary<V>>,
    pub shadow: Option<Shadow<V>>,
}

impl<V> Default for Routing<V> {
    fn default() -> Self {
        Self { stable: None, canary: None, shadow: None }
    }
}

/// What a request says about where it wants to go.
#[derive(Debug, Default, Clone, Copy)]
pub struct RouteHint<'a> {
    /// A version named in the URL path.
    pub url_version: Option<&'a str>,
    /// A version named in the pin header.
    pub pinned: Option<&'a str>,
    /// The routing-key header's value.
    pub key: Option<&'a [u8]>,
}

impl<'a> RouteHint<'a> {
    /// The explicitly requested version, if any: the URL wins over the pin header.
    pub fn explicit(&self) -> Option<&'a str> {
        self.url_version.or(self.pinned)
    }
}

/// Which side of the split a request falls on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Stable,
    Canary,
}

/// Decides stable or canary for an unpinned request. `bucket` is in `0..WEIGHT_SCALE`; the canary takes the buckets
/// below its weight, so raising the weight only ever adds buckets to the canary.
pub fn side(weight: Weight, bucket: u32) -> Side {
    if bucket < weight.0 { Side::Canary } else { Side::Stable }
}

/// The bucket of a routing key for a model. FNV-1a: stable across processes, restarts and replicas (unlike the
/// standard library's randomly seeded hasher), and fast on short keys. The model name is mixed in so that the
/// same key population is not always the canary's slice for every model.
pub fn key_bucket(model: &str, key: &[u8]) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in model.as_bytes().iter().chain(&[0xff]).chain(key) {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    // Fold the high bits in: FNV's low bits alone are weakly mixed.
    ((h ^ (h >> 32)) % u64::from(WEIGHT_SCALE)) as u32
}

impl<V: Version> Routing<V> {
    /// The shadow to copy a request answered by `answered` to, if this request is sampled. A version is never
    /// its own shadow.
    pub fn sample_shadow(&self, answered: &V) -> Option<&Arc<V>> {
        let s = self.shadow.as_ref()?;
        (s.version.number() != answered.number() && s.share.0 > 0 && fastrand::u32(0..WEIGHT_SCALE) < s.share.0)
            .then_some(&s.version)
    }

    /// The version for an unpinned request (the caller handles explicit versions).
    pub fn choose(&self, model: &str, key: Option<&[u8]>) -> Option<&Arc<V>> {
        let Some(canary) = &self.canary else { return self.stable.as_ref() };
        if canary.weight.0 == 0 {
            return self.stable.as_ref();
        }
        let bucket = match key {
            Some(k) => key_bucket(model, k),
            None => fastrand::u32(0..WEIGHT_SCALE),
        };
        match side(canary.weight, bucket) {
            Side::Canary => Some(&canary.version),
            Side::Stable => self.stable.as_ref().or(Some(&canary.version)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn canary_share(weight: Weight, buckets: impl Iterator<Item = u32>) -> (usize, usize) {
        let mut n = 0;
        let mut c = 0;
        for b in buckets {
            n += 1;
            if side(weight, b) == Side::Canary {
                c += 1;
            }
        }
        (c, n)
    }

    proptest! {
        /// Random draws split traffic at the weight, within five standard deviations.
        #[test]
        fn random_split_matches_the_weight(w in 0u32..=WEIGHT_SCALE, seed in any::<u64>()) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let n = 20_000usize;
            let (c, _) = canary_share(Weight(w), (0..n).map(|_| rng.u32(0..WEIGHT_SCALE)));
            let p = f64::from(w) / f64::from(WEIGHT_SCALE);
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            prop_assert!((c as f64 - n as f64 * p).abs() <= 5.0 * sd + 1.0, "w={w} got {c} of {n}");
        }

        /// Hashed keys split at the weight too: the hash spreads keys evenly over the buckets.
        #[test]
        fn keyed_split_matches_the_weight(w in 0u32..=WEIGHT_SCALE, salt in any::<u32>()) {
            let n = 20_000usize;
            let keys = (0..n).map(|i| format!("user-{salt}-{i}"));
            let (c, _) = canary_share(Weight(w), keys.map(|k| key_bucket("m", k.as_bytes())));
            let p = f64::from(w) / f64::from(WEIGHT_SCALE);
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            prop_assert!((c as f64 - n as f64 * p).abs() <= 5.0 * sd + 1.0, "w={w} got {c} of {n}");
        }

        /// A key never flips back to stable as the weight rises, and always lands on the same side at one weight.
        #[test]
        fn sticky_keys_only_move_towards_the_canary(key in proptest::collection::vec(any::<u8>(), 0..32), mut ws in proptest::collection::vec(0u32..=WEIGHT_SCALE, 2..20)) {
            ws.sort_unstable();
            let b = key_bucket("model", &key);
            prop_assert_eq!(b, key_bucket("model", &key));
            let mut was_canary = false;
            for w in ws {
                let now = side(Weight(w), b) == Side::Canary;
                prop_assert!(now || !was_canary, "key went back to stable at weight {}", w);
                was_canary = now;
            }
        }
    }

    #[test]
    fn full_and_zero_weights_are_absolute() {
        for b in [0, 1, WEIGHT_SCALE / 2, WEIGHT_SCALE - 1] {
            assert_eq!(side(Weight(0), b), Side::Stable);
            assert_eq!(side(Weight(WEIGHT_SCALE), b), Side::Canary);
        }
    }

    #[test]
    fn explicit_versions_win_url_first() {
        let h = RouteHint { url_version: Some("1"), pinned: Some("2"), key: Some(b"k") };
        assert_eq!(h.explicit(), Some("1"));
        let h = RouteHint { url_version: None, pinned: Some("2"), key: Some(b"k") };
        assert_eq!(h.explicit(), Some("2"));
        assert_eq!(RouteHint::default().explicit(), None);
    }
}
