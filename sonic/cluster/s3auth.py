"""AWS Signature Version 4 checks for the embedded S3 server (header-signed requests only).

The embedded server accepts exactly one key pair, the cluster's own, so a process that does not
hold the cluster's secret cannot read or write its objects. What is verified: the access key id,
and the signature over the canonical request (method, path, query, signed headers and the
*claimed* payload hash from ``x-amz-content-sha256``). Whether the body matches that claimed
hash is the server's separate, optional check (``--verify-payload``), because hashing every
byte costs as much CPU as the transfer itself and the data plane checksums objects end to end.

Reference: "Signature Version 4 signing process" (AWS General Reference), S3 flavour: the path
is not normalised nor double-encoded, and ``x-amz-content-sha256`` is always sent and signed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote

from sonic.errors import AuthError

ALGORITHM = "AWS4-HMAC-SHA256"
# S3 answers RequestTimeTooSkewed beyond 15 minutes; so do we.
MAX_SKEW = timedelta(minutes=15)
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<sig>[0-9a-f]+)\s*$"
)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str


@dataclass(frozen=True)
class SignedRequest:
    """What a request carries that the signature covers, in the server's terms."""

    method: str
    raw_path: str                # path as sent, still percent-encoded
    raw_query: str               # query string as sent, without "?"
    headers: Mapping[str, str]   # case-insensitive lookup expected


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k_date = _hmac(("AWS4" + secret).encode(), date)
    return _hmac(_hmac(_hmac(k_date, region), service), "aws4_request")


def canonical_query(raw_query: str) -> str:
    pairs = parse_qsl(raw_query, keep_blank_values=True)
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_request(req: SignedRequest, signed_headers: list[str], payload_hash: str) -> str:
    lines = []
    for name in signed_headers:
        value = req.headers.get(name)
        if value is None:
            raise AuthError("AccessDenied", f"signed header {name!r} is missing from the request")
        lines.append(f"{name}:{_SPACES.sub(' ', value.strip())}")
    return "\n".join([req.method, req.raw_path or "/", canonical_query(req.raw_query),
                      "\n".join(lines) + "\n", ";".join(signed_headers), payload_hash])


def verify(req: SignedRequest, accepted: Credentials, now: datetime | None = None) -> str:
    """Check ``req``'s SigV4 header signature against ``accepted``; return the claimed payload
    hash (hex digest, or a marker such as ``UNSIGNED-PAYLOAD``). Raise AuthError otherwise."""
    header = req.headers.get("authorization")
    if not header:
        raise AuthError("AccessDenied", "anonymous requests are refused: sign with the cluster's credentials")
    match = _AUTH_RE.match(header)
    if match is None:
        raise AuthError("AccessDenied", "only AWS4-HMAC-SHA256 header signatures are accepted")
    parts = match["cred"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise AuthError("AuthorizationHeaderMalformed", f"bad credential scope {match['cred']!r}")
    key_id, date, region, service, _ = parts
    if not hmac.compare_digest(key_id, accepted.access_key_id):
        raise AuthError("InvalidAccessKeyId", "the access key id is not this cluster's")
    amz_date = req.headers.get("x-amz-date", "")
    try:
        stamp = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise AuthError("AccessDenied", "x-amz-date is missing or malformed") from None
    if not amz_date.startswith(date):
        raise AuthError("SignatureDoesNotMatch", "credential scope date differs from x-amz-date")
    if abs((now or datetime.now(UTC)) - stamp) > MAX_SKEW:
        raise AuthError("RequestTimeTooSkewed", "the request time is more than 15 minutes from the server's")
    payload_hash = req.headers.get("x-amz-content-sha256")
    if not payload_hash:
        raise AuthError("InvalidRequest", "x-amz-content-sha256 is required")
    signed = match["signed"].split(";")
    string_to_sign = "\n".join([
        ALGORITHM, amz_date, f"{date}/{region}/{service}/aws4_request",
        hashlib.sha256(canonical_request(req, signed, payload_hash).encode()).hexdigest(),
    ])
    expected = hmac.new(signing_key(accepted.secret_access_key, date, region, service),
                        string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, match["sig"]):
        raise AuthError("SignatureDoesNotMatch", "the request signature does not match the cluster's secret key")
    return payload_hash


def cluster_credentials(secret: bytes) -> dict[str, str]:
    """The embedded S3 server's key pair for one local cluster, derived from the cluster's
    secret (HMAC-SHA256 with fixed labels): every process that holds the secret file (the
    harness, the agents, the driver) computes the same pair, nothing else is written down,
    and a process without the secret cannot sign a request the server accepts."""
    ident = hmac.new(secret, b"sonic embedded s3 access key id", hashlib.sha256).hexdigest()[:20].upper()
    key = hmac.new(secret, b"sonic embedded s3 secret access key", hashlib.sha256).hexdigest()
    return {"AWS_ACCESS_KEY_ID": f"SONIC{ident}", "AWS_SECRET_ACCESS_KEY": key}
