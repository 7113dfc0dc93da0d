//! The list query syntax of seed 004 (NData): `$skip`, `$take`, `$sort`, `$count` and field filters
//! (`field=value` or `field=op:arg;op:arg`), parsed into a `ListQuery` and applied to keys in memory.
//!
//! A value is an operator expression only when it starts with a known operator and a colon (`gt:…`); anything
//! else is an equality test, so `permissions=orders:read` means "holds `orders:read`". Use `eq:` to compare
//! against a value that starts with an operator name. Field names and sort fields are case-insensitive.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use percent_encoding::percent_decode_str;

use super::ApiKey;
use crate::error::Problem;

/// Default `$take`.
pub const DEFAULT_TAKE: usize = 100;
/// Largest `$take`.
pub const MAX_TAKE: usize = 1000;
/// Most filter terms in one query.
const MAX_TERMS: usize = 32;

/// A filterable or sortable field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `id`
    Id,
    /// `clientId`
    ClientId,
    /// `name`
    Name,
    /// `userName`
    UserName,
    /// `deviceName`
    DeviceName,
    /// `isActive`
    IsActive,
    /// `revoked`
    Revoked,
    /// `permissions`
    Permissions,
    /// `createdAt`
    CreatedAt,
    /// `updatedAt` (sort only)
    UpdatedAt,
    /// `expiresAt`
    ExpiresAt,
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `eq`
    Eq,
    /// `neq`
    Neq,
    /// `gt`
    Gt,
    /// `gte`
    Gte,
    /// `lt`
    Lt,
    /// `lte`
    Lte,
    /// `in` (comma list)
    In,
    /// `nin` (comma list)
    Nin,
    /// `contains`
    Contains,
    /// `startswith`
    StartsWith,
}

/// A typed operand.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Text(String),
    Bool(bool),
    Time(DateTime<Utc>),
    List(Vec<Value>),
}

/// One filter term.
#[derive(Clone, Debug, PartialEq)]
struct Term {
    field: Field,
    op: Op,
    value: Value,
}

/// A parsed list query.
#[derive(Clone, Debug, PartialEq)]
pub struct ListQuery {
    /// Items to skip.
    pub skip: usize,
    /// Items to return.
    pub take: usize,
    /// Sort keys, in order; `true` = descending.
    pub sort: Vec<(Field, bool)>,
    /// Only counts, no items.
    pub count_only: bool,
    terms: Vec<Term>,
}

// === impl Field ===

impl Field {
    fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "id" => Self::Id,
            "clientid" => Self::ClientId,
            "name" => Self::Name,
            "username" => Self::UserName,
            "devicename" => Self::DeviceName,
            "isactive" => Self::IsActive,
            "revoked" => Self::Revoked,
            "permissions" => Self::Permissions,
            "createdat" => Self::CreatedAt,
            "updatedat" => Self::UpdatedAt,
            "expiresat" => Self::ExpiresAt,
            _ => return None,
        })
    }

    fn parse_value(self, path: &str, text: &str) -> Result<Value, Problem> {
        match self {
            Self::IsActive | Self::Revoked => match text {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(Problem::invalid(path, format!("{text:?} is not true or false (operators: eq, neq, gt, gte, lt, lte, in, nin, contains, startswith)"))),
            },
            Self::CreatedAt | Self::UpdatedAt | Self::ExpiresAt => DateTime::parse_from_rfc3339(text)
                .map(|t| Value::Time(t.with_timezone(&Utc)))
                .map_err(|_| Problem::invalid(path, format!("{text:?} is not an RFC 3339 time (operators: eq, neq, gt, gte, lt, lte, in, nin)"))),
            _ => Ok(Value::Text(text.to_owned())),
        }
    }

    /// The field's value(s) on a key, for comparisons.
    fn values(self, key: &ApiKey) -> Vec<Value> {
        let text = |s: &str| vec![Value::Text(s.to_owned())];
        let opt_text = |s: &Option<String>| s.as_deref().map(text).unwrap_or_default();
        match self {
            Self::Id => text(&key.id),
            Self::ClientId => text(&key.client_id),
            Self::Name => text(&key.name),
            Self::UserName => opt_text(&key.user_name),
            Self::DeviceName => opt_text(&key.device_name),
            Self::IsActive => vec![Value::Bool(key.is_active)],
            Self::Revoked => vec![Value::Bool(key.revoked)],
            Self::Permissions => key
                .permissions
                .iter()
                .map(|p| Value::Text(p.clone()))
                .collect(),
            Self::CreatedAt => vec![Value::Time(key.created_at)],
            Self::UpdatedAt => vec![Value::Time(key.updated_at)],
            Self::ExpiresAt => key.expires_at.map(Value::Time).into_iter().collect(),
        }
    }

    fn compare(self, a: &ApiKey, b: &ApiKey) -> Ordering {
        let key = |k: &ApiKey| self.values(k).into_iter().next();
        match (key(a), key(b)) {
            (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self, other) {
            (Self::Text(a), Self::Text(b)) => a.to_lowercase().partial_cmp(&b.to_lowercase()),
            (Self::Bool(a), Self::Bool(b)) => a.partial_cmp(b),
            (Self::Time(a), Self::Time(b)) => a.partial_cmp(b),
            _ => None,
        }
    }
}

// === impl Op ===

impl Op {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "eq" => Self::Eq,
            "neq" => Self::Neq,
            "gt" => Self::Gt,
            "gte" => Self::Gte,
            "lt" => Self::Lt,
            "lte" => Self::Lte,
            "in" => Self::In,
            "nin" => Self::Nin,
            "contains" => Self::Contains,
            "startswith" => Self::StartsWith,
            _ => return None,
        })
    }
}

// === impl Term ===

impl Term {
    fn matches(&self, key: &ApiKey) -> bool {
        let values = self.field.values(key);
        let any = |f: &dyn Fn(&Value) -> bool| values.iter().any(f);
        match (&self.op, &self.value) {
            (Op::Eq, v) => any(&|x| x == v),
            (Op::Neq, v) => !any(&|x| x == v),
            (Op::Gt, v) => any(&|x| x.partial_cmp(v) == Some(Ordering::Greater)),
            (Op::Gte, v) => {
                any(&|x| matches!(x.partial_cmp(v), Some(Ordering::Greater | Ordering::Equal)))
            }
            (Op::Lt, v) => any(&|x| x.partial_cmp(v) == Some(Ordering::Less)),
            (Op::Lte, v) => {
                any(&|x| matches!(x.partial_cmp(v), Some(Ordering::Less | Ordering::Equal)))
            }
            (Op::In, Value::List(list)) => any(&|x| list.contains(x)),
            (Op::Nin, Value::List(list)) => !any(&|x| list.contains(x)),
            (Op::Contains, Value::Text(t)) => {
                let t = t.to_lowercase();
                any(&|x| matches!(x, Value::Text(s) if s.to_lowercase().contains(&t)))
            }
            (Op::StartsWith, Value::Text(t)) => {
                let t = t.to_lowercase();
                any(&|x| matches!(x, Value::Text(s) if s.to_lowercase().starts_with(&t)))
            }
            _ => false,
        }
    }
}

// === impl ListQuery ===

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            skip: 0,
            take: DEFAULT_TAKE,
            sort: vec![(Field::CreatedAt, false)],
            count_only: false,
            terms: Vec::new(),
        }
    }
}

impl ListQuery {
    /// Parse the query string and, if present, the `x-filter` header (same syntax, filters only).
    pub fn parse(query: Option<&str>, x_filter: Option<&str>) -> Result<Self, Vec<Problem>> {
        let mut q = Self::default();
        let mut problems = Vec::new();
        for (source, text, allow_paging) in [("query", query, true), ("x-filter", x_filter, false)]
        {
            let Some(text) = text else { continue };
            for pair in text.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let (k, v) = (decode(k), decode(v));
                if let Err(p) = q.apply_pair(&k, &v, allow_paging, source) {
                    problems.push(p);
                }
            }
        }
        if q.terms.len() > MAX_TERMS {
            problems.push(Problem::invalid(
                "query",
                format!("at most {MAX_TERMS} filter terms"),
            ));
        }
        if problems.is_empty() {
            Ok(q)
        } else {
            Err(problems)
        }
    }

    fn apply_pair(
        &mut self,
        k: &str,
        v: &str,
        allow_paging: bool,
        source: &str,
    ) -> Result<(), Problem> {
        if let Some(param) = k.strip_prefix('$') {
            if !allow_paging {
                return Err(Problem::invalid(
                    k,
                    format!("{k} is not allowed in {source}"),
                ));
            }
            return self.apply_paging(k, param, v);
        }
        let field =
            Field::parse(k).ok_or_else(|| Problem::invalid(k, format!("unknown field {k:?}")))?;
        if field == Field::UpdatedAt {
            return Err(Problem::invalid(
                k,
                "updatedAt can be sorted on, not filtered",
            ));
        }
        let first_op = v.split_once(':').and_then(|(op, _)| Op::parse(op));
        if first_op.is_none() {
            self.terms.push(Term {
                field,
                op: Op::Eq,
                value: field.parse_value(k, v)?,
            });
            return Ok(());
        }
        for part in v.split(';') {
            let op = part
                .split_once(':')
                .and_then(|(op, arg)| Op::parse(op).map(|op| (op, arg)));
            let Some((op, arg)) = op else {
                return Err(Problem::invalid(
                    k,
                    format!(
                        "{part:?} is not OP:ARG with OP one of eq, neq, gt, gte, lt, lte, in, nin, contains, startswith"
                    ),
                ));
            };
            let value = match op {
                Op::In | Op::Nin => Value::List(
                    arg.split(',')
                        .map(|a| field.parse_value(k, a))
                        .collect::<Result<_, _>>()?,
                ),
                Op::Contains | Op::StartsWith
                    if !matches!(field.parse_value(k, arg)?, Value::Text(_)) =>
                {
                    return Err(Problem::invalid(
                        k,
                        format!("{op:?} applies to text fields only").to_lowercase(),
                    ));
                }
                _ => field.parse_value(k, arg)?,
            };
            self.terms.push(Term { field, op, value });
        }
        Ok(())
    }

    fn apply_paging(&mut self, k: &str, param: &str, v: &str) -> Result<(), Problem> {
        match param.to_ascii_lowercase().as_str() {
            "skip" => {
                self.skip = v
                    .parse()
                    .map_err(|_| Problem::invalid(k, "$skip must be a non-negative integer"))?
            }
            "take" => {
                let take: usize = v
                    .parse()
                    .map_err(|_| Problem::invalid(k, "$take must be a non-negative integer"))?;
                if take > MAX_TAKE {
                    return Err(Problem::invalid(
                        k,
                        format!("$take must be at most {MAX_TAKE}"),
                    ));
                }
                self.take = take;
            }
            "count" => {
                self.count_only = match v {
                    "true" => true,
                    "false" => false,
                    _ => return Err(Problem::invalid(k, "$count must be true or false")),
                }
            }
            "sort" => {
                let mut sort = Vec::new();
                for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let (name, desc) = if let Some(n) = part.strip_prefix('-') {
                        (n, true)
                    } else if let Some((n, dir)) = part.split_once(':') {
                        match dir.to_ascii_lowercase().as_str() {
                            "asc" => (n, false),
                            "desc" => (n, true),
                            _ => {
                                return Err(Problem::invalid(
                                    k,
                                    format!("{dir:?} is not asc or desc"),
                                ));
                            }
                        }
                    } else {
                        (part, false)
                    };
                    let field = Field::parse(name).ok_or_else(|| {
                        Problem::invalid(k, format!("cannot sort on unknown field {name:?}"))
                    })?;
                    sort.push((field, desc));
                }
                if !sort.is_empty() {
                    self.sort = sort;
                }
            }
            _ => return Err(Problem::invalid(k, format!("unknown parameter {k:?}"))),
        }
        Ok(())
    }

    /// Does a key pass every filter?
    pub fn matches(&self, key: &ApiKey) -> bool {
        self.terms.iter().all(|t| t.matches(key))
    }

    /// Sort keys in place by the `$sort` fields (then by id, for a stable order).
    pub fn sort<T>(&self, items: &mut [T], key: impl Fn(&T) -> &ApiKey) {
        items.sort_by(|a, b| {
            let (a, b) = (key(a), key(b));
            self.sort
                .iter()
                .map(|(f, desc)| {
                    if *desc {
                        f.compare(b, a)
                    } else {
                        f.compare(a, b)
                    }
                })
                .find(|o| *o != Ordering::Equal)
                .unwrap_or_else(|| a.id.cmp(&b.id))
        });
    }
}

fn decode(text: &str) -> String {
    percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Result<ListQuery, Vec<Problem>> {
        ListQuery::parse(Some(s), None)
    }

    #[test]
    fn paging_defaults_and_limits() {
        let d = q("").unwrap();
        assert_eq!((d.skip, d.take, d.count_only), (0, DEFAULT_TAKE, false));
        assert!(q("$take=1001").is_err());
        assert!(q("$skip=-1").is_err());
        assert_eq!(
            q("$take=5&$skip=2&$count=true")
                .map(|q| (q.take, q.skip, q.count_only))
                .unwrap(),
            (5, 2, true)
        );
    }

    #[test]
    fn sort_syntax() {
        assert_eq!(
            q("$sort=name:desc,-createdAt,clientid").unwrap().sort,
            vec![
                (Field::Name, true),
                (Field::CreatedAt, true),
                (Field::ClientId, false)
            ]
        );
        assert!(q("$sort=secret").is_err());
        assert!(q("$sort=name:sideways").is_err());
    }

    #[test]
    fn unknown_fields_operators_and_params_are_rejected() {
        assert!(q("clientSecret=x").is_err());
        assert!(q("isActive=is:true").is_err());
        assert!(q("createdAt=gt:2020-01-01T00:00:00Z;after:x").is_err());
        assert!(q("$top=3").is_err());
        assert!(ListQuery::parse(None, Some("$take=3")).is_err());
    }

    #[test]
    fn equality_values_may_contain_colons() {
        let parsed = q("permissions=orders:read").unwrap();
        assert_eq!(
            parsed.terms,
            vec![Term {
                field: Field::Permissions,
                op: Op::Eq,
                value: Value::Text("orders:read".into())
            }]
        );
    }
}
