"""The S3 REST subset boto3 uses, over aiohttp, on top of :mod:`sonic.emulation.s3store`.

Covered: ListBuckets; Create/Head/DeleteBucket; Put/Get (single Range, If-Match,
If-None-Match)/Head/DeleteObject; DeleteObjects; ListObjects (v1) and ListObjectsV2 with
prefix, delimiter, max-keys, marker/start-after/continuation-token and encoding-type=url;
multipart Create/UploadPart/Complete/Abort. Path-style addressing, plus virtual-host style for
``<bucket>.localhost``. Anything else is answered ``501 NotImplemented`` rather than guessed.

Bodies stream: a PUT is written to disk as it arrives (one event-loop read at a time), a GET
leaves through ``sendfile`` (or paced chunks when bandwidth shaping is on).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import time
import uuid
import xml.etree.ElementTree as ET
import zlib
from collections.abc import AsyncIterator
from contextlib import ExitStack, suppress
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape

import xxhash
from aiohttp import web

from sonic.cluster.s3auth import AuthError, Credentials, SignedRequest, verify
from sonic.emulation.s3shaping import SHAPING_CHUNK, Pacer
from sonic.emulation.s3store import ObjectInfo, ObjectStore, S3Error, Segment

XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
# XML request bodies (DeleteObjects, CompleteMultipartUpload) are small; refuse absurd ones.
MAX_XML_BODY = 8 * 1024 * 1024
READ_CHUNK = 1 << 20
WRITE_BATCH = 1 << 20
IOV_MAX = 1024
SIGNED_PAYLOAD_MARKERS = ("UNSIGNED-PAYLOAD",)
OWNER = "<Owner><ID>sonic</ID><DisplayName>sonic</DisplayName></Owner>"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _x(value: str) -> str:
    return escape(value)


def xml_response(body: str, status: int = 200) -> web.Response:
    return web.Response(status=status, body=(XML_HEAD + body).encode(), content_type="application/xml")


def error_response(err: S3Error, resource: str, method: str) -> web.Response:
    headers = {"x-amz-request-id": uuid.uuid4().hex[:16]}
    if method == "HEAD":                    # HEAD answers carry no body, only the status
        return web.Response(status=err.status, headers=headers)
    body = (f"<Error><Code>{_x(err.code)}</Code><Message>{_x(err.message)}</Message>"
            f"<Resource>{_x(resource)}</Resource><RequestId>{headers['x-amz-request-id']}</RequestId></Error>")
    response = xml_response(body, err.status)
    response.headers.update(headers)
    return response


def _tag(element: ET.Element) -> str:
    return element.tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _tag(child) == name]


def _text(element: ET.Element, name: str) -> str | None:
    found = _children(element, name)
    return found[0].text or "" if found else None


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single ``bytes=`` range; None for the whole object.
    Malformed or multi-range headers are ignored, as S3 does; unsatisfiable ones raise 416."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            if not last:
                return None
            length = int(last)
            if length <= 0:
                raise S3Error(416, "InvalidRange", "The requested range is not satisfiable")
            return max(0, size - length), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        raise S3Error(416, "InvalidRange", "The requested range is not satisfiable")
    if end < start:
        return None
    return start, min(end, size - 1)


class S3Api:
    """The request handler. ``credentials`` None accepts any signature (tests of the harness
    only); otherwise every request must be SigV4-signed with exactly these."""

    def __init__(self, store: ObjectStore, credentials: Credentials | None, *, verify_payload: bool = False) -> None:
        self.store = store
        self.credentials = credentials
        self.verify_payload = verify_payload

    # -- entry ---------------------------------------------------------------------

    async def handle(self, request: web.Request, pacer: Pacer) -> web.StreamResponse:
        raw_path, _, raw_query = request.raw_path.partition("?")
        try:
            payload_hash = self._authenticate(request, raw_path, raw_query)
            bucket, key = self._address(request, raw_path)
            return await self._dispatch(request, pacer, bucket, key, payload_hash)
        except S3Error as err:
            await drain(request)
            return error_response(err, unquote(raw_path), request.method)

    def _authenticate(self, request: web.Request, raw_path: str, raw_query: str) -> str:
        if self.credentials is None:
            return request.headers.get("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        signed = SignedRequest(request.method, raw_path, raw_query, request.headers)
        try:
            return verify(signed, self.credentials)
        except AuthError as err:
            status = 400 if err.code in ("AuthorizationHeaderMalformed", "InvalidRequest") else 403
            raise S3Error(status, err.code, err.message) from None

    @staticmethod
    def _address(request: web.Request, raw_path: str) -> tuple[str, str]:
        path = unquote(raw_path)
        host = request.headers.get("host", "").rsplit(":", 1)[0]
        if host.endswith(".localhost"):                       # virtual-host style
            return host[: -len(".localhost")], path.lstrip("/")
        bucket, _, key = path.lstrip("/").partition("/")
        return bucket, key

    async def _dispatch(self, request: web.Request, pacer: Pacer, bucket: str, key: str,
                        payload_hash: str) -> web.StreamResponse:
        method, query = request.method, request.query
        if not bucket:
            if method == "GET":
                return self._list_buckets()
        elif not key:
            if method == "PUT" and not query:
                await drain(request)
                self.store.create_bucket(bucket)
                return web.Response(status=200, headers={"Location": f"/{bucket}"})
            if method == "HEAD" and not query:
                self.store.bucket(bucket)
                return web.Response(status=200, headers={"x-amz-bucket-region": "us-east-1"})
            if method == "DELETE" and not query:
                self.store.delete_bucket(bucket)
                return web.Response(status=204)
            if method == "GET" and set(query) <= {"list-type", "prefix", "delimiter", "max-keys", "marker",
                                                  "continuation-token", "start-after", "encoding-type",
                                                  "fetch-owner"}:
                return self._list_objects(bucket, query)
            if method == "POST" and "delete" in query:
                return await self._delete_objects(request, bucket)
        else:
            if method == "PUT" and "uploadId" in query and "partNumber" in query:
                return await self._upload_part(request, pacer, bucket, key, payload_hash)
            if method == "PUT" and not query:
                if "x-amz-copy-source" in request.headers:
                    raise S3Error(501, "NotImplemented", "CopyObject is not supported by the embedded server")
                return await self._put_object(request, pacer, bucket, key, payload_hash)
            if method in ("GET", "HEAD") and set(query) <= {"partNumber", "versionId"} and "partNumber" not in query:
                return await self._get_object(request, pacer, bucket, key)
            if method == "DELETE" and "uploadId" in query:
                upload = self.store.upload(bucket, key, query["uploadId"])
                self.store.finish_upload(upload)
                return web.Response(status=204)
            if method == "DELETE" and not query:
                self.store.delete(bucket, key)
                return web.Response(status=204)
            if method == "POST" and "uploads" in query:
                await drain(request)
                return self._create_upload(request, bucket, key)
            if method == "POST" and "uploadId" in query:
                return await self._complete_upload(request, bucket, key, query["uploadId"])
        raise S3Error(501, "NotImplemented", f"{method} {'?'.join(query) or 'request'} is not supported "
                      "by the embedded S3 server")

    # -- bodies --------------------------------------------------------------------

    async def _receive(self, request: web.Request, pacer: Pacer, payload_hash: str) -> tuple[str, int, str]:
        """Stream the request body into a temp file; return (file, size, ETag hex)."""
        if request.content_length is None:
            raise S3Error(411, "MissingContentLength", "You must provide the Content-Length HTTP header.")
        if "aws-chunked" in request.headers.get("content-encoding", ""):
            raise S3Error(501, "NotImplemented", "aws-chunked uploads are not supported; use http (header checksums)")
        target = self.store.new_temp_file()
        etag = xxhash.xxh3_128()
        sha = hashlib.sha256() if self.verify_payload and payload_hash not in SIGNED_PAYLOAD_MARKERS else None
        crc_header = request.headers.get("x-amz-checksum-crc32") if self.verify_payload else None
        crc = 0
        size = 0
        try:
            with open(target, "wb", buffering=0) as out:
                sink = FileSink(out.fileno())
                try:
                    async for chunk in body_chunks(request, pacer):
                        await sink.add(chunk)
                        etag.update(chunk)
                        if sha is not None:
                            sha.update(chunk)
                        if crc_header is not None:
                            crc = zlib.crc32(chunk, crc)
                        size += len(chunk)
                    await sink.flush()
                finally:
                    # Never close the file under a write still running in the worker thread.
                    await sink.settle()
            if size != request.content_length:
                raise S3Error(400, "IncompleteBody", "You did not provide the number of bytes specified by Content-Length")
            if sha is not None and sha.hexdigest() != payload_hash:
                raise S3Error(400, "XAmzContentSHA256Mismatch", "The provided x-amz-content-sha256 does not match")
            if crc_header is not None and base64.b64encode(crc.to_bytes(4, "big")).decode() != crc_header:
                raise S3Error(400, "BadDigest", "The CRC32 you specified did not match the calculated checksum.")
            self._check_md5(request, target)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(target)
            raise
        return target, size, etag.hexdigest()

    def _check_md5(self, request: web.Request, target: str) -> None:
        claimed = request.headers.get("content-md5")
        if not claimed:
            return
        try:
            want = base64.b64decode(claimed, validate=True)
        except binascii.Error:
            raise S3Error(400, "InvalidDigest", "The Content-MD5 you specified was invalid.") from None
        digest = hashlib.md5(usedforsecurity=False)
        with open(target, "rb") as fh:
            while chunk := fh.read(READ_CHUNK):
                digest.update(chunk)
        if digest.digest() != want:
            raise S3Error(400, "BadDigest", "The Content-MD5 you specified did not match what we received.")

    @staticmethod
    def _metadata(request: web.Request) -> dict[str, str]:
        return {name[len("x-amz-meta-"):].lower(): value for name, value in request.headers.items()
                if name.lower().startswith("x-amz-meta-")}

    async def _put_object(self, request: web.Request, pacer: Pacer, bucket: str, key: str,
                          payload_hash: str) -> web.StreamResponse:
        self.store.bucket(bucket)
        written, size, etag = await self._receive(request, pacer, payload_hash)
        info = ObjectInfo(key, size, etag, time.time(), [Segment(written, size)],
                          request.headers.get("content-type", "binary/octet-stream"), self._metadata(request))
        self.store.commit(bucket, info)
        return web.Response(status=200, headers={"ETag": f'"{etag}"'})

    async def _get_object(self, request: web.Request, pacer: Pacer, bucket: str, key: str) -> web.StreamResponse:
        info = self.store.get(bucket, key)
        etag = f'"{info.etag}"'
        if_match = request.headers.get("if-match")
        if if_match and if_match.strip() not in ("*", etag, info.etag):
            raise S3Error(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
        if_none_match = request.headers.get("if-none-match")
        if if_none_match and if_none_match.strip() in ("*", etag, info.etag):
            return web.Response(status=304, headers={"ETag": etag})
        span = parse_range(request.headers.get("range"), info.size)
        start, end = span if span is not None else (0, info.size - 1)
        count = max(0, end - start + 1)
        headers = {"ETag": etag, "Last-Modified": formatdate(info.last_modified, usegmt=True),
                   "Accept-Ranges": "bytes", "Content-Type": info.content_type}
        headers.update({f"x-amz-meta-{k}": v for k, v in info.metadata.items()})
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
        response = web.StreamResponse(status=206 if span is not None else 200, headers=headers)
        response.content_length = count
        if request.method == "HEAD":
            response.content_length = info.size if span is None else count
            await response.prepare(request)
            return response
        # Open now, in the same event-loop step as the lookup: a concurrent overwrite or delete
        # then only unlinks files we already hold.
        with ExitStack() as files:
            pieces = []
            base = 0
            for segment in info.segments:
                lo, hi = max(start, base), min(start + count, base + segment.size)
                if lo < hi:
                    pieces.append((files.enter_context(open(segment.path, "rb")), lo - base, hi - lo))
                base += segment.size
            await response.prepare(request)
            for body, offset, length in pieces:
                await self._send(request, response, pacer, body, offset, length)
        await response.write_eof()
        return response

    async def _send(self, request: web.Request, response: web.StreamResponse, pacer: Pacer, body: Any,
                    offset: int, count: int) -> None:
        transport = request.transport
        if not pacer.shaping and transport is not None and count > 0:
            pacer.stats.bytes_out += count
            try:
                await asyncio.get_running_loop().sendfile(transport, body, offset, count)
                return
            except NotImplementedError:
                pacer.stats.bytes_out -= count                  # fall through to the copying path
        body.seek(offset)
        step = SHAPING_CHUNK if pacer.shaping else READ_CHUNK
        while count > 0:
            chunk = body.read(min(step, count))
            if not chunk:
                break
            await pacer.outbound(len(chunk))
            await response.write(chunk)
            count -= len(chunk)

    # -- listings ------------------------------------------------------------------

    def _list_buckets(self) -> web.Response:
        items = "".join(f"<Bucket><Name>{_x(b.name)}</Name><CreationDate>{_iso(b.created)}</CreationDate></Bucket>"
                        for b in sorted(self.store.buckets.values(), key=lambda b: b.name))
        return xml_response(f'<ListAllMyBucketsResult xmlns="{XMLNS}">{OWNER}<Buckets>{items}</Buckets>'
                            "</ListAllMyBucketsResult>")

    def _list_objects(self, bucket: str, query: Any) -> web.Response:
        v2 = query.get("list-type") == "2"
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        encode = query.get("encoding-type") == "url"
        try:
            max_keys = max(0, min(1000, int(query.get("max-keys", "1000"))))
        except ValueError:
            raise S3Error(400, "InvalidArgument", "max-keys must be an integer") from None
        if v2 and "continuation-token" in query:
            try:
                after = base64.urlsafe_b64decode(query["continuation-token"].encode()).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise S3Error(400, "InvalidArgument", "The continuation token provided is incorrect") from None
        else:
            after = query.get("start-after" if v2 else "marker", "")
        listing = self.store.list(bucket, prefix, after, delimiter, max_keys)

        def out(value: str) -> str:
            return _x(quote(value, safe="/") if encode else value)

        parts = [f'<ListBucketResult xmlns="{XMLNS}"><Name>{_x(bucket)}</Name><Prefix>{out(prefix)}</Prefix>',
                 f"<MaxKeys>{max_keys}</MaxKeys><IsTruncated>{str(listing.truncated).lower()}</IsTruncated>"]
        if delimiter:
            parts.append(f"<Delimiter>{out(delimiter)}</Delimiter>")
        if encode:
            parts.append("<EncodingType>url</EncodingType>")
        if v2:
            parts.append(f"<KeyCount>{len(listing.objects) + len(listing.common_prefixes)}</KeyCount>")
            if "continuation-token" in query:
                parts.append(f"<ContinuationToken>{_x(query['continuation-token'])}</ContinuationToken>")
            if "start-after" in query:
                parts.append(f"<StartAfter>{out(query['start-after'])}</StartAfter>")
            if listing.truncated and listing.last is not None:
                token = base64.urlsafe_b64encode(listing.last.encode()).decode()
                parts.append(f"<NextContinuationToken>{token}</NextContinuationToken>")
        else:
            parts.append(f"<Marker>{out(query.get('marker', ''))}</Marker>")
            if listing.truncated and delimiter and listing.last is not None:
                parts.append(f"<NextMarker>{out(listing.last)}</NextMarker>")
        for info in listing.objects:
            parts.append(f"<Contents><Key>{out(info.key)}</Key><LastModified>{_iso(info.last_modified)}</LastModified>"
                         f"<ETag>&quot;{info.etag}&quot;</ETag><Size>{info.size}</Size>"
                         f"<StorageClass>STANDARD</StorageClass></Contents>")
        parts.extend(f"<CommonPrefixes><Prefix>{out(p)}</Prefix></CommonPrefixes>" for p in listing.common_prefixes)
        parts.append("</ListBucketResult>")
        return xml_response("".join(parts))

    async def _delete_objects(self, request: web.Request, bucket: str) -> web.Response:
        self.store.bucket(bucket)
        root = await read_xml(request)
        quiet = (_text(root, "Quiet") or "").lower() == "true"
        objects = _children(root, "Object")
        if len(objects) > 1000:
            raise S3Error(400, "MalformedXML", "At most 1000 keys per DeleteObjects request")
        deleted = []
        for obj in objects:
            key = _text(obj, "Key")
            if key is None:
                raise S3Error(400, "MalformedXML", "Object without Key")
            self.store.delete(bucket, key)
            deleted.append(key)
        body = "" if quiet else "".join(f"<Deleted><Key>{_x(k)}</Key></Deleted>" for k in deleted)
        return xml_response(f'<DeleteResult xmlns="{XMLNS}">{body}</DeleteResult>')

    # -- multipart -----------------------------------------------------------------

    def _create_upload(self, request: web.Request, bucket: str, key: str) -> web.Response:
        upload = self.store.create_upload(bucket, key, request.headers.get("content-type", "binary/octet-stream"),
                                          self._metadata(request))
        return xml_response(f'<InitiateMultipartUploadResult xmlns="{XMLNS}"><Bucket>{_x(bucket)}</Bucket>'
                            f"<Key>{_x(key)}</Key><UploadId>{upload.upload_id}</UploadId>"
                            "</InitiateMultipartUploadResult>")

    async def _upload_part(self, request: web.Request, pacer: Pacer, bucket: str, key: str,
                           payload_hash: str) -> web.Response:
        upload = self.store.upload(bucket, key, request.query["uploadId"])
        try:
            number = int(request.query["partNumber"])
        except ValueError:
            raise S3Error(400, "InvalidArgument", "partNumber must be an integer") from None
        written, size, etag = await self._receive(request, pacer, payload_hash)
        self.store.commit_part(upload, number, written, etag, size)
        return web.Response(status=200, headers={"ETag": f'"{etag}"'})

    async def _complete_upload(self, request: web.Request, bucket: str, key: str, upload_id: str) -> web.Response:
        upload = self.store.upload(bucket, key, upload_id)
        root = await read_xml(request)
        listed = []
        for part in _children(root, "Part"):
            number, etag = _text(part, "PartNumber"), _text(part, "ETag")
            if number is None or etag is None or not number.isdigit():
                raise S3Error(400, "MalformedXML", "Part needs PartNumber and ETag")
            listed.append((int(number), etag))
        numbers = self.store.check_completion(upload, listed)
        segments, etag = self.store.assemble(upload, numbers)
        info = ObjectInfo(key, sum(s.size for s in segments), etag, time.time(), segments,
                          upload.content_type, upload.metadata)
        try:
            self.store.commit(bucket, info)
        finally:
            self.store.finish_upload(upload)
        return xml_response(f'<CompleteMultipartUploadResult xmlns="{XMLNS}"><Location>/{_x(bucket)}/{_x(key)}'
                            f"</Location><Bucket>{_x(bucket)}</Bucket><Key>{_x(key)}</Key>"
                            f"<ETag>&quot;{etag}&quot;</ETag></CompleteMultipartUploadResult>")


class FileSink:
    """Writes a request body to a file off the event loop: once the page cache's dirty limit is
    reached a write blocks at disk speed, and a blocked loop would stall every other request.
    Chunks are batched into one ``writev`` per ``WRITE_BATCH`` bytes; at most one batch is in
    the worker thread and one filling, so a request holds at most about 2 x WRITE_BATCH."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.batch: list[bytes] = []
        self.batched = 0
        self.pending: asyncio.Future[None] | None = None

    async def add(self, chunk: bytes) -> None:
        self.batch.append(chunk)
        self.batched += len(chunk)
        if self.batched >= WRITE_BATCH:
            await self._flush()

    async def _flush(self) -> None:
        if self.pending is not None:
            await self.pending
            self.pending = None
        if self.batch:
            batch, self.batch, self.batched = self.batch, [], 0
            self.pending = asyncio.get_running_loop().run_in_executor(None, _write_all, self.fd, batch)

    async def flush(self) -> None:
        await self._flush()
        await self.settle()

    async def settle(self) -> None:
        """Wait for the write in flight, if any (also on the error path)."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            await asyncio.shield(pending)


def _write_all(fd: int, chunks: list[bytes]) -> None:
    views = [memoryview(c) for c in chunks]
    while views:
        written = os.writev(fd, views[:IOV_MAX])
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


async def body_chunks(request: web.Request, pacer: Pacer) -> AsyncIterator[bytes]:
    """The request body as it arrives, paced through the request's token buckets."""
    async for chunk in request.content.iter_any():
        await pacer.inbound(len(chunk))
        yield chunk


async def drain(request: web.Request) -> None:
    """Read and drop an unread request body, so a keep-alive connection stays in sync."""
    if request.can_read_body:
        async for _ in request.content.iter_any():
            pass


async def read_xml(request: web.Request) -> ET.Element:
    if (request.content_length or 0) > MAX_XML_BODY:
        raise S3Error(400, "MaxMessageLengthExceeded", "Your request was too big.")
    raw = await request.content.read(MAX_XML_BODY + 1)
    if len(raw) > MAX_XML_BODY:
        raise S3Error(400, "MaxMessageLengthExceeded", "Your request was too big.")
    try:
        return ET.fromstring(raw)
    except ET.ParseError:
        raise S3Error(400, "MalformedXML", "The XML you provided was not well-formed") from None

