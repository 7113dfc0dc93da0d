//! The route table: method + path -> the rule to apply (auth mode, required claims). First match wins; no match
//! applies the default route, which requires authentication.

use http::Method;

use crate::policy::Claim;

/// How a path is matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// The path starts with this.
    Prefix(String),
    /// The path is exactly this.
    Exact(String),
}

/// Whether a route needs a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// A valid credential is required.
    Required,
    /// A credential is checked if present; requests without one pass with no context.
    Optional,
    /// No authentication; credentials are still stripped.
    None,
}

/// One route.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Label for metrics and logs.
    pub name: String,
    /// Path pattern.
    pub path: PathMatch,
    /// Methods it applies to; empty = all.
    pub methods: Vec<Method>,
    /// Authentication mode.
    pub auth: AuthMode,
    /// Claims required (all).
    pub require: Vec<Claim>,
    /// The registered upstream to forward to (by name); `None` = the default upstream.
    pub upstream: Option<String>,
}

/// The routes plus the default.
#[derive(Clone, Debug)]
pub struct RouteTable {
    rules: Vec<Rule>,
    default: Rule,
}

// === impl Rule ===

impl Rule {
    fn matches(&self, method: &Method, path: &str) -> bool {
        let path_ok = match &self.path {
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Exact(p) => path == p,
        };
        path_ok && (self.methods.is_empty() || self.methods.contains(method))
    }
}

// === impl RouteTable ===

impl RouteTable {
    /// A table from configured rules and the default.
    pub fn new(rules: Vec<Rule>, default: Rule) -> Self {
        Self { rules, default }
    }

    /// The rule for a request.
    pub fn find(&self, method: &Method, path: &str) -> &Rule {
        self.find_indexed(method, path).1
    }

    /// The rule for a request and its index (routes in order, then the default route).
    pub fn find_indexed(&self, method: &Method, path: &str) -> (usize, &Rule) {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(method, path))
            .unwrap_or((self.rules.len(), &self.default))
    }

    /// Every rule's name by index, the default route last.
    pub fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.rules
            .iter()
            .chain(std::iter::once(&self.default))
            .map(|r| r.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, path: PathMatch, methods: Vec<Method>) -> Rule {
        Rule {
            name: name.into(),
            path,
            methods,
            auth: AuthMode::Required,
            require: vec![],
            upstream: None,
        }
    }

    #[test]
    fn first_match_wins_and_default_applies() {
        let t = RouteTable::new(
            vec![
                rule("health", PathMatch::Exact("/health".into()), vec![]),
                rule(
                    "orders-write",
                    PathMatch::Prefix("/orders/".into()),
                    vec![Method::POST],
                ),
                rule("orders", PathMatch::Prefix("/orders/".into()), vec![]),
            ],
            rule("default", PathMatch::Prefix("/".into()), vec![]),
        );
        assert_eq!(t.find(&Method::GET, "/health").name, "health");
        assert_eq!(t.find(&Method::GET, "/health/x").name, "default");
        assert_eq!(t.find(&Method::POST, "/orders/1").name, "orders-write");
        assert_eq!(t.find(&Method::GET, "/orders/1").name, "orders");
        assert_eq!(t.find(&Method::GET, "/other").name, "default");
    }
}
