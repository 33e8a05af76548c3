"""etcd's JSON mapping of its protobuf messages, as its grpc-gateway prints
and reads them (gogo jsonpb with OrigName, no defaults emitted):

- fields named as in the .proto (``prev_kv``, ``ID``, ``dbSize``), in field
  number order; fields at their zero value left out;
- 64-bit integers as decimal strings, 32-bit ones as numbers, bytes as
  standard base64, enums by name;
- strings escaped as Go's encoding/json escapes them (``<``, ``>``, ``&``,
  U+2028 and U+2029 as ``\\uXXXX``, other text as UTF-8).

Reading accepts the .proto name or the lowerCamelCase JSON name, 64-bit
integers as numbers or strings, enums by name or number, ignores unknown
fields, and refuses what Go's decoder refuses with Go's message (a number
where bytes belong, base64 that does not decode).
"""

from __future__ import annotations

import binascii
import json
import re
from base64 import b64encode
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_F = FieldDescriptor
# Descriptors come as protobuf's Python classes or upb's, which mypy tells apart.
FieldDesc = Any
MessageDesc = Any
_INT64 = frozenset({_F.TYPE_INT64, _F.TYPE_UINT64, _F.TYPE_SINT64, _F.TYPE_FIXED64, _F.TYPE_SFIXED64})
_INT32 = frozenset({_F.TYPE_INT32, _F.TYPE_UINT32, _F.TYPE_SINT32, _F.TYPE_FIXED32, _F.TYPE_SFIXED32})
_UNSIGNED = frozenset({_F.TYPE_UINT64, _F.TYPE_FIXED64, _F.TYPE_UINT32, _F.TYPE_FIXED32})
_GO_INT_TYPE = {
    _F.TYPE_INT64: "int64", _F.TYPE_SINT64: "int64", _F.TYPE_SFIXED64: "int64",
    _F.TYPE_UINT64: "uint64", _F.TYPE_FIXED64: "uint64",
    _F.TYPE_INT32: "int32", _F.TYPE_SINT32: "int32", _F.TYPE_SFIXED32: "int32",
    _F.TYPE_UINT32: "uint32", _F.TYPE_FIXED32: "uint32",
}
_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


M = TypeVar("M", bound=Message)


class JsonError(Exception):
    """A request body etcd's gateway would refuse; str() is Go's message."""


# --- writing ---------------------------------------------------------------------------


def to_obj(msg: Message) -> dict[str, Any]:
    """msg as the JSON object etcd prints (before serialisation)."""
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        if fd.is_repeated:
            out[fd.name] = [_value(fd, v) for v in value]
        else:
            out[fd.name] = _value(fd, value)
    return out


def _value(fd: FieldDesc, v: Any) -> Any:
    t = fd.type
    if t == _F.TYPE_MESSAGE:
        return to_obj(v)
    if t in _INT64:
        return str(v)
    if t == _F.TYPE_BYTES:
        return b64encode(v).decode("ascii")
    if t == _F.TYPE_ENUM:
        assert fd.enum_type is not None
        ev = fd.enum_type.values_by_number.get(v)
        return ev.name if ev is not None else v
    return v


def dumps(obj: Any) -> bytes:
    """Compact JSON as Go's encoding/json writes it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).translate(_GO_ESCAPES).encode("utf-8")


def to_json(msg: Message) -> bytes:
    return dumps(to_obj(msg))


# --- reading ---------------------------------------------------------------------------


def loads(body: bytes) -> Any:
    """Parse one JSON document, with Go's wording for the common errors."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonError("invalid character looking for beginning of value") from None
    if not text.strip():
        raise JsonError("unexpected EOF")
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise JsonError(_go_syntax_error(text, exc)) from None


def _go_syntax_error(text: str, exc: json.JSONDecodeError) -> str:
    if exc.pos >= len(text.rstrip()):
        return "unexpected EOF"
    ch = text[exc.pos]
    if exc.msg.startswith("Expecting property name"):
        return f"invalid character {_go_char(ch)} looking for beginning of object key string"
    if exc.msg.startswith("Extra data"):
        return f"invalid character {_go_char(ch)} after top-level value"
    if exc.msg.startswith("Expecting ',' delimiter") and text.lstrip().startswith("{"):
        return f"invalid character {_go_char(ch)} after object key:value pair"
    if exc.msg.startswith("Expecting ':' delimiter"):
        return f"invalid character {_go_char(ch)} after object key"
    return f"invalid character {_go_char(ch)} looking for beginning of value"


def _go_char(ch: str) -> str:
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    return f"'{ch}'"


def _json_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


def _go_type(fd: FieldDesc) -> str:
    t = fd.type
    if t == _F.TYPE_BYTES:
        return "[]uint8"
    if t == _F.TYPE_STRING:
        return "string"
    if t == _F.TYPE_BOOL:
        return "bool"
    if t in _GO_INT_TYPE:
        return _GO_INT_TYPE[t]
    if t == _F.TYPE_ENUM:
        return _go_message_type(fd.enum_type)
    if t == _F.TYPE_MESSAGE:
        return _go_message_type(fd.message_type)
    return "value"


def _go_message_type(d: Any) -> str:
    pkg = d.file.package
    return f"{pkg}.{d.full_name[len(pkg) + 1:].replace('.', '_')}" if pkg else d.full_name


def _mismatch(v: Any, go_type: str) -> JsonError:
    kind = _json_kind(v)
    return JsonError(f"json: cannot unmarshal {kind} into Go value of type {go_type}")


def from_obj(obj: Any, msg: M) -> M:
    """Fill msg from a parsed JSON object; returns msg."""
    d = msg.DESCRIPTOR
    if not isinstance(obj, dict):
        # gogo's jsonpb reads every object into a map first
        raise _mismatch(obj, "map[string]json.RawMessage")
    by_name = d.fields_by_name
    by_json = _json_names(d)
    for key, value in obj.items():
        fd = by_name.get(key) or by_json.get(key)
        if fd is None or value is None:
            continue  # unknown fields are ignored, as etcd's gateway does
        if fd.is_repeated:
            if not isinstance(value, list):
                raise _mismatch(value, "[]" + _go_type(fd))
            target = getattr(msg, fd.name)
            for item in value:
                if fd.type == _F.TYPE_MESSAGE:
                    from_obj(item, target.add())
                else:
                    target.append(_scalar(fd, item))
        elif fd.type == _F.TYPE_MESSAGE:
            sub = getattr(msg, fd.name)
            sub.SetInParent()
            from_obj(value, sub)
        else:
            setattr(msg, fd.name, _scalar(fd, value))
    return msg


_JSON_NAMES: dict[str, dict[str, FieldDesc]] = {}


def _json_names(d: MessageDesc) -> dict[str, FieldDesc]:
    got = _JSON_NAMES.get(d.full_name)
    if got is None:
        got = _JSON_NAMES[d.full_name] = {fd.json_name: fd for fd in d.fields}
    return got


def _scalar(fd: FieldDesc, v: Any) -> Any:
    t = fd.type
    if t == _F.TYPE_BYTES:
        if not isinstance(v, str):
            raise _mismatch(v, "[]uint8")
        return decode_base64(v)
    if t == _F.TYPE_STRING:
        if not isinstance(v, str):
            raise _mismatch(v, "string")
        return v
    if t == _F.TYPE_BOOL:
        if not isinstance(v, bool):
            raise _mismatch(v, "bool")
        return v
    if t in _INT64 or t in _INT32:
        return _integer(fd, v)
    if t == _F.TYPE_ENUM:
        if isinstance(v, str):
            assert fd.enum_type is not None
            ev = fd.enum_type.values_by_name.get(v)
            if ev is None:
                raise JsonError(f"unknown value {json.dumps(v)} for enum {_go_type(fd)}")
            return ev.number
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        raise _mismatch(v, _go_type(fd))
    if t in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _mismatch(v, "float64")
        return float(v)
    raise JsonError(f"unsupported field {fd.full_name}")


def _integer(fd: FieldDesc, v: Any) -> int:
    go = _GO_INT_TYPE[fd.type]
    bits = 64 if "64" in go else 32
    unsigned = fd.type in _UNSIGNED
    if isinstance(v, bool):
        raise _mismatch(v, go)
    if isinstance(v, str):
        # jsonpb takes integers quoted as well: the inside is read as a JSON number
        if not v:
            raise JsonError("unexpected end of JSON input")
        m = _JSON_NUMBER.match(v)
        if m is None:
            raise JsonError(f"invalid character {_go_char(v[0])} looking for beginning of value")
        if m.end() < len(v):
            raise JsonError(f"invalid character {_go_char(v[m.end()])} after top-level value")
        if m.group(1) or m.group(2):
            raise JsonError(f"json: cannot unmarshal number {v} into Go value of type {go}")
        n = int(v)
    elif isinstance(v, float):
        raise JsonError(f"json: cannot unmarshal number {getattr(v, 'text', _go_float(v))} into Go value of type {go}")
    elif isinstance(v, int):
        n = v
    else:
        raise _mismatch(v, go)
    lo, hi = (0, (1 << bits) - 1) if unsigned else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    if not lo <= n <= hi:
        raise JsonError(f"json: cannot unmarshal number {v} into Go value of type {go}")
    return n


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


class _Number(float):
    """A JSON number with a fraction or exponent, remembering its text (Go's
    errors quote it as written)."""

    text: str

    def __new__(cls, text: str) -> _Number:
        obj = super().__new__(cls, float(text))
        obj.text = text
        return obj


def _go_float(v: float) -> str:
    text = repr(v)
    return text[:-2] if text.endswith(".0") else text


_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def decode_base64(s: str) -> bytes:
    """Standard base64 with padding, strictly, as Go's StdEncoding decodes
    it (CR and LF are skipped); Go's message names the first bad byte."""
    raw = s.encode("utf-8", "surrogatepass").replace(b"\r", b"").replace(b"\n", b"")
    try:
        return binascii.a2b_base64(raw, strict_mode=True)
    except (binascii.Error, ValueError):
        pass
    for i, c in enumerate(raw):
        if c not in _B64:
            if c == ord("=") and i >= len(raw) - 2 and len(raw) % 4 == 0 and i % 4 >= 2:
                continue
            raise JsonError(f"illegal base64 data at input byte {i}")
    raise JsonError(f"illegal base64 data at input byte {len(raw) - len(raw) % 4 if len(raw) % 4 else len(raw)}")


def parse(body: bytes, msg: M) -> M:
    """A request message from a JSON body."""
    return from_obj(loads(body), msg)


_DECODER = json.JSONDecoder(parse_float=_Number)


class ObjectStream:
    """Splits a streamed body into the JSON objects it carries, one after
    another (a body may hold several, with or without separators)."""

    def __init__(self, limit: int = 1 << 30) -> None:
        self.limit = limit  # characters an unfinished object may hold
        self.buf = ""
        self.pending = b""
        self.decoder = json.JSONDecoder(parse_float=_Number)

    def feed(self, data: bytes) -> list[Any]:
        """The complete objects now available; raises JsonError on garbage."""
        raw = self.pending + data
        try:
            text = raw.decode("utf-8")
            self.pending = b""
        except UnicodeDecodeError as exc:
            if exc.start < len(raw) - 3:
                raise JsonError("invalid character looking for beginning of value") from None
            text, self.pending = raw[: exc.start].decode("utf-8"), raw[exc.start:]
        self.buf += text
        out: list[Any] = []
        while True:
            stripped = self.buf.lstrip()
            if not stripped:
                self.buf = ""
                return out
            try:
                obj, end = self.decoder.raw_decode(stripped)
            except json.JSONDecodeError as exc:
                if exc.pos >= len(stripped) or exc.msg.startswith("Unterminated string"):
                    if len(stripped) > self.limit:
                        raise JsonError(f"request object larger than {self.limit} bytes") from None
                    self.buf = stripped
                    return out  # wait for more
                raise JsonError(_go_syntax_error(stripped, exc)) from None
            out.append(obj)
            self.buf = stripped[end:]

