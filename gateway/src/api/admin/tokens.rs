//! Admin credentials: named bearer tokens, each with a role. A `viewer` may only read (GET: the console's views,
//! `gateway admin list/show/events/skew/watch`); an `operator` may also change routing and rollouts. The single
//! token of `admin.token_file` / `GATEWAY_ADMIN_TOKEN` is an operator token named `admin`; `admin.tokens_file` adds
//! named ones. Tokens are compared in constant time, and neither `Debug` nor any message shows one: only names.

use std::sync::Arc;

use serde::Deserialize;

use crate::config::AdminConfig;
use crate::error::GatewayError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
}

/// Who made a call: the name of the token it carried, and what that token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

#[derive(Clone)]
struct Named {
    name: String,
    role: Role,
    secret: Arc<[u8]>,
}

/// The admin tokens. `Debug` prints names, roles and where they came from, never a token.
#[derive(Clone)]
pub struct AdminToken {
    tokens: Vec<Named>,
    source: String,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.tokens.iter().map(|t| format!("{} ({:?})", t.name, t.role)).collect();
        write!(f, "AdminToken([{}], {})", names.join(", "), self.source)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    token: String,
}

impl AdminToken {
    /// Reads the single token (file, else environment variable) and the named tokens file.
    pub fn from_config(cfg: &AdminConfig) -> Result<Self, String> {
        let (value, mut source) = match &cfg.token_file {
            Some(f) => (
                std::fs::read_to_string(f).map_err(|e| format!("cannot read admin.token_file {}: {e}", f.display()))?,
                format!("file {}", f.display()),
            ),
            None => (std::env::var(&cfg.token_env).unwrap_or_default(), format!("${}", cfg.token_env)),
        };
        let value = value.trim();
        let mut tokens = Vec::new();
        if !value.is_empty() {
            tokens.push(Named { name: "admin".into(), role: Role::Operator, secret: Arc::from(value.as_bytes()) });
        }
        if let Some(f) = &cfg.tokens_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read admin.tokens_file {}: {e}", f.display()))?;
            tokens.extend(parse_tokens(&text).map_err(|e| format!("admin.tokens_file {}: {e}", f.display()))?);
            source = format!("{source} and {}", f.display());
        }
        let mut names: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("admin token name '{}' is used twice", w[0]));
        }
        Ok(Self { tokens, source })
    }

    pub fn is_set(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks an `Authorization` header's bearer token and names its caller. Every token is compared, in constant
    /// time, whichever matches.
    pub fn check(&self, header: Option<&str>) -> Result<Caller, GatewayError> {
        if self.tokens.is_empty() {
            return Err(GatewayError::Unauthorized(format!(
                "the admin API is disabled: no token is configured (set {})",
                self.source
            )));
        }
        let given = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
        let Some(given) = given else {
            return Err(GatewayError::Unauthorized("missing 'Authorization: Bearer <token>' header".into()));
        };
        crate::api::secrets::find(given.as_bytes(), &self.tokens, |t| &t.secret)
            .map(|t| Caller { name: t.name.clone(), role: t.role })
            .ok_or_else(|| GatewayError::Unauthorized("invalid admin token".into()))
    }

    /// [`AdminToken::check`], and the caller must be an operator: a viewer token gets 403 naming it.
    pub fn check_operator(&self, header: Option<&str>) -> Result<Caller, GatewayError> {
        let caller = self.check(header)?;
        if caller.role == Role::Operator { Ok(caller) } else { Err(viewer_refused(&caller)) }
    }
}

/// The refusal of a change to a viewer.
fn viewer_refused(caller: &Caller) -> GatewayError {
    GatewayError::Forbidden(format!(
        "token '{}' has the viewer role: it may read, not change anything (an operator token is needed)",
        caller.name
    ))
}

fn parse_tokens(text: &str) -> Result<Vec<Named>, String> {
    let file: TokensFile = crate::api::secrets::parse_toml(text, "[[tokens]] tables with name, role and token")?;
    file.tokens
        .into_iter()
        .map(|t| {
            let token = t.token.trim();
            if t.name.is_empty() || token.is_empty() {
                return Err(format!("token '{}': name and token must not be empty", t.name));
            }
            Ok(Named { name: t.name, role: t.role, secret: Arc::from(token.as_bytes()) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> AdminToken {
        let named = parse_tokens(
            "[[tokens]]\nname = \"grafana\"\nrole = \"viewer\"\ntoken = \"view-secret\"\n\
             [[tokens]]\nname = \"oncall\"\nrole = \"operator\"\ntoken = \"op-secret\"\n",
        )
        .expect("parses");
        AdminToken { tokens: named, source: "test".into() }
    }

    #[test]
    fn each_token_names_its_caller_and_role() {
        let t = tokens();
        assert_eq!(t.check(Some("Bearer view-secret")).expect("viewer").name, "grafana");
        assert_eq!(t.check(Some("Bearer op-secret")).expect("operator").role, Role::Operator);
        assert!(matches!(t.check(Some("Bearer nope")), Err(GatewayError::Unauthorized(_))));
        assert!(matches!(t.check(None), Err(GatewayError::Unauthorized(_))));
        let e = t.check_operator(Some("Bearer view-secret")).expect_err("viewer may not change");
        assert!(matches!(&e, GatewayError::Forbidden(m) if m.contains("'grafana' has the viewer role")), "{e}");
    }

    #[test]
    fn tokens_never_show_in_debug_or_errors() {
        let t = tokens();
        let shown = format!("{t:?}");
        assert!(shown.contains("grafana") && !shown.contains("view-secret") && !shown.contains("op-secret"), "{shown}");
        let e = parse_tokens("[[tokens]]\nname = \"x\"\nrole = \"boss\"\ntoken = \"super-secret\"\n").err();
        assert!(e.as_deref().is_some_and(|e| !e.contains("super-secret")), "{e:?}");
        let e = parse_tokens("[[tokens]]\nname = \"x\"\nrole = \"viewer\"\ntoken = \"\"\n").err();
        assert!(e.is_some_and(|e| e.contains("must not be empty")));
    }
}
