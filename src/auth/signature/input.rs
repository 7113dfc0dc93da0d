//! `Signature-Input` / `Signature` parsing (RFC 9421 §4.1, §4.2) as RFC 9651 Dictionaries, read with the `sfv`
//! crate's visitor API (members borrowed from the field values, nothing built for what is not used), and
//! covered-component identifiers (§2).

use std::borrow::Cow;
use std::convert::Infallible;
use std::ops::Range;

use sfv::visitor::{
    DictionaryVisitor, EntryVisitor, Ignored, InnerListVisitor, ItemVisitor, ParameterVisitor,
};
use sfv::{BareItemFromInput, KeyRef, ListSerializer, Parser, RefBareItem};
use smallvec::SmallVec;

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

/// One covered component: where its serialized identifier lies in the `@signature-params` value it was read
/// with (no string of its own), and what it resolves to.
#[derive(Debug, Clone)]
pub(crate) struct Component {
    /// RFC 9421 §2.5: the serialized component identifier's span, e.g. of `"@method"` or `"content-digest";sf`.
    id: Range<usize>,
    pub(crate) kind: ComponentKind,
    /// The name's length; it starts after the identifier's opening quote.
    name_len: usize,
}

// === impl Component ===

impl Component {
    /// The serialized component identifier, from the `@signature-params` value the component was read with.
    pub(crate) fn id<'p>(&self, params: &'p str) -> &'p str {
        params.get(self.id.clone()).unwrap_or("")
    }

    /// The component name without parameters, from the same `@signature-params` value.
    pub(crate) fn name<'p>(&self, params: &'p str) -> &'p str {
        let start = self.id.start + 1;
        params.get(start..start + self.name_len).unwrap_or("")
    }
}

/// Parameters as read (RFC 9651 §3.1.2), borrowed from the input where it allows. A repeated key overwrites
/// its value in place, as the RFC's parsing algorithm does (§4.2.3.2).
#[derive(Debug, Default)]
pub(crate) struct Params<'de>(SmallVec<[(&'de KeyRef, BareItemFromInput<'de>); 4]>);

/// An item as read: a bare item with its parameters.
#[derive(Debug)]
pub(crate) struct RefItem<'de> {
    bare: BareItemFromInput<'de>,
    params: Params<'de>,
}

/// An inner list as read.
#[derive(Debug, Default)]
struct RefInnerList<'de> {
    /// On the heap: a list of items is a few hundred bytes, moved with its member otherwise.
    items: Vec<RefItem<'de>>,
    params: Params<'de>,
}

/// One `Signature-Input` member; `list` is `None` when the member is an item, not an inner list.
struct InputMember<'de> {
    label: &'de KeyRef,
    list: Option<RefInnerList<'de>>,
}

/// One `Signature` member; `signature` is `None` when the member is not a byte sequence.
struct SignatureMember<'de> {
    label: &'de KeyRef,
    signature: Option<Vec<u8>>,
}

// === impl Params ===

impl<'de> Params<'de> {
    /// A parameter list from owned values (the signing side).
    pub(crate) fn from_pairs(
        pairs: impl IntoIterator<Item = (&'de KeyRef, BareItemFromInput<'de>)>,
    ) -> Self {
        let mut params = Self::default();
        for (key, value) in pairs {
            params.set(key, value);
        }
        params
    }

    fn set(&mut self, key: &'de KeyRef, value: BareItemFromInput<'de>) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key, value)),
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (&'de KeyRef, &BareItemFromInput<'de>)> + '_ {
        self.0.iter().map(|(k, v)| (*k, v))
    }

    fn contains(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k.as_str() == key)
    }
}

impl<'de> ParameterVisitor<'de> for &mut Params<'de> {
    type Out = ();
    type Error = Infallible;

    fn parameter(
        &mut self,
        key: &'de KeyRef,
        value: BareItemFromInput<'de>,
    ) -> Result<(), Self::Error> {
        self.set(key, value);
        Ok(())
    }

    fn finish(self) -> Result<(), Self::Error> {
        Ok(())
    }
}

// === impl RefItem ===

impl<'de> RefItem<'de> {
    /// A component identifier as [`super::sign`] accepts it: a bare name (`@method`, `content-digest`) or a
    /// serialized identifier (`"@query-param";name="a"`).
    pub(crate) fn component(s: &'de str) -> Result<Self, SignatureError> {
        let malformed = SignatureError::Malformed("component");
        if s.starts_with('"') {
            let mut params = Params::default();
            let bare = Parser::new(s)
                .parse_item_with_visitor(TopItem(&mut params))
                .map_err(|_| malformed.clone())?;
            Ok(Self { bare, params })
        } else {
            let name = sfv::String::from_string(s.to_owned()).map_err(|_| malformed)?;
            Ok(Self {
                bare: BareItemFromInput::String(Cow::Owned(name)),
                params: Params::default(),
            })
        }
    }

    fn name(&self) -> Option<&str> {
        match &self.bare {
            BareItemFromInput::String(s) => Some(s.as_str()),
            _ => None,
        }
    }
}

/// Reads a top-level item: its parameters into the given list, its bare item returned.
struct TopItem<'a, 'de>(&'a mut Params<'de>);

impl<'a, 'de> ItemVisitor<'de> for TopItem<'a, 'de> {
    type Out = BareItemFromInput<'de>;
    type Error = Infallible;

    fn bare_item(
        self,
        bare: BareItemFromInput<'de>,
    ) -> Result<impl ParameterVisitor<'de, Out = Self::Out>, Self::Error> {
        Ok(ItemSlot(bare, self.0))
    }
}

/// Keeps a top-level item's bare item once its parameters have been read.
struct ItemSlot<'a, 'de>(BareItemFromInput<'de>, &'a mut Params<'de>);

impl<'de> ParameterVisitor<'de> for ItemSlot<'_, 'de> {
    type Out = BareItemFromInput<'de>;
    type Error = Infallible;

    fn parameter(
        &mut self,
        key: &'de KeyRef,
        value: BareItemFromInput<'de>,
    ) -> Result<(), Self::Error> {
        self.1.set(key, value);
        Ok(())
    }

    fn finish(self) -> Result<Self::Out, Self::Error> {
        Ok(self.0)
    }
}

// === visitors for the two fields ===

/// Appends each `Signature-Input` member of one field line.
struct InputMembers<'a, 'de>(&'a mut SmallVec<[InputMember<'de>; 2]>);

impl<'de> DictionaryVisitor<'de> for InputMembers<'_, 'de> {
    type Out = ();
    type Error = Infallible;

    fn entry(&mut self, label: &'de KeyRef) -> Result<impl EntryVisitor<'de>, Self::Error> {
        let at = self.0.len();
        self.0.push(InputMember { label, list: None });
        Ok(InputEntry(&mut self.0[at]))
    }

    fn finish(self) -> Result<(), Self::Error> {
        Ok(())
    }
}

struct InputEntry<'a, 'de>(&'a mut InputMember<'de>);

impl<'de> EntryVisitor<'de> for InputEntry<'_, 'de> {
    type Error = Infallible;

    fn item(self) -> Result<impl ItemVisitor<'de>, Self::Error> {
        // Not an inner list: an error only if this member is the one selected.
        Ok(Ignored)
    }

    fn inner_list(self) -> Result<impl InnerListVisitor<'de>, Self::Error> {
        Ok(InnerListSlot(self.0.list.insert(RefInnerList::default())))
    }
}

struct InnerListSlot<'a, 'de>(&'a mut RefInnerList<'de>);

impl<'de> InnerListVisitor<'de> for InnerListSlot<'_, 'de> {
    type Error = Infallible;

    fn item(&mut self) -> Result<impl ItemVisitor<'de>, Self::Error> {
        Ok(ItemPush(&mut self.0.items))
    }

    fn finish(self) -> Result<impl ParameterVisitor<'de>, Self::Error> {
        Ok(&mut self.0.params)
    }
}

/// Appends one inner-list item.
struct ItemPush<'a, 'de>(&'a mut Vec<RefItem<'de>>);

impl<'a, 'de> ItemVisitor<'de> for ItemPush<'a, 'de> {
    type Out = ();
    type Error = Infallible;

    fn bare_item(
        self,
        bare: BareItemFromInput<'de>,
    ) -> Result<impl ParameterVisitor<'de, Out = ()>, Self::Error> {
        let at = self.0.len();
        self.0.push(RefItem {
            bare,
            params: Params::default(),
        });
        Ok(&mut self.0[at].params)
    }
}

/// Appends each `Signature` member of one field line.
struct SignatureMembers<'a, 'de>(&'a mut SmallVec<[SignatureMember<'de>; 2]>);

impl<'de> DictionaryVisitor<'de> for SignatureMembers<'_, 'de> {
    type Out = ();
    type Error = Infallible;

    fn entry(&mut self, label: &'de KeyRef) -> Result<impl EntryVisitor<'de>, Self::Error> {
        let at = self.0.len();
        self.0.push(SignatureMember {
            label,
            signature: None,
        });
        Ok(SignatureEntry(&mut self.0[at]))
    }

    fn finish(self) -> Result<(), Self::Error> {
        Ok(())
    }
}

struct SignatureEntry<'a, 'de>(&'a mut SignatureMember<'de>);

impl<'de> EntryVisitor<'de> for SignatureEntry<'_, 'de> {
    type Error = Infallible;

    fn item(self) -> Result<impl ItemVisitor<'de>, Self::Error> {
        let member = self.0;
        Ok(move |bare| {
            if let BareItemFromInput::ByteSequence(bytes) = bare {
                member.signature = Some(bytes);
            }
            Ok::<_, Infallible>(Ignored)
        })
    }

    fn inner_list(self) -> Result<impl InnerListVisitor<'de>, Self::Error> {
        Ok(Ignored)
    }
}

/// Classify one inner-list member (RFC 9421 §2: an sf-string with parameters); `params[span]` is its
/// serialization.
fn component_from_item(
    item: &RefItem<'_>,
    params: &str,
    span: Range<usize>,
) -> Result<Component, SignatureError> {
    let id = params.get(span.clone()).unwrap_or("");
    let Some(name) = item.name() else {
        return Err(SignatureError::Malformed(
            "component identifier is not a string",
        ));
    };
    let unsupported = || SignatureError::component(SignatureError::UnsupportedComponent, id);
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
                for (k, v) in item.params.iter() {
                    match (k.as_str(), v) {
                        ("name", BareItemFromInput::String(n)) => {
                            name = Some(n.as_str().to_owned());
                        }
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
        for (k, v) in item.params.iter() {
            match (k.as_str(), v) {
                ("sf", BareItemFromInput::Boolean(true)) => sf = true,
                ("key", BareItemFromInput::String(s)) => key = Some(s.as_str().to_owned()),
                ("sf" | "key", _) => return Err(SignatureError::Malformed("field parameter")),
                // `bs`, `req`, `tr` and unknown parameters are not supported.
                _ => return Err(unsupported()),
            }
        }
        ComponentKind::Field { sf, key }
    };
    // Every accepted name serializes without escapes (derived names are fixed, field names are tokens), so
    // it is the identifier's text after the opening quote.
    if id.get(1..1 + name.len()) != Some(name) {
        return Err(SignatureError::Malformed("component identifier"));
    }
    Ok(Component {
        id: span,
        kind,
        name_len: name.len(),
    })
}

/// RFC 9421 §2.5: duplicate identifiers (parameter order ignored) are an error. A signature covers a handful
/// of components, so pairwise comparison beats hashing formatted copies of each. Every parameter a component
/// may carry is part of its kind, so name and kind are the identifier.
pub(crate) fn reject_duplicates(
    components: &[Component],
    params: &str,
) -> Result<(), SignatureError> {
    for (i, c) in components.iter().enumerate() {
        let name = c.name(params);
        if components[..i]
            .iter()
            .any(|seen| seen.name(params) == name && seen.kind == c.kind)
        {
            return Err(SignatureError::component(
                SignatureError::DuplicateComponent,
                c.id(params),
            ));
        }
    }
    Ok(())
}

/// RFC 9421 §2.3: the `@signature-params` value (the inner list of identifiers with its parameters, serialized
/// with sfv's serializer from the values as read) and the components it covers, classified. Each identifier
/// is its item's span of that serialization (§2.5), so it is neither serialized twice nor copied.
pub(crate) fn signature_params(
    items: &[RefItem<'_>],
    params: &Params<'_>,
) -> Result<(Vec<Component>, String), SignatureError> {
    let mut out = String::with_capacity(128);
    let mut spans = SmallVec::<[Range<usize>; 8]>::new();
    {
        let mut list = ListSerializer::with_buffer(&mut out);
        let mut inner = list.inner_list();
        // After the opening parenthesis; then one space between members (RFC 9651 §4.1.1.1).
        let mut start = 1;
        for item in items {
            let written = inner
                .bare_item(RefBareItem::from(&item.bare))
                .parameters(item.params.iter().map(|(k, v)| (k, RefBareItem::from(v))))
                .finish();
            spans.push(start..written.len());
            start = written.len() + 1;
        }
        let _ = inner
            .finish()
            .parameters(params.iter().map(|(k, v)| (k, RefBareItem::from(v))));
    }
    let components = items
        .iter()
        .zip(spans)
        .map(|(item, span)| component_from_item(item, &out, span))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((components, out))
}

/// Read all lines of one field, enforcing the size limit, each line parsed as a Dictionary by `visit` into
/// `members`; a label repeated within or across lines is an error.
fn read_members<'h, M>(
    headers: &'h http::HeaderMap,
    name: &http::HeaderName,
    policy: &SignaturePolicy,
    members: &mut SmallVec<[M; 2]>,
    label: impl Fn(&M) -> &'h KeyRef,
    visit: impl Fn(Parser<'h>, &mut SmallVec<[M; 2]>) -> Result<(), sfv::Error>,
) -> Result<bool, SignatureError> {
    let mut total = 0usize;
    let mut present = false;
    for value in headers.get_all(name) {
        present = true;
        total = total.saturating_add(value.len()).saturating_add(2);
        if total > policy.max_header_bytes {
            return Err(SignatureError::TooLarge("header"));
        }
        let before = members.len();
        visit(Parser::new(value.as_bytes()), members)
            .map_err(|_| SignatureError::Malformed("structured field syntax"))?;
        for i in before..members.len() {
            let new = label(&members[i]);
            if members[..i].iter().any(|m| label(m) == new) {
                return Err(SignatureError::DuplicateLabel);
            }
        }
        if members.len() > policy.max_labels {
            return Err(SignatureError::TooLarge("labels"));
        }
    }
    Ok(present)
}

/// RFC 9421 §4: parse both fields, check labels pair up, select one signature.
pub(crate) fn parse<'h>(
    headers: &'h http::HeaderMap,
    policy: &SignaturePolicy,
) -> Result<ParsedSignature<'h>, SignatureError> {
    // Looked up by `HeaderName`: a `&str` name would be parsed and hashed again on every lookup.
    const INPUT: http::HeaderName = http::HeaderName::from_static(SIGNATURE_INPUT);
    const SIG: http::HeaderName = http::HeaderName::from_static(SIGNATURE);
    let mut inputs = SmallVec::<[InputMember<'_>; 2]>::new();
    let mut sigs = SmallVec::<[SignatureMember<'_>; 2]>::new();
    let has_inputs = read_members(
        headers,
        &INPUT,
        policy,
        &mut inputs,
        |m| m.label,
        |parser, members| parser.parse_dictionary_with_visitor(InputMembers(members)),
    )?;
    let has_sigs = read_members(
        headers,
        &SIG,
        policy,
        &mut sigs,
        |m| m.label,
        |parser, members| parser.parse_dictionary_with_visitor(SignatureMembers(members)),
    )?;
    match (has_inputs, has_sigs) {
        (false, false) => return Err(SignatureError::Missing),
        (true, true) => {}
        _ => return Err(SignatureError::LabelMismatch),
    }
    if inputs.is_empty() {
        return Err(SignatureError::Malformed("empty Signature-Input"));
    }
    if inputs.len() != sigs.len()
        || inputs
            .iter()
            .any(|i| !sigs.iter().any(|s| s.label == i.label))
    {
        return Err(SignatureError::LabelMismatch);
    }
    let selected = match &policy.label {
        Some(l) => inputs
            .iter()
            .position(|m| m.label.as_str() == l.as_str())
            .ok_or(SignatureError::LabelNotFound)?,
        None if inputs.len() == 1 => 0,
        // Several signatures: the first one (in header order) carrying a keyid.
        None => inputs
            .iter()
            .position(|m| m.list.as_ref().is_some_and(|l| l.params.contains("keyid")))
            .ok_or(SignatureError::MissingParameter("keyid"))?,
    };
    let input = &inputs[selected];
    let Some(sig) = sigs.iter_mut().find(|s| s.label == input.label) else {
        return Err(SignatureError::LabelMismatch);
    };
    build(input, sig.signature.take(), policy)
}

fn build<'h>(
    input: &InputMember<'h>,
    signature: Option<Vec<u8>>,
    policy: &SignaturePolicy,
) -> Result<ParsedSignature<'h>, SignatureError> {
    let Some(inner) = &input.list else {
        return Err(SignatureError::Malformed(
            "Signature-Input member is not an inner list",
        ));
    };
    let signature = match signature {
        Some(b) if !b.is_empty() => b,
        _ => {
            return Err(SignatureError::Malformed(
                "Signature member is not a byte sequence",
            ));
        }
    };
    if inner.items.len() > policy.max_components {
        return Err(SignatureError::TooLarge("components"));
    }
    let (components, params) = signature_params(&inner.items, &inner.params)?;
    reject_duplicates(&components, &params)?;
    // RFC 9421 §2.3 signature parameters, borrowed from the field value unless they hold escapes.
    let (mut created, mut expires, mut nonce, mut tag, mut key_id) = (None, None, None, None, None);
    let bad = || SignatureError::Malformed("signature parameter type");
    let string = |v: &BareItemFromInput<'h>| match v {
        BareItemFromInput::String(Cow::Borrowed(s)) => {
            let s: &'h sfv::StringRef = s;
            Ok(Cow::Borrowed(s.as_str()))
        }
        BareItemFromInput::String(Cow::Owned(s)) => Ok(Cow::Owned(s.as_str().to_owned())),
        _ => Err(bad()),
    };
    for (k, v) in inner.params.iter() {
        match k.as_str() {
            "created" => created = Some(integer(v).ok_or_else(bad)?),
            "expires" => expires = Some(integer(v).ok_or_else(bad)?),
            "nonce" => nonce = Some(string(v)?),
            "tag" => tag = Some(string(v)?),
            "keyid" => key_id = Some(string(v)?),
            // Compared where it lies: the only accepted value needs no owned copy.
            "alg" => match v {
                BareItemFromInput::String(s) if s.as_str() == ALG_HMAC_SHA256 => {}
                BareItemFromInput::String(_) => return Err(SignatureError::UnsupportedAlgorithm),
                _ => return Err(bad()),
            },
            _ => {} // unknown parameters are signed (serialized) but ignored
        }
    }
    let key_id = key_id.ok_or(SignatureError::MissingParameter("keyid"))?;
    Ok(ParsedSignature {
        label: input.label.as_str(),
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

fn integer(v: &BareItemFromInput<'_>) -> Option<i64> {
    match v {
        BareItemFromInput::Integer(i) => Some((*i).into()),
        _ => None,
    }
}
