//! NWS4 unit tests: upstream known-answer vectors (NWS4.md §2, §3), parsing, verification rules.

mod parse;
mod vectors;
mod verify;

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::*;

/// A timestamp string as a UTC instant.
fn at(ts: &str) -> DateTime<Utc> {
    authorization::parse_timestamp(ts).unwrap()
}

/// Builds a header map from `(name, value)` lines, keeping repeated names as separate lines.
fn header_map<'a>(lines: impl IntoIterator<Item = (&'a str, &'a str)>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// A request the way a client sends it: given headers plus what `sign` returned.
struct Signed {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    host: String,
    authorization: String,
}

impl Signed {
    fn new(
        method: Method,
        url: &str,
        given: &[(&str, &str)],
        body: &[u8],
        (id, secret): (&str, &str),
        now: &str,
    ) -> Self {
        let uri: http::Uri = url.parse().unwrap();
        let given: Vec<(String, String)> = given
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        let added = sign(&method, &uri, &given, body, id, secret, at(now));
        let mut headers = header_map(given.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let mut authorization = String::new();
        for (name, value) in &added {
            if name == "Authorization" {
                authorization = value.clone();
            } else {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
        }
        let host = headers[http::header::HOST].to_str().unwrap().to_owned();
        Self {
            method,
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers,
            host,
            authorization,
        }
    }

    fn request(&self) -> Nws4Request<'_> {
        Nws4Request {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            host: &self.host,
        }
    }

    fn verify_at(&self, secret: &str, now: &str) -> Result<Nws4Verified, Nws4Error> {
        let creds = Nws4Credentials::parse(&self.authorization)?;
        verify(&self.request(), &creds, secret, at(now), SKEW)
    }
}

/// The reference verifier's window: 300 s split in half (§5.8).
const SKEW: std::time::Duration = std::time::Duration::from_secs(150);
