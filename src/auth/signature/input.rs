//! `Signature-Input` / `Signature` parsing (RFC 9421 §4.1, §4.2) as RFC 8941
//! Dictionaries via the `sfv` crate, and covered-component identifiers (§2).

use sfv::{BareItem, Dictionary, FieldType as _, Item, KeyRef, ListEntry, ListSerializer, Parser};

use super::{
    ALG_HMAC_SHA256, ParsedSignature, SIGNATURE, SIGNATURE_INPUT, SignatureError, SignaturePolicy,
};

/// What a covered component resolves to (RFC 9421 §2.1, §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ComponentKind {
    /// §2.2.1 `@method`.
    Method,
    /// §2.2.2 `@target-uri`.
    TargetUri,
    /// §2.2.3 `@authority`.
    Authority,
    /// §2.2.4 `@scheme`.
    Scheme,
    /// §2.2.5 `@request-target`.
    RequestTarget,
    /// §2.2.6 `@path`.
    Path,
    /// §2.2.7 `@query`.
    Query,
    /// §2.2.8 `@query-param;name="..."` (the name as given, still encoded).
    QueryParam(String),
    /// §2.1 an HTTP field, with `;sf` (§2.1.1) and/or `;key` (§2.1.2).
    /// The lower-case field name is the component's [`Component::name`].
    Field {
        /// Re-serialize as a structured field.
        sf: bool,
        /// Dictionary member to select.
        key: Option<String>,
    },
}

/// One covered component: its identifier as an sfv item and its serialization.
#[derive(Debug, Clone)]
pub(crate) struct Component {
    /// RFC 9421 §2.5: the serialized component identifier, e.g. `"@method"`.
    pub(crate) id: String,
    pub(crate) kind: ComponentKind,
    item: Item,
}

// === impl Component ===

impl Component {
    /// The component name without parameters.
    pub(crate) fn name(&self) -> &str {
        self.item.bare_item.as_string().map_or("", |s| s.as_str())
    }
}

/// Classify one inner-list member (RFC 9421 §2: an sf-string with parameters); `id` is its serialization.
pub(crate) fn component_from_item(item: Item, id: String) -> Result<Component, SignatureError> {
    let Some(name) = item.bare_item.as_string().map(|s| s.as_str()) else {
        return Err(SignatureError::Malformed(
            "component identifier is not a string",
        ));
    };
    let unsupported = || SignatureError::component(SignatureError::UnsupportedComponent, &id);
    let kind = if let Some(derived) = name.strip_prefix('@') {
        let no_params = |k: ComponentKind| {
            if item.params.is_empty() {
                Ok(k)
            } else {
                Err(unsupported())
            }
        };
        match derived {
            "method" => no_params(ComponentKind::Method)?,
            "target-uri" => no_params(ComponentKind::TargetUri)?,
            "authority" => no_params(ComponentKind::Authority)?,
            "scheme" => no_params(ComponentKind::Scheme)?,
            "request-target" => no_params(ComponentKind::RequestTarget)?,
            "path" => no_params(ComponentKind::Path)?,
            "query" => no_params(ComponentKind::Query)?,
            "query-param" => {
                let mut name = None;
                for (k, v) in &item.params {
                    match (k.as_str(), v) {
                        ("name", BareItem::String(n)) => name = Some(n.as_str().to_owned()),
                        ("name", _) => return Err(SignatureError::Malformed("query-param name")),
                        _ => return Err(unsupported()),
                    }
                }
                ComponentKind::QueryParam(
                    name.ok_or(SignatureError::Malformed("query-param name"))?,
                )
            }
            // `@status` is response-only, `@signature-params` may not be covered.
            _ => return Err(unsupported()),
        }
    } else {
        // §2.1: field names are lower-cased; they must be valid field names.
        if name.is_empty()
            || name.bytes().any(|b| b.is_ascii_uppercase())
            || http::HeaderName::from_bytes(name.as_bytes()).is_err()
        {
            return Err(SignatureError::Malformed("component field name"));
        }
        let (mut sf, mut key) = (false, None);
        for (k, v) in &item.params {
            match (k.as_str(), v) {
                ("sf", BareItem::Boolean(true)) => sf = true,
                ("key", BareItem::String(s)) => key = Some(s.as_str().to_owned()),
                ("sf" | "key", _) => return Err(SignatureError::Malformed("field parameter")),
                // `bs`, `req`, `tr` and unknown parameters are not supported.
                _ => return Err(unsupported()),
            }
        }
        ComponentKind::Field { sf, key }
    };
    Ok(Component { id, kind, item })
}

/// A bare name (`@method`, `content-digest`) or a serialized identifier
/// (`"@query-param";name="a"`), as accepted by [`super::sign`].
pub(crate) fn component_from_str(s: &str) -> Result<Component, SignatureError> {
    let item = if s.starts_with('"') {
        Parser::new(s)
            .parse::<Item>()
            .map_err(|_| SignatureError::Malformed("component"))?
    } else {
        let name = sfv::String::from_string(s.to_owned())
            .map_err(|_| SignatureError::Malformed("component"))?;
        Item::new(name)
    };
    let id = item.serialize();
    component_from_item(item, id)
}

/// RFC 9421 §2.5: duplicate identifiers (parameter order ignored) are an error. A signature covers a handful
/// of components, so pairwise comparison beats hashing formatted copies of each.
pub(crate) fn reject_duplicates(components: &[Component]) -> Result<(), SignatureError> {
    for (i, c) in components.iter().enumerate() {
        // `Parameters` is an IndexMap: equality ignores order, as §2.5 requires.
        if components[..i]
            .iter()
            .any(|seen| seen.name() == c.name() && seen.item.params == c.item.params)
        {
            return Err(SignatureError::component(
                SignatureError::DuplicateComponent,
                &c.id,
            ));
        }
    }
    Ok(())
}

/// RFC 9421 §2.3: serialize the inner list of identifiers with its parameters.
pub(crate) fn serialize_params(components: &[Component], params: &[(&KeyRef, BareItem)]) -> String {
    serialize_inner(
        components.iter().map(|c| &c.item),
        params.iter().map(|(k, v)| (*k, v)),
        |_| {},
    )
}

/// The inner list serialized straight from references (sfv's serializers take parsed, already valid values,
/// so this cannot fail). `member` gets each item's span in the output: that span is the item's serialized
/// component identifier (§2.5), so it is not serialized twice.
fn serialize_inner<'a>(
    items: impl Iterator<Item = &'a Item>,
    params: impl Iterator<Item = (&'a KeyRef, &'a BareItem)>,
    mut member: impl FnMut(std::ops::Range<usize>),
) -> String {
    let mut out = String::with_capacity(128);
    let mut list = ListSerializer::with_buffer(&mut out);
    let mut inner = list.inner_list();
    // After the opening parenthesis; then one space between members (RFC 9651 §4.1.1.1).
    let mut start = 1;
    for item in items {
        let written = inner
            .bare_item(&item.bare_item)
            .parameters(&item.params)
            .finish();
        member(start..written.len());
        start = written.len() + 1;
    }
    let _ = inner.finish().parameters(params);
    out
}

/// Read all lines of `name`, enforce the size limit and parse them as one
/// Dictionary, rejecting keys repeated within or across lines.
fn read_dictionary(
    headers: &http::HeaderMap,
    name: &http::HeaderName,
    policy: &SignaturePolicy,
) -> Result<Option<Dictionary>, SignatureError> {
    let mut total = 0usize;
    let mut dict: Option<Dictionary> = None;
    for value in headers.get_all(name) {
        total = total.saturating_add(value.len()).saturating_add(2);
        if total > policy.max_header_bytes {
            return Err(SignatureError::TooLarge("header"));
        }
        let line = Parser::new(value.as_bytes())
            .parse::<Dictionary>()
            .map_err(|_| SignatureError::Malformed("structured field syntax"))?;
        // sfv keeps the last of duplicate keys (RFC 8941 §4.2.2); detect them.
        let text = value
            .to_str()
            .map_err(|_| SignatureError::Malformed("non-ASCII header"))?;
        if line.len() != count_members(text) {
            return Err(SignatureError::DuplicateLabel);
        }
        let merged = match &mut dict {
            // The usual single line is the dictionary as parsed.
            None => dict.insert(line),
            Some(merged) => {
                for (k, v) in line {
                    if merged.insert(k, v).is_some() {
                        return Err(SignatureError::DuplicateLabel);
                    }
                }
                merged
            }
        };
        if merged.len() > policy.max_labels {
            return Err(SignatureError::TooLarge("labels"));
        }
    }
    Ok(dict)
}

/// Number of top-level members of a Dictionary that `sfv` already accepted:
/// outside sf-strings, a comma only separates members (RFC 8941 §3.2).
fn count_members(text: &str) -> usize {
    let (mut commas, mut in_string, mut escaped) = (0usize, false, false);
    // The delimiters are ASCII: bytes will do.
    for b in text.bytes() {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (false, _, b'"') => in_string = true,
            (false, _, b',') => commas += 1,
            _ => {}
        }
    }
    if text.trim().is_empty() {
        0
    } else {
        commas + 1
    }
}

/// RFC 9421 §4: parse both fields, check labels pair up, select one signature.
pub(crate) fn parse(
    headers: &http::HeaderMap,
    policy: &SignaturePolicy,
) -> Result<ParsedSignature, SignatureError> {
    // Looked up by `HeaderName`: a `&str` name would be parsed and hashed again on every lookup.
    const INPUT: http::HeaderName = http::HeaderName::from_static(SIGNATURE_INPUT);
    const SIG: http::HeaderName = http::HeaderName::from_static(SIGNATURE);
    let inputs = read_dictionary(headers, &INPUT, policy)?;
    let sigs = read_dictionary(headers, &SIG, policy)?;
    let (inputs, sigs) = match (inputs, sigs) {
        (None, None) => return Err(SignatureError::Missing),
        (Some(i), Some(s)) => (i, s),
        _ => return Err(SignatureError::LabelMismatch),
    };
    if inputs.is_empty() {
        return Err(SignatureError::Malformed("empty Signature-Input"));
    }
    if inputs.len() != sigs.len() || inputs.keys().any(|k| !sigs.contains_key(k)) {
        return Err(SignatureError::LabelMismatch);
    }
    let label = match &policy.label {
        Some(l) if inputs.contains_key(l.as_str()) => l.clone(),
        Some(_) => return Err(SignatureError::LabelNotFound),
        None if inputs.len() == 1 => inputs
            .keys()
            .next()
            .map(|k| k.as_str().to_owned())
            .unwrap_or_default(),
        // Several signatures: the first one (in header order) carrying a keyid.
        None => inputs
            .iter()
            .find(|(_, v)| matches!(v, ListEntry::InnerList(l) if l.params.contains_key("keyid")))
            .map(|(k, _)| k.as_str().to_owned())
            .ok_or(SignatureError::MissingParameter("keyid"))?,
    };
    // Taken out of the dictionaries: the selected members are moved, not copied.
    let (mut inputs, mut sigs) = (inputs, sigs);
    let (Some(input), Some(sig)) = (
        inputs.swap_remove(label.as_str()),
        sigs.swap_remove(label.as_str()),
    ) else {
        return Err(SignatureError::LabelMismatch);
    };
    build(label, input, sig, policy)
}

fn build(
    label: String,
    input: ListEntry,
    sig: ListEntry,
    policy: &SignaturePolicy,
) -> Result<ParsedSignature, SignatureError> {
    let ListEntry::InnerList(inner) = input else {
        return Err(SignatureError::Malformed(
            "Signature-Input member is not an inner list",
        ));
    };
    let signature = match sig {
        ListEntry::Item(Item {
            bare_item: BareItem::ByteSequence(b),
            ..
        }) if !b.is_empty() => b,
        _ => {
            return Err(SignatureError::Malformed(
                "Signature member is not a byte sequence",
            ));
        }
    };
    if inner.items.len() > policy.max_components {
        return Err(SignatureError::TooLarge("components"));
    }
    let mut spans = smallvec::SmallVec::<[std::ops::Range<usize>; 8]>::new();
    let params = serialize_inner(
        inner.items.iter(),
        inner.params.iter().map(|(k, v)| (k.as_ref(), v)),
        |span| spans.push(span),
    );
    let components: Vec<Component> = inner
        .items
        .into_iter()
        .zip(spans)
        .map(|(item, span)| component_from_item(item, params[span].to_owned()))
        .collect::<Result<_, _>>()?;
    reject_duplicates(&components)?;
    // RFC 9421 §2.3 signature parameters, moved out of the parsed list.
    let (mut created, mut expires, mut nonce, mut tag, mut key_id) = (None, None, None, None, None);
    let bad = || SignatureError::Malformed("signature parameter type");
    let string = |v: BareItem| match v {
        BareItem::String(s) => Ok(std::string::String::from(s)),
        _ => Err(bad()),
    };
    for (k, v) in inner.params {
        match k.as_str() {
            "created" => created = Some(v.as_integer().ok_or_else(bad)?.into()),
            "expires" => expires = Some(v.as_integer().ok_or_else(bad)?.into()),
            "nonce" => nonce = Some(string(v)?),
            "tag" => tag = Some(string(v)?),
            "keyid" => key_id = Some(string(v)?),
            "alg" if string(v)? != ALG_HMAC_SHA256 => {
                return Err(SignatureError::UnsupportedAlgorithm);
            }
            _ => {} // unknown parameters are signed (serialized) but ignored
        }
    }
    let key_id = key_id.ok_or(SignatureError::MissingParameter("keyid"))?;
    Ok(ParsedSignature {
        label,
        components,
        params,
        key_id,
        nonce,
        tag,
        created,
        expires,
        signature,
    })
}
