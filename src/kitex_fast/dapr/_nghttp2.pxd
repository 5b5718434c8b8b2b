# libnghttp2's C declarations, the ones the compiled component server (_h2server.pyx) uses, kept
# apart from the connection as httptools keeps llhttp's in cparser.pxd. Declarations only: a
# cimport of this file adds no import at run time. Source: lib/includes/nghttp2/nghttp2.h (v1.52).

from libc.stdint cimport int32_t, uint8_t, uint32_t

cdef extern from "nghttp2/nghttp2.h":
    ctypedef struct nghttp2_session:
        pass
    ctypedef struct nghttp2_session_callbacks:
        pass
    ctypedef struct nghttp2_option:
        pass
    ctypedef struct nghttp2_nv:
        uint8_t *name
        uint8_t *value
        size_t namelen
        size_t valuelen
        uint8_t flags
    ctypedef struct nghttp2_frame_hd:
        size_t length
        int32_t stream_id
        uint8_t type
        uint8_t flags
    ctypedef enum nghttp2_headers_category:
        NGHTTP2_HCAT_REQUEST
    ctypedef struct nghttp2_headers:
        nghttp2_frame_hd hd
        nghttp2_headers_category cat
    ctypedef union nghttp2_frame:
        nghttp2_frame_hd hd
        nghttp2_headers headers
    ctypedef union nghttp2_data_source:
        int fd
        void *ptr
    ctypedef ssize_t (*nghttp2_data_source_read_callback)(
        nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
        uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
    ctypedef struct nghttp2_data_provider:
        nghttp2_data_source source
        nghttp2_data_source_read_callback read_callback
    ctypedef struct nghttp2_settings_entry:
        int32_t settings_id
        uint32_t value

    ctypedef int (*nghttp2_on_begin_headers_callback)(nghttp2_session*, const nghttp2_frame*, void*)
    ctypedef int (*nghttp2_on_header_callback)(nghttp2_session*, const nghttp2_frame*, const uint8_t*,
                                               size_t, const uint8_t*, size_t, uint8_t, void*)
    ctypedef int (*nghttp2_on_frame_recv_callback)(nghttp2_session*, const nghttp2_frame*, void*)
    ctypedef int (*nghttp2_on_frame_send_callback)(nghttp2_session*, const nghttp2_frame*, void*)
    ctypedef int (*nghttp2_on_data_chunk_recv_callback)(nghttp2_session*, uint8_t, int32_t,
                                                        const uint8_t*, size_t, void*)
    ctypedef int (*nghttp2_on_stream_close_callback)(nghttp2_session*, int32_t, uint32_t, void*)
    ctypedef int (*nghttp2_on_frame_not_send_callback)(nghttp2_session*, const nghttp2_frame*, int, void*)

    int NGHTTP2_DATA
    int NGHTTP2_HEADERS
    int NGHTTP2_SETTINGS
    int NGHTTP2_FLAG_ACK
    int NGHTTP2_INTERNAL_ERROR
    int NGHTTP2_REFUSED_STREAM
    int NGHTTP2_FLAG_NONE
    int NGHTTP2_FLAG_END_STREAM
    int NGHTTP2_NV_FLAG_NONE
    int NGHTTP2_NO_ERROR
    int NGHTTP2_PROTOCOL_ERROR
    int NGHTTP2_CANCEL
    int NGHTTP2_ENHANCE_YOUR_CALM
    int NGHTTP2_ERR_DEFERRED
    int NGHTTP2_ERR_CALLBACK_FAILURE
    int NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
    int NGHTTP2_DATA_FLAG_EOF
    int NGHTTP2_DATA_FLAG_NO_END_STREAM
    int NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
    int NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE

    int nghttp2_session_callbacks_new(nghttp2_session_callbacks **callbacks_ptr)
    void nghttp2_session_callbacks_del(nghttp2_session_callbacks *callbacks)
    void nghttp2_session_callbacks_set_on_begin_headers_callback(nghttp2_session_callbacks*, nghttp2_on_begin_headers_callback)
    void nghttp2_session_callbacks_set_on_header_callback(nghttp2_session_callbacks*, nghttp2_on_header_callback)
    void nghttp2_session_callbacks_set_on_frame_recv_callback(nghttp2_session_callbacks*, nghttp2_on_frame_recv_callback)
    void nghttp2_session_callbacks_set_on_frame_send_callback(nghttp2_session_callbacks*, nghttp2_on_frame_send_callback)
    void nghttp2_session_callbacks_set_on_data_chunk_recv_callback(nghttp2_session_callbacks*, nghttp2_on_data_chunk_recv_callback)
    void nghttp2_session_callbacks_set_on_stream_close_callback(nghttp2_session_callbacks*, nghttp2_on_stream_close_callback)
    void nghttp2_session_callbacks_set_on_frame_not_send_callback(nghttp2_session_callbacks*, nghttp2_on_frame_not_send_callback)
    int nghttp2_session_server_new(nghttp2_session **session_ptr, const nghttp2_session_callbacks *callbacks, void *user_data)
    void nghttp2_session_del(nghttp2_session *session)
    ssize_t nghttp2_session_mem_recv(nghttp2_session *session, const uint8_t *data, size_t inlen)
    ssize_t nghttp2_session_mem_send(nghttp2_session *session, const uint8_t **data_ptr)
    int nghttp2_session_want_read(nghttp2_session *session)
    int nghttp2_session_want_write(nghttp2_session *session)
    int nghttp2_session_resume_data(nghttp2_session *session, int32_t stream_id)
    int32_t nghttp2_session_get_last_proc_stream_id(nghttp2_session *session)
    int nghttp2_submit_settings(nghttp2_session *session, uint8_t flags, const nghttp2_settings_entry *iv, size_t niv)
    int nghttp2_submit_response(nghttp2_session *session, int32_t stream_id, const nghttp2_nv *nva,
                                size_t nvlen, const nghttp2_data_provider *data_prd)
    int nghttp2_submit_trailer(nghttp2_session *session, int32_t stream_id, const nghttp2_nv *nva, size_t nvlen)
    int nghttp2_submit_rst_stream(nghttp2_session *session, uint8_t flags, int32_t stream_id, uint32_t error_code)
    int nghttp2_submit_shutdown_notice(nghttp2_session *session)
    int nghttp2_submit_goaway(nghttp2_session *session, uint8_t flags, int32_t last_stream_id,
                              uint32_t error_code, const uint8_t *opaque_data, size_t opaque_data_len)
    const char *nghttp2_strerror(int lib_error_code)
