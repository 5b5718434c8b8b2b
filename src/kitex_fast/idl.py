"""JSON <-> Thrift through an IDL file: what ``kitex-fast call --idl`` and ``kitex-fast serve --idl``
build on. Needs thriftpy2 (the optional extra ``pip install 'kitex_fast[idl]'``), which parses the
IDL and writes and reads the binary protocol; this module only maps JSON values onto the IDL's types.
Nothing else in kitex_fast imports it, so ``import kitex_fast`` never needs thriftpy2.

The JSON follows Kitex's own JSON generic client (``generic.JSONThriftGeneric``, checked against it
in ``tests/interop/test_cli_interop.py``):

- a struct is an object keyed by field name; a method's request is the value of its argument (as in
  Kitex, where a method takes one request struct); a method with several arguments takes an object
  keyed by argument name (Kitex's JSON client can only set the first one);
- ``i64`` is a JSON number, exact beyond 2^53 (Python integers are unbounded); a string of digits is
  accepted too, as Kitex accepts it;
- ``binary`` is base64; ``set`` and ``list`` are arrays; a map with non-string keys is an object whose
  keys are the keys' JSON texts (``{"12": ...}`` for ``map<i64, ...>``);
- an enum is written as its number; read, a number or a name (``"BLUE"``: Kitex silently sends 0
  for a name, so this is stricter and more useful).

Unlike Kitex, a value that does not fit its type (a string for an ``i32``, ``200`` for a ``byte``,
an unknown field) is an :class:`IdlError` naming the path, never wrapped or dropped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import re
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from . import codec as _codec
from .errors import KitexError, quoted

__all__ = ["IdlError", "IdlService", "IdlMethod", "Outcome", "load_service"]


class IdlError(KitexError, ValueError):
    """The IDL cannot be loaded, names no such service or method, or a JSON value does not fit it."""


def _thriftpy2() -> Any:
    try:
        import thriftpy2
    except ImportError:
        raise IdlError(
            "calls through an IDL need thriftpy2: pip install 'kitex_fast[idl]' (or thriftpy2)"
        ) from None
    return thriftpy2


# thriftpy2's type codes (thriftpy2.thrift.TType): BINARY is its own code for the IDL's `binary`,
# written on the wire as a string (11).
T_BOOL, T_BYTE, T_DOUBLE, T_I16, T_I32, T_I64 = 2, 3, 4, 6, 8, 10
T_STRING, T_STRUCT, T_MAP, T_SET, T_LIST, T_BINARY = 11, 12, 13, 14, 15, 18
_INT_RANGES = {T_BYTE: 8, T_I16: 16, T_I32: 32, T_I64: 64}
_TYPE_NAMES = {
    T_BOOL: "bool", T_BYTE: "byte", T_DOUBLE: "double", T_I16: "i16", T_I32: "i32", T_I64: "i64",
    T_STRING: "string", T_STRUCT: "struct", T_MAP: "map", T_SET: "set", T_LIST: "list",
    T_BINARY: "binary",
}
_INTEGER_TEXT = re.compile(r"-?[0-9]+\Z")


def _split(spec: Any) -> Tuple[int, Any]:
    """A thriftpy2 type reference: ``ttype`` or ``(ttype, argument)``."""
    if isinstance(spec, tuple):
        return spec[0], spec[1]
    return spec, None


def _field_type(field: Tuple[Any, ...]) -> Tuple[int, Any]:
    """A thriftpy2 field spec ``(ttype, name, [argument,] required)`` -> ``(ttype, argument)``."""
    return (field[0], field[2]) if len(field) == 4 else (field[0], None)


def _type_text(ttype: int, arg: Any) -> str:
    if ttype == T_I32 and arg is not None:
        return "enum %s" % arg.__name__
    if ttype == T_STRUCT:
        return "%s" % arg.__name__
    if ttype in (T_LIST, T_SET):
        return "%s<%s>" % (_TYPE_NAMES[ttype], _type_text(*_split(arg)))
    if ttype == T_MAP:
        return "map<%s, %s>" % (_type_text(*_split(arg[0])), _type_text(*_split(arg[1])))
    return _TYPE_NAMES.get(ttype, str(ttype))


# -- JSON -> thriftpy2 values ----------------------------------------------------------------------


def _bad(path: str, expected: str, value: Any) -> IdlError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return IdlError("%s: expected %s, got %s" % (path or "value", expected, shown))


def _to_int(ttype: int, value: Any, path: str) -> int:
    if isinstance(value, str) and _INTEGER_TEXT.match(value.strip()):
        text = value.strip()
        if len(text.lstrip("-").lstrip("0")) > 19:  # past any i64; int() refuses > 4,300 digits
            raise IdlError("%s: %s does not fit a %s" % (path or "value", quoted(text), _TYPE_NAMES[ttype]))
        number = int(text)  # Kitex accepts i64 as a string (JS clients cannot send 2^53+)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        raise _bad(path, _TYPE_NAMES[ttype], value)
    bits = _INT_RANGES[ttype]
    if not -(1 << (bits - 1)) <= number < (1 << (bits - 1)):
        raise IdlError("%s: %d does not fit a %s" % (path or "value", number, _TYPE_NAMES[ttype]))
    return number


def to_thrift(ttype: int, arg: Any, value: Any, path: str = "") -> Any:
    """The thriftpy2 value of type ``(ttype, arg)`` for the JSON ``value``."""
    if ttype == T_BOOL:
        if isinstance(value, bool):
            return value
        raise _bad(path, "bool (true or false)", value)
    if ttype == T_I32 and arg is not None:  # an enum
        names = arg._NAMES_TO_VALUES
        if isinstance(value, str) and value in names:
            return names[value]
        try:
            return _to_int(T_I32, value, path)
        except IdlError:
            raise _bad(path, "enum %s: one of %s or a number" % (arg.__name__, ", ".join(names)), value) from None
    if ttype in _INT_RANGES:
        return _to_int(ttype, value, path)
    if ttype == T_DOUBLE:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # "NaN", "Infinity": what JSON cannot write as a number
            except ValueError:
                pass
        raise _bad(path, "double", value)
    if ttype == T_STRING:
        if isinstance(value, str):
            return value
        raise _bad(path, "string", value)
    if ttype == T_BINARY:
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                pass
        raise _bad(path, "binary as a base64 string", value)
    if ttype == T_STRUCT:
        return struct_from_json(arg, value, path)
    if ttype in (T_LIST, T_SET):
        if not isinstance(value, list):
            raise _bad(path, "%s as an array" % _type_text(ttype, arg), value)
        etype, earg = _split(arg)
        items = [to_thrift(etype, earg, item, "%s[%d]" % (path, i)) for i, item in enumerate(value)]
        return items
    if ttype == T_MAP:
        if not isinstance(value, dict):
            raise _bad(path, "%s as an object" % _type_text(ttype, arg), value)
        (ktype, karg), (vtype, varg) = _split(arg[0]), _split(arg[1])
        return {
            _key_from_json(ktype, karg, key, path): to_thrift(vtype, varg, item, "%s[%r]" % (path, key))
            for key, item in value.items()
        }
    raise IdlError("%s: thrift type %s is not supported" % (path or "value", ttype))


def _key_from_json(ktype: int, karg: Any, key: str, path: str) -> Any:
    """A map key from its JSON object key (always a string in JSON)."""
    where = "%s key %r" % (path or "map", key)
    if ktype == T_BOOL:
        if key in ("true", "false"):
            return key == "true"
        raise _bad(where, "bool key (\"true\" or \"false\")", key)
    if ktype in (T_LIST, T_SET, T_MAP, T_STRUCT):
        raise IdlError("%s: %s keys cannot be written as JSON object keys" % (path or "map", _type_text(ktype, karg)))
    return to_thrift(ktype, karg, key, where)  # numbers and enums parse from their text


def struct_from_json(cls: Any, value: Any, path: str = "") -> Any:
    """A thriftpy2 struct instance of ``cls`` from a JSON object keyed by field name."""
    if not isinstance(value, dict):
        raise _bad(path, "%s as an object" % cls.__name__, value)
    fields = {spec[1]: spec for spec in cls.thrift_spec.values()}
    unknown = [key for key in value if key not in fields]
    if unknown:
        raise IdlError(
            "%s: %s has no field %s (fields: %s)"
            % (path or "value", cls.__name__, ", ".join(map(repr, unknown)), ", ".join(fields))
        )
    kwargs = {}
    for name, item in value.items():
        if item is None:
            continue  # null: leave the field unset, as if absent
        ttype, arg = _field_type(fields[name])
        kwargs[name] = to_thrift(ttype, arg, item, "%s.%s" % (path, name) if path else name)
    for name, spec in fields.items():
        if spec[-1] is True and kwargs.get(name) is None:
            # a missing `required` field goes out as its zero value, as Kitex's JSON generic
            # client writes it (it writes every non-optional field, zero when the JSON lacks
            # it: seen against Kitex v0.16.3), not as an error
            kwargs[name] = _zero(*_field_type(spec))
    return cls(**kwargs)


def _zero(ttype: int, arg: Any) -> Any:
    if ttype == T_BOOL:
        return False
    if ttype == T_DOUBLE:
        return 0.0
    if ttype == T_STRING:
        return ""
    if ttype == T_BINARY:
        return b""
    if ttype == T_STRUCT:
        return struct_from_json(arg, {})
    if ttype in (T_LIST, T_SET):
        return []
    if ttype == T_MAP:
        return {}
    return 0


# -- thriftpy2 values -> JSON ----------------------------------------------------------------------


def _key_to_json(ktype: int, key: Any) -> str:
    if ktype == T_BOOL:
        return "true" if key else "false"
    if ktype == T_BINARY:
        return base64.b64encode(key).decode("ascii")
    if ktype == T_DOUBLE:
        return repr(float(key))
    return str(key)


def to_json(ttype: int, arg: Any, value: Any) -> Any:
    """The JSON value (dicts, lists, numbers, strings) of the thriftpy2 ``value``."""
    if value is None:
        return None
    if ttype == T_BINARY or (ttype == T_STRING and isinstance(value, (bytes, bytearray))):
        # a `string` that is not UTF-8 comes back from thriftpy2 as bytes: show it as base64 too
        return base64.b64encode(bytes(value)).decode("ascii")
    if ttype == T_DOUBLE:
        number = float(value)
        return number if math.isfinite(number) else repr(number).replace("inf", "Infinity").replace("nan", "NaN")
    if ttype == T_STRUCT:
        return struct_to_json(value)
    if ttype in (T_LIST, T_SET):
        etype, earg = _split(arg)
        items = [to_json(etype, earg, item) for item in value]
        if ttype == T_SET:
            try:
                items.sort()  # thriftpy2 reads sets into a Python set: give them a stable order
            except TypeError:
                pass
        return items
    if ttype == T_MAP:
        (ktype, _), (vtype, varg) = _split(arg[0]), _split(arg[1])
        return {_key_to_json(ktype, key): to_json(vtype, varg, item) for key, item in value.items()}
    return value  # bool, integers (enums as numbers, like Kitex), string


def struct_to_json(obj: Any) -> Dict[str, Any]:
    """A JSON object of a thriftpy2 struct: fields in IDL order, unset fields left out."""
    out: Dict[str, Any] = {}
    for field_id in sorted(obj.thrift_spec):
        spec = obj.thrift_spec[field_id]
        value = getattr(obj, spec[1], None)
        if value is not None:
            ttype, arg = _field_type(spec)
            out[spec[1]] = to_json(ttype, arg, value)
    return out


# -- services and methods --------------------------------------------------------------------------


class Outcome(NamedTuple):
    """A decoded reply: ``exception`` is None for a success (``value`` is the JSON result, None for
    ``void``), else the declared exception's type name, and ``field`` its result field name."""

    value: Any
    exception: Optional[str] = None
    field: Optional[str] = None

    def as_json(self) -> Any:
        """What ``kitex-fast call`` prints: the result, or the declared exception as an object."""
        if self.exception is None:
            return self.value
        return {"exception": self.exception, "field": self.field, "value": self.value}


class IdlMethod:
    """One method of an :class:`IdlService`: encodes its CALL message from JSON, decodes its
    replies, and (for ``serve``) decodes its arguments and encodes its results."""

    def __init__(self, service: "IdlService", name: str) -> None:
        self.service = service
        self.name = name
        self.args_cls = getattr(service.thrift_service, name + "_args")
        self.result_cls = getattr(service.thrift_service, name + "_result")
        self.arguments: List[Tuple[Any, ...]] = [
            self.args_cls.thrift_spec[i] for i in sorted(self.args_cls.thrift_spec)
        ]
        self.oneway = bool(getattr(self.result_cls, "oneway", False))

    def args_from_json(self, value: Any) -> Any:
        """The args struct: the value of the only argument, or an object of them by name."""
        if len(self.arguments) == 1:
            spec = self.arguments[0]
            ttype, arg = _field_type(spec)
            if value is None:
                return self.args_cls()
            if ttype not in (T_STRUCT, T_MAP) and isinstance(value, dict) and list(value) == [spec[1]]:
                value = value[spec[1]]  # {"millis": 5} for sleep(1: i32 millis): by name is clear too
            return self.args_cls(**{spec[1]: to_thrift(ttype, arg, value, spec[1])})
        if value is None:
            value = {}
        return struct_from_json(self.args_cls, value, "")

    def encode_call(self, value: Any, seq_id: int = 0) -> bytes:
        """The complete strict-binary CALL message of this method with arguments from JSON."""
        body = _serialize(self.args_from_json(value))
        message: bytes = _codec.build_message(_codec.CALL, self.name, seq_id, body)
        return message

    def decode_reply(self, reply: bytes) -> Outcome:
        """The :class:`Outcome` of a complete REPLY message (exceptions at the Thrift message
        level are the caller's: kitex_fast's client raises them as ApplicationError)."""
        header = _codec.parse_message(reply)
        result = _deserialize(self.result_cls(), bytes(reply[header.body_offset:]))
        for field_id in sorted(self.result_cls.thrift_spec):
            spec = self.result_cls.thrift_spec[field_id]
            value = getattr(result, spec[1], None)
            if value is None:
                continue
            ttype, arg = _field_type(spec)
            if field_id == 0:
                return Outcome(to_json(ttype, arg, value))
            return Outcome(to_json(ttype, arg, value), type(value).__name__, spec[1])
        return Outcome(None)

    # -- the server side (``kitex-fast serve --idl``) -------------------------------------------

    def decode_args(self, body: bytes) -> Dict[str, Any]:
        """The arguments of a request's args struct, by name (thriftpy2 values)."""
        args = _deserialize(self.args_cls(), bytes(body))
        return {spec[1]: getattr(args, spec[1], None) for spec in self.arguments}

    def encode_result(self, value: Any) -> bytes:
        """The result struct of a successful call returning ``value``."""
        if 0 in self.result_cls.thrift_spec:
            return _serialize(self.result_cls(success=value))
        return _serialize(self.result_cls())

    def encode_exception(self, exc: BaseException) -> Optional[bytes]:
        """The result struct carrying ``exc`` if it is one of the declared exceptions, else None."""
        for field_id, spec in self.result_cls.thrift_spec.items():
            if field_id != 0 and len(spec) == 4 and isinstance(exc, spec[2]):
                return _serialize(self.result_cls(**{spec[1]: exc}))
        return None


class IdlService:
    """A service of a Thrift IDL file, loaded with thriftpy2.

    :param path: the ``.thrift`` file (includes are resolved next to it and in ``include_dirs``).
    :param service: the service name; may be omitted when the file declares one service.
    """

    def __init__(self, path: str, service: Optional[str] = None, include_dirs: Optional[List[str]] = None) -> None:
        thriftpy2 = _thriftpy2()
        if not os.path.isfile(path):
            raise IdlError("IDL file %r does not exist" % path)
        stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
        # One module name per file (thriftpy2 caches modules by name, and insists on "_thrift").
        tag = hashlib.sha1(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()[:10]
        try:
            self.module = thriftpy2.load(path, module_name="kitex_fast_idl_%s_%s_thrift" % (stem, tag), include_dirs=include_dirs)
        except Exception as exc:  # noqa: BLE001 - thriftpy2 raises its own parse errors
            raise IdlError("cannot load IDL %s: %s: %s" % (path, type(exc).__name__, exc)) from None
        services = {
            name: obj
            for name, obj in vars(self.module).items()
            if isinstance(obj, type) and hasattr(obj, "thrift_services")
        }
        if service is None:
            if len(services) != 1:
                raise IdlError(
                    "%s declares %s; name one as Service/method"
                    % (path, "no service" if not services else "services " + ", ".join(sorted(services)))
                )
            service = next(iter(services))
        if service not in services:
            raise IdlError("%s has no service %r (services: %s)" % (path, service, ", ".join(sorted(services)) or "none"))
        self.path = path
        self.name = service
        self.thrift_service = services[service]
        self.methods: Tuple[str, ...] = tuple(self.thrift_service.thrift_services)
        self._methods: Dict[str, IdlMethod] = {}

    def method(self, name: str) -> IdlMethod:
        """The method ``name``; an IdlError listing the methods if there is none."""
        found = self._methods.get(name)
        if found is None:
            if name not in self.methods:
                raise IdlError(
                    "service %s in %s has no method %r (methods: %s)"
                    % (self.name, self.path, name, ", ".join(self.methods))
                )
            found = self._methods[name] = IdlMethod(self, name)
        return found

    def handlers(self, target: Any) -> Dict[str, Callable[[Any], bytes]]:
        """:class:`kitex_fast.testing.KitexTestServer` handlers serving this service with
        ``target``: an object whose methods are named after the IDL's (thriftpy2's handler
        convention) and take the arguments by name, or a function called as
        ``target(method_name, **arguments)``. A raised declared exception is answered as that
        exception, anything else the way the test server answers handler errors."""

        def make(method: IdlMethod) -> Callable[[Any], bytes]:
            if hasattr(target, method.name):
                call = getattr(target, method.name)
            elif callable(target) and not isinstance(target, type):
                def call(**arguments: Any) -> Any:
                    return target(method.name, **arguments)
            else:
                call = None

            def handle(request: Any) -> bytes:
                if call is None:
                    raise NotImplementedError("the handler has no method %s" % method.name)
                try:
                    value = call(**method.decode_args(request.body))
                except Exception as exc:
                    encoded = method.encode_exception(exc)
                    if encoded is None:
                        raise
                    return encoded
                return method.encode_result(value)

            return handle

        return {name: make(self.method(name)) for name in self.methods}


def load_service(path: str, method: str) -> Tuple[IdlService, IdlMethod]:
    """``("Service/method" or "method")`` in the IDL at ``path`` -> the service and the method."""
    service_name, sep, method_name = method.rpartition("/")
    if not method_name:
        raise IdlError("--method must be Service/method or method, not %r" % method)
    service = IdlService(path, service_name if sep else None)
    return service, service.method(method_name)


def _protocol() -> Any:
    from thriftpy2.protocol import TBinaryProtocolFactory

    return TBinaryProtocolFactory()  # type: ignore[no-untyped-call]


def _serialize(obj: Any) -> bytes:
    from thriftpy2.utils import serialize

    try:
        data: bytes = serialize(obj, _protocol())
    except Exception as exc:  # noqa: BLE001 - thriftpy2 reports a missing required field, ...
        raise IdlError("cannot encode %s: %s: %s" % (type(obj).__name__, type(exc).__name__, exc)) from None
    return data


def _deserialize(obj: Any, data: bytes) -> Any:
    from thriftpy2.utils import deserialize

    try:
        return deserialize(obj, data, _protocol())
    except Exception as exc:  # noqa: BLE001 - truncated or mistyped bytes
        from .errors import ProtocolError

        raise ProtocolError(
            "cannot decode %s from %d bytes (%s): %s: %s"
            % (type(obj).__name__, len(data), data[:16].hex(" "), type(exc).__name__, exc)
        ) from None


def dumps(value: Any, *, pretty: bool) -> str:
    """JSON text as ``kitex-fast call`` prints it (UTF-8 kept readable)."""
    import json

    if pretty:
        return json.dumps(value, ensure_ascii=False, indent=2)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def parse_json(text: str, where: str) -> Any:
    """``json.loads`` with an IdlError naming where the text came from."""
    import json

    try:
        return json.loads(text)
    except ValueError as exc:
        raise IdlError("%s is not valid JSON: %s" % (where, exc)) from None

