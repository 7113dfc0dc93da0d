#!/usr/bin/env python3
"""Sign a request with RFC 9421 HTTP Message Signatures (hmac-sha256) using the
third-party `http-message-signatures` library, send it with `requests`, and
print one JSON line: {"status": <int>, "body": <text>}.

Interop check for Keyward's verifier (src/auth/signature). Install:
    python3 -m venv .venv && .venv/bin/pip install http-message-signatures requests

With --print-only nothing is sent; the prepared request is printed instead as
{"method", "url", "headers": [[name, value], ...], "body"}.

The library (3.0.0) emits, for the default coverage:
    pyhms=("@method" "@authority" "@target-uri" "content-digest");created=<int>;keyid="<id>";alg="hmac-sha256"
(label `pyhms` unless --label; `content-digest` is appended automatically when
a body is given, with a `Content-Digest: sha-256=:...:` header; `nonce` only when
--nonce is given; no `expires`.)
"""

import argparse
import datetime
import json
import sys

import requests
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

DEFAULT_COVERED = "@method,@authority,@target-uri"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--method", default="GET")
    p.add_argument("--key-id", required=True, help="the client id (keyid)")
    p.add_argument("--secret", required=True, help="client secret; its UTF-8 bytes are the HMAC key")
    p.add_argument("--data", help="request body (UTF-8 string)")
    p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    p.add_argument(
        "--covered",
        default=DEFAULT_COVERED,
        help="comma-separated component ids (content-digest is added when there is a body)",
    )
    p.add_argument("--label", default=None, help="signature label (library default: pyhms)")
    p.add_argument("--nonce", default=None)
    p.add_argument("--created", type=int, default=None, help="Unix time (default: now)")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--print-only", action="store_true", help="print the signed request instead of sending it")
    return p


def main() -> int:
    args = build_parser().parse_args()
    headers = {}
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            print(f"bad --header {h!r}, expected NAME:VALUE", file=sys.stderr)
            return 2
        headers[name.strip()] = value.strip()
    body = args.data.encode("utf-8") if args.data is not None else None

    session = requests.Session()
    prepared = session.prepare_request(requests.Request(args.method.upper(), args.url, headers=headers, data=body))

    secret = args.secret.encode("utf-8")
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.HMAC_SHA256,
        key_resolver=MappingKeyResolver(public_keys={args.key_id: secret}, private_keys={args.key_id: secret}),
    )
    covered = [c.strip() for c in args.covered.split(",") if c.strip()]
    created = (
        datetime.datetime.fromtimestamp(args.created, tz=datetime.timezone.utc) if args.created is not None else None
    )
    # With body=..., the library adds Content-Digest (sha-256) and covers it.
    signer.sign(
        prepared,
        key_id=args.key_id,
        created=created,
        nonce=args.nonce,
        label=args.label,
        covered_component_ids=covered,
        body=body,
    )

    if args.print_only:
        out = {
            "method": prepared.method,
            "url": prepared.url,
            "headers": [[k, v] for k, v in prepared.headers.items()],
            "body": args.data,
        }
        print(json.dumps(out))
        return 0
    try:
        resp = session.send(prepared, timeout=args.timeout)
    except requests.RequestException as e:
        print(json.dumps({"status": 0, "body": f"request failed: {e}"}))
        return 1
    print(json.dumps({"status": resp.status_code, "body": resp.text}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
