//! The desired routing of a model, as operators set it and as the state file stores it: version numbers and a
//! weight, not loaded versions. [`RoutingSpec::resolve`] turns it into the live [`Routing`] against the versions
//! that are ready right now.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Canary, Routing};

use crate::model::VersionState;
use crate::model::manifest::Stage;

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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingSpec {
    /// `None` until a version is ready: then the highest ready version that is not a candidate becomes stable.
    pub stable: Option<u64>,
    pub canary: Option<CanarySpec>,
    #[serde(default)]
    pub shadow: Option<ShadowSpec>,
}

impl RoutingSpec {
    /// The live table. A stable version that is not ready falls back to the highest ready one (serving something
    /// beats serving nothing); a canary that is not ready is left out.
    pub fn resolve(&self, versions: &BTreeMap<u64, VersionState>) -> Routing {
        let ready = |n: u64| match versions.get(&n) {
            Some(VersionState::Ready(v)) => Some(v.clone()),
            _ => None,
        };
        // Candidates (manifest `stage`) never become stable by default; only an explicit choice makes them so.
        let highest = || {
            versions.values().rev().find_map(|s| match s {
                VersionState::Ready(v) if v.manifest.stage != Stage::Candidate => Some(v.clone()),
                _ => None,
            })
        };
        let stable = self.stable.and_then(ready).or_else(highest);
        let canary = self
            .canary
            .and_then(|c| ready(c.version).map(|v| Canary { version: v, weight: c.weight }))
            .filter(|c| stable.as_ref().is_none_or(|s| s.number != c.version.number));
        let shadow = self.shadow.and_then(|s| ready(s.version).map(|v| super::Shadow { version: v, share: s.share }));
        Routing { stable, canary, shadow }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
