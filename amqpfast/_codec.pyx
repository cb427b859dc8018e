# The compiled AMQP 0-9-1 frame codec. Its twin, _codec_py.py, is the
# readable reference: same classes, events, exceptions and bytes.

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.datetime cimport (
    PyDateTime_CheckExact, datetime_day, datetime_hour, datetime_minute, datetime_month,
    datetime_new, datetime_second, datetime_year, import_datetime)
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject, PyObject_GenericSetAttr, PyTypeObject
from cpython.ref cimport Py_XDECREF
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

import calendar
import datetime
import decimal
import os
import time

from pamqp import base as _pamqp_base

from . import _spec
from .exceptions import (
    CHANNEL_ERROR,
    FRAME_ERROR,
    NOT_IMPLEMENTED,
    RESOURCE_ERROR,
    SYNTAX_ERROR,
    UNEXPECTED_FRAME,
    ChannelNotOpenError,
    EncodeError,
    MessageTooLarge,
    ProtocolError,
)

cdef extern from *:
    """
    /* returns NULL with the exception that is set: Cython then raises it */
    static PyObject* amqpfast_pending_error(void) { return NULL; }
    """
    object _pending_error "amqpfast_pending_error" ()

cdef extern from "Python.h":
    ctypedef enum PySendResult:
        PYGEN_RETURN
        PYGEN_ERROR
        PYGEN_NEXT
    PySendResult PyIter_Send(object iterator, object arg, PyObject** presult)
    object PyContext_CopyCurrent()
    int PyContext_Enter(object context) except -1
    int PyContext_Exit(object context) except -1
    void PyErr_Fetch(PyObject** kind, PyObject** value, PyObject** traceback)
    void PyErr_Restore(PyObject* kind, PyObject* value, PyObject* traceback)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object string)
    int _PyBytes_Resize(PyObject** string, Py_ssize_t newsize) except -1
    PyObject* PyBytes_FromStringAndSize_RAW "PyBytes_FromStringAndSize" (
        const char* data, Py_ssize_t size) except NULL
    char* PyBytes_AS_STRING_RAW "PyBytes_AS_STRING" (PyObject* string)

IMPLEMENTATION = "c"

cdef enum:
    FRAME_METHOD = 1
    FRAME_HEADER = 2
    FRAME_BODY = 3
    FRAME_HEARTBEAT = 8
    FRAME_END = 0xCE
    FRAME_OVERHEAD = 8
    BASIC_CLASS_ID = 60
    BASIC_PUBLISH = 0x003C0028
    BASIC_RETURN = 0x003C0032
    BASIC_DELIVER = 0x003C003C
    BASIC_GET_OK = 0x003C0047
    BASIC_ACK = 0x003C0050
    BASIC_REJECT = 0x003C005A
    BASIC_NACK = 0x003C0078
    MAX_DEPTH = 64
    ZERO_COPY_MIN = 65536
    # header keys remembered per position, see _LastString
    CACHED_HEADER_KEYS = 8

# Method argument types, as numbered in _spec.
cdef enum:
    BIT = 0
    OCTET = 1
    SHORT = 2
    LONG = 3
    LONGLONG = 4
    SHORTSTR = 5
    LONGSTR = 6
    TABLE = 7

assert (BIT, OCTET, SHORT, LONG, LONGLONG, SHORTSTR, LONGSTR, TABLE) == (
    _spec.BIT, _spec.OCTET, _spec.SHORT, _spec.LONG, _spec.LONGLONG, _spec.SHORTSTR,
    _spec.LONGSTR, _spec.TABLE)
assert BASIC_CLASS_ID == _spec.BASIC_CLASS_ID and ZERO_COPY_MIN == _spec.ZERO_COPY_MIN

import_datetime()
cdef object _UTC = datetime.UTC
cdef object _fromtimestamp = datetime.datetime.fromtimestamp
cdef object _Decimal = decimal.Decimal
cdef object _datetime = datetime.datetime
cdef object _struct_time = time.struct_time
cdef object _timegm = calendar.timegm
cdef dict _METHODS = _spec.METHODS
cdef frozenset _CONTENT_INDEXES = frozenset(
    (_spec.BASIC_PUBLISH, _spec.BASIC_RETURN, _spec.BASIC_DELIVER, _spec.BASIC_GET_OK))
cdef type _PamqpProperties = _pamqp_base.BasicProperties
cdef tuple _PROPERTY_NAMES = _spec.PROPERTY_NAMES
cdef uint64_t _UNLIMITED = _spec.FRAME_MAX_UNLIMITED
cdef object _NOT_PERSISTENT = _spec.DeliveryMode.NOT_PERSISTENT
cdef object _PERSISTENT = _spec.DeliveryMode.PERSISTENT
cdef dict _EMPTY_TABLE = {}  # what a message without headers sends (never changed)
cdef object _delivery_mode = _spec.delivery_mode
cdef object _encode_expiration = _spec.encode_expiration
cdef object _encode_timestamp = _spec.encode_timestamp


# ------------------------------------------------------------ message ids

# Random UUID4s for messages published without a message_id, made without a
# Python call: xoshiro256** seeded from os.urandom, reseeded in a forked
# child so that parent and child never hand out the same ids.
cdef uint64_t _id_state[4]
cdef const char* _HEX = b"0123456789abcdef"


cdef inline uint64_t _rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t _next_random() noexcept nogil:
    cdef uint64_t result = _rotl(_id_state[1] * 5, 7) * 9
    cdef uint64_t t = _id_state[1] << 17
    _id_state[2] ^= _id_state[0]
    _id_state[3] ^= _id_state[1]
    _id_state[1] ^= _id_state[2]
    _id_state[0] ^= _id_state[3]
    _id_state[2] ^= t
    _id_state[3] = _rotl(_id_state[3], 45)
    return result


def _seed_message_ids():
    """Seed the message-id generator from os.urandom (at import and in a forked child)."""
    seed = os.urandom(32)
    for i in range(4):
        _id_state[i] = int.from_bytes(seed[i * 8:i * 8 + 8], "big")
    if not (_id_state[0] | _id_state[1] | _id_state[2] | _id_state[3]):
        _id_state[0] = 1  # the one state xoshiro never leaves


_seed_message_ids()
os.register_at_fork(after_in_child=_seed_message_ids)


cdef inline void _uuid4_bits(uint64_t* bits) noexcept:
    # 128 random bits with the version (4) and variant (10xx) bits of a UUID4
    bits[0] = (_next_random() & <uint64_t>0xFFFFFFFFFFFF0FFF) | <uint64_t>0x4000
    bits[1] = (_next_random() & <uint64_t>0x3FFFFFFFFFFFFFFF) | (<uint64_t>2 << 62)


cdef inline void _write_hex_id(const uint64_t* bits, char* out) noexcept:
    # the 32 hex digits of a UUID without dashes, as uuid.UUID.hex gives them
    cdef int i
    for i in range(16):
        out[i] = _HEX[(bits[0] >> (60 - 4 * i)) & 15]
        out[16 + i] = _HEX[(bits[1] >> (60 - 4 * i)) & 15]


cdef str _hex_id(const uint64_t* bits):
    cdef str text = PyUnicode_New(32, 127)
    _write_hex_id(bits, <char*>PyUnicode_DATA(text))
    return text


def new_message_id():
    """A random UUID4 in hex, as a message published without a message_id gets."""
    cdef uint64_t bits[2]
    _uuid4_bits(bits)
    return _hex_id(bits)


# ------------------------------------------------------------ byte order

cdef inline uint16_t _rd16(const uint8_t* p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]

cdef inline uint32_t _rd32(const uint8_t* p) noexcept nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16)
            | (<uint32_t>p[2] << 8) | <uint32_t>p[3])

cdef inline uint64_t _rd64(const uint8_t* p) noexcept nogil:
    return (<uint64_t>_rd32(p) << 32) | _rd32(p + 4)

cdef inline void _wr16(char* p, uint16_t v) noexcept nogil:
    p[0] = <char>(v >> 8)
    p[1] = <char>v

cdef inline void _wr32(char* p, uint32_t v) noexcept nogil:
    p[0] = <char>(v >> 24)
    p[1] = <char>(v >> 16)
    p[2] = <char>(v >> 8)
    p[3] = <char>v

cdef inline void _wr64(char* p, uint64_t v) noexcept nogil:
    _wr32(p, <uint32_t>(v >> 32))
    _wr32(p + 4, <uint32_t>v)


# ---------------------------------------------------------------- events
#
# Events, methods and properties are plain data made for every message, so
# they stay out of the cyclic garbage collector (no_gc): tracking them made
# the collector the largest cost of decoding. A reference cycle through one
# of them (a message stored in its own headers) is not collected.

@cython.freelist(256)
@cython.no_gc
cdef class MethodFrame:
    """A method frame: the channel it came on and the decoded method."""

    def __init__(self, channel, method):
        self.channel = channel
        self.method = method

    def __repr__(self):
        return f"<MethodFrame channel={self.channel} {self.method!r}>"

    def __delattr__(self, name):
        _delete_field(self, name)


@cython.freelist(256)
@cython.no_gc
cdef class ContentMessage:
    """A whole message: the method that carried it, its properties and body."""

    def __init__(self, channel, method, properties, body):
        self.channel = channel
        self.method = method
        self.properties = properties
        self.body = body

    def __repr__(self):
        return (
            f"<ContentMessage channel={self.channel} {self.method!r} "
            f"body={len(self.body)} bytes>"
        )

    def __delattr__(self, name):
        _delete_field(self, name)


cdef class Heartbeat:
    """A heartbeat frame (always on channel 0)."""

    channel = 0

    def __repr__(self):
        return "<Heartbeat>"


@cython.no_gc
cdef class ProtocolHeader:
    """The broker's protocol header: its answer when it refuses our version."""

    channel = 0

    def __init__(self, major, minor, revision):
        self.major = major
        self.minor = minor
        self.revision = revision

    def __repr__(self):
        return f"<ProtocolHeader {self.major}-{self.minor}-{self.revision}>"


cdef Heartbeat _HEARTBEAT = Heartbeat()


# ------------------------------------------------------ hot method classes

cdef class _Method:
    """Base of the hot-path methods: iteration, equality and repr."""

    name = ""
    index = 0
    synchronous = False
    _attributes = ()

    def __iter__(self):
        for attribute in self._attributes:
            yield attribute, getattr(self, attribute)

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return tuple(self) == tuple(other)

    def __ne__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return tuple(self) != tuple(other)

    __hash__ = None

    def __repr__(self):
        fields = " ".join(f"{key}={value!r}" for key, value in self)
        return f"<{self.name} {fields}>"

    def __delattr__(self, name):
        _delete_field(self, name)


@cython.no_gc
cdef class BasicPublish(_Method):
    """Basic.Publish (60, 40)."""

    name = "Basic.Publish"
    index = BASIC_PUBLISH
    _attributes = ("exchange", "routing_key", "mandatory", "immediate")

    def __init__(self, exchange="", routing_key="", mandatory=False, immediate=False):
        self.exchange = exchange
        self.routing_key = routing_key
        self.mandatory = mandatory
        self.immediate = immediate


@cython.no_gc
cdef class BasicReturn(_Method):
    """Basic.Return (60, 50): an unroutable mandatory message comes back."""

    name = "Basic.Return"
    index = BASIC_RETURN
    _attributes = ("reply_code", "reply_text", "exchange", "routing_key")

    def __init__(self, reply_code=0, reply_text="", exchange="", routing_key=""):
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.exchange = exchange
        self.routing_key = routing_key


@cython.no_gc
cdef class BasicDeliver(_Method):
    """Basic.Deliver (60, 60): a message for a consumer."""

    name = "Basic.Deliver"
    index = BASIC_DELIVER
    _attributes = ("consumer_tag", "delivery_tag", "redelivered", "exchange", "routing_key")

    def __init__(self, consumer_tag="", delivery_tag=0, redelivered=False, exchange="",
                 routing_key=""):
        self.consumer_tag = consumer_tag
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key


@cython.no_gc
cdef class BasicGetOk(_Method):
    """Basic.GetOk (60, 71): the message a Basic.Get asked for."""

    name = "Basic.GetOk"
    index = BASIC_GET_OK
    _attributes = ("delivery_tag", "redelivered", "exchange", "routing_key", "message_count")

    def __init__(self, delivery_tag=0, redelivered=False, exchange="", routing_key="",
                 message_count=0):
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key
        self.message_count = message_count


@cython.no_gc
cdef class BasicAck(_Method):
    """Basic.Ack (60, 80), in both directions (consumer acks, publisher confirms)."""

    name = "Basic.Ack"
    index = BASIC_ACK
    _attributes = ("delivery_tag", "multiple")

    def __init__(self, delivery_tag=0, multiple=False):
        self.delivery_tag = delivery_tag
        self.multiple = multiple


@cython.no_gc
cdef class BasicReject(_Method):
    """Basic.Reject (60, 90)."""

    name = "Basic.Reject"
    index = BASIC_REJECT
    _attributes = ("delivery_tag", "requeue")

    def __init__(self, delivery_tag=0, requeue=True):
        self.delivery_tag = delivery_tag
        self.requeue = requeue


@cython.no_gc
cdef class BasicNack(_Method):
    """Basic.Nack (60, 120), in both directions."""

    name = "Basic.Nack"
    index = BASIC_NACK
    _attributes = ("delivery_tag", "multiple", "requeue")

    def __init__(self, delivery_tag=0, multiple=False, requeue=True):
        self.delivery_tag = delivery_tag
        self.multiple = multiple
        self.requeue = requeue


@cython.freelist(256)
@cython.no_gc
cdef class BasicProperties:
    """The 14 properties of a message's content header (None = absent).

    The attribute names are pamqp's (``message_type`` is AMQP's ``type``).
    """

    def __init__(self, content_type=None, content_encoding=None, headers=None,
                 delivery_mode=None, priority=None, correlation_id=None, reply_to=None,
                 expiration=None, message_id=None, timestamp=None, message_type=None,
                 user_id=None, app_id=None, cluster_id=None):
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.headers = headers
        self.delivery_mode = delivery_mode
        self.priority = priority
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.expiration = expiration
        self.message_id = message_id
        self.timestamp = timestamp
        self.message_type = message_type
        self.user_id = user_id
        self.app_id = app_id
        self.cluster_id = cluster_id

    def __iter__(self):
        for attribute in _PROPERTY_NAMES:
            yield attribute, getattr(self, attribute)

    def copy(self):
        """A shallow copy (the headers dict is shared)."""
        cdef BasicProperties clone = BasicProperties.__new__(BasicProperties)
        clone.content_type = self.content_type
        clone.content_encoding = self.content_encoding
        clone.headers = self.headers
        clone.delivery_mode = self.delivery_mode
        clone.priority = self.priority
        clone.correlation_id = self.correlation_id
        clone.reply_to = self.reply_to
        clone.expiration = self.expiration
        clone.message_id = self.message_id
        clone.timestamp = self.timestamp
        clone.message_type = self.message_type
        clone.user_id = self.user_id
        clone.app_id = self.app_id
        clone.cluster_id = self.cluster_id
        return clone

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return tuple(self) == tuple(other)

    def __ne__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return tuple(self) != tuple(other)

    __hash__ = None

    def __repr__(self):
        fields = " ".join(f"{key}={value!r}" for key, value in self if value is not None)
        return f"<BasicProperties {fields}>"

    def __delattr__(self, name):
        _delete_field(self, name)


@cython.embedsignature(False)  # the docstring's first line is the signature
cdef class MessageBase:
    """MessageBase(body, *, headers=None, content_type=None, content_encoding=None, delivery_mode=None, priority=None, correlation_id=None, reply_to=None, expiration=None, message_id=None, timestamp=None, type=None, user_id=None, app_id=None)
--

    The fields of a message to publish, kept where the writer reads them.

    ``amqpfast.Message`` builds on it: made and locked here, a message costs
    no Python frame, and the writer encodes its properties straight from
    these fields (no BasicProperties in between). The first line is the
    constructor's signature, as ``inspect`` reads it from a C type.
    """

    def __init__(self, body, *, headers=None, content_type=None, content_encoding=None,
                 delivery_mode=None, priority=None, correlation_id=None, reply_to=None,
                 expiration=None, message_id=None, timestamp=None, type=None, user_id=None,
                 app_id=None):
        if not isinstance(body, bytes):
            body = bytes(body)
        # Every field starts as None (the type's allocation): only what is
        # given is set, which halves the cost of a Message with defaults.
        self.body = body
        self.body_size = len(body)
        if delivery_mode is None:
            self.delivery_mode = _NOT_PERSISTENT
        elif delivery_mode is _PERSISTENT or delivery_mode is _NOT_PERSISTENT:
            self.delivery_mode = delivery_mode  # an Enum's hash is a Python call: skipped
        else:
            self.delivery_mode = _delivery_mode(delivery_mode)
        self.priority = int(priority) if priority else 0
        if headers:
            self._headers = headers  # else {} when first read
        if content_type is not None:
            self.content_type = content_type
        if content_encoding is not None:
            self.content_encoding = content_encoding
        # aio-pika's rule: a false value is None, anything else its str()
        if correlation_id:
            self.correlation_id = str(correlation_id)
        if reply_to:
            self.reply_to = str(reply_to)
        if expiration is not None:
            self.expiration = expiration
        if message_id:
            self.message_id = str(message_id)
        if timestamp is not None:
            if isinstance(timestamp, _datetime):
                self.timestamp = timestamp
            else:
                self.timestamp = _encode_timestamp(timestamp)
        if type:
            self.type = str(type)
        if user_id:
            self.user_id = str(user_id)
        if app_id:
            self.app_id = str(app_id)

    @property
    def headers(self):
        """The headers table (a dict; empty unless given)."""
        if self._headers is None:
            self._headers = {}
        return self._headers

    @headers.setter
    def headers(self, value):
        self._headers = value

    def __setattr__(self, name, value):
        if self._locked and not name.startswith("_"):
            raise ValueError("Message is locked")
        PyObject_GenericSetAttr(self, name, value)

    def __delattr__(self, name):
        _delete_field(self, name)


@cython.embedsignature(False)  # the docstring's first line is the signature
cdef class DeliveredBase:
    """DeliveredBase(delivery, header=None, body=b'', channel=None)
--

    A message from the broker as the low level hands it on: ``delivery``
    (the method that brought it), ``properties``, ``body`` and ``channel``,
    set in C. ``amqpfast.core.DeliveredMessage`` builds on it; ``header`` is
    the decoded properties (what the codec hands in), or anything else its
    ``_take_header`` understands.
    """

    def __init__(self, delivery, header=None, body=b"", channel=None):
        self.delivery = delivery
        self.body = body
        self.channel = channel
        if type(header) is BasicProperties:
            self.properties = header
        else:
            (<object>self)._take_header(header)  # the subclass's

    def __delattr__(self, name):
        _delete_field(self, name)


@cython.embedsignature(False)  # the docstring's first line is the signature
cdef class IncomingBase(MessageBase):
    """IncomingBase(message, no_ack=False)
--

    The state of a message from the broker, set in C from the low-level
    delivery (``message``: its ``delivery``, ``properties``, ``body`` and
    ``channel``). ``amqpfast.IncomingMessage`` builds on it; ``no_ack``: the
    consumer does not acknowledge (the message is processed already).
    """

    def __init__(self, message, no_ack=False):
        cdef DeliveredBase delivered
        if isinstance(message, DeliveredBase):  # the low level's: its fields in C
            delivered = <DeliveredBase>message
            delivery = delivered.delivery
            body = delivered.body
            self._channel = delivered.channel
            properties = delivered.properties
        else:
            delivery = message.delivery
            body = message.body
            self._channel = message.channel
            properties = getattr(message, "properties", None)
        if properties is None:  # aiormq's DeliveredMessage has them in its header
            properties = message.header.properties
        self._take(delivery, properties, body, no_ack)

    cdef int _take(self, delivery, properties, body, bint no_ack) except -1:
        cdef bint done
        if type(delivery) is BasicDeliver:
            done = no_ack or not (<BasicDeliver>delivery).delivery_tag
        else:
            done = no_ack or not getattr(delivery, "delivery_tag", None)
        self._locked = done
        self._processed = done
        self._no_ack = no_ack
        self._delivery = delivery
        self._properties = properties
        self.body = body
        self.body_size = len(body)
        return 0

    # A message of the class made of a delivery's parts, as the low level has
    # them (no DeliveredMessage in between): the consumers of the aio-pika
    # API get theirs so. One method per kind of consumer: a bound argument
    # would cost more than the rest of the call.

    @classmethod
    def delivered(cls, delivery, properties, body, channel):
        """A message of a consumer that acknowledges, made of its delivery's parts."""
        return _incoming(cls, delivery, properties, body, channel, False)

    @classmethod
    def delivered_no_ack(cls, delivery, properties, body, channel):
        """A message of a ``no_ack`` consumer (processed already), made of its delivery's parts."""
        return _incoming(cls, delivery, properties, body, channel, True)

    def _mark_processed(self):
        """Acked, nacked or rejected: processed, and locked."""
        self._processed = True
        self._locked = True


cdef IncomingBase _incoming(cls, delivery, properties, body, channel, bint no_ack):
    cdef IncomingBase message = IncomingBase.__new__(cls)
    message._channel = channel
    message._take(delivery, properties, body, no_ack)
    return message


# ------------------------------------------------ fields Python reads fast
#
# Cython gives a public object field a getset descriptor, which Python's
# bytecode reads through the generic attribute lookup (~16 ns); a member
# descriptor, what __slots__ make, is read by a specialised instruction
# (~4 ns). The fields the client reads per message get a member descriptor
# in place of their getset: same name, same place in the object. Deleting
# one sets it to None, as Cython's own descriptor does (the classes'
# __delattr__): C code here reads these fields and must never find NULL.

cdef extern from "structmember.h":
    int T_OBJECT_EX

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        const char* name
        int type
        Py_ssize_t offset
        int flags
        const char* doc
    object PyDescr_NewMember(PyTypeObject* type, PyMemberDef* member)
    void PyType_Modified(PyTypeObject* type)
    int _generic_delattr "PyObject_GenericSetAttr"(object, object, PyObject*) except -1

cdef set _MEMBER_FIELDS = set()
cdef list _member_names = []  # kept alive: the member definitions point into them


cdef int _delete_field(object obj, object name) except -1:
    if name in _MEMBER_FIELDS:
        return PyObject_GenericSetAttr(obj, name, None)
    return _generic_delattr(obj, name, NULL)


cdef Py_ssize_t _field_offset(object sample, str name) except -1:
    # Where the field lives in an instance: found by a marker set through
    # the field's own (getset) descriptor.
    cdef Py_ssize_t offset
    cls = type(sample)
    marker = object()
    setattr(sample, name, marker)
    for offset in range(sizeof(PyObject), (<PyTypeObject*>cls).tp_basicsize, sizeof(void*)):
        if (<PyObject**>(<char*><void*>sample + offset))[0] == <PyObject*>marker:
            setattr(sample, name, None)
            return offset
    raise RuntimeError(f"{cls.__name__}.{name}: not found in the object")


cdef int _as_member_fields(object cls, tuple names) except -1:
    cdef PyMemberDef* member
    cdef dict namespace = <dict>(<PyTypeObject*>cls).tp_dict
    sample = cls.__new__(cls)
    for name in names:
        encoded = name.encode()
        member = <PyMemberDef*>PyMem_Malloc(sizeof(PyMemberDef))
        if member == NULL:
            raise MemoryError()
        member.name = encoded
        member.type = T_OBJECT_EX
        member.offset = _field_offset(sample, name)
        member.flags = 0
        member.doc = NULL
        _member_names.append(encoded)
        namespace[name] = PyDescr_NewMember(<PyTypeObject*>cls, member)
        _MEMBER_FIELDS.add(name)
    PyType_Modified(<PyTypeObject*>cls)
    return 0


cdef int _member_fields_everywhere() except -1:
    _as_member_fields(MethodFrame, ("channel", "method"))
    _as_member_fields(ContentMessage, ("channel", "method", "properties", "body"))
    for cls in (BasicPublish, BasicReturn, BasicDeliver, BasicGetOk, BasicAck, BasicReject,
                BasicNack):
        _as_member_fields(cls, cls._attributes)
    _as_member_fields(BasicProperties, _PROPERTY_NAMES)
    _as_member_fields(MessageBase, (
        "body", "body_size", "_headers", "content_type", "content_encoding", "delivery_mode",
        "priority", "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
        "type", "user_id", "app_id"))
    _as_member_fields(DeliveredBase, ("delivery", "properties", "body", "channel", "_header"))
    _as_member_fields(IncomingBase, ("_channel", "_delivery", "_properties"))
    return 0


_member_fields_everywhere()


# ------------------------------------------------------------- decoding

cdef inline object _truncated(str what):
    return ProtocolError(SYNTAX_ERROR, "truncated " + what)


cdef object _shortstr(const uint8_t* data, Py_ssize_t* pos, Py_ssize_t end):
    cdef Py_ssize_t p = pos[0]
    cdef Py_ssize_t size
    if p >= end:
        raise _truncated("short string")
    size = data[p]
    if size > end - p - 1:
        raise _truncated("short string")
    pos[0] = p + 1 + size
    # surrogateescape: a name that is not UTF-8 survives a round trip.
    return PyUnicode_DecodeUTF8(<const char*>data + p + 1, size, "surrogateescape")


cdef object _longstr(const uint8_t* data, Py_ssize_t* pos, Py_ssize_t end):
    cdef Py_ssize_t p = pos[0]
    cdef Py_ssize_t size
    if end - p < 4:
        raise _truncated("long string")
    size = _rd32(data + p)
    if size > end - p - 4:
        raise _truncated("long string")
    pos[0] = p + 4 + size
    try:
        return PyUnicode_DecodeUTF8(<const char*>data + p + 4, size, NULL)
    except UnicodeDecodeError:
        return PyBytes_FromStringAndSize(<const char*>data + p + 4, size)


# Days between 1970-01-01 and a date of the proleptic Gregorian calendar
# (years 0..9999 here: every operand is non-negative), and back: the
# timestamps of the properties without datetime's slower general path.
@cython.cdivision(True)
cdef inline int64_t _days_from_civil(int64_t year, int64_t month, int64_t day) noexcept:
    if month <= 2:
        year -= 1
    cdef int64_t era = year // 400
    cdef int64_t year_of_era = year - era * 400
    cdef int64_t day_of_year = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    cdef int64_t day_of_era = (
        year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year)
    return era * 146097 + day_of_era - 719468


@cython.cdivision(True)
cdef inline object _utc_datetime(uint64_t seconds):
    # seconds <= 0xFFFFFFFF: 1970..2106
    cdef int64_t days = <int64_t>(seconds // 86400) + 719468
    cdef int64_t rest = <int64_t>(seconds % 86400)
    cdef int64_t era = days // 146097
    cdef int64_t day_of_era = days - era * 146097
    cdef int64_t year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096) // 365
    cdef int64_t day_of_year = day_of_era - (
        365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    cdef int64_t shifted_month = (5 * day_of_year + 2) // 153
    cdef int64_t day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    cdef int64_t month = shifted_month + 3 if shifted_month < 10 else shifted_month - 9
    cdef int64_t year = year_of_era + era * 400 + (1 if month <= 2 else 0)
    return datetime_new(year, month, day, rest // 3600, rest % 3600 // 60, rest % 60, 0, _UTC)


cdef object _timestamp(uint64_t value):
    # Past the year 2106 a value is taken to be in milliseconds (some
    # clients send those), as pamqp does.
    if value <= 0xFFFFFFFF:
        return _utc_datetime(value)  # what fromtimestamp(value, tz=UTC) gives
    try:
        return _fromtimestamp(value / 1000.0, tz=_UTC)
    except (OverflowError, ValueError, OSError):
        raise ProtocolError(SYNTAX_ERROR, f"timestamp out of range: {value}") from None


cdef inline double _rd_double(const uint8_t* p) noexcept:
    cdef uint64_t bits = _rd64(p)
    cdef double value
    memcpy(&value, &bits, 8)
    return value


cdef inline float _rd_float(const uint8_t* p) noexcept:
    cdef uint32_t bits = _rd32(p)
    cdef float value
    memcpy(&value, &bits, 4)
    return value


cdef object _value(const uint8_t* data, Py_ssize_t* pos, Py_ssize_t end, int depth):
    cdef Py_ssize_t p = pos[0]
    cdef uint8_t kind
    cdef Py_ssize_t size
    cdef Py_ssize_t need
    if p >= end:
        raise _truncated("field value")
    kind = data[p]
    p += 1
    pos[0] = p
    if kind == b'S':
        return _longstr(data, pos, end)
    if kind == b'F':
        return _table(data, pos, end, depth + 1)
    if kind == b'A':
        return _array(data, pos, end, depth + 1)
    if kind == b'V':
        return None
    if kind == b't' or kind == b'b' or kind == b'B':
        need = 1
    elif kind == b's' or kind == b'u':
        need = 2
    elif kind == b'I' or kind == b'i' or kind == b'f':
        need = 4
    elif kind == b'D':
        need = 5
    elif kind == b'l' or kind == b'L' or kind == b'd' or kind == b'T':
        need = 8
    elif kind == b'x':
        if end - p < 4:
            raise _truncated("byte array")
        size = _rd32(data + p)
        if size > end - p - 4:
            raise _truncated("byte array")
        pos[0] = p + 4 + size
        return PyBytes_FromStringAndSize(<const char*>data + p + 4, size)
    else:
        raise ProtocolError(SYNTAX_ERROR, f"unknown field value type 0x{kind:02x}")
    if end - p < need:
        raise _truncated(f"field value of type {chr(kind)!r}")
    pos[0] = p + need
    if kind == b't':
        return data[p] != 0
    if kind == b'b':
        return <int8_t>data[p]
    if kind == b'B':
        return data[p]
    if kind == b's':
        return <int16_t>_rd16(data + p)
    if kind == b'u':
        return _rd16(data + p)
    if kind == b'I':
        return <int32_t>_rd32(data + p)
    if kind == b'i':
        return _rd32(data + p)
    if kind == b'f':
        return _rd_float(data + p)
    if kind == b'l':
        return <int64_t>_rd64(data + p)
    if kind == b'L':
        return _rd64(data + p)
    if kind == b'd':
        return _rd_double(data + p)
    if kind == b'T':
        return _timestamp(_rd64(data + p))
    # 'D': a scale octet and a signed 32-bit mantissa
    return _Decimal(<int32_t>_rd32(data + p + 1)) * (_Decimal(10) ** -(<int>data[p]))


cdef Py_ssize_t _container_end(const uint8_t* data, Py_ssize_t* pos, Py_ssize_t end,
                               int depth, str what) except -1:
    cdef Py_ssize_t p = pos[0]
    cdef Py_ssize_t size
    if depth > MAX_DEPTH:
        raise ProtocolError(SYNTAX_ERROR, f"{what} nested more than {MAX_DEPTH} deep")
    if end - p < 4:
        raise _truncated(what)
    size = _rd32(data + p)
    if size > end - p - 4:
        raise _truncated(what)
    pos[0] = p + 4
    return p + 4 + size


cdef dict _table(const uint8_t* data, Py_ssize_t* pos, Py_ssize_t end, int depth):
    cdef Py_ssize_t stop = _container_end(data, pos, end, depth, "field table")
    cdef dict table = {}
    while pos[0] < stop:
        key = _shortstr(data, pos, stop)
        table[key] = _value(data, pos, stop, depth)
    return table


cdef list _array(const uint8_t* data, Py_ssize_t* pos, Py_ssize_t end, int depth):
    cdef Py_ssize_t stop = _container_end(data, pos, end, depth, "field array")
    cdef list items = []
    while pos[0] < stop:
        items.append(_value(data, pos, stop, depth))
    return items


def decode_table(data):
    """Decode one field table (its 4-byte length first) that fills ``data``."""
    cdef Py_buffer view
    cdef Py_ssize_t pos = 0
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        table = _table(<const uint8_t*>view.buf, &pos, view.len, 0)
        if pos != view.len:
            raise ProtocolError(SYNTAX_ERROR, "trailing bytes after field table")
        return table
    finally:
        PyBuffer_Release(&view)


cdef inline object _trailing(Py_ssize_t pos, Py_ssize_t end, str name):
    return ProtocolError(SYNTAX_ERROR, f"{end - pos} trailing bytes after {name}")


cdef object _generic_method(uint32_t index, const uint8_t* data, Py_ssize_t pos,
                            Py_ssize_t end):
    # The rarely used methods: built as pamqp command objects from the
    # argument layout in _spec, with the same strict primitives.
    entry = _METHODS.get(index)
    if entry is None:
        raise ProtocolError(
            NOT_IMPLEMENTED, f"unknown method: class {index >> 16}, method {index & 0xFFFF}"
        )
    cls, fields = entry
    method = object.__new__(cls)
    cdef int bit = 8
    cdef uint8_t bits = 0
    cdef int kind
    for attribute, kind in fields:
        if kind == BIT:
            if bit == 8:
                if pos >= end:
                    raise _truncated(f"{cls.name} bits")
                bits = data[pos]
                pos += 1
                bit = 0
            setattr(method, attribute, (bits >> bit) & 1 == 1)
            bit += 1
            continue
        bit = 8
        if kind == SHORTSTR:
            value = _shortstr(data, &pos, end)
        elif kind == LONGSTR:
            value = _longstr(data, &pos, end)
        elif kind == TABLE:
            value = _table(data, &pos, end, 0)
        elif kind == OCTET:
            if end - pos < 1:
                raise _truncated("octet")
            value = data[pos]
            pos += 1
        elif kind == SHORT:
            if end - pos < 2:
                raise _truncated("short")
            value = _rd16(data + pos)
            pos += 2
        elif kind == LONG:
            if end - pos < 4:
                raise _truncated("long")
            value = _rd32(data + pos)
            pos += 4
        else:
            if end - pos < 8:
                raise _truncated("long long")
            value = _rd64(data + pos)
            pos += 8
        setattr(method, attribute, value)
    if pos != end:
        raise _trailing(pos, end, cls.name)
    return method


cdef class _LastString:
    cdef object get(self, const uint8_t* data, Py_ssize_t size):
        cdef bytes raw = self.raw
        if (raw is not None and PyBytes_GET_SIZE(raw) == size
                and memcmp(PyBytes_AS_STRING(raw), data, size) == 0):
            return self.value
        value = PyUnicode_DecodeUTF8(<const char*>data, size, "surrogateescape")
        if size <= 128:
            self.raw = PyBytes_FromStringAndSize(<const char*>data, size)
            self.value = value
        return value


cdef inline object _cached(_LastString cache, const uint8_t* data, Py_ssize_t* pos,
                           Py_ssize_t end):
    cdef Py_ssize_t p = pos[0]
    cdef Py_ssize_t size
    if p >= end:
        raise _truncated("short string")
    size = data[p]
    if size > end - p - 1:
        raise _truncated("short string")
    pos[0] = p + 1 + size
    return cache.get(data + p + 1, size)


cdef inline uint64_t _checked_frame_max(value) except? 0:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"frame_max must be 0 or between 4096 and 4294967295, not {value!r}")
    if value == 0:
        return _UNLIMITED
    if not _spec.FRAME_MIN_SIZE <= value <= 0xFFFFFFFF:
        raise ValueError(f"frame_max must be 0 or between 4096 and 4294967295, not {value!r}")
    return value


cdef inline uint64_t _checked_message_size(value) except? 0:
    if (not isinstance(value, int) or isinstance(value, bool)
            or not 0 <= value <= 0xFFFFFFFFFFFFFFFF):
        raise ValueError(
            f"max_message_size must be 0 or a positive 64-bit integer, not {value!r}"
        )
    return value


cdef object _too_large(uint64_t size, uint64_t limit, uint16_t channel):
    return MessageTooLarge(
        RESOURCE_ERROR,
        f"message of {size} bytes on channel {channel} exceeds max_message_size {limit}",
    )


cdef inline bint _carries_content(object method) noexcept:
    cdef type cls = type(method)
    return cls is BasicDeliver or cls is BasicGetOk or cls is BasicReturn or cls is BasicPublish


cdef class _Partial:
    def __dealloc__(self):
        Py_XDECREF(self.body)


cdef class FrameReader:
    """Turns the bytes received from the broker into events.

    :param frame_max: the largest frame accepted, header and end octet
        included; set it again after Connection.Tune (0 means no limit).
    :param max_message_size: the largest message body accepted; a content
        header that announces more raises :class:`MessageTooLarge` (0 means
        no limit).
    :param channels: the numbers of the open channels (any container, read
        at every feed: the connection's dict of channels); a frame on
        another channel than 0 raises :class:`ChannelNotOpenError`. None
        takes frames on any channel.
    """

    def __cinit__(self):
        self._buffer = bytearray()
        self._partials = {}
        self._consumer_tags = _LastString()
        self._exchanges = _LastString()
        self._routing_keys = _LastString()
        self._content_types = _LastString()
        self._header_keys = [_LastString() for _ in range(CACHED_HEADER_KEYS)]

    def __init__(self, frame_max=_spec.FRAME_MAX_DEFAULT,
                 max_message_size=_spec.MAX_MESSAGE_SIZE_DEFAULT, channels=None):
        self._frame_max = _checked_frame_max(frame_max)
        self._max_message_size = _checked_message_size(max_message_size)
        self._channels = channels

    @property
    def frame_max(self):
        """The largest frame accepted (0 = no limit)."""
        return 0 if self._frame_max == _UNLIMITED else self._frame_max

    @frame_max.setter
    def frame_max(self, value):
        self._frame_max = _checked_frame_max(value)

    @property
    def max_message_size(self):
        """The largest message body accepted (0 = no limit)."""
        return self._max_message_size

    @max_message_size.setter
    def max_message_size(self, value):
        self._max_message_size = _checked_message_size(value)

    @property
    def channels(self):
        """The numbers of the open channels (None: frames on any channel are taken)."""
        return self._channels

    @channels.setter
    def channels(self, value):
        self._channels = value
        self._open_channel = 0

    @property
    def buffered(self):
        """How many bytes of an incomplete frame are held."""
        return PyByteArray_GET_SIZE(self._buffer)

    def feed(self, data):
        """Take the next bytes of the stream; return the events now complete.

        :raises ProtocolError: the stream is malformed; the reader then
            refuses all further input.
        """
        cdef Py_buffer view
        cdef Py_ssize_t offset, consumed
        cdef list events = []
        if self._error is not None:
            raise ProtocolError(
                self._error.reply_code, f"stream already failed: {self._error.message}"
            )
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        self._open_channel = 0  # the channels may have changed since the last feed
        try:
            offset = 0
            if PyByteArray_GET_SIZE(self._buffer):
                # First complete the frame held from the last read, copying
                # only the bytes it lacks; the rest is parsed in place below.
                offset = self._top_up(<const char*>view.buf, view.len)
                consumed = self._parse(
                    <const uint8_t*>PyByteArray_AS_STRING(self._buffer),
                    PyByteArray_GET_SIZE(self._buffer),
                    events,
                )
                del self._buffer[:consumed]
            if offset < view.len:
                # The usual case: parse the caller's bytes in place and keep
                # only an incomplete last frame.
                consumed = self._parse(
                    <const uint8_t*>view.buf + offset, view.len - offset, events
                )
                self._hold(<const char*>view.buf + offset + consumed,
                           view.len - offset - consumed)
        except ProtocolError as error:
            self._error = error
            self._buffer = bytearray()
            self._partials.clear()
            raise
        except MemoryError:
            error = ProtocolError(FRAME_ERROR, "out of memory for the announced content")
            self._error = error
            self._buffer = bytearray()
            self._partials.clear()
            raise error from None
        finally:
            PyBuffer_Release(&view)
        return events

    cdef Py_ssize_t _top_up(self, const char* data, Py_ssize_t size) except -1:
        # Moves bytes from data into the buffer until the buffer holds its
        # first frame whole (or data runs out); returns how many it took.
        cdef Py_ssize_t taken = 0, held, wanted, step
        cdef const uint8_t* head
        while taken < size:
            held = PyByteArray_GET_SIZE(self._buffer)
            head = <const uint8_t*>PyByteArray_AS_STRING(self._buffer)
            if not self._started and head[0] == b'A':
                wanted = 8  # the broker's protocol header
            elif held >= 7:
                if <uint64_t>_rd32(head + 3) + FRAME_OVERHEAD > self._frame_max:
                    break  # _parse reports it
                wanted = <Py_ssize_t>_rd32(head + 3) + FRAME_OVERHEAD
            else:
                wanted = 7  # a frame header first, to learn the size
            if held >= wanted:
                break
            step = min(wanted - held, size - taken)
            self._hold(data + taken, step)
            taken += step
        return taken

    cdef int _hold(self, const char* data, Py_ssize_t size) except -1:
        cdef Py_ssize_t held = PyByteArray_GET_SIZE(self._buffer)
        if size > 0:
            PyByteArray_Resize(self._buffer, held + size)
            memcpy(PyByteArray_AS_STRING(self._buffer) + held, data, size)
        return 0

    cdef Py_ssize_t _parse(self, const uint8_t* data, Py_ssize_t size, list events) except -1:
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t stop, after
        cdef uint8_t kind
        cdef uint16_t channel
        cdef uint32_t length
        while size - pos >= 7:
            if not self._started:
                if data[pos] == b'A':  # the broker answered with its protocol header
                    if size - pos < 8:
                        break
                    if memcmp(data + pos, b"AMQP", 4) != 0:
                        raise ProtocolError(FRAME_ERROR, "malformed protocol header")
                    events.append(ProtocolHeader(data[pos + 5], data[pos + 6], data[pos + 7]))
                    pos += 8
                    continue
                self._started = True
            kind = data[pos]
            channel = _rd16(data + pos + 1)
            length = _rd32(data + pos + 3)
            if kind != FRAME_METHOD and kind != FRAME_HEADER and kind != FRAME_BODY \
                    and kind != FRAME_HEARTBEAT:
                raise ProtocolError(FRAME_ERROR, f"unknown frame type {kind}")
            if <uint64_t>length + FRAME_OVERHEAD > self._frame_max:
                raise ProtocolError(
                    FRAME_ERROR,
                    f"frame of {length + 8} bytes exceeds frame_max {self._frame_max}",
                )
            stop = pos + 7 + length
            if stop >= size:
                break
            if data[stop] != FRAME_END:
                raise ProtocolError(FRAME_ERROR, f"bad frame end octet 0x{data[stop]:02x}")
            if channel != self._open_channel and kind != FRAME_HEARTBEAT:
                self._check_channel(channel)
            if kind == FRAME_METHOD:
                if self._partials and channel in self._partials:
                    raise ProtocolError(
                        UNEXPECTED_FRAME,
                        f"method frame on channel {channel} while content is due",
                    )
                method = self._method(data, pos + 7, stop)
                if _carries_content(method):
                    after = self._whole_message(data, size, stop + 1, channel, method, events)
                    if after >= 0:
                        pos = after
                        continue
                    partial = _Partial.__new__(_Partial)
                    (<_Partial>partial).method = method
                    self._partials[channel] = partial
                else:
                    events.append(MethodFrame(channel, method))
            elif kind == FRAME_HEADER:
                self._header_frame(data, pos + 7, stop, channel, events)
            elif kind == FRAME_BODY:
                self._body_frame(data, pos + 7, stop, channel, events)
            else:
                if channel != 0 or length != 0:
                    raise ProtocolError(
                        FRAME_ERROR, "heartbeat frame must be empty and on channel 0"
                    )
                events.append(_HEARTBEAT)
            pos = stop + 1
        return pos

    cdef int _check_channel(self, uint16_t channel) except -1:
        if self._channels is not None and channel not in self._channels:
            raise ChannelNotOpenError(
                CHANNEL_ERROR, f"frame on channel {channel}, which is not open"
            )
        self._open_channel = channel
        return 0

    cdef Py_ssize_t _whole_message(self, const uint8_t* data, Py_ssize_t size, Py_ssize_t pos,
                                   uint16_t channel, object method, list events) except -2:
        # The fast path: when the content header and all body frames of a
        # message are already in this chunk, build the message at once and
        # copy the body once. Anything unusual returns -1 and takes the
        # frame-by-frame path, which also reports the errors.
        cdef Py_ssize_t header_end, p, body_start = 0, frame_end
        cdef uint32_t length
        cdef uint64_t body_size, remaining
        cdef int frames = 0
        cdef uint64_t payload_max = self._frame_max - FRAME_OVERHEAD
        if size - pos < 7 + 14 + 1:
            return -1
        if data[pos] != FRAME_HEADER or _rd16(data + pos + 1) != channel:
            return -1
        length = _rd32(data + pos + 3)
        if length < 14 or length > payload_max:
            return -1
        header_end = pos + 7 + length
        if header_end >= size or data[header_end] != FRAME_END:
            return -1
        if _rd16(data + pos + 7) != BASIC_CLASS_ID:
            return -1
        body_size = _rd64(data + pos + 11)
        if self._max_message_size and body_size > self._max_message_size:
            return -1
        remaining = body_size
        p = header_end + 1
        while remaining:
            if size - p < 8 or data[p] != FRAME_BODY or _rd16(data + p + 1) != channel:
                return -1
            length = _rd32(data + p + 3)
            if length == 0 or length > remaining or length > payload_max:
                return -1
            frame_end = p + 7 + length
            if frame_end >= size or data[frame_end] != FRAME_END:
                return -1
            if frames == 0:
                body_start = p + 7
            frames += 1
            remaining -= length
            p = frame_end + 1
        properties = self._properties(data, pos + 7 + 12, header_end)
        if frames == 0:
            body = b""
        elif frames == 1:
            body = PyBytes_FromStringAndSize(<const char*>data + body_start, body_size)
        else:
            # Every frame is in memory, so body_size is bounded by the chunk.
            body = PyBytes_FromStringAndSize(NULL, body_size)
            p = header_end + 1
            remaining = 0
            while remaining < body_size:
                length = _rd32(data + p + 3)
                memcpy(PyBytes_AS_STRING(body) + remaining, data + p + 7, length)
                remaining += length
                p += 8 + length
        message = ContentMessage.__new__(ContentMessage)
        (<ContentMessage>message).channel = channel
        (<ContentMessage>message).method = method
        (<ContentMessage>message).properties = properties
        (<ContentMessage>message).body = body
        events.append(message)
        return p

    cdef int _header_frame(self, const uint8_t* data, Py_ssize_t start, Py_ssize_t end,
                           uint16_t channel, list events) except -1:
        cdef _Partial partial = self._partials.get(channel)
        cdef uint64_t body_size
        if partial is None or partial.properties is not None:
            raise ProtocolError(
                UNEXPECTED_FRAME, f"unexpected content header on channel {channel}"
            )
        if end - start < 14:
            raise ProtocolError(FRAME_ERROR, "content header frame too short")
        if _rd16(data + start) != BASIC_CLASS_ID:
            raise ProtocolError(
                UNEXPECTED_FRAME, f"content header of class {_rd16(data + start)}, not basic"
            )
        body_size = _rd64(data + start + 4)
        if self._max_message_size and body_size > self._max_message_size:
            raise _too_large(body_size, self._max_message_size, channel)
        partial.properties = self._properties(data, start + 12, end)
        partial.size = body_size
        if body_size == 0:
            del self._partials[channel]
            events.append(ContentMessage(channel, partial.method, partial.properties, b""))
        return 0

    cdef int _body_frame(self, const uint8_t* data, Py_ssize_t start, Py_ssize_t end,
                         uint16_t channel, list events) except -1:
        cdef _Partial partial = self._partials.get(channel)
        cdef Py_ssize_t length = end - start
        cdef Py_ssize_t allocated, wanted
        cdef uint64_t received
        if partial is None or partial.properties is None:
            raise ProtocolError(UNEXPECTED_FRAME, f"unexpected body frame on channel {channel}")
        received = <uint64_t>partial.received + <uint64_t>length
        if received > partial.size:
            raise ProtocolError(
                FRAME_ERROR,
                f"body of {received} bytes exceeds the {partial.size} bytes announced",
            )
        if partial.body == NULL and received == partial.size:
            # the body in one frame: copied once, straight into the message
            body = PyBytes_FromStringAndSize(<const char*>data + start, length)
        else:
            if partial.body == NULL:
                if length == 0:
                    return 0  # nothing to hold yet
                # Memory follows the bytes received, not the size the header
                # announced: room for twice this frame, then doubling.
                partial.body = PyBytes_FromStringAndSize_RAW(
                    NULL, <Py_ssize_t>min(partial.size, 2 * <uint64_t>length))
            allocated = PyBytes_GET_SIZE(<object>partial.body)
            if <Py_ssize_t>received > allocated:
                wanted = <Py_ssize_t>min(partial.size,
                                         <uint64_t>max(2 * allocated, <Py_ssize_t>received))
                _PyBytes_Resize(&partial.body, wanted)
            memcpy(PyBytes_AS_STRING_RAW(partial.body) + partial.received, data + start, length)
            partial.received = <Py_ssize_t>received
            if received < partial.size:
                return 0
            body = <object>partial.body
            Py_XDECREF(partial.body)
            partial.body = NULL
        del self._partials[channel]
        events.append(ContentMessage(channel, partial.method, partial.properties, body))
        return 0

    cdef object _method(self, const uint8_t* data, Py_ssize_t start, Py_ssize_t end):
        cdef Py_ssize_t pos = start + 4
        cdef uint32_t index
        cdef uint8_t bits
        if end - start < 4:
            raise ProtocolError(FRAME_ERROR, "method frame shorter than its method id")
        index = _rd32(data + start)
        if index == BASIC_DELIVER:
            deliver = BasicDeliver.__new__(BasicDeliver)
            (<BasicDeliver>deliver).consumer_tag = _cached(self._consumer_tags, data, &pos, end)
            if end - pos < 9:
                raise _truncated("Basic.Deliver")
            (<BasicDeliver>deliver).delivery_tag = _rd64(data + pos)
            (<BasicDeliver>deliver).redelivered = data[pos + 8] & 1 == 1
            pos += 9
            (<BasicDeliver>deliver).exchange = _cached(self._exchanges, data, &pos, end)
            (<BasicDeliver>deliver).routing_key = _cached(self._routing_keys, data, &pos, end)
            if pos != end:
                raise _trailing(pos, end, "Basic.Deliver")
            return deliver
        if index == BASIC_ACK or index == BASIC_NACK or index == BASIC_REJECT:
            if end - pos != 9:
                raise ProtocolError(SYNTAX_ERROR, "Basic.Ack/Nack/Reject must have 9 argument bytes")
            bits = data[pos + 8]
            if index == BASIC_ACK:
                ack = BasicAck.__new__(BasicAck)
                (<BasicAck>ack).delivery_tag = _rd64(data + pos)
                (<BasicAck>ack).multiple = bits & 1 == 1
                return ack
            if index == BASIC_NACK:
                return BasicNack(_rd64(data + pos), bits & 1 == 1, bits & 2 == 2)
            return BasicReject(_rd64(data + pos), bits & 1 == 1)
        if index == BASIC_GET_OK:
            if end - pos < 9:
                raise _truncated("Basic.GetOk")
            delivery_tag = _rd64(data + pos)
            redelivered = data[pos + 8] & 1 == 1
            pos += 9
            exchange = _cached(self._exchanges, data, &pos, end)
            routing_key = _cached(self._routing_keys, data, &pos, end)
            if end - pos != 4:
                raise _truncated("Basic.GetOk") if end - pos < 4 else _trailing(
                    pos + 4, end, "Basic.GetOk"
                )
            return BasicGetOk(delivery_tag, redelivered, exchange, routing_key,
                              _rd32(data + pos))
        if index == BASIC_PUBLISH:
            if end - pos < 2:
                raise _truncated("Basic.Publish")
            pos += 2  # the deprecated ticket
            exchange = _cached(self._exchanges, data, &pos, end)
            routing_key = _cached(self._routing_keys, data, &pos, end)
            if end - pos != 1:
                raise _truncated("Basic.Publish") if end - pos < 1 else _trailing(
                    pos + 1, end, "Basic.Publish"
                )
            bits = data[pos]
            return BasicPublish(exchange, routing_key, bits & 1 == 1, bits & 2 == 2)
        if index == BASIC_RETURN:
            if end - pos < 2:
                raise _truncated("Basic.Return")
            reply_code = _rd16(data + pos)
            pos += 2
            reply_text = _shortstr(data, &pos, end)
            exchange = _cached(self._exchanges, data, &pos, end)
            routing_key = _cached(self._routing_keys, data, &pos, end)
            if pos != end:
                raise _trailing(pos, end, "Basic.Return")
            return BasicReturn(reply_code, reply_text, exchange, routing_key)
        return _generic_method(index, data, pos, end)

    cdef dict _headers(self, const uint8_t* data, Py_ssize_t* pos, Py_ssize_t end):
        # A field table whose first keys come from a cache: messages of one
        # stream tend to carry the same header names, and a cached key comes
        # with its hash already computed.
        cdef Py_ssize_t stop = _container_end(data, pos, end, 0, "field table")
        cdef dict table = {}
        cdef Py_ssize_t i = 0
        while pos[0] < stop:
            if i < CACHED_HEADER_KEYS:
                key = _cached(<_LastString>self._header_keys[i], data, pos, stop)
                i += 1
            else:
                key = _shortstr(data, pos, stop)
            table[key] = _value(data, pos, stop, 0)
        return table

    cdef BasicProperties _properties(self, const uint8_t* data, Py_ssize_t pos,
                                     Py_ssize_t end):
        cdef BasicProperties props = BasicProperties.__new__(BasicProperties)
        cdef uint16_t flags, word
        if end - pos < 2:
            raise _truncated("property flags")
        flags = word = _rd16(data + pos)
        pos += 2
        while word & 1:  # bit 0 says another flags word follows
            if end - pos < 2:
                raise _truncated("property flags")
            word = _rd16(data + pos)
            pos += 2
        if flags & 0x8000:
            props.content_type = _cached(self._content_types, data, &pos, end)
        if flags & 0x4000:
            props.content_encoding = _shortstr(data, &pos, end)
        if flags & 0x2000:
            props.headers = self._headers(data, &pos, end)
        if flags & 0x1000:
            if pos >= end:
                raise _truncated("delivery_mode")
            props.delivery_mode = data[pos]
            pos += 1
        if flags & 0x0800:
            if pos >= end:
                raise _truncated("priority")
            props.priority = data[pos]
            pos += 1
        if flags & 0x0400:
            props.correlation_id = _shortstr(data, &pos, end)
        if flags & 0x0200:
            props.reply_to = _shortstr(data, &pos, end)
        if flags & 0x0100:
            props.expiration = _shortstr(data, &pos, end)
        if flags & 0x0080:
            props.message_id = _shortstr(data, &pos, end)
        if flags & 0x0040:
            if end - pos < 8:
                raise _truncated("timestamp")
            props.timestamp = _timestamp(_rd64(data + pos))
            pos += 8
        if flags & 0x0020:
            props.message_type = _shortstr(data, &pos, end)
        if flags & 0x0010:
            props.user_id = _shortstr(data, &pos, end)
        if flags & 0x0008:
            props.app_id = _shortstr(data, &pos, end)
        if flags & 0x0004:
            props.cluster_id = _shortstr(data, &pos, end)
        if pos != end:
            raise _trailing(pos, end, "properties")
        return props


# ------------------------------------------------------------- encoding

cdef object _bad_type(object field, str expected, object value):
    return EncodeError(f"{field}: expected {expected}, got {type(value).__name__}")


cdef inline uint64_t _unsigned(object value, object field, uint64_t high) except? 0xFFFFFFFFFFFFFFFF:
    # the common case inline, in C, without setting up a try
    cdef int overflow = 0
    cdef long long small
    if isinstance(value, int):
        small = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0 and small >= 0 and <uint64_t>small <= high:
            return <uint64_t>small
    return _unsigned_checked(value, field, high)


cdef uint64_t _unsigned_checked(object value, object field, uint64_t high) except? 0xFFFFFFFFFFFFFFFF:
    cdef uint64_t result
    if not isinstance(value, int):
        raise _bad_type(field, "int", value)
    try:
        result = value  # converted in C: no Python objects made for the range check
    except OverflowError:  # negative, or 2**64 and more
        raise EncodeError(f"{field}: {value} is out of range 0..{high}") from None
    if result > high:
        raise EncodeError(f"{field}: {value} is out of range 0..{high}")
    return result


cdef uint64_t _timestamp_seconds(object value, object field) except? 0xFFFFFFFFFFFFFFFF:
    cdef int64_t seconds_of_day, days, since_epoch
    if PyDateTime_CheckExact(value):
        tzinfo = value.tzinfo
        if tzinfo is None or tzinfo is _UTC:  # naive is taken as UTC too
            seconds_of_day = (
                datetime_hour(value) * 3600 + datetime_minute(value) * 60 + datetime_second(value))
            days = _days_from_civil(
                datetime_year(value), datetime_month(value), datetime_day(value))
            since_epoch = days * 86400 + seconds_of_day
            # 1970..2106 only: before, int(timestamp()) rounds towards zero;
            # after, its float may round a last microsecond up (as before: below)
            if 0 <= since_epoch <= 0xFFFFFFFF:
                return <uint64_t>since_epoch
    if isinstance(value, _datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            value = value.replace(tzinfo=_UTC)  # a naive datetime is taken as UTC
        seconds = int(value.timestamp())
    elif isinstance(value, _struct_time):
        seconds = _timegm(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = int(value)
    else:
        raise _bad_type(field, "datetime", value)
    return _unsigned(seconds, field, 0xFFFFFFFFFFFFFFFF)


cdef class FrameWriter:
    """Encodes frames into one pending buffer; :meth:`take` hands it out.

    Every call appends whole frames or nothing: a value that cannot be
    encoded raises :class:`EncodeError` and leaves the buffer as it was.

    :param frame_max: the largest frame to send, header and end octet
        included; set it again after Connection.Tune (0 means no limit).
    """

    def __cinit__(self):
        self._pieces = []

    def __init__(self, frame_max=_spec.FRAME_MAX_DEFAULT):
        self._frame_max = _checked_frame_max(frame_max)

    def __dealloc__(self):
        PyMem_Free(self._buf)

    @property
    def frame_max(self):
        """The largest frame sent (0 = no limit)."""
        return 0 if self._frame_max == _UNLIMITED else self._frame_max

    @frame_max.setter
    def frame_max(self, value):
        self._frame_max = _checked_frame_max(value)

    def __len__(self):
        """Bytes waiting to be taken."""
        return self._pending + self._len

    def take(self):
        """Hand out everything encoded so far, for ``transport.writelines``."""
        cdef list pieces = self._pieces
        if self._len:
            pieces.append(PyBytes_FromStringAndSize(self._buf, self._len))
            self._len = 0
        self._pieces = []
        self._pending = 0
        return pieces

    # -- buffer primitives

    cdef int _reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t capacity
        cdef char* grown
        if self._len + extra <= self._cap:
            return 0
        capacity = max(self._cap * 2, self._len + extra, 4096)
        grown = <char*>PyMem_Realloc(self._buf, capacity)
        if grown == NULL:
            raise MemoryError()
        self._buf = grown
        self._cap = capacity
        return 0

    cdef int _u8(self, uint8_t value) except -1:
        self._reserve(1)
        self._buf[self._len] = <char>value
        self._len += 1
        return 0

    cdef int _u16(self, uint16_t value) except -1:
        self._reserve(2)
        _wr16(self._buf + self._len, value)
        self._len += 2
        return 0

    cdef int _u32(self, uint32_t value) except -1:
        self._reserve(4)
        _wr32(self._buf + self._len, value)
        self._len += 4
        return 0

    cdef int _u64(self, uint64_t value) except -1:
        self._reserve(8)
        _wr64(self._buf + self._len, value)
        self._len += 8
        return 0

    cdef int _raw(self, const char* data, Py_ssize_t size) except -1:
        self._reserve(size)
        memcpy(self._buf + self._len, data, size)
        self._len += size
        return 0

    cdef int _string(self, object value, object field, bint short) except -1:
        cdef const char* data
        cdef Py_ssize_t size
        cdef Py_ssize_t limit = 255 if short else 0xFFFFFFFF
        if isinstance(value, str):
            try:
                data = PyUnicode_AsUTF8AndSize(value, &size)
            except UnicodeEncodeError:
                try:
                    value = value.encode("utf-8", "surrogateescape")
                except UnicodeEncodeError:
                    raise EncodeError(f"{field}: string is not encodable as UTF-8") from None
                data = PyBytes_AS_STRING(value)
                size = PyBytes_GET_SIZE(value)
        elif isinstance(value, bytes):
            data = PyBytes_AS_STRING(value)
            size = PyBytes_GET_SIZE(value)
        elif isinstance(value, (bytearray, memoryview)):
            value = bytes(value)
            data = PyBytes_AS_STRING(value)
            size = PyBytes_GET_SIZE(value)
        else:
            raise _bad_type(field, "str", value)
        if size > limit:
            raise EncodeError(f"{field}: {size} bytes is longer than the {limit} allowed")
        if short:
            self._u8(<uint8_t>size)
        else:
            self._u32(<uint32_t>size)
        self._raw(data, size)
        return 0

    cdef int _table(self, object table, object field, int depth) except -1:
        cdef Py_ssize_t start
        if not isinstance(table, dict):
            raise _bad_type(field, "dict", table)
        if len(<dict>table) == 0:  # what most messages send
            return self._u32(0)
        if depth > MAX_DEPTH:
            raise EncodeError(f"{field}: nested more than {MAX_DEPTH} deep")
        self._u32(0)
        start = self._len
        for key, value in (<dict>table).items():
            if not isinstance(key, str):
                raise EncodeError(f"{field}: table keys must be str, got {type(key).__name__}")
            try:
                self._string(key, "", True)
                self._value(value, depth)
            except EncodeError as error:
                # Name the field: the path of keys down to the bad value.
                raise EncodeError(f"{field}[{key!r}]{error.args[0]}") from None
        if self._len - start > 0xFFFFFFFF:
            raise EncodeError(f"{field}: table too long")
        _wr32(self._buf + start - 4, <uint32_t>(self._len - start))
        return 0

    cdef int _array(self, object items, int depth) except -1:
        cdef Py_ssize_t start
        cdef Py_ssize_t i = 0
        if depth > MAX_DEPTH:
            raise EncodeError(f": nested more than {MAX_DEPTH} deep")
        self._u32(0)
        start = self._len
        for item in items:
            try:
                self._value(item, depth)
            except EncodeError as error:
                raise EncodeError(f"[{i}]{error.args[0]}") from None
            i += 1
        if self._len - start > 0xFFFFFFFF:
            raise EncodeError(": array too long")
        _wr32(self._buf + start - 4, <uint32_t>(self._len - start))
        return 0

    cdef int _value(self, object value, int depth) except -1:
        # Errors raised here start with ": " so that the enclosing table
        # can put the key path in front.
        cdef int64_t number
        if isinstance(value, str):
            self._u8(b'S')
            return self._string(value, "", False)
        if isinstance(value, bool):
            self._u8(b't')
            return self._u8(1 if value else 0)
        if isinstance(value, int):
            if not -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF:
                raise EncodeError(f": integer {value} does not fit in 64 bits")
            number = value
            # The smallest type that holds the value, preferring signed ones.
            if -128 <= number <= 127:
                self._u8(b'b')
                return self._u8(<uint8_t>number)
            if -32768 <= number <= 32767:
                self._u8(b's')
                return self._u16(<uint16_t>number)
            if 0 <= number <= 0xFFFF:
                self._u8(b'u')
                return self._u16(<uint16_t>number)
            if -2147483648 <= number <= 2147483647:
                self._u8(b'I')
                return self._u32(<uint32_t>number)
            if 0 <= number <= 0xFFFFFFFF:
                self._u8(b'i')
                return self._u32(<uint32_t>number)
            self._u8(b'l')
            return self._u64(<uint64_t>number)
        if isinstance(value, float):
            self._u8(b'd')
            return self._double(value)
        if isinstance(value, dict):
            self._u8(b'F')
            return self._table(value, "", depth + 1)
        # before tuples: a struct_time is one
        if isinstance(value, (_datetime, _struct_time)):
            seconds = _timestamp_seconds(value, "")
            self._u8(b'T')
            return self._u64(seconds)
        if isinstance(value, (list, tuple)):
            self._u8(b'A')
            return self._array(value, depth + 1)
        if value is None:
            return self._u8(b'V')
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            if PyBytes_GET_SIZE(raw) > 0xFFFFFFFF:
                raise EncodeError(": byte array too long")
            self._u8(b'x')
            self._u32(<uint32_t>PyBytes_GET_SIZE(raw))
            return self._raw(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw))
        if isinstance(value, _Decimal):
            return self._decimal(value)
        raise EncodeError(f": cannot encode a value of type {type(value).__name__}")

    cdef int _double(self, double value) except -1:
        cdef uint64_t bits
        memcpy(&bits, &value, 8)
        return self._u64(bits)

    cdef int _decimal(self, object value) except -1:
        exponent = value.as_tuple().exponent
        if not isinstance(exponent, int):
            raise EncodeError(f": {value} cannot be encoded as a decimal")
        if exponent > 0:
            scale, mantissa = 0, int(value)
        else:
            scale, mantissa = -exponent, int(value.scaleb(-exponent))
        if scale > 255 or not -(2**31) <= mantissa < 2**31:
            raise EncodeError(f": decimal {value} is out of range")
        self._u8(b'D')
        self._u8(<uint8_t>scale)
        return self._u32(<uint32_t><int32_t>mantissa)

    cdef int _new_id_field(self, const uint64_t* bits) except -1:
        self._reserve(33)
        self._buf[self._len] = 32
        _write_hex_id(bits, self._buf + self._len + 1)
        self._len += 33
        return 0

    cdef int _properties(self, object properties, const uint64_t* new_id) except -1:
        # properties: BasicProperties (or pamqp's), a MessageBase, or None;
        # new_id: the bits of a message_id to send in place of the
        # properties' (which have none), or NULL
        cdef BasicProperties props
        cdef MessageBase message
        if properties is None:
            if new_id == NULL:
                return self._u16(0)
            self._u16(0x0080)
            return self._new_id_field(new_id)
        if type(properties) is BasicProperties:
            props = <BasicProperties>properties
        elif isinstance(properties, MessageBase):
            message = <MessageBase>properties
            return self._property_fields(
                message.content_type, message.content_encoding,
                _EMPTY_TABLE if message._headers is None else message._headers,
                message.delivery_mode, message.priority, message.correlation_id,
                message.reply_to,
                None if message.expiration is None else _encode_expiration(message.expiration),
                message.message_id, message.timestamp, message.type, message.user_id,
                message.app_id, None, new_id)
        elif isinstance(properties, (BasicProperties, _PamqpProperties)):
            props = BasicProperties.__new__(BasicProperties)
            for name in _PROPERTY_NAMES:
                setattr(props, name, getattr(properties, name, None))
        else:
            raise _bad_type("properties", "BasicProperties", properties)
        return self._property_fields(
            props.content_type, props.content_encoding, props.headers, props.delivery_mode,
            props.priority, props.correlation_id, props.reply_to, props.expiration,
            props.message_id, props.timestamp, props.message_type, props.user_id, props.app_id,
            props.cluster_id, new_id)

    cdef int _property_fields(self, content_type, content_encoding, headers, delivery_mode,
                              priority, correlation_id, reply_to, expiration, message_id,
                              timestamp, message_type, user_id, app_id, cluster_id,
                              const uint64_t* new_id) except -1:
        # The property flags, then each present property in wire order.
        cdef Py_ssize_t flags_at = self._len
        cdef uint16_t flags = 0
        self._u16(0)
        if content_type is not None and content_type != "":
            flags |= 0x8000
            self._string(content_type, "properties.content_type", True)
        if content_encoding is not None and content_encoding != "":
            flags |= 0x4000
            self._string(content_encoding, "properties.content_encoding", True)
        if headers is not None:
            flags |= 0x2000
            self._table(headers, "properties.headers", 0)
        if delivery_mode is not None:
            flags |= 0x1000
            self._u8(<uint8_t>_unsigned(delivery_mode, "properties.delivery_mode", 255))
        if priority is not None:
            flags |= 0x0800
            self._u8(<uint8_t>_unsigned(priority, "properties.priority", 255))
        if correlation_id is not None and correlation_id != "":
            flags |= 0x0400
            self._string(correlation_id, "properties.correlation_id", True)
        if reply_to is not None and reply_to != "":
            flags |= 0x0200
            self._string(reply_to, "properties.reply_to", True)
        if expiration is not None and expiration != "":
            flags |= 0x0100
            self._string(expiration, "properties.expiration", True)
        if new_id != NULL:
            flags |= 0x0080
            self._new_id_field(new_id)
        elif message_id is not None and message_id != "":
            flags |= 0x0080
            self._string(message_id, "properties.message_id", True)
        if timestamp is not None:
            flags |= 0x0040
            self._u64(_timestamp_seconds(timestamp, "properties.timestamp"))
        if message_type is not None and message_type != "":
            flags |= 0x0020
            self._string(message_type, "properties.message_type", True)
        if user_id is not None and user_id != "":
            flags |= 0x0010
            self._string(user_id, "properties.user_id", True)
        if app_id is not None and app_id != "":
            flags |= 0x0008
            self._string(app_id, "properties.app_id", True)
        if cluster_id is not None and cluster_id != "":
            flags |= 0x0004
            self._string(cluster_id, "properties.cluster_id", True)
        _wr16(self._buf + flags_at, flags)
        return 0

    cdef Py_ssize_t _open_frame(self, uint8_t kind, uint16_t channel) except -1:
        # Writes type and channel, leaves the size to _close_frame.
        self._reserve(7)
        self._buf[self._len] = <char>kind
        _wr16(self._buf + self._len + 1, channel)
        self._len += 7
        return self._len

    cdef int _close_frame(self, Py_ssize_t start) except -1:
        cdef Py_ssize_t size = self._len - start
        if <uint64_t>size + FRAME_OVERHEAD > self._frame_max:
            raise EncodeError(f"frame of {size + 8} bytes exceeds frame_max {self._frame_max}")
        _wr32(self._buf + start - 4, <uint32_t>size)
        return self._u8(FRAME_END)

    cdef int _method_args(self, object method) except -1:
        # The arguments of any method, the hot ones encoded directly.
        cdef type cls = type(method)
        cdef uint8_t bits
        if cls is BasicAck:
            self._u32(BASIC_ACK)
            self._u64(_unsigned((<BasicAck>method).delivery_tag, "Basic.Ack.delivery_tag",
                                0xFFFFFFFFFFFFFFFF))
            return self._u8(1 if (<BasicAck>method).multiple else 0)
        if cls is BasicNack:
            self._u32(BASIC_NACK)
            self._u64(_unsigned((<BasicNack>method).delivery_tag, "Basic.Nack.delivery_tag",
                                0xFFFFFFFFFFFFFFFF))
            bits = (1 if (<BasicNack>method).multiple else 0) | (
                2 if (<BasicNack>method).requeue else 0)
            return self._u8(bits)
        if cls is BasicReject:
            self._u32(BASIC_REJECT)
            self._u64(_unsigned((<BasicReject>method).delivery_tag,
                                "Basic.Reject.delivery_tag", 0xFFFFFFFFFFFFFFFF))
            return self._u8(1 if (<BasicReject>method).requeue else 0)
        if cls is BasicPublish:
            return self._publish_args(
                (<BasicPublish>method).exchange, (<BasicPublish>method).routing_key,
                (<BasicPublish>method).mandatory, (<BasicPublish>method).immediate)
        if cls is BasicDeliver:
            self._u32(BASIC_DELIVER)
            self._string((<BasicDeliver>method).consumer_tag, "Basic.Deliver.consumer_tag", True)
            self._u64(_unsigned((<BasicDeliver>method).delivery_tag,
                                "Basic.Deliver.delivery_tag", 0xFFFFFFFFFFFFFFFF))
            self._u8(1 if (<BasicDeliver>method).redelivered else 0)
            self._string((<BasicDeliver>method).exchange, "Basic.Deliver.exchange", True)
            return self._string((<BasicDeliver>method).routing_key,
                                "Basic.Deliver.routing_key", True)
        if cls is BasicGetOk:
            self._u32(BASIC_GET_OK)
            self._u64(_unsigned((<BasicGetOk>method).delivery_tag, "Basic.GetOk.delivery_tag",
                                0xFFFFFFFFFFFFFFFF))
            self._u8(1 if (<BasicGetOk>method).redelivered else 0)
            self._string((<BasicGetOk>method).exchange, "Basic.GetOk.exchange", True)
            self._string((<BasicGetOk>method).routing_key, "Basic.GetOk.routing_key", True)
            return self._u32(<uint32_t>_unsigned((<BasicGetOk>method).message_count,
                                                 "Basic.GetOk.message_count", 0xFFFFFFFF))
        if cls is BasicReturn:
            self._u32(BASIC_RETURN)
            self._u16(<uint16_t>_unsigned((<BasicReturn>method).reply_code,
                                          "Basic.Return.reply_code", 0xFFFF))
            self._string((<BasicReturn>method).reply_text, "Basic.Return.reply_text", True)
            self._string((<BasicReturn>method).exchange, "Basic.Return.exchange", True)
            return self._string((<BasicReturn>method).routing_key, "Basic.Return.routing_key",
                                True)
        return self._generic_args(method)

    cdef int _generic_args(self, object method) except -1:
        cdef int bit = -1  # position in the open bit octet; -1 = none open
        cdef Py_ssize_t bits_at = 0
        cdef int kind
        try:
            index = method.index
            cls, fields = _METHODS[index]
        except (AttributeError, KeyError, TypeError):
            raise EncodeError(f"not an AMQP method: {method!r}") from None
        self._u32(<uint32_t>index)
        for attribute, kind in fields:
            value = getattr(method, attribute, None)
            field = f"{cls.name}.{attribute}"
            if kind == BIT:
                if bit < 0 or bit == 8:
                    bits_at = self._len
                    self._u8(0)
                    bit = 0
                if value:
                    self._buf[bits_at] = <char>((<uint8_t>self._buf[bits_at]) | (1 << bit))
                bit += 1
                continue
            bit = -1
            if kind == SHORTSTR:
                self._string("" if value is None else value, field, True)
            elif kind == LONGSTR:
                self._string("" if value is None else value, field, False)
            elif kind == TABLE:
                self._table({} if value is None else value, field, 0)
            elif kind == OCTET:
                self._u8(<uint8_t>_unsigned(0 if value is None else value, field, 0xFF))
            elif kind == SHORT:
                self._u16(<uint16_t>_unsigned(0 if value is None else value, field, 0xFFFF))
            elif kind == LONG:
                self._u32(<uint32_t>_unsigned(0 if value is None else value, field, 0xFFFFFFFF))
            else:
                self._u64(_unsigned(0 if value is None else value, field, 0xFFFFFFFFFFFFFFFF))
        return 0

    def protocol_header(self):
        """Append the AMQP 0-9-1 protocol header that opens a connection."""
        self._raw(b"AMQP\x00\x00\x09\x01", 8)

    def heartbeat(self):
        """Append a heartbeat frame."""
        self._raw(b"\x08\x00\x00\x00\x00\x00\x00\xce", 8)

    def method(self, channel, method):
        """Append a method frame; ``method`` is a pamqp command or a hot-path class."""
        cdef Py_ssize_t mark = self._len
        cdef uint16_t number = <uint16_t>_unsigned(channel, "channel", 0xFFFF)
        if isinstance(method, (BasicPublish, BasicDeliver, BasicGetOk, BasicReturn)) or (
            getattr(method, "index", None) in (BASIC_PUBLISH, BASIC_DELIVER, BASIC_GET_OK,
                                               BASIC_RETURN)
        ):
            raise EncodeError(f"{method.name} carries content: use content() or publish()")
        try:
            self._close_frame(self._open_frame(FRAME_METHOD, number) + self._method_args(method))
        except BaseException:
            self._len = mark
            raise

    cdef int _content(self, uint16_t channel, object method, object body,
                      object properties, const uint64_t* new_id) except -1:
        cdef Py_ssize_t start = self._open_frame(FRAME_METHOD, channel)
        self._method_args(method)
        self._close_frame(start)
        return self._content_frames(channel, body, properties, new_id)

    cdef int _publish_args(self, object exchange, object routing_key, bint mandatory,
                           bint immediate) except -1:
        self._u32(BASIC_PUBLISH)
        self._u16(0)
        self._string(exchange, "Basic.Publish.exchange", True)
        self._string(routing_key, "Basic.Publish.routing_key", True)
        return self._u8((1 if mandatory else 0) | (2 if immediate else 0))

    cdef int _content_frames(self, uint16_t channel, object body, object properties,
                             const uint64_t* new_id) except -1:
        # The content header and body frames that follow a content method.
        cdef Py_buffer view
        cdef Py_ssize_t start, size, offset, chunk
        cdef uint64_t payload_max = self._frame_max - FRAME_OVERHEAD
        PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
        try:
            size = view.len
            start = self._open_frame(FRAME_HEADER, channel)
            self._u16(BASIC_CLASS_ID)
            self._u16(0)
            self._u64(<uint64_t>size)
            self._properties(properties, new_id)
            self._close_frame(start)
            # Nothing below can fail on bad input: the frames are whole.
            offset = 0
            if size < ZERO_COPY_MIN or type(body) is not bytes:
                while offset < size:
                    chunk = <Py_ssize_t>min(<uint64_t>(size - offset), payload_max)
                    self._reserve(chunk + FRAME_OVERHEAD)
                    self._buf[self._len] = <char>FRAME_BODY
                    _wr16(self._buf + self._len + 1, channel)
                    _wr32(self._buf + self._len + 3, <uint32_t>chunk)
                    memcpy(self._buf + self._len + 7, <const char*>view.buf + offset, chunk)
                    self._buf[self._len + 7 + chunk] = <char>FRAME_END
                    self._len += chunk + FRAME_OVERHEAD
                    offset += chunk
                return 0
        finally:
            PyBuffer_Release(&view)
        # A large immutable body: frame headers around memoryview slices, no copy.
        whole = memoryview(body)
        while offset < size:
            chunk = <Py_ssize_t>min(<uint64_t>(size - offset), payload_max)
            self._reserve(7)
            self._buf[self._len] = <char>FRAME_BODY
            _wr16(self._buf + self._len + 1, channel)
            _wr32(self._buf + self._len + 3, <uint32_t>chunk)
            self._len += 7
            self._pieces.append(PyBytes_FromStringAndSize(self._buf, self._len))
            self._pending += self._len + chunk
            self._pieces.append(whole[offset:offset + chunk])
            self._len = 0
            self._u8(FRAME_END)
            offset += chunk
        return 0

    def content(self, channel, method, body, properties=None):
        """Append a content-carrying method, its content header and body frames."""
        cdef Py_ssize_t mark = self._len
        cdef uint16_t number = <uint16_t>_unsigned(channel, "channel", 0xFFFF)
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise _bad_type("body", "bytes", body)
        if getattr(method, "index", None) not in _CONTENT_INDEXES:
            name = getattr(method, "name", type(method).__name__)
            raise EncodeError(f"{name} carries no content")
        if isinstance(body, memoryview) and not body.contiguous:
            body = body.tobytes()
        try:
            self._content(number, method, body, properties, NULL)
        except BaseException:
            self._len = mark
            raise

    def publish(self, channel, body, exchange="", routing_key="", properties=None,
                mandatory=False, immediate=False, new_id=False, return_id=False):
        """Append a Basic.Publish with its content header and body frames.

        With ``new_id``, a message whose properties have no message_id is
        sent with a random UUID4 (hex) as its message_id; the properties are
        not changed. With ``return_id`` the message_id sent is returned (what
        a Basic.Return would carry back; None without one), else None.
        """
        cdef Py_ssize_t mark = self._len
        cdef uint16_t number = <uint16_t>_unsigned(channel, "channel", 0xFFFF)
        cdef Py_ssize_t start
        cdef uint64_t bits[2]
        cdef const uint64_t* stamp = NULL
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise _bad_type("body", "bytes", body)
        if isinstance(body, memoryview) and not body.contiguous:
            body = body.tobytes()
        if properties is None:
            message_id = None
        elif type(properties) is BasicProperties:
            message_id = (<BasicProperties>properties).message_id
        elif isinstance(properties, MessageBase):
            message_id = (<MessageBase>properties).message_id
        else:
            message_id = getattr(properties, "message_id", None)
        if new_id and (message_id is None or message_id == ""):
            _uuid4_bits(bits)
            stamp = bits
        try:
            start = self._open_frame(FRAME_METHOD, number)
            self._publish_args(exchange, routing_key, mandatory, immediate)
            self._close_frame(start)
            self._content_frames(number, body, properties, stamp)
        except BaseException:
            self._len = mark
            raise
        if not return_id:
            return None
        return message_id if stamp == NULL else _hex_id(stamp)

    def ack(self, channel, delivery_tag, multiple=False):
        """Append a Basic.Ack."""
        self._small(channel, BASIC_ACK, delivery_tag, 1 if multiple else 0, "Basic.Ack")

    def nack(self, channel, delivery_tag, multiple=False, requeue=True):
        """Append a Basic.Nack."""
        self._small(channel, BASIC_NACK, delivery_tag,
                    (1 if multiple else 0) | (2 if requeue else 0), "Basic.Nack")

    def reject(self, channel, delivery_tag, requeue=True):
        """Append a Basic.Reject."""
        self._small(channel, BASIC_REJECT, delivery_tag, 1 if requeue else 0, "Basic.Reject")

    cdef int _small(self, object channel, uint32_t index, object delivery_tag, uint8_t bits,
                    str name) except -1:
        # Ack, Nack and Reject share one 21-byte layout.
        cdef uint16_t number = <uint16_t>_unsigned(channel, "channel", 0xFFFF)
        cdef uint64_t tag = _unsigned(delivery_tag, name + ".delivery_tag", 0xFFFFFFFFFFFFFFFF)
        cdef char* p
        self._reserve(21)
        p = self._buf + self._len
        p[0] = <char>FRAME_METHOD
        _wr16(p + 1, number)
        _wr32(p + 3, 13)
        _wr32(p + 7, index)
        _wr64(p + 11, tag)
        p[19] = <char>bits
        p[20] = <char>FRAME_END
        self._len += 21
        return 0


def encode_table(table):
    """Encode a field table, its 4-byte length first (None is an empty table)."""
    cdef FrameWriter writer = FrameWriter()
    writer._table({} if table is None else table, "table", 0)
    return b"".join(writer.take())



# ------------------------------------------------- running callback coroutines

def run_coroutines(queue, cancel_asked, task, failed, cancelled_error):
    """Run the coroutines waiting in ``queue`` (a deque) one after another.

    What a driver Task of ``amqpfast.core._drive`` does for each handler: step
    it once in a fresh copy of the current context; most finish there. Stops
    before the next one when ``cancel_asked(task)`` is true. A handler that
    raises an Exception goes to ``failed(exc)``, one that raises
    ``cancelled_error`` ends quietly; others propagate. Returns ``(coroutine,
    its context, what it waits on)`` for the first one that waits, else None.

    In C: a finished coroutine costs no StopIteration (PyIter_Send).
    """
    cdef PyObject* result
    cdef PyObject* kind
    cdef PyObject* value
    cdef PyObject* traceback
    cdef PySendResult status
    while queue and not cancel_asked(task):
        coro = queue.popleft()
        context = PyContext_CopyCurrent()
        PyContext_Enter(context)
        result = NULL
        status = PyIter_Send(coro, None, &result)
        if status == PYGEN_ERROR:
            # the context is left with the exception put aside
            PyErr_Fetch(&kind, &value, &traceback)
            PyContext_Exit(context)
            PyErr_Restore(kind, value, traceback)
            try:
                _pending_error()
            except Exception as exc:
                failed(exc)
            except BaseException as exc:
                if not isinstance(exc, cancelled_error):
                    raise
            continue
        PyContext_Exit(context)
        if status == PYGEN_RETURN:
            Py_XDECREF(result)  # what the handler returned: not used
            continue
        waiting_on = <object>result
        Py_XDECREF(result)
        return coro, context, waiting_on
    return None


# ------------------------------------------------- an awaitable done already

@cython.final
@cython.no_gc
@cython.embedsignature(False)  # the docstring's first line is the signature
cdef class Finished:
    """Finished()
--

    An awaitable that is done already: ``await`` gives None at once. What a
    call returns when there is nothing to wait for (an ack, a publish
    without confirms). It is its own iterator, so the await runs in C with
    no Python frame; it has a finished coroutine's ``send``, ``throw`` and
    ``close``, so ``asyncio.create_task`` takes it as it takes a coroutine.
    """

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        raise StopIteration

    def send(self, value):
        raise StopIteration

    def throw(self, error, value=None, traceback=None):
        if value is None:
            value = error if isinstance(error, BaseException) else error()
        if traceback is not None:
            value = value.with_traceback(traceback)
        raise value

    def close(self):
        pass
