//! The desired routing of a model, as operators set it and as the state file stores it: version numbers and a
//! weight, not loaded versions. [`RoutingSpec::resolve`] turns it into the live [`Routing`] against the versions
//! that are ready right now.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::{Canary, Routing, Shadow, Version};

/// Weights are in basis points: 10000 is 100 %, so the resolution is 0.01 %.
pub const WEIGHT_SCALE: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Weight(pub u32);

impl Weight {
    /// From a percentage such as 5 or 0.25; `None` outside 0..=100.
    pub fn from_percent(p: f64) -> Option<Self> {
        (p.is_finite() && (0.0..=100.0).contains(&p)).then(|| Self((p * 100.0).round() as u32))
    }

    pub fn percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanarySpec {
    pub version: u64,
    /// Share of unpinned traffic, in basis points.
    pub weight: Weight,
}

/// A shadow: a version that receives a sampled copy of live requests, off the hot path, for comparison only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowSpec {
    pub version: u64,
    /// Share of live requests copied, in basis points.
    pub share: Weight,
}

/// Stable versions remembered before the current one.
pub const MAX_PREVIOUS: usize = 8;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingSpec {
    /// `None` until a version is ready: then the highest ready version that is not a candidate becomes stable.
    pub stable: Option<u64>,
    pub canary: Option<CanarySpec>,
    #[serde(default)]
    pub shadow: Option<ShadowSpec>,
    /// Versions that were stable before `stable`, the most recent last. While the desired stable version cannot
    /// serve (it failed to load after a restart, say), the most recent of these that is ready serves instead;
    /// the desired state itself is never changed by that fallback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<u64>,
}

impl RoutingSpec {
    /// Makes `version` the stable version, remembering the one it replaces.
    pub fn set_stable(&mut self, version: u64) {
        if let Some(old) = self.stable.filter(|&old| old != version) {
            self.previous.retain(|&p| p != old && p != version);
            self.previous.push(old);
            let excess = self.previous.len().saturating_sub(MAX_PREVIOUS);
            self.previous.drain(..excess);
        }
        self.stable = Some(version);
    }

    /// What an operator could not have set: version 0, a weight or share over 100 %, an overlong history.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.stable == Some(0) {
            out.push("stable: version 0 does not exist (versions start at 1)".to_string());
        }
        if let Some(c) = self.canary {
            if c.version == 0 {
                out.push("canary.version: version 0 does not exist".to_string());
            }
            if c.weight.0 > WEIGHT_SCALE {
                out.push(format!("canary.weight: {} % is over 100 %", c.weight.percent()));
            }
        }
        if let Some(s) = self.shadow {
            if s.version == 0 {
                out.push("shadow.version: version 0 does not exist".to_string());
            }
            if s.share.0 > WEIGHT_SCALE {
                out.push(format!("shadow.share: {} % is over 100 %", s.share.percent()));
            }
        }
        if self.previous.len() > MAX_PREVIOUS || self.previous.contains(&0) {
            out.push(format!("previous: at most {MAX_PREVIOUS} versions, none of them 0"));
        }
        out
    }

    /// The live table against the versions that are ready now (by number). A stable version that is not ready
    /// falls back to the most recent previous stable version that is, then (serving something beats serving
    /// nothing) to the highest ready one that is not a candidate; a canary that is not ready, or that is the
    /// stable version, is left out; so is a shadow that is not ready.
    pub fn resolve<V: Version>(&self, ready: &BTreeMap<u64, Arc<V>>) -> Routing<V> {
        let get = |n: u64| ready.get(&n).cloned();
        let highest = || ready.values().rev().find(|v| !v.is_candidate()).cloned();
        let previous = || self.previous.iter().rev().find_map(|&n| get(n));
        let stable = self.stable.and_then(get).or_else(previous).or_else(highest);
        let canary = self
            .canary
            .and_then(|c| get(c.version).map(|v| Canary { version: v, weight: c.weight }))
            .filter(|c| stable.as_ref().is_none_or(|s| s.number() != c.version.number()));
        let shadow = self.shadow.and_then(|s| get(s.version).map(|v| Shadow { version: v, share: s.share }));
        Routing { stable, canary, shadow }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version as the routing table sees it: a number, and whether it is a candidate.
    #[derive(Debug, PartialEq)]
    struct V(u64, bool);

    impl Version for V {
        fn number(&self) -> u64 {
            self.0
        }
        fn is_candidate(&self) -> bool {
            self.1
        }
    }

    fn ready(vs: &[(u64, bool)]) -> BTreeMap<u64, Arc<V>> {
        vs.iter().map(|&(n, c)| (n, Arc::new(V(n, c)))).collect()
    }

    fn number<T: Version>(v: &Option<Arc<T>>) -> Option<u64> {
        v.as_ref().map(|v| v.number())
    }

    #[test]
    fn the_stable_version_is_the_chosen_one_or_the_highest_release() {
        let r = ready(&[(1, false), (2, false), (3, true)]);
        assert_eq!(number(&RoutingSpec::default().resolve(&r).stable), Some(2), "candidates never by default");
        let spec = RoutingSpec { stable: Some(1), ..Default::default() };
        assert_eq!(number(&spec.resolve(&r).stable), Some(1));
        let spec = RoutingSpec { stable: Some(3), ..Default::default() };
        assert_eq!(number(&spec.resolve(&r).stable), Some(3), "an explicit choice may be a candidate");
        let spec = RoutingSpec { stable: Some(9), ..Default::default() };
        assert_eq!(number(&spec.resolve(&r).stable), Some(2), "not ready: the highest release serves");
        assert_eq!(number(&spec.resolve(&ready(&[(3, true)])).stable), None, "only candidates: nothing");
    }

    #[test]
    fn a_broken_stable_falls_back_to_the_previous_stable_not_the_highest() {
        let mut spec = RoutingSpec::default();
        spec.set_stable(1);
        spec.set_stable(2);
        assert_eq!((spec.stable, spec.previous.clone()), (Some(2), vec![1]));
        let r = ready(&[(1, false), (9, false)]);
        assert_eq!(number(&spec.resolve(&r).stable), Some(1), "v2 broken: the previous stable, not v9");
        assert_eq!(spec.stable, Some(2), "the desired state is unchanged");
        assert_eq!(number(&spec.resolve(&ready(&[(1, false), (2, false), (9, false)])).stable), Some(2));
        for v in 3..20 {
            spec.set_stable(v);
        }
        assert_eq!(spec.previous.len(), MAX_PREVIOUS);
        assert_eq!(spec.previous.last(), Some(&18));
        assert!(spec.problems().is_empty());
    }

    #[test]
    fn canary_and_shadow_need_a_ready_version_and_the_canary_is_never_stable() {
        let r = ready(&[(1, false), (2, false)]);
        let spec = RoutingSpec {
            stable: Some(1),
            canary: Some(CanarySpec { version: 2, weight: Weight(500) }),
            shadow: Some(ShadowSpec { version: 2, share: Weight(100) }),
            previous: vec![],
        };
        let live = spec.resolve(&r);
        assert_eq!(live.canary.as_ref().map(|c| (c.version.number(), c.weight)), Some((2, Weight(500))));
        assert_eq!(live.shadow.as_ref().map(|s| s.version.number()), Some(2));
        let gone = spec.resolve(&ready(&[(1, false)]));
        assert!(gone.canary.is_none() && gone.shadow.is_none());
        let same = RoutingSpec { canary: Some(CanarySpec { version: 1, weight: Weight(500) }), ..spec };
        assert!(same.resolve(&r).canary.is_none(), "the stable version cannot also be the canary");
    }

    #[test]
    fn weights_from_percent_keep_a_hundredth_of_a_percent() {
        assert_eq!(Weight::from_percent(0.1), Some(Weight(10)));
        assert_eq!(Weight::from_percent(12.34), Some(Weight(1234)));
        assert_eq!(Weight::from_percent(100.0), Some(Weight(WEIGHT_SCALE)));
        assert_eq!(Weight::from_percent(100.5), None);
        assert_eq!(Weight::from_percent(-1.0), None);
        assert_eq!(Weight::from_percent(f64::NAN), None);
        assert_eq!(Weight(250).percent(), 2.5);
    }
}
