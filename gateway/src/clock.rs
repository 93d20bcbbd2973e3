//! Time helpers shared by the journal, the rollout state and the manifests: wall-clock timestamps as RFC 3339
//! text, the form they take in the state file and in every API answer.

use std::time::SystemTime;

/// Now, as RFC 3339 in UTC with milliseconds (`2026-12-02T02:19:00.123Z`).
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// A point in time as RFC 3339 in UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses RFC 3339 leniently (a missing zone is UTC); `None` when it is not a time.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_to_the_millisecond() {
        let now = now_rfc3339();
        let t = parse_rfc3339(&now).expect("parses");
        assert_eq!(rfc3339(t), now);
        assert!(parse_rfc3339("yesterday").is_none());
    }
}
