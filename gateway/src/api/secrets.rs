//! What the admin tokens and the inference API keys share: matching a presented secret against named ones in constant
//! time, and reading a TOML file of them without ever echoing a secret in an error.

use subtle::ConstantTimeEq;

/// The name of the secret `given` equals. Every secret is compared, whichever matches, so the time taken does not
/// tell which one (or whether one) matched.
pub fn find<'a, T>(given: &[u8], secrets: &'a [T], secret: impl Fn(&T) -> &[u8]) -> Option<&'a T> {
    let mut found = None;
    for s in secrets {
        if bool::from(given.ct_eq(secret(s))) {
            found = Some(s);
        }
    }
    found
}

/// Parses a TOML file of secrets. toml's own message quotes the offending line, which may hold a secret, so only the
/// position is kept, with `expected` saying what the file should hold.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, expected: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let at = e.span().map_or_else(String::new, |s| format!(" at byte {}", s.start));
        format!("not a valid file{at} (expected {expected})")
    })
}
