//! Signature base construction (RFC 9421 §2.5) and component values (§2.1, §2.2).

use std::borrow::Cow;

use sfv::{Dictionary, FieldType as _, List, ListEntry, Parser};

use super::input::{Component, ComponentKind};
use super::{SignatureError, SignatureRequest};
use crate::auth::form;

/// RFC 9421 §2.5: one `"<id>": <value>` line per component, then
/// `"@signature-params": <params>`; lines joined by LF, no trailing LF.
/// Values are written straight into the base: no string per component.
pub(crate) fn signature_base(
    req: &SignatureRequest<'_>,
    components: &[Component],
    params: &str,
) -> Result<String, SignatureError> {
    let mut out = String::with_capacity(256);
    write_signature_base(&mut out, req, components, params)?;
    Ok(out)
}

/// [`signature_base`] appended to `out` (a buffer the verifier reuses from request to request).
pub(crate) fn write_signature_base(
    out: &mut String,
    req: &SignatureRequest<'_>,
    components: &[Component],
    params: &str,
) -> Result<(), SignatureError> {
    for c in components {
        write_component(out, req, c, params)?;
    }
    out.push_str("\"@signature-params\": ");
    out.push_str(params);
    Ok(())
}

fn missing(c: &Component, params: &str) -> SignatureError {
    SignatureError::component(SignatureError::MissingComponent, c.id(params))
}

/// The line(s) for one component: one, except `@query-param` with a repeated name (§2.2.8). `params` is the
/// `@signature-params` value the component's identifier is a span of.
fn write_component(
    out: &mut String,
    req: &SignatureRequest<'_>,
    c: &Component,
    params: &str,
) -> Result<(), SignatureError> {
    let id = c.id(params);
    let path = if req.path.is_empty() { "/" } else { req.path };
    let query = |out: &mut String| {
        if let Some(q) = req.query {
            out.push('?');
            out.push_str(q);
        }
    };
    out.push_str(id);
    out.push_str(": ");
    let start = out.len();
    match &c.kind {
        ComponentKind::Method => out.push_str(req.method.as_str()),
        ComponentKind::Scheme => push_lowercase(out, req.scheme),
        ComponentKind::Authority => write_authority(out, req.scheme, req.authority),
        ComponentKind::TargetUri => {
            push_lowercase(out, req.scheme);
            out.push_str("://");
            out.push_str(req.authority);
            out.push_str(path);
            query(out);
        }
        ComponentKind::RequestTarget if req.method == http::Method::CONNECT => {
            out.push_str(req.authority);
        }
        ComponentKind::RequestTarget => {
            out.push_str(path);
            query(out);
        }
        ComponentKind::Path => out.push_str(path),
        ComponentKind::Query => {
            out.push('?');
            out.push_str(req.query.unwrap_or_default());
        }
        ComponentKind::QueryParam(name) => {
            // Form-encoded values: no CR/LF can be in them.
            let values = query_param(req.query.unwrap_or_default(), name);
            let (first, rest) = values.split_first().ok_or_else(|| missing(c, params))?;
            out.push_str(first);
            for value in rest {
                out.push('\n');
                out.push_str(id);
                out.push_str(": ");
                out.push_str(value);
            }
            out.push('\n');
            return Ok(());
        }
        ComponentKind::Field { sf, key } => {
            let raw =
                field_value(req.headers, c.name(params))?.ok_or_else(|| missing(c, params))?;
            match key {
                Some(key) => {
                    out.push_str(&dictionary_member(&raw, key)?.ok_or_else(|| missing(c, params))?)
                }
                None if *sf => out.push_str(&reserialize(&raw)?),
                None => out.push_str(&raw),
            }
        }
    }
    // §2.5 step 2.4: values never contain CR/LF; reject odd caller input.
    if out[start..].contains(['\n', '\r']) {
        return Err(SignatureError::Malformed("newline in component value"));
    }
    out.push('\n');
    Ok(())
}

fn push_lowercase(out: &mut String, s: &str) {
    out.extend(s.chars().map(|c| c.to_ascii_lowercase()));
}

/// RFC 9421 §2.2.3 / RFC 9110 §4.2.3: lower-case host, default port omitted.
fn write_authority(out: &mut String, scheme: &str, authority: &str) {
    let start = out.len();
    push_lowercase(out, authority);
    let default = if scheme.eq_ignore_ascii_case("http") {
        "80"
    } else if scheme.eq_ignore_ascii_case("https") {
        "443"
    } else {
        return;
    };
    let Some((host, port)) = out[start..].rsplit_once(':') else {
        return;
    };
    let is_port = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    // `[::1]` has colons but no port: the host part must balance its brackets.
    if is_port
        && host.starts_with('[') == host.ends_with(']')
        && port.trim_start_matches('0') == default
    {
        let host_len = host.len();
        out.truncate(start + host_len);
    }
}

/// RFC 9421 §2.1: all field lines, trimmed, joined with `", "`; `None` if absent. A single line is borrowed.
pub(crate) fn field_value<'h>(
    headers: &'h http::HeaderMap,
    name: &str,
) -> Result<Option<Cow<'h, str>>, SignatureError> {
    let mut out: Option<Cow<'h, str>> = None;
    for v in headers.get_all(name) {
        let s = v
            .to_str()
            .map_err(|_| SignatureError::Malformed("non-ASCII field value"))?
            .trim_matches([' ', '\t']);
        match &mut out {
            Some(acc) => {
                let acc = acc.to_mut();
                acc.push_str(", ");
                acc.push_str(s);
            }
            None => out = Some(Cow::Borrowed(s)),
        }
    }
    Ok(out)
}

/// RFC 9421 §2.1.1 `;sf`: parse and re-serialize. The field's type is not
/// known here, so Dictionary is tried first, then List (an Item serializes
/// the same as a one-member List). An empty field has no serialization.
fn reserialize(raw: &str) -> Result<String, SignatureError> {
    let bad = || SignatureError::Malformed("structured field value");
    let serialized = match Parser::new(raw).parse::<Dictionary>() {
        Ok(d) => d.serialize(),
        Err(_) => Parser::new(raw)
            .parse::<List>()
            .map_err(|_| bad())?
            .serialize(),
    };
    serialized.ok_or_else(bad)
}

/// RFC 9421 §2.1.2 `;key`: the serialized member (with its parameters).
fn dictionary_member(raw: &str, key: &str) -> Result<Option<String>, SignatureError> {
    let mut dict: Dictionary = Parser::new(raw)
        .parse()
        .map_err(|_| SignatureError::Malformed("dictionary field value"))?;
    Ok(dict.swap_remove(key).and_then(|member| match member {
        ListEntry::Item(item) => Some(item.serialize()),
        inner @ ListEntry::InnerList(_) => vec![inner].serialize(),
    }))
}

/// RFC 9421 §2.2.8: values of every parameter whose decoded name equals the
/// decoded `name`, re-encoded with the form-urlencoded set (space as `%20`).
fn query_param(query: &str, name: &str) -> Vec<String> {
    let wanted = form::decode(name.as_bytes());
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form::decode(n.as_bytes()) == wanted)
                .then(|| form::encode(&form::decode(v.as_bytes())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalize_authority(scheme: &str, authority: &str) -> String {
        let mut out = String::new();
        write_authority(&mut out, scheme, authority);
        out
    }

    #[test]
    fn authority_normalization() {
        assert_eq!(
            normalize_authority("https", "Example.COM:443"),
            "example.com"
        );
        assert_eq!(normalize_authority("http", "example.com:80"), "example.com");
        assert_eq!(
            normalize_authority("https", "example.com:8443"),
            "example.com:8443"
        );
        assert_eq!(normalize_authority("https", "[::1]:443"), "[::1]");
        assert_eq!(normalize_authority("https", "[::1]"), "[::1]");
    }

    #[test]
    fn query_param_rfc_example() {
        // RFC 9421 §2.2.8 examples.
        let q = "var=this%20is%20a%20big%0Avalue&bar=with+plus+whitespace&fa%C3%A7ade%22%3A%20=something";
        assert_eq!(query_param(q, "var"), ["this%20is%20a%20big%0Avalue"]);
        assert_eq!(query_param(q, "bar"), ["with%20plus%20whitespace"]);
        assert_eq!(query_param(q, "fa%C3%A7ade%22%3A%20"), ["something"]);
        let q = "param=value&foo=bar&baz=batman&qux=";
        assert_eq!(query_param(q, "baz"), ["batman"]);
        assert_eq!(query_param(q, "qux"), [""]);
        assert!(query_param(q, "nope").is_empty());
        assert_eq!(query_param("a=1&a=2", "a"), ["1", "2"]);
        assert_eq!(query_param("a=%zz%4", "a"), ["%25zz%254"]);
    }

    #[test]
    fn sf_and_key() {
        assert_eq!(
            reserialize("a=1,   b=2;x=1;y=2, c=(a   b   c)").unwrap(),
            "a=1, b=2;x=1;y=2, c=(a b c)"
        );
        // RFC 9651 §4.1.5: no trailing zeros ("1.50" is "1.5").
        assert_eq!(
            reserialize("(\"foo\"   \"bar\"),   1.50, 2.000").unwrap(),
            "(\"foo\" \"bar\"), 1.5, 2.0"
        );
        assert_eq!(
            dictionary_member("a=1.10;q=0.500", "a").unwrap().unwrap(),
            "1.1;q=0.5"
        );
        assert_eq!(
            dictionary_member("a=1, b=2;x=1;y=2, c=(a   b    c), d", "b")
                .unwrap()
                .unwrap(),
            "2;x=1;y=2"
        );
        assert_eq!(
            dictionary_member("a=1, c=(a   b    c)", "c")
                .unwrap()
                .unwrap(),
            "(a b c)"
        );
        assert_eq!(dictionary_member("a=1", "z").unwrap(), None);
        assert!(reserialize("a=(").is_err());
    }
}
