cimport cython
from cpython.object cimport PyObject
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef class MethodFrame:
    cdef public object channel
    cdef public object method


cdef class ContentMessage:
    cdef public object channel
    cdef public object method
    cdef public object properties
    cdef public object body


cdef class Heartbeat:
    pass


cdef class ProtocolHeader:
    cdef public object major
    cdef public object minor
    cdef public object revision


cdef class _Method:
    pass


cdef class BasicPublish(_Method):
    cdef public object exchange
    cdef public object routing_key
    cdef public object mandatory
    cdef public object immediate


cdef class BasicReturn(_Method):
    cdef public object reply_code
    cdef public object reply_text
    cdef public object exchange
    cdef public object routing_key


cdef class BasicDeliver(_Method):
    cdef public object consumer_tag
    cdef public object delivery_tag
    cdef public object redelivered
    cdef public object exchange
    cdef public object routing_key


cdef class BasicGetOk(_Method):
    cdef public object delivery_tag
    cdef public object redelivered
    cdef public object exchange
    cdef public object routing_key
    cdef public object message_count


cdef class BasicAck(_Method):
    cdef public object delivery_tag
    cdef public object multiple


cdef class BasicReject(_Method):
    cdef public object delivery_tag
    cdef public object requeue


cdef class BasicNack(_Method):
    cdef public object delivery_tag
    cdef public object multiple
    cdef public object requeue


cdef class BasicProperties:
    cdef public object content_type
    cdef public object content_encoding
    cdef public object headers
    cdef public object delivery_mode
    cdef public object priority
    cdef public object correlation_id
    cdef public object reply_to
    cdef public object expiration
    cdef public object message_id
    cdef public object timestamp
    cdef public object message_type
    cdef public object user_id
    cdef public object app_id
    cdef public object cluster_id


cdef class MessageBase:
    cdef public bint _locked
    cdef public object body
    cdef public object body_size
    cdef public object _headers
    cdef public object content_type
    cdef public object content_encoding
    cdef public object delivery_mode
    cdef public object priority
    cdef public object correlation_id
    cdef public object reply_to
    cdef public object expiration
    cdef public object message_id
    cdef public object timestamp
    cdef public object type
    cdef public object user_id
    cdef public object app_id


cdef class DeliveredBase:
    cdef public object delivery
    cdef public object properties
    cdef public object body
    cdef public object channel
    cdef public object _header


cdef class IncomingBase(MessageBase):
    cdef public bint _no_ack
    cdef public bint _processed
    cdef public object _channel
    cdef public object _delivery
    cdef public object _properties

    cdef int _take(self, delivery, properties, body, bint no_ack) except -1


cdef class _Partial:
    # A message whose content header or body frames are still due.
    cdef object method
    cdef BasicProperties properties
    cdef uint64_t size
    cdef Py_ssize_t received
    # An owned bytes object (or NULL), grown in place as frames arrive and
    # handed out when full: the body is copied once.
    cdef PyObject* body


cdef class _LastString:
    # The last short string decoded at one place of the stream: consumer
    # tags, exchanges and routing keys repeat, so decoding them once pays.
    cdef bytes raw
    cdef object value
    cdef object get(self, const uint8_t* data, Py_ssize_t size)


# final: their cdef methods are called directly (no vtable), so C inlines them
@cython.final
cdef class FrameReader:
    cdef bytearray _buffer
    cdef dict _partials
    cdef object _error
    cdef bint _started
    cdef uint64_t _frame_max
    cdef uint64_t _max_message_size
    # the open channels (a container, None: any) and the one last found in
    # it during the current feed (0: none yet), so that a run of frames on
    # one channel costs one lookup
    cdef object _channels
    cdef uint16_t _open_channel
    cdef _LastString _consumer_tags
    cdef _LastString _exchanges
    cdef _LastString _routing_keys
    cdef _LastString _content_types
    cdef list _header_keys

    cdef Py_ssize_t _top_up(self, const char* data, Py_ssize_t size) except -1
    cdef int _hold(self, const char* data, Py_ssize_t size) except -1
    cdef Py_ssize_t _parse(self, const uint8_t* data, Py_ssize_t size, list events) except -1
    cdef int _check_channel(self, uint16_t channel) except -1
    cdef object _method(self, const uint8_t* data, Py_ssize_t start, Py_ssize_t end)
    cdef dict _headers(self, const uint8_t* data, Py_ssize_t* pos, Py_ssize_t end)
    cdef BasicProperties _properties(self, const uint8_t* data, Py_ssize_t pos, Py_ssize_t end)
    cdef Py_ssize_t _whole_message(self, const uint8_t* data, Py_ssize_t size, Py_ssize_t pos,
                                   uint16_t channel, object method, list events) except -2
    cdef int _header_frame(self, const uint8_t* data, Py_ssize_t start, Py_ssize_t end,
                           uint16_t channel, list events) except -1
    cdef int _body_frame(self, const uint8_t* data, Py_ssize_t start, Py_ssize_t end,
                         uint16_t channel, list events) except -1


@cython.final
cdef class FrameWriter:
    cdef char* _buf
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef list _pieces
    cdef Py_ssize_t _pending
    cdef uint64_t _frame_max

    cdef int _reserve(self, Py_ssize_t extra) except -1
    cdef int _u8(self, uint8_t value) except -1
    cdef int _u16(self, uint16_t value) except -1
    cdef int _u32(self, uint32_t value) except -1
    cdef int _u64(self, uint64_t value) except -1
    cdef int _raw(self, const char* data, Py_ssize_t size) except -1
    cdef int _string(self, object value, object field, bint short) except -1
    cdef int _table(self, object table, object field, int depth) except -1
    cdef int _array(self, object items, int depth) except -1
    cdef int _value(self, object value, int depth) except -1
    cdef int _double(self, double value) except -1
    cdef int _decimal(self, object value) except -1
    cdef int _new_id_field(self, const uint64_t* bits) except -1
    cdef int _properties(self, object properties, const uint64_t* new_id) except -1
    cdef int _property_fields(self, content_type, content_encoding, headers, delivery_mode,
                              priority, correlation_id, reply_to, expiration, message_id,
                              timestamp, message_type, user_id, app_id, cluster_id,
                              const uint64_t* new_id) except -1
    cdef int _generic_args(self, object method) except -1
    cdef int _small(self, object channel, uint32_t index, object delivery_tag, uint8_t bits,
                    str name) except -1
    cdef int _method_args(self, object method) except -1
    cdef Py_ssize_t _open_frame(self, uint8_t kind, uint16_t channel) except -1
    cdef int _close_frame(self, Py_ssize_t start) except -1
    cdef int _content(self, uint16_t channel, object method, object body, object properties,
                      const uint64_t* new_id) except -1
    cdef int _publish_args(self, object exchange, object routing_key, bint mandatory,
                           bint immediate) except -1
    cdef int _content_frames(self, uint16_t channel, object body, object properties,
                             const uint64_t* new_id) except -1

cdef class Finished:
    pass
