//! Bulk key import for `keyward keys import FILE`: TSV or CSV with a header row, or JSON lines, with the
//! columns `clientId`, `clientSecret`, `name`, `userName`, `deviceName`, `permissions`, `isActive`
//! (snake_case and the bench harness's `client_id`, `client_secret`, `user`, `device` are accepted; other
//! columns such as `token` are ignored). Every row is validated before anything is written.
//!
//! Defaults: `name` = the client id; imported keys are active unless `isActive` says otherwise (they are live
//! keys migrated from another gateway). In TSV/CSV, `permissions` are separated by spaces or `;`.

use std::collections::HashSet;

use chrono::Utc;
use serde::Deserialize;

use super::ApiKey;
use super::view::ApiKeyInput;

/// Most problems reported before giving up.
const MAX_PROBLEMS: usize = 20;

/// One row, in any accepted spelling.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Row {
    #[serde(alias = "client_id", alias = "clientid")]
    #[serde(rename = "clientId")]
    client_id: Option<String>,
    #[serde(alias = "client_secret", alias = "clientsecret")]
    #[serde(rename = "clientSecret")]
    client_secret: Option<String>,
    name: Option<String>,
    #[serde(alias = "user_name", alias = "user", alias = "username")]
    #[serde(rename = "userName")]
    user_name: Option<String>,
    #[serde(alias = "device_name", alias = "device", alias = "devicename")]
    #[serde(rename = "deviceName")]
    device_name: Option<String>,
    permissions: Option<Permissions>,
    #[serde(alias = "is_active", alias = "active", alias = "isactive")]
    #[serde(rename = "isActive")]
    is_active: Option<bool>,
}

/// Permissions as a JSON array or a separated string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Permissions {
    List(Vec<String>),
    Text(String),
}

/// Why an import failed: one message per bad row (line numbers are 1-based).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ImportErrors(pub Vec<String>);

/// Parse and validate a whole file into new keys.
pub fn parse(text: &str) -> Result<Vec<ApiKey>, ImportErrors> {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let rows: Vec<(usize, Result<Row, String>)> = if first.trim_start().starts_with('{') {
        json_lines(text)
    } else {
        delimited(text, if first.contains('\t') { '\t' } else { ',' })
    };
    let mut problems = Vec::new();
    let mut keys = Vec::with_capacity(rows.len());
    let mut seen_ids = HashSet::new();
    let mut seen_names = HashSet::new();
    let now = Utc::now();
    for (line, row) in rows {
        if problems.len() >= MAX_PROBLEMS {
            problems.push("too many problems; stopped".into());
            break;
        }
        match row.and_then(|r| to_key(r, now)) {
            Ok(key) => {
                if !seen_ids.insert(key.client_id.clone()) {
                    problems.push(format!(
                        "line {line}: clientId {} appears twice",
                        key.client_id
                    ));
                } else if !seen_names.insert(key.name.clone()) {
                    problems.push(format!("line {line}: name {} appears twice", key.name));
                } else {
                    keys.push(key);
                }
            }
            Err(e) => problems.push(format!("line {line}: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(keys)
    } else {
        Err(ImportErrors(problems))
    }
}

fn json_lines(text: &str) -> Vec<(usize, Result<Row, String>)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            (
                i + 1,
                serde_json::from_str::<Row>(l).map_err(|e| e.to_string()),
            )
        })
        .collect()
}

fn delimited(text: &str, sep: char) -> Vec<(usize, Result<Row, String>)> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Vec::new();
    };
    let columns: Vec<String> = header
        .split(sep)
        .map(|c| c.trim().to_ascii_lowercase().replace(['_', '-'], ""))
        .collect();
    lines
        .map(|(i, line)| {
            let mut row = Row::default();
            for (column, value) in columns.iter().zip(line.split(sep)) {
                let value = value.trim().trim_matches('"').to_owned();
                if value.is_empty() {
                    continue;
                }
                match column.as_str() {
                    "clientid" => row.client_id = Some(value),
                    "clientsecret" => row.client_secret = Some(value),
                    "name" => row.name = Some(value),
                    "username" | "user" => row.user_name = Some(value),
                    "devicename" | "device" => row.device_name = Some(value),
                    "permissions" => row.permissions = Some(Permissions::Text(value)),
                    "isactive" | "active" => match value.as_str() {
                        "true" | "1" => row.is_active = Some(true),
                        "false" | "0" => row.is_active = Some(false),
                        _ => {
                            return (
                                i + 1,
                                Err(format!("isActive {value:?} is not true or false")),
                            );
                        }
                    },
                    _ => {}
                }
            }
            (i + 1, Ok(row))
        })
        .collect()
}

fn to_key(row: Row, now: chrono::DateTime<Utc>) -> Result<ApiKey, String> {
    let client_id = row.client_id.ok_or("clientId is required")?;
    let secret = row.client_secret.ok_or("clientSecret is required")?;
    let permissions = match row.permissions {
        None => Vec::new(),
        Some(Permissions::List(l)) => l,
        Some(Permissions::Text(t)) => t
            .split([' ', ';'])
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    let input = ApiKeyInput {
        name: Some(row.name.unwrap_or_else(|| client_id.clone())),
        client_id: Some(client_id),
        client_secret: Some(secret),
        user_name: row.user_name,
        device_name: row.device_name,
        permissions: Some(permissions),
        is_active: Some(row.is_active.unwrap_or(true)),
        ..ApiKeyInput::default()
    };
    let v = input.validate(true).map_err(|problems| {
        problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.description))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    Ok(v.into_new_key(None, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn bench_tsv_is_accepted() {
        let text = format!(
            "client_id\tclient_secret\ttoken\tuser\tdevice\nkwb-000000\t{SECRET}\tignored\tuser-00000\tdevice-000000\n"
        );
        let keys = parse(&text).unwrap();
        assert_eq!(keys.len(), 1);
        let k = &keys[0];
        assert_eq!(
            (
                k.client_id.as_str(),
                k.name.as_str(),
                k.user_name.as_deref(),
                k.is_active
            ),
            ("kwb-000000", "kwb-000000", Some("user-00000"), true)
        );
    }

    #[test]
    fn csv_and_json_lines_are_accepted() {
        let csv = format!(
            "clientId,clientSecret,name,permissions,isActive\nclient-01,{SECRET},a,orders:read;orders:write,false\n"
        );
        let keys = parse(&csv).unwrap();
        assert_eq!(keys[0].permissions, ["orders:read", "orders:write"]);
        assert!(!keys[0].is_active);
        let jsonl = format!(
            "{{\"clientId\":\"client-02\",\"clientSecret\":\"{SECRET}\",\"permissions\":[\"x\"],\"deviceName\":\"d\"}}\n"
        );
        let keys = parse(&jsonl).unwrap();
        assert_eq!(
            (
                keys[0].permissions.as_slice(),
                keys[0].device_name.as_deref()
            ),
            (&["x".to_owned()][..], Some("d"))
        );
    }

    #[test]
    fn bad_rows_are_all_reported_and_nothing_is_returned() {
        let text = format!(
            "client_id\tclient_secret\nshort\t{SECRET}\nclient-03\tshort\nclient-04\t{SECRET}\nclient-04\t{SECRET}\n"
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        assert!(err.0[0].starts_with("line 2"));
    }
}
