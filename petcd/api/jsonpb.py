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
    """Parse the first JSON value of body as Go's json.Decoder reads a
    request (what follows that value is never looked at), with Go's words
    for what it refuses."""
    start = _skip_ws(body, 0)
    if start == len(body):
        raise JsonError("unexpected EOF")
    if body[start] == 0x7B:
        # The usual body: Python's C decoder, where it reads a value exactly
        # as Go's scanner does (an object: inside one, a value must end at
        # "," or "}"; no NaN or Infinity; valid UTF-8); anything it refuses
        # goes to the scanner for Go's words.
        try:
            return _FAST.raw_decode(body.decode("utf-8"), start)[0]
        except ValueError:  # (UnicodeDecodeError and JSONDecodeError included)
            pass
    return scanned(body, start)


def scanned(body: bytes, start: int = 0) -> Any:
    """loads without its fast path: the first JSON value of body from
    start (not whitespace) found by Go's scanner rules, then decoded."""
    end = scan_value(body, start, "unexpected EOF")
    # Go reads strings with invalid UTF-8 as U+FFFD
    return _DECODER.decode(body[start:end].decode("utf-8", "replace"))


_WS = b" \t\r\n"
_HEX = frozenset(b"0123456789abcdefABCDEF")
_DIGITS = frozenset(b"0123456789")
_LITERALS = {ord("t"): b"true", ord("f"): b"false", ord("n"): b"null"}


def _skip_ws(data: bytes, i: int) -> int:
    n = len(data)
    while i < n and data[i] in _WS:
        i += 1
    return i


def _bad(c: int, where: str) -> JsonError:
    return JsonError(f"invalid character {_go_char(c)} {where}")


_UNMARSHAL_EOF = "unexpected end of JSON input"


def scan_value(data: bytes, i: int, eof: str) -> int:
    """The end of the JSON value starting at data[i] (not whitespace), by
    the rules and in the words of Go's encoding/json scanner; eof is the
    error for input that ends inside the value (the Decoder's "unexpected
    EOF", Unmarshal's "unexpected end of JSON input"; Unmarshal, which ends
    its input with a space, names that space when a number or a literal is
    cut short)."""
    n = len(data)
    # containers open: b"{" (expecting a key next), b":" (a value in an
    # object), b"[" (a value in an array)
    stack: list[int] = []
    while True:
        # -- a value begins at i --
        i = _skip_ws(data, i)
        if i >= n:
            raise JsonError(eof)
        c = data[i]
        if c == ord("{"):
            i = _skip_ws(data, i + 1)
            if i >= n:
                raise JsonError(eof)
            if data[i] == ord("}"):
                i += 1
            else:
                if data[i] != ord('"'):
                    raise _bad(data[i], "looking for beginning of object key string")
                i = _scan_string(data, i, eof)
                i = _after_key(data, i, eof)
                stack.append(ord(":"))
                continue
        elif c == ord("["):
            i = _skip_ws(data, i + 1)
            if i >= n:
                raise JsonError(eof)
            if data[i] == ord("]"):
                i += 1
            else:
                stack.append(ord("["))
                continue
        elif c == ord('"'):
            i = _scan_string(data, i, eof)
        elif c == ord("-") or c in _DIGITS:
            i = _scan_number(data, i, eof)
        elif c in _LITERALS:
            word = _LITERALS[c]
            for k in range(1, len(word)):
                got = data[i + k] if i + k < n else (0x20 if eof == _UNMARSHAL_EOF else None)
                if got is None:
                    raise JsonError(eof)
                if got != word[k]:
                    raise _bad(got, f"in literal {word.decode()} (expecting {_go_char(word[k])})")
            i += len(word)
        else:
            raise _bad(c, "looking for beginning of value")
        # -- a value ended at i --
        while True:
            if not stack:
                return i
            i = _skip_ws(data, i)
            if i >= n:
                raise JsonError(eof)
            c = data[i]
            if stack[-1] == ord(":"):
                if c == ord(","):
                    i = _skip_ws(data, i + 1)
                    if i >= n:
                        raise JsonError(eof)
                    if data[i] != ord('"'):
                        raise _bad(data[i], "looking for beginning of object key string")
                    i = _after_key(data, _scan_string(data, i, eof), eof)
                    break
                if c == ord("}"):
                    stack.pop()
                    i += 1
                    continue
                raise _bad(c, "after object key:value pair")
            if c == ord(","):
                i += 1
                break
            if c == ord("]"):
                stack.pop()
                i += 1
                continue
            raise _bad(c, "after array element")


def _after_key(data: bytes, i: int, eof: str) -> int:
    i = _skip_ws(data, i)
    if i >= len(data):
        raise JsonError(eof)
    if data[i] != ord(":"):
        raise _bad(data[i], "after object key")
    return i + 1


def _scan_string(data: bytes, i: int, eof: str) -> int:
    """data[i] is the opening quote; the index after the closing one."""
    n = len(data)
    i += 1
    while i < n:
        c = data[i]
        if c == ord('"'):
            return i + 1
        if c == ord("\\"):
            i += 1
            if i >= n:
                break
            e = data[i]
            if e == ord("u"):
                for k in range(1, 5):
                    if i + k >= n:
                        raise JsonError(eof)
                    if data[i + k] not in _HEX:
                        raise _bad(data[i + k], "in \\u hexadecimal character escape")
                i += 4
            elif e not in b'bfnrt\\/"':
                raise _bad(e, "in string escape code")
        elif c < 0x20:
            raise _bad(c, "in string literal")
        i += 1
    raise JsonError(eof)


def _scan_number(data: bytes, i: int, eof: str) -> int:
    n = len(data)

    def at(k: int) -> int:
        if k < n:
            return data[k]
        if eof == _UNMARSHAL_EOF:
            return 0x20
        raise JsonError(eof)

    if data[i] == ord("-"):
        i += 1
        if at(i) not in _DIGITS:
            raise _bad(at(i), "in numeric literal")
    if data[i] == ord("0"):
        i += 1
    else:
        while i < n and data[i] in _DIGITS:
            i += 1
    if i < n and data[i] == ord("."):
        i += 1
        if at(i) not in _DIGITS:
            raise _bad(at(i), "after decimal point in numeric literal")
        while i < n and data[i] in _DIGITS:
            i += 1
    if i < n and data[i] in b"eE":
        i += 1
        if i < n and data[i] in b"+-":
            i += 1
        if at(i) not in _DIGITS:
            raise _bad(at(i), "in exponent of numeric literal")
        while i < n and data[i] in _DIGITS:
            i += 1
    return i


def _unmarshal_check(data: bytes) -> None:
    """What Go's json.Unmarshal refuses in data before decoding it: not
    exactly one value with only whitespace around it."""
    eof = _UNMARSHAL_EOF
    start = _skip_ws(data, 0)
    if start == len(data):
        raise JsonError(eof)
    end = _skip_ws(data, scan_value(data, start, eof))
    if end < len(data):
        raise _bad(data[end], "after top-level value")


def _go_syntax_error(text: str, exc: json.JSONDecodeError) -> str:
    """Go's words for a document Python's decoder refused."""
    data = text.encode("utf-8", "surrogatepass")
    try:
        start = _skip_ws(data, 0)
        end = scan_value(data, start, "unexpected EOF")
    except JsonError as err:
        return str(err)
    end = _skip_ws(data, end)
    if end < len(data):
        return str(_bad(data[end], "after top-level value"))
    return exc.msg


def _go_char(c: int | str) -> str:
    """A byte as Go's scanner quotes it in an error (quoteChar): the byte
    read as a code point, in strconv.Quote's escapes, between single quotes."""
    if isinstance(c, str):
        c = c.encode("utf-8", "surrogatepass")[0]
    if c == ord("'"):
        return "'\\''"
    if c == ord('"'):
        return "'\"'"
    return "'" + _go_quote_rune(c) + "'"


_GO_ESCAPE_NAMES = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v", 92: "\\\\"}


def _go_quote_rune(c: int) -> str:
    if c in _GO_ESCAPE_NAMES:
        return _GO_ESCAPE_NAMES[c]
    if c < 0x20 or c == 0x7F:
        return f"\\x{c:02x}"
    if 0x80 <= c <= 0xA0 or c == 0xAD:  # not printable to Go (controls, no-break space, soft hyphen)
        return f"\\u{c:04x}"
    return chr(c)


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
    if obj is None:
        return msg  # (Go reads null into the map as no fields at all)
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
                # Go's jsonpb reads every repeated field (of messages, strings,
                # enums alike) into a []json.RawMessage before its elements
                raise _mismatch(value, "[]json.RawMessage")
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
        # a \\u escape of half a surrogate pair is U+FFFD to Go (a pair is one character already)
        return _LONE_SURROGATE.sub("\ufffd", v)
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
        if isinstance(v, float):  # a fraction or an exponent: Go quotes the number
            raise JsonError(f"json: cannot unmarshal number {getattr(v, 'text', _go_float(v))} "
                            f"into Go value of type {_go_type(fd)}")
        if isinstance(v, int) and not isinstance(v, bool):
            if not -(1 << 31) <= v < (1 << 31):  # an enum is an int32
                raise JsonError(f"json: cannot unmarshal number {v} into Go value of type {_go_type(fd)}")
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
        # jsonpb takes integers quoted as well: what is inside the quotes is
        # read by json.Unmarshal (whitespace around it allowed)
        inner = v.encode("utf-8", "surrogatepass")
        _unmarshal_check(inner)
        text = inner.strip(_WS).decode("utf-8", "replace")
        m = _JSON_NUMBER.fullmatch(text)
        if m is None:
            if text == "null":
                return 0
            kind = {"t": "bool", "f": "bool", '"': "string", "[": "array", "{": "object"}.get(text[:1], "value")
            raise JsonError(f"json: cannot unmarshal {kind} into Go value of type {go}")
        if m.group(1) or m.group(2):
            raise JsonError(f"json: cannot unmarshal number {text} into Go value of type {go}")
        n = int(text)
        v = text
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


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
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
    """Standard base64 with padding, as Go's StdEncoding decodes it (CR and
    LF are skipped, the last quantum's unused bits need not be zero); Go's
    message names the first bad byte."""
    raw = s.encode("utf-8", "surrogatepass")
    bad = _base64_error_at(raw)
    if bad is not None:
        raise JsonError(f"illegal base64 data at input byte {bad}")
    return binascii.a2b_base64(raw.replace(b"\r", b"").replace(b"\n", b""))


def _base64_error_at(src: bytes) -> int | None:
    """Where Go's StdEncoding.Decode reports src corrupt, or None: a walk
    over quanta of four symbols, newlines skipped, "=" allowed only as the
    third and fourth symbol of the last quantum."""
    n = len(src)
    si = 0
    while True:
        j = 0
        while j < 4:
            if si == n:
                return None if j == 0 else si - j
            c = src[si]
            si += 1
            if c in _B64:
                j += 1
                continue
            if c in b"\r\n":
                continue
            if c != ord("=") or j < 2:
                return si - 1
            if j == 2:  # "==" must end the quantum
                while si < n and src[si] in b"\r\n":
                    si += 1
                if si == n:
                    return n
                if src[si] != ord("="):
                    return si - 1
                si += 1
            while si < n and src[si] in b"\r\n":
                si += 1
            return si if si < n else None


def parse(body: bytes, msg: M) -> M:
    """A request message from a JSON body."""
    return from_obj(loads(body), msg)


_DECODER = json.JSONDecoder(parse_float=_Number)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_FAST = json.JSONDecoder(parse_float=_Number, parse_constant=_no_constant)


class ObjectStream:
    """Splits a streamed body into the JSON objects it carries, one after
    another (a body may hold several, with or without separators)."""

    def __init__(self, limit: int = 1 << 30) -> None:
        self.limit = limit  # characters an unfinished object may hold
        self.buf = ""
        self.pending = b""
        self.decoder = json.JSONDecoder(parse_float=_Number)
        self.error: JsonError | None = None

    def feed(self, data: bytes) -> list[Any]:
        """The complete objects now available; raises JsonError on garbage
        (once the objects before it have been returned)."""
        if self.error is not None:
            raise self.error
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
                error = JsonError(_go_syntax_error(stripped, exc))
                if out:
                    # the objects before it are read first, as Go's decoder
                    # reads one at a time; the error is the next read's
                    self.error = error
                    self.buf = ""
                    return out
                raise error from None
            out.append(obj)
            self.buf = stripped[end:]

