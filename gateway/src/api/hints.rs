//! Routing hints from request headers (HTTP) or metadata (gRPC, the same names): the pin header names a version,
//! the routing-key header's bytes pick a sticky side. Both front ends read them here, and both refuse a header
//! they cannot read unambiguously (repeated, or a pin that is not visible ASCII) instead of guessing.

use http::HeaderMap;

use crate::config::RouteHeaders;
use crate::error::GatewayError;
use crate::routing::RouteHint;

/// The hint for a request: `url_version` (from the path or the gRPC `model_version` field) wins over the pin.
pub fn route_hint<'a>(
    headers: &'a HeaderMap,
    names: &RouteHeaders,
    url_version: Option<&'a str>,
) -> Result<RouteHint<'a>, GatewayError> {
    let pinned = match single(headers, &names.pin)? {
        Some(v) => Some(v.to_str().map_err(|_| {
            GatewayError::invalid(format!("header '{}' must be a version number in visible ASCII", names.pin))
        })?),
        None => None,
    };
    let key = single(headers, &names.key)?.map(|v| v.as_bytes());
    Ok(RouteHint { url_version, pinned, key })
}

fn single<'a>(headers: &'a HeaderMap, name: &http::HeaderName) -> Result<Option<&'a http::HeaderValue>, GatewayError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(GatewayError::invalid(format!("header '{name}' is given more than once; send it once")));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_unreadable_headers_are_refused_by_name() {
        let cfg = crate::config::RoutingConfig::default().headers().expect("the default names parse");
        let (pin, key) = (cfg.pin.clone(), cfg.key.clone());
        let mut h = HeaderMap::new();
        assert!(route_hint(&h, &cfg, None).expect("empty").pinned.is_none());
        h.insert(pin.clone(), "2".parse().expect("value"));
        h.insert(key, http::HeaderValue::from_bytes(b"user\xff").expect("opaque bytes"));
        let hint = route_hint(&h, &cfg, Some("1")).expect("fine");
        assert_eq!((hint.explicit(), hint.pinned, hint.key), (Some("1"), Some("2"), Some(&b"user\xff"[..])));
        h.append(pin.clone(), "3".parse().expect("value"));
        let e = route_hint(&h, &cfg, None).expect_err("repeated").to_string();
        assert!(e.contains(cfg.pin.as_str()) && e.contains("more than once"), "{e}");
        h.remove(&pin);
        h.insert(pin.clone(), http::HeaderValue::from_bytes(b"\xe9").expect("opaque"));
        let e = route_hint(&h, &cfg, None).expect_err("not ascii").to_string();
        assert!(e.contains(cfg.pin.as_str()) && e.contains("ASCII"), "{e}");
    }
}
