# The compiled codec's C entry points for the other compiled modules: declarations only, so a
# cimport of this file adds no import at run time (the table itself travels as a capsule).
#
# _codec.pyx fills one CodecAPI and exports it as the capsule ``_codec._C_API``. A module that
# wants it imports its own package's ``_codec`` relatively (a vendored copy never reaches another
# installed kitex_fast) and takes the pointer with PyCapsule_GetPointer(capsule, CODEC_API_NAME),
# checking ``version``. Entries are only ever appended and none changes meaning: version N holds
# every entry up to the one marked N, so a user checks ``version >= `` the one it needs.

from libc.stdint cimport int32_t

cdef extern from *:
    """
    #define KF_CODEC_API_NAME "kitex_fast._codec._C_API"
    """
    const char* CODEC_API_NAME "KF_CODEC_API_NAME"

ctypedef struct CodecAPI:
    int version
    # The head (framing + TTHeader + message header) of a CALL message with this seq id, written
    # to ``out`` when it fits in ``cap`` bytes; returns its size either way (-1: an exception,
    # the same one RequestEncoder.encode raises). ``body_at``: where the args body starts.
    Py_ssize_t (*encode_head)(object encoder, const unsigned char* message, Py_ssize_t size,
                              long long seq_id, unsigned char* out, Py_ssize_t cap,
                              Py_ssize_t* body_at) except -1
    # RequestEncoder.is_plain_reply: 1 or 0 (-1: an exception, for a wrong encoder type).
    int (*is_plain_reply)(object encoder, object frame, long long seq_id) except -1
    # FrameDecoder.get_buffer / buffer_updated for a connection that reads into the decoder:
    # free space at ``*out`` (its size returned) and the complete frames after ``nbytes`` landed.
    Py_ssize_t (*recv_space)(object decoder, char** out) except -1
    list (*data_received)(object decoder, Py_ssize_t nbytes)
    # Version 2. parse_message's seq id: the strict-binary message header at the start of
    # ``message[0:size]`` checked as parse_message checks it (its ProtocolError otherwise), the
    # seq id stored in ``*seq_id``; returns 0 (-1: an exception).
    int (*message_seq_id)(const unsigned char* message, Py_ssize_t size, int32_t* seq_id) except -1
