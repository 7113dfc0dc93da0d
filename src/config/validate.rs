//! Field-by-field validation of the file config into runtime types; every problem is collected, none stops
//! the others from being found.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Uri};

use super::{Scheme, file};
use crate::policy::Claim;
use crate::routes::{AuthMode, PathMatch, Rule};

/// Collects problems while converting fields.
#[derive(Default)]
pub(super) struct Validator {
    pub(super) problems: Vec<String>,
}

impl Validator {
    pub(super) fn problem(&mut self, p: impl Into<String>) {
        self.problems.push(p.into());
    }

    pub(super) fn addr(&mut self, field: &str, text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|_| {
            self.problem(format!(
                "{field}: {text:?} is not an address like \"127.0.0.1:8080\""
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    pub(super) fn duration(&mut self, field: &str, text: &str) -> Duration {
        humantime::parse_duration(text).unwrap_or_else(|_| {
            self.problem(format!(
                "{field}: {text:?} is not a duration like \"30s\" or \"5m\""
            ));
            Duration::from_secs(1)
        })
    }

    pub(super) fn positive(&mut self, field: &str, n: usize) -> usize {
        if n == 0 {
            self.problem(format!("{field}: must be greater than 0"));
        }
        n.max(1)
    }

    pub(super) fn header_name(&mut self, field: &str, text: &str) -> http::HeaderName {
        http::HeaderName::from_bytes(text.as_bytes()).unwrap_or_else(|_| {
            self.problem(format!("{field}: {text:?} is not a header name"));
            http::HeaderName::from_static("x-api-key")
        })
    }

    pub(super) fn context_prefix(&mut self, text: &str) -> String {
        if text.len() < 2 || http::HeaderName::from_bytes(text.as_bytes()).is_err() {
            self.problem(format!(
                "proxy.context_prefix: {text:?} must be a header-name prefix like \"X-Auth-\""
            ));
        }
        text.to_ascii_lowercase()
    }

    pub(super) fn bootstrap_token(&mut self, text: &str) -> Option<crate::keys::secret::Secret> {
        if text.is_empty() {
            return None;
        }
        if text.len() < 16 {
            self.problem("admin.bootstrap_token: must be at least 16 characters");
        }
        Some(crate::keys::secret::Secret::new(text.to_owned()))
    }

    pub(super) fn upstream_url(&mut self, field: &str, text: &str) -> Uri {
        match text.parse::<Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.authority().is_some() =>
            {
                uri
            }
            _ => {
                self.problem(format!(
                    "{field}: {text:?} is not an http:// or https:// URL"
                ));
                Uri::from_static("http://127.0.0.1:3000")
            }
        }
    }

    pub(super) fn schemes(&mut self, names: &[String]) -> Vec<Scheme> {
        let mut out = Vec::new();
        for name in names {
            match name.as_str() {
                "bearer" => out.push(Scheme::Bearer),
                "nws4" => out.push(Scheme::Nws4),
                "rfc9421" => out.push(Scheme::Rfc9421),
                other => self.problem(format!(
                    "auth.schemes: {other:?} is not one of bearer, nws4, rfc9421"
                )),
            }
        }
        out
    }

    pub(super) fn rule(&mut self, field: &str, r: &file::RouteSection, is_default: bool) -> Rule {
        let path = if is_default {
            PathMatch::Prefix("/".into())
        } else if let Some(exact) = r.path.strip_prefix('=') {
            PathMatch::Exact(exact.into())
        } else {
            PathMatch::Prefix(r.path.clone())
        };
        if !is_default && !r.path.trim_start_matches('=').starts_with('/') {
            self.problem(format!(
                "{field}.path: {:?} must start with / (or =/ for an exact path)",
                r.path
            ));
        }
        let mut methods = Vec::new();
        for m in &r.methods {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => methods.push(m),
                Err(_) => self.problem(format!("{field}.methods: {m:?} is not a method")),
            }
        }
        let auth = match r.auth.as_str() {
            "required" => AuthMode::Required,
            "optional" => AuthMode::Optional,
            "none" => AuthMode::None,
            other => {
                self.problem(format!(
                    "{field}.auth: {other:?} is not one of required, optional, none"
                ));
                AuthMode::Required
            }
        };
        let mut require = Vec::new();
        for c in &r.require {
            match Claim::parse(c) {
                Ok(c) => require.push(c),
                Err(e) => self.problem(format!("{field}.require: {e}")),
            }
        }
        let name = if !r.name.is_empty() {
            r.name.clone()
        } else if is_default {
            "default".into()
        } else {
            r.path.clone()
        };
        let upstream = (!r.upstream.is_empty()).then(|| r.upstream.clone());
        if upstream
            .as_deref()
            .is_some_and(|u| !crate::upstreams::input::is_name(u))
        {
            self.problem(format!(
                "{field}.upstream: {:?} is not an upstream name (A-Z a-z 0-9 . _ -)",
                r.upstream
            ));
        }
        Rule {
            name,
            path,
            methods,
            auth,
            require,
            upstream,
        }
    }

    /// `[[upstreams]]`: the admin API's validation, on snake_case keys, every problem named by its field.
    pub(super) fn upstreams(
        &mut self,
        tables: &[toml::Table],
    ) -> Vec<crate::upstreams::RegisteredUpstream> {
        use crate::upstreams::input::{UpstreamInput, camel_keys};
        let mut out: Vec<crate::upstreams::RegisteredUpstream> = Vec::new();
        for (i, table) in tables.iter().enumerate() {
            let json = camel_keys(toml::Value::Table(table.clone()));
            let input: UpstreamInput = match serde_json::from_value(json) {
                Ok(input) => input,
                Err(e) => {
                    self.problem(format!("upstreams[{i}]: {e}"));
                    continue;
                }
            };
            let fields = match input.validate(None) {
                Ok(f) => f,
                Err(problems) => {
                    for p in problems {
                        self.problem(format!("upstreams[{i}].{}: {}", p.path, p.description));
                    }
                    continue;
                }
            };
            if out.iter().any(|u| u.name == fields.name) {
                self.problem(format!(
                    "upstreams[{i}].name: {:?} is declared twice",
                    fields.name
                ));
                continue;
            }
            out.push(crate::upstreams::RegisteredUpstream::from_fields(
                crate::upstreams::config_id(&fields.name),
                fields,
                chrono::DateTime::UNIX_EPOCH,
            ));
        }
        out
    }
}
