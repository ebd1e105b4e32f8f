"""SigV4 verification of the embedded S3 server against AWS's published example."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sonic.cluster.s3auth import AuthError, Credentials, SignedRequest, verify

# "Example: GET Object" of the S3 API reference's Signature Version 4 header-auth page.
AWS_KEYS = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
THEN = datetime(2013, 5, 24, 0, 1, tzinfo=UTC)


def example(**changes: str) -> SignedRequest:
    headers = {
        "host": "examplebucket.s3.amazonaws.com",
        "range": "bytes=0-9",
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": "20130524T000000Z",
        "authorization": (
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        ),
    }
    headers.update(changes)
    return SignedRequest("GET", "/test.txt", "", headers)


def test_published_example_verifies() -> None:
    assert verify(example(), AWS_KEYS, now=THEN) == EMPTY_SHA256


@pytest.mark.parametrize("changes, code", [
    ({"range": "bytes=0-10"}, "SignatureDoesNotMatch"),                 # a signed header altered
    ({"host": "other.s3.amazonaws.com"}, "SignatureDoesNotMatch"),
    ({"authorization": ""}, "AccessDenied"),                           # anonymous
    ({"x-amz-date": "20130524T000001Z"}, "SignatureDoesNotMatch"),
])
def test_tampering_is_refused(changes: dict[str, str], code: str) -> None:
    with pytest.raises(AuthError) as info:
        verify(example(**changes), AWS_KEYS, now=THEN)
    assert info.value.code == code


def test_other_keys_and_stale_requests_are_refused() -> None:
    with pytest.raises(AuthError) as info:
        verify(example(), Credentials("AKIAIOSFODNN7EXAMPLE", "another-secret"), now=THEN)
    assert info.value.code == "SignatureDoesNotMatch"
    with pytest.raises(AuthError) as info:
        verify(example(), Credentials("SOMEONEELSE", AWS_KEYS.secret_access_key), now=THEN)
    assert info.value.code == "InvalidAccessKeyId"
    with pytest.raises(AuthError) as info:
        verify(example(), AWS_KEYS, now=datetime(2013, 5, 24, 1, 0, tzinfo=UTC))
    assert info.value.code == "RequestTimeTooSkewed"
