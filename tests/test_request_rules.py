"""The I/O-free request rules, fed bytes and headers directly: chunked framing
(server/transport/framing.py), X-Forwarded-* from trusted proxies
(server/guard/forwarded.py) and the cross-site rule (server/guard/crosssite.py).
Over real sockets: tests/test_http_transport.py."""

from __future__ import annotations

import io
from email.message import Message

import pytest

from server.errors import ApiError
from server.guard import crosssite
from server.guard.access import parse_networks
from server.guard.forwarded import forwarded
from server.transport.framing import MAX_TRAILER_BYTES, body_framing, read_chunked

LOOPBACK = parse_networks("127.0.0.0/8,::1")


def headers(**fields: str | list[str]) -> Message:
    msg = Message()
    for name, value in fields.items():
        for one in value if isinstance(value, list) else [value]:
            msg[name.replace("_", "-")] = one
    return msg


def decode(raw: bytes, limit: int = 1000) -> bytes:
    return read_chunked(io.BufferedReader(io.BytesIO(raw)), limit)


def refusal(raw: bytes, limit: int = 1000) -> tuple[str, int]:
    with pytest.raises(ApiError) as info:
        decode(raw, limit)
    assert info.value.close, "a framing fault must close the connection"
    return info.value.code, info.value.status


# -- framing ---------------------------------------------------------------------------
def test_chunked_bodies_decode_with_extensions_and_trailers() -> None:
    assert decode(b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n") == b"Wikipedia"
    assert decode(b"A\r\n0123456789\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n") == b"0123456789"
    assert decode(b"0\r\n\r\n") == b""


@pytest.mark.parametrize("raw, code", [
    (b"zz\r\nab\r\n0\r\n\r\n", "chunked_invalid"),  # not hex
    (b"\r\nab\r\n0\r\n\r\n", "chunked_invalid"),  # empty size line
    (b"123456789\r\n", "chunked_invalid"),  # more than 8 hex digits
    (b"-1\r\n", "chunked_invalid"),
    (b"0x2\r\nab\r\n0\r\n\r\n", "chunked_invalid"),
    (b"2\nab\r\n0\r\n\r\n", "chunked_invalid"),  # bare LF after the size
    (b"2\r\nabXY0\r\n\r\n", "chunked_invalid"),  # data not followed by CRLF
    (b"1" + b" " * 2000 + b"\r\n", "chunked_invalid"),  # size line over 1 KiB
    (b"2\r\nab\r\n0\r\n" + b"X: y\r\n" * 40 + b"\r\n", "chunked_invalid"),  # 40 trailers
    (b"2\r\nab\r\n0\r\nX: " + b"y" * (MAX_TRAILER_BYTES + 10) + b"\r\n\r\n", "chunked_invalid"),
    (b"5\r\nab", "body_short"),  # the peer stopped mid-chunk
    (b"2\r\nab\r", "body_short"),
    (b"2\r\nab\r\n", "body_short"),  # no last chunk
    (b"2\r\nab\r\n0\r\n", "body_short"),  # no end of trailers
])
def test_malformed_chunked_bodies_are_refused(raw: bytes, code: str) -> None:
    assert refusal(raw)[0] == code


def test_decoded_size_over_the_limit_is_413_before_the_chunk_is_read() -> None:
    # The size line alone decides: the 1 MiB chunk itself is never read into memory.
    assert refusal(b"100000\r\n", limit=65536) == ("body_too_large", 413)
    many = b"".join(b"400\r\n" + b"x" * 1024 + b"\r\n" for _ in range(65)) + b"0\r\n\r\n"
    assert refusal(many, limit=65536) == ("body_too_large", 413)
    assert len(decode(many[:-(1024 + 7) - 5] + b"0\r\n\r\n", limit=65536)) == 64 * 1024


def test_framing_accepts_one_length_or_chunked_and_nothing_ambiguous() -> None:
    assert body_framing(headers(), 100) == (0, False)
    assert body_framing(headers(Content_Length="12"), 100) == (12, False)
    assert body_framing(headers(Transfer_Encoding="Chunked"), 100) == (0, True)
    cases = [(headers(Transfer_Encoding="chunked", Content_Length="5"), "length_and_chunked", 400),
             (headers(Transfer_Encoding="gzip, chunked"), "transfer_encoding", 501),
             (headers(Transfer_Encoding=["chunked", "chunked"]), "transfer_encoding", 501),
             (headers(Content_Length=["5", "5"]), "invalid_content_length", 400),
             (headers(Content_Length="101"), "body_too_large", 413)]
    for given, code, status in cases:
        with pytest.raises(ApiError) as info:
            body_framing(given, 100)
        assert (info.value.code, info.value.status, info.value.close) == (code, status, True)


# -- forwarded ---------------------------------------------------------------------------
def test_forwarded_headers_count_only_from_trusted_peers() -> None:
    h = headers(X_Forwarded_For="10.1.2.3", X_Forwarded_Host="robot.lab",
                X_Forwarded_Proto="HTTPS")
    via = forwarded("127.0.0.1", h, LOOPBACK)
    assert (via.client, via.peer, via.host, via.proto, via.via_proxy) == \
        ("10.1.2.3", "127.0.0.1", "robot.lab", "https", True)
    direct = forwarded("192.0.2.7", h, LOOPBACK)
    assert (direct.client, direct.host, direct.proto, direct.via_proxy) == \
        ("192.0.2.7", None, None, False)
    assert forwarded("127.0.0.1", h, ()).client == "127.0.0.1"  # --trusted-proxy ''
    # A dual-stack socket reports an IPv4 proxy as ::ffff:127.0.0.1.
    assert forwarded("::ffff:127.0.0.1", h, LOOPBACK).client == "10.1.2.3"


def test_forwarded_for_is_read_right_to_left_past_trusted_hops() -> None:
    chain = parse_networks("127.0.0.0/8,10.9.0.0/16")
    # The client wrote the first entry itself; only what our proxies appended counts.
    h = headers(X_Forwarded_For=["6.6.6.6, 172.16.11.50", "10.9.0.1"])
    assert forwarded("127.0.0.1", h, chain).client == "172.16.11.50"
    assert forwarded("127.0.0.1", headers(X_Forwarded_For="10.9.0.2, 10.9.0.1"),
                     chain).client == "10.9.0.2"
    assert forwarded("127.0.0.1", headers(X_Forwarded_For="junk, 10.9.0.1"),
                     chain).client == "10.9.0.1"
    assert forwarded("127.0.0.1", headers(X_Forwarded_Proto="gopher"), chain).proto is None


# -- cross-site ------------------------------------------------------------------------
@pytest.mark.parametrize("method, fields, refused", [
    ("GET", {}, False),
    ("HEAD", {}, False),
    ("POST", {}, True),  # body-less: /robot/stop from a foreign form
    ("POST", {"Content_Type": "text/plain"}, True),
    ("POST", {"Content_Type": "application/x-www-form-urlencoded"}, True),
    ("POST", {"Content_Type": "multipart/form-data; boundary=x"}, True),
    ("POST", {"Content_Type": "Text/Plain; charset=utf-8"}, True),
    ("POST", {"Content_Type": "application/json"}, False),  # needed a preflight
    ("POST", {"X_Requested_With": "robot-dashboard"}, False),
    ("POST", {"Authorization": "Bearer x"}, False),
    ("DELETE", {}, False),
    ("OPTIONS", {"Access_Control_Request_Method": "POST"}, True),
])
def test_foreign_origins_may_not_send_what_needs_no_preflight(
        method: str, fields: dict[str, str], refused: bool) -> None:
    assert crosssite.refuse_foreign(method, headers(**fields)) is refused


def test_same_origin_through_a_proxy() -> None:
    none = headers()
    assert crosssite.is_same_origin("http://10.0.0.5:8090", "10.0.0.5:8090", None, none)
    assert crosssite.is_same_origin("https://robot.lab/", "Robot.Lab", "https", none)
    assert not crosssite.is_same_origin("http://robot.lab", "robot.lab", "https", none)
    assert not crosssite.is_same_origin("http://evil.example", "robot.lab", None, none)
    assert not crosssite.is_same_origin("http://evil.example", None, None, none)
    assert crosssite.is_same_origin("http://proxy:8080", "127.0.0.1:8090", None,
                                    headers(Sec_Fetch_Site="same-origin"))
    assert not crosssite.is_same_origin("http://proxy:8080", "127.0.0.1:8090", None,
                                        headers(Sec_Fetch_Site="same-site"))
