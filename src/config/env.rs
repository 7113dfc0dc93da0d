//! `KEYWARD_<SECTION>__<KEY>` overrides, read from an injected map so tests never touch the process environment.
//!
//! An override replaces one value of the merged TOML document before it is deserialized. The existing value's
//! type decides how the text is read: a string stays a string; anything else is parsed as a TOML value.

use std::collections::BTreeMap;

/// The environment variable prefix.
pub const PREFIX: &str = "KEYWARD_";
/// The legacy name of the admin bootstrap token (DESIGN.md §3).
pub const ADMIN_TOKEN: &str = "KEYWARD_ADMIN_TOKEN";

/// Apply every `KEYWARD_SECTION__KEY=value` of `vars` to `doc`, returning one message per bad variable.
pub fn apply(doc: &mut toml::Table, vars: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, value) in vars {
        if name == ADMIN_TOKEN {
            set(
                doc,
                "admin",
                "bootstrap_token",
                toml::Value::String(value.clone()),
            );
            continue;
        }
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let existing = doc.get(&section).and_then(|s| s.get(&key));
        let parsed = match existing {
            Some(toml::Value::String(_)) | None => Ok(toml::Value::String(value.clone())),
            Some(_) => parse_value(value),
        };
        match parsed {
            Ok(v) => set(doc, &section, &key, v),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    problems
}

/// Parse one TOML value (`true`, `42`, `["a", "b"]`).
fn parse_value(text: &str) -> Result<toml::Value, String> {
    let doc: toml::Table = format!("v = {text}")
        .parse()
        .map_err(|_| "not a valid TOML value".to_owned())?;
    doc.get("v")
        .cloned()
        .ok_or_else(|| "not a valid TOML value".to_owned())
}

fn set(doc: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let entry = doc
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(table) = entry {
        table.insert(key.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_values_stay_strings_and_others_parse() {
        let mut doc: toml::Table = "[proxy]\nlisten = \"x\"\n[limits]\nmax_headers = 1\n"
            .parse()
            .unwrap();
        let vars = BTreeMap::from([
            ("KEYWARD_PROXY__LISTEN".to_owned(), "127.0.0.1:1".to_owned()),
            ("KEYWARD_LIMITS__MAX_HEADERS".to_owned(), "7".to_owned()),
            ("KEYWARD_ADMIN_TOKEN".to_owned(), "t".to_owned()),
            ("OTHER".to_owned(), "ignored".to_owned()),
        ]);
        assert!(apply(&mut doc, &vars).is_empty());
        assert_eq!(doc["proxy"]["listen"].as_str(), Some("127.0.0.1:1"));
        assert_eq!(doc["limits"]["max_headers"].as_integer(), Some(7));
        assert_eq!(doc["admin"]["bootstrap_token"].as_str(), Some("t"));
    }

    #[test]
    fn bad_typed_value_is_reported() {
        let mut doc: toml::Table = "[limits]\nmax_headers = 1\n".parse().unwrap();
        let vars = BTreeMap::from([("KEYWARD_LIMITS__MAX_HEADERS".to_owned(), "many".to_owned())]);
        assert_eq!(apply(&mut doc, &vars).len(), 1);
    }
}
