//! Client-side signing for `keyward sign`: the headers a request needs for bearer, NWS4 or RFC 9421, computed
//! with the same code the proxy verifies with.

use chrono::Utc;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::auth::{nws4, signature};
use crate::keys::view::encode_credential;

/// The scheme to sign with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SignScheme {
    /// `X-Api-Key: base64(clientId:clientSecret)`.
    Bearer,
    /// NWS4-HMAC-SHA256.
    Nws4,
    /// RFC 9421 hmac-sha256 with Content-Digest.
    Rfc9421,
}

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The URL is not absolute http(s).
    #[error("the URL must be absolute, e.g. http://127.0.0.1:8080/orders")]
    Url,
    /// A header is not `Name: value`.
    #[error("header {0:?} is not `Name: value`")]
    Header(String),
    /// The signer refused.
    #[error("signing failed: {0}")]
    Signature(#[from] signature::SignatureError),
}

/// The headers to add to `method url` with `headers` and `body`, signed by `key_id`/`secret`.
pub fn sign_headers(
    scheme: SignScheme,
    method: &Method,
    url: &Uri,
    headers: &[(String, String)],
    body: &[u8],
    key_id: &str,
    secret: &str,
) -> Result<Vec<(String, String)>, SignError> {
    let authority = url.authority().ok_or(SignError::Url)?.as_str().to_owned();
    let scheme_str = url.scheme_str().ok_or(SignError::Url)?.to_owned();
    match scheme {
        SignScheme::Bearer => Ok(vec![(
            "X-Api-Key".into(),
            encode_credential(key_id, secret),
        )]),
        SignScheme::Nws4 => Ok(nws4::sign(
            method,
            url,
            headers,
            body,
            key_id,
            secret,
            Utc::now(),
        )),
        SignScheme::Rfc9421 => {
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| SignError::Header(k.clone()))?;
                let value = HeaderValue::from_str(v).map_err(|_| SignError::Header(k.clone()))?;
                map.append(name, value);
            }
            let mut out = Vec::new();
            let mut components = vec!["@method", "@authority", "@target-uri"];
            if !body.is_empty() {
                let digest = signature::content_digest_header(body);
                map.insert(
                    HeaderName::from_static("content-digest"),
                    HeaderValue::from_str(&digest).map_err(|_| SignError::Url)?,
                );
                out.push(("Content-Digest".to_owned(), digest));
                components.push("content-digest");
            }
            let req = signature::SignatureRequest {
                method,
                scheme: &scheme_str,
                authority: &authority,
                path: url.path(),
                query: url.query(),
                headers: &map,
                has_body: !body.is_empty(),
            };
            let (input, sig) = signature::sign(
                &req,
                &components,
                key_id,
                secret.as_bytes(),
                Utc::now().timestamp(),
                None,
            )?;
            out.push(("Signature-Input".to_owned(), input));
            out.push(("Signature".to_owned(), sig));
            Ok(out)
        }
    }
}
