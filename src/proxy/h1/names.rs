//! The field names of upstream response heads, remembered by position, per thread.
//!
//! An upstream sends the same names in the same order response after response. Making a `HeaderName` from the
//! bytes (a table lookup and a lowercased copy) and classifying it as hop-by-hop or not cost about 260
//! instructions a field in callgrind, some 1 300 for a five-field response; comparing the bytes with the
//! name seen at the same position last time costs a tenth of that. A name seen for the first time, or in a
//! new position, is made as before and replaces the remembered one. The cache holds only what follows from
//! the bytes alone (the name and its class), so a hit returns exactly what a miss would have made.

use std::cell::RefCell;

use http::HeaderName;
use http::header::InvalidHeaderName;

use crate::proxy::headers::{HopByHop, hop_by_hop};

/// Positions remembered: more than an ordinary response head has fields.
const POSITIONS: usize = 16;
/// Longest name remembered (longer ones are made every time).
const MAX_NAME: usize = 64;

/// A field name as the upstream wrote it, the name made from it, and its hop-by-hop class.
struct Remembered {
    raw: Box<[u8]>,
    name: HeaderName,
    class: Option<HopByHop>,
}

thread_local! {
    static REMEMBERED: RefCell<[Option<Remembered>; POSITIONS]> =
        const { RefCell::new([const { None }; POSITIONS]) };
}

/// Name one response head's fields, in order: `each` is called with each field's name, hop-by-hop class and
/// value. The walk stops at the first name that is not valid.
pub(super) fn for_each_name<'a, V>(
    fields: impl Iterator<Item = (&'a [u8], V)>,
    mut each: impl FnMut(HeaderName, Option<HopByHop>, V),
) -> Result<(), InvalidHeaderName> {
    REMEMBERED.with_borrow_mut(|remembered| {
        for (i, (raw, value)) in fields.enumerate() {
            let slot = remembered.get_mut(i);
            if let Some(Some(r)) = slot.as_deref() {
                if *r.raw == *raw {
                    each(r.name.clone(), r.class, value);
                    continue;
                }
            }
            let name = HeaderName::from_bytes(raw)?;
            let class = hop_by_hop(&name);
            if let Some(slot) = slot.filter(|_| raw.len() <= MAX_NAME) {
                *slot = Some(Remembered {
                    raw: raw.into(),
                    name: name.clone(),
                    class,
                });
            }
            each(name, class, value);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(raw: &[&str]) -> Result<Vec<(String, Option<HopByHop>)>, InvalidHeaderName> {
        let mut out = Vec::new();
        for_each_name(raw.iter().map(|s| (s.as_bytes(), ())), |name, class, ()| {
            out.push((name.as_str().to_owned(), class));
        })?;
        Ok(out)
    }

    #[test]
    fn a_remembered_position_gives_what_making_the_name_gives() {
        let first = ["Server", "Content-Length", "Connection", "X-Custom"];
        let made = names(&first).unwrap();
        assert_eq!(
            made,
            [
                ("server".to_owned(), None),
                ("content-length".to_owned(), None),
                ("connection".to_owned(), Some(HopByHop::Connection)),
                ("x-custom".to_owned(), None),
            ]
        );
        assert_eq!(names(&first).unwrap(), made);
        // Other names, or the same ones in other places or spelled in another case, are made afresh.
        assert_eq!(
            names(&["connection", "Transfer-Encoding", "server", "x-CUSTOM"]).unwrap(),
            [
                ("connection".to_owned(), Some(HopByHop::Connection)),
                (
                    "transfer-encoding".to_owned(),
                    Some(HopByHop::TransferEncoding)
                ),
                ("server".to_owned(), None),
                ("x-custom".to_owned(), None),
            ]
        );
    }

    #[test]
    fn an_invalid_name_is_an_error_even_where_a_valid_one_was_remembered() {
        names(&["Server", "Date"]).unwrap();
        assert!(names(&["Server", "Da te"]).is_err());
        assert!(names(&["Server", ""]).is_err());
    }

    #[test]
    fn more_fields_than_positions_and_long_names_are_made_every_time() {
        let long = "x".repeat(MAX_NAME + 1);
        let mut raw: Vec<String> = (0..POSITIONS + 4).map(|i| format!("X-F{i}")).collect();
        raw[0] = long.clone();
        let refs: Vec<&str> = raw.iter().map(String::as_str).collect();
        for _ in 0..2 {
            let got = names(&refs).unwrap();
            assert_eq!(got.len(), POSITIONS + 4);
            assert_eq!(got[0].0, long);
            assert_eq!(got[POSITIONS + 3].0, format!("x-f{}", POSITIONS + 3));
        }
    }
}
