"""etcd's JSON mapping (petcd/api/jsonpb.py), byte for byte as etcd's
gateway prints it, and its reading rules."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from petcd.api import jsonpb
from petcd.proto import kv_pb2, rpc_pb2


def test_output_matches_etcd() -> None:
    resp = rpc_pb2.RangeResponse(count=1)
    resp.header.revision = 3
    resp.header.cluster_id = 18446744073709551615
    resp.kvs.add(key=b"a<b>&", value=b"", create_revision=2, version=1)
    assert jsonpb.to_json(resp) == (
        b'{"header":{"cluster_id":"18446744073709551615","revision":"3"},'
        b'"kvs":[{"key":"YTxiPiY=","create_revision":"2","version":"1"}],"count":"1"}'
    )
    ev = kv_pb2.Event(type=kv_pb2.Event.DELETE, kv=kv_pb2.KeyValue(key=b"k", mod_revision=9))
    assert jsonpb.to_json(ev) == b'{"type":"DELETE","kv":{"key":"aw==","mod_revision":"9"}}'
    assert jsonpb.to_json(rpc_pb2.HashResponse(hash=540204279)) == b'{"hash":540204279}'
    st = rpc_pb2.StatusResponse(version="3.4.23", dbSize=20480, raftIndex=10)
    assert jsonpb.to_json(st) == b'{"version":"3.4.23","dbSize":"20480","raftIndex":"10"}'
    # Go escapes HTML characters and the two line separators, and writes other text as UTF-8
    assert jsonpb.dumps({"m": "<&>\u2028é"}) == '{"m":"\\u003c\\u0026\\u003e\\u2028é"}'.encode()


def test_reading() -> None:
    r = jsonpb.parse(b'{"key":"Zm9v","rangeEnd":"AA==","limit":"5","revision":3,"sort_order":"DESCEND",'
                     b'"sortTarget":2,"keys_only":true,"unknown":{"x":1},"count_only":null}', rpc_pb2.RangeRequest())
    assert (r.key, r.range_end, r.limit, r.revision) == (b"foo", b"\0", 5, 3)
    assert (r.sort_order, r.sort_target, r.keys_only, r.count_only) == (2, 2, True, False)
    txn = jsonpb.parse(b'{"compare":[{"key":"YQ==","target":"VALUE","result":"EQUAL","value":"Yg=="}],'
                       b'"success":[{"request_put":{"key":"YQ==","value":"Yw=="}}]}', rpc_pb2.TxnRequest())
    assert txn.compare[0].value == b"b" and txn.success[0].request_put.value == b"c"


@pytest.mark.parametrize(("body", "message"), [
    (b'{"key":"!!!"}', "illegal base64 data at input byte 0"),
    (b'{"key":"Zm9v!"}', "illegal base64 data at input byte 4"),
    (b'{"key":123}', "json: cannot unmarshal number into Go value of type []uint8"),
    (b'{"keys_only":"yes"}', "json: cannot unmarshal string into Go value of type bool"),
    (b'{"limit":1.5}', "json: cannot unmarshal number 1.5 into Go value of type int64"),
    (b'{"sort_order":"SIDEWAYS"}', 'unknown value "SIDEWAYS" for enum etcdserverpb.RangeRequest_SortOrder'),
    (b"{bad", "invalid character 'b' looking for beginning of object key string"),
    (b"[1]", "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"),
    (b'{"limit":"x"}', "invalid character 'x' looking for beginning of value"),
    (b'{"limit":"99999999999999999999"}', "json: cannot unmarshal number 99999999999999999999 into Go value of type int64"),
    (b'{"revision":-1.0}', "json: cannot unmarshal number -1.0 into Go value of type int64"),
    (b'{"key":"Zm9"}', "illegal base64 data at input byte 0"),
    (b'{"key":"YQ="}', "illegal base64 data at input byte 3"),
    (b'{"key":"YWJ=YQ=="}', "illegal base64 data at input byte 4"),
    (b'{"key":tru}', "invalid character '}' in literal true (expecting 'e')"),
    (b'{"limit":1.}', "invalid character '}' after decimal point in numeric literal"),
    (b'{"limit":NaN}', "invalid character 'N' looking for beginning of value"),
    (b'{"limit":"-"}', "invalid character ' ' in numeric literal"),
    (b'{"limit":"[1"}', "unexpected end of JSON input"),
    (b'{"sort_order":99999999999}',
     "json: cannot unmarshal number 99999999999 into Go value of type etcdserverpb.RangeRequest_SortOrder"),
    (b'{"sort_order":1.0}', "json: cannot unmarshal number 1.0 into Go value of type etcdserverpb.RangeRequest_SortOrder"),
    (b"\xff{}", "invalid character '\u00ff' looking for beginning of value"),
    (b"\x01{}", "invalid character '\\x01' looking for beginning of value"),
    (b'{"key":"Zm9v"', "unexpected EOF"),
])
def test_refusals_in_gos_words(body: bytes, message: str) -> None:
    with pytest.raises(jsonpb.JsonError) as exc:
        jsonpb.parse(body, rpc_pb2.RangeRequest())
    assert str(exc.value) == message


@pytest.mark.parametrize(("body", "msg", "kind"), [
    (b'{"compare":"nope"}', rpc_pb2.TxnRequest(), "string"),
    (b'{"success":{"request_put":{}}}', rpc_pb2.TxnRequest(), "object"),
    (b'{"peerURLs":"http://a:1"}', rpc_pb2.MemberAddRequest(), "string"),
    (b'{"create_request":{"filters":1}}', rpc_pb2.WatchRequest(), "number"),
])
def test_a_repeated_field_not_an_array(body: bytes, msg: Message, kind: str) -> None:
    """Go's jsonpb reads any repeated field into a []json.RawMessage first,
    whatever its elements (etcd's gateway, seen through etcd3gw's transaction)."""
    with pytest.raises(jsonpb.JsonError) as exc:
        jsonpb.parse(body, msg)
    assert str(exc.value) == f"json: cannot unmarshal {kind} into Go value of type []json.RawMessage"


def test_object_stream() -> None:
    st = jsonpb.ObjectStream()
    assert st.feed(b'{"a":1}{"b') == [{"a": 1}]
    assert st.feed(b'":"x\xc3') == []
    assert st.feed(b'\xa9"} \n{"c":2}') == [{"b": "x\u00e9"}, {"c": 2}]
    with pytest.raises(jsonpb.JsonError):
        st.feed(b"{bad")
    # an object before the garbage is read first; the error is the next read's
    st = jsonpb.ObjectStream()
    assert st.feed(b'{"a":1} {bad') == [{"a": 1}]
    with pytest.raises(jsonpb.JsonError, match="looking for beginning of object key string"):
        st.feed(b"")


def test_first_value_only() -> None:
    # as Go's json.Decoder: what follows the first value is never read; null is no fields
    assert jsonpb.parse(b'{"key":"Zm9v"} x', rpc_pb2.RangeRequest()).key == b"foo"
    assert jsonpb.parse(b'{"key":"Zm9v"}{"key":"YQ=="}', rpc_pb2.RangeRequest()).key == b"foo"
    assert jsonpb.parse(b" null ", rpc_pb2.RangeRequest()) == rpc_pb2.RangeRequest()
    assert jsonpb.parse(b'{"limit":" 5 "}', rpc_pb2.RangeRequest()).limit == 5
    assert jsonpb.parse(b'{"name":"\\ud800!"}', rpc_pb2.AuthUserAddRequest()).name == "\ufffd!"


def _outcome(read: object, body: bytes) -> tuple[str, str]:
    try:
        return "ok", repr(read(body))  # type: ignore[operator]
    except jsonpb.JsonError as exc:
        return "JsonError", str(exc)


def test_the_fast_path_reads_every_body_as_the_go_scanner_does() -> None:
    """loads hands the usual body to Python's C decoder and the rest to
    the Go-rules scanner: on seeded mutations of request bodies (bad
    numbers, literals, escapes, control bytes, invalid UTF-8, trailing
    data) both give the same value or the same words."""
    import random

    rng = random.Random(20261201)
    bodies = [b'{"key":"YQ==","range_end":"Yg==","limit":"5","revision":3,"sort_order":"DESCEND"}',
              b'{"key": "YmVuY2gva2V5", "value": "dmFsdWU=", "lease": 0, "prev_kv": true}',
              b'{"key":"YQ==","limit":1.5e3,"serializable":false,"keys":[1,{"a":null}]}']
    alphabet = [bytes([c]) for c in b'{}[]",:0123456789.eE+-tfnrulsaYQ=\\ \t\n\x00\x7f\xff']
    alphabet += [b"\\u00e9", b"\\ud800", b"\\udc00x", b"NaN", b"-Infinity", b"1.5e", b"\xc3"]
    fast = 0
    for _ in range(20000):
        b = bytearray(rng.choice(bodies))
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(b))
            op = rng.random()
            if op < 0.4:
                del b[pos]
            elif op < 0.7:
                b[pos:pos] = rng.choice(alphabet)
            else:
                b[pos:pos + 1] = rng.choice(alphabet)
        body = bytes(b)
        start = len(body) - len(body.lstrip(b" \t\r\n"))
        if start == len(body):
            continue
        got = _outcome(jsonpb.loads, body)
        assert got == _outcome(lambda d, s=start: jsonpb.scanned(d, s), body), body
        fast += got[0] == "ok"
    assert fast > 1000  # the comparison covered accepted bodies, not only refusals
