"""Type stubs for the compiled codec core (same API as ``_codec_py``)."""

from typing_extensions import disjoint_base
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

_BytesLike = Union[bytes, bytearray, memoryview]

# The same list as _codec_py.__all__, the source list (a stub's __all__ must be a literal):
# tests/unit/test_codec_exports.py compares the two, and stubtest compares this stub with the
# compiled module.
__all__ = [
    "MessageHeader",
    "Frame",
    "FrameDecoder",
    "RequestEncoder",
    "parse_message",
    "rewrite_message",
    "encode_frame",
    "build_message",
    "find_struct_end",
    "decode_application_exception",
    "encode_application_exception",
    "CALL",
    "REPLY",
    "EXCEPTION",
    "ONEWAY",
    "TRANSPORTS",
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_I32",
    "INT_KEY_TRANSPORT_TYPE",
    "INT_KEY_LOG_ID",
    "INT_KEY_FROM_SERVICE",
    "INT_KEY_TO_SERVICE",
    "INT_KEY_TO_METHOD",
    "INT_KEY_RPC_TIMEOUT",
    "INT_KEY_MSG_TYPE",
    "STR_KEY_IDL_SERVICE",
    "STR_KEY_CONN_RESET",
    "STR_KEY_BIZ_STATUS",
    "STR_KEY_BIZ_MESSAGE",
    "STR_KEY_BIZ_EXTRA",
    "TRANSIENT_PREFIX",
    "PERSISTENT_PREFIX",
]

CALL: int
REPLY: int
EXCEPTION: int
ONEWAY: int
TRANSPORTS: Tuple[str, str, str, str]
DEFAULT_MAX_FRAME_SIZE: int
MAX_I32: int
INT_KEY_TRANSPORT_TYPE: int
INT_KEY_LOG_ID: int
INT_KEY_FROM_SERVICE: int
INT_KEY_TO_SERVICE: int
INT_KEY_TO_METHOD: int
INT_KEY_RPC_TIMEOUT: int
INT_KEY_MSG_TYPE: int
STR_KEY_IDL_SERVICE: str
STR_KEY_CONN_RESET: str
STR_KEY_BIZ_STATUS: str
STR_KEY_BIZ_MESSAGE: str
STR_KEY_BIZ_EXTRA: str
TRANSIENT_PREFIX: str
PERSISTENT_PREFIX: str

@disjoint_base
class MessageHeader:
    def __init__(self, type: int, name: str, seq_id: int, body_offset: int) -> None: ...
    @property
    def type(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def seq_id(self) -> int: ...
    @property
    def body_offset(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@disjoint_base
class Frame:
    def __init__(
        self,
        payload: bytes,
        transport: str,
        seq_id: Optional[int] = ...,
        flags: int = ...,
        str_headers: Optional[Mapping[str, str]] = ...,
        int_headers: Optional[Mapping[int, str]] = ...,
        acl_token: Optional[str] = ...,
    ) -> None: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def transport(self) -> str: ...
    @property
    def seq_id(self) -> Optional[int]: ...
    @property
    def flags(self) -> int: ...
    @property
    def str_headers(self) -> Mapping[str, str]: ...
    @property
    def int_headers(self) -> Mapping[int, str]: ...
    @property
    def acl_token(self) -> Optional[str]: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...

@disjoint_base
class FrameDecoder:
    def __init__(self, transport: str, *, max_frame_size: int = ...) -> None: ...
    @property
    def pending(self) -> int: ...
    def feed(self, data: _BytesLike) -> List[Frame]: ...
    def get_buffer(self, sizehint: int = ...) -> memoryview: ...
    def buffer_updated(self, nbytes: int) -> List[Frame]: ...

@disjoint_base
class RequestEncoder:
    def __init__(
        self,
        transport: str,
        *,
        name: Optional[Union[str, bytes]] = ...,
        str_headers: Optional[Dict[str, str]] = ...,
        int_headers: Optional[Dict[int, str]] = ...,
        acl_token: Optional[str] = ...,
        validate: bool = ...,
        max_frame_size: Optional[int] = ...,
    ) -> None: ...
    @property
    def transport(self) -> str: ...
    def encode(
        self,
        message: _BytesLike,
        seq_id: int,
        str_headers: Optional[Mapping[str, str]] = None,
        int_headers: Optional[Mapping[int, str]] = None,
    ) -> List[Union[bytes, memoryview]]: ...
    def is_plain_reply(self, frame: Frame, seq_id: int) -> bool: ...

def parse_message(buf: _BytesLike) -> MessageHeader: ...
def rewrite_message(
    buf: _BytesLike, *, seq_id: int, name: Optional[Union[str, bytes]] = ...
) -> List[Union[bytes, memoryview]]: ...
def encode_frame(
    transport: str,
    message: Union[_BytesLike, Sequence[_BytesLike]],
    *,
    seq_id: int,
    str_headers: Optional[Dict[str, str]] = ...,
    int_headers: Optional[Dict[int, str]] = ...,
    acl_token: Optional[str] = ...,
) -> List[_BytesLike]: ...
def build_message(
    mtype: int, name: Union[str, bytes], seq_id: int, body: _BytesLike = ...
) -> bytes: ...
def find_struct_end(buf: _BytesLike, offset: int = ...) -> int: ...
def decode_application_exception(message: _BytesLike) -> Tuple[int, str]: ...
def encode_application_exception(type_code: int, text: Union[str, bytes]) -> bytes: ...
