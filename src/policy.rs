//! Claims and authorization: `authorize(&ClaimSet, &[Claim])` decides whether a key's permissions cover what a
//! route or admin call requires (DESIGN.md §5).
//!
//! A permission ending in `*` grants every claim that starts with what precedes it (`orders:*` grants
//! `orders:read`; `*` grants everything). Seed 003's names are aliases: `LIST_API_KEY` = `ApiKeyList`,
//! `CREATE_API_KEY` = `ApiKeyCreate`, `DELETE_API_KEY` = `ApiKeyDelete`, `SUPER_USER` = `*`.

use std::fmt;

/// Most characters in one claim.
pub const MAX_CLAIM_LEN: usize = 128;

/// One claim (permission), normalized: aliases resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Claim(Box<str>);

/// A key's permissions, ready for fast checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimSet {
    all: bool,
    // Boxed slices, not vectors: every cached key holds one set, sized once.
    exact: Box<[Claim]>,
    prefixes: Box<[Box<str>]>,
}

/// Why a claim string is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClaimError {
    /// Empty or longer than [`MAX_CLAIM_LEN`].
    #[error("a claim must be 1 to {MAX_CLAIM_LEN} characters")]
    Length,
    /// A character outside `[A-Za-z0-9._:*-]`.
    #[error("claim {0:?} may contain only A-Z a-z 0-9 . _ : * -")]
    Character(String),
}

// === impl Claim ===

impl Claim {
    /// Validate and normalize one claim.
    pub fn parse(text: &str) -> Result<Self, ClaimError> {
        if text.is_empty() || text.len() > MAX_CLAIM_LEN {
            return Err(ClaimError::Length);
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'*' | b'-'))
        {
            return Err(ClaimError::Character(text.to_owned()));
        }
        let canonical = match text {
            "LIST_API_KEY" => "ApiKeyList",
            "CREATE_API_KEY" => "ApiKeyCreate",
            "DELETE_API_KEY" => "ApiKeyDelete",
            "SUPER_USER" => "*",
            other => other,
        };
        Ok(Self(canonical.into()))
    }

    /// A claim from a constant known to be valid.
    pub fn from_static(text: &'static str) -> Self {
        Self(text.into())
    }

    /// The claim text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl ClaimSet ===

impl ClaimSet {
    /// Build from permission strings; invalid entries are ignored (they were validated when written).
    pub fn from_permissions<'a>(permissions: impl IntoIterator<Item = &'a str>) -> Self {
        let (mut all, mut exact, mut prefixes) = (false, Vec::new(), Vec::new());
        for p in permissions {
            let Ok(claim) = Claim::parse(p) else { continue };
            match claim.as_str().strip_suffix('*') {
                Some("") => all = true,
                Some(prefix) => prefixes.push(prefix.into()),
                None => exact.push(claim),
            }
        }
        Self {
            all,
            exact: exact.into_boxed_slice(),
            prefixes: prefixes.into_boxed_slice(),
        }
    }

    /// A set granting everything.
    pub fn everything() -> Self {
        Self {
            all: true,
            ..Self::default()
        }
    }

    /// Does this set grant `claim`? A wildcard claim is granted only by a wildcard at least as wide.
    pub fn grants(&self, claim: &Claim) -> bool {
        if self.all {
            return true;
        }
        let text = claim.as_str();
        self.exact.iter().any(|c| c == claim)
            || self.prefixes.iter().any(|p| text.starts_with(&**p))
    }

    /// The claims of `required` this set does not grant.
    pub fn missing(&self, required: &[Claim]) -> Vec<String> {
        required
            .iter()
            .filter(|c| !self.grants(c))
            .map(|c| c.to_string())
            .collect()
    }
}

/// Authorize: every required claim must be granted. Err lists the missing claims.
pub fn authorize(held: &ClaimSet, required: &[Claim]) -> Result<(), Vec<String>> {
    let missing = held.missing(required);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(p: &[&str]) -> ClaimSet {
        ClaimSet::from_permissions(p.iter().copied())
    }
    fn c(s: &str) -> Claim {
        Claim::parse(s).unwrap()
    }

    #[test]
    fn wildcards_grant_by_prefix() {
        let s = set(&["orders:*"]);
        assert!(s.grants(&c("orders:read")));
        assert!(s.grants(&c("orders:*")));
        assert!(!s.grants(&c("order")));
        assert!(!s.grants(&c("*")));
        assert!(set(&["*"]).grants(&c("anything")));
    }

    #[test]
    fn narrower_permission_does_not_grant_wildcard() {
        assert!(!set(&["orders:read"]).grants(&c("orders:*")));
    }

    #[test]
    fn seed_003_aliases_resolve() {
        assert!(set(&["LIST_API_KEY"]).grants(&c("ApiKeyList")));
        assert!(set(&["ApiKeyList"]).grants(&c("LIST_API_KEY")));
        assert!(set(&["SUPER_USER"]).grants(&c("ApiKeyDelete")));
    }

    #[test]
    fn bad_claims_are_rejected() {
        assert_eq!(Claim::parse(""), Err(ClaimError::Length));
        assert!(Claim::parse("a b").is_err());
        assert!(Claim::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn authorize_lists_missing() {
        assert_eq!(
            authorize(&set(&["a"]), &[c("a"), c("b")]),
            Err(vec!["b".to_owned()])
        );
    }
}
