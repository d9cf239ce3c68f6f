# TLS over a stream transport: the compiled half of ringline.aio._sslproto.
#
# ringline keeps asyncio's own SSLProtocol (Lib/asyncio/sslproto.py, 3.11+:
# memory BIOs, the handshake/flush/shutdown state machine, flow control in
# both directions) and compiles only what runs per record once the session
# is WRAPPED.  Why not a full port (uvloop's sslproto.pyx): the cold paths
# stay asyncio's code, so their semantics are asyncio's by construction, and
# the hot path is where the time went -- perf put 29% of a TLS echo
# server's CPU in the interpreter, in buffer_updated/_do_read/_write_appdata
# and their helpers.
#
# SSLCore replaces, on one SSLProtocol instance:
#   buffer_updated   StreamCore hands the received ciphertext straight to
#                    feed(): one copy, kernel buffer -> incoming BIO (asyncio
#                    copies into get_buffer()'s bytearray, then into the BIO);
#   _do_read         decrypt and deliver, skipping the SSLWantReadError that
#                    ends asyncio's read loop when nothing is left to decrypt
#                    (building that exception costs more than a record);
#   _process_outgoing, and the app transport's write().
# Each does exactly what asyncio's method does, in the same order, and
# defers to asyncio's method for anything but the common case.
#
# The protocol's state and flow-control attributes that the hot path reads
# (_state, the four *_paused flags, _write_buffer_size, the water marks,
# _transport, _app_protocol) live in SSLCore's fields; the Python class
# reaches them through TLSField descriptors, so asyncio's code reads and
# assigns them as before while the hot path reads C fields instead of
# instance dicts (those lookups were most of what was left in perf).
# These are asyncio's own private names, stable since 3.11, when this
# SSLProtocol replaced the old one.

from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.ref cimport Py_REFCNT

cdef extern from "Python.h":
    enum:
        PyBUF_READ

cdef object _WRAPPED = None
cdef object _DO_HANDSHAKE = None
cdef object _FLUSHING = None
cdef object _SHUTDOWN = None
cdef object _SSLAgainErrors = None
cdef object _SSLProtocolTransport_write = None
cdef object _base_do_read = None


cdef inline object _deref(object ref):
    return rl_weakref_get(ref)


cdef _init_ssl_names():
    global _WRAPPED, _DO_HANDSHAKE, _FLUSHING, _SHUTDOWN, _SSLAgainErrors
    global _SSLProtocolTransport_write, _base_do_read
    st = _compat.SSLProtocolState
    _WRAPPED = st.WRAPPED
    _DO_HANDSHAKE = st.DO_HANDSHAKE
    _FLUSHING = st.FLUSHING
    _SHUTDOWN = st.SHUTDOWN
    _SSLAgainErrors = _compat.SSLAgainErrors
    _SSLProtocolTransport_write = _compat.SSLProtocolTransport_write
    _base_do_read = _compat.SSLProtocol_do_read


@cython.final
cdef class TLSField:
    """A data descriptor for SSLProtocol attribute NAME kept in the core."""
    cdef str name

    def __init__(self, str name):
        self.name = name

    def __get__(self, obj, objtype):
        if obj is None:
            return self
        return getattr(<SSLCore>obj._ringline_tls, self.name)

    def __set__(self, obj, value):
        setattr(<SSLCore>obj._ringline_tls, self.name, value)


@cython.final
cdef class SSLCore:
    # Weak references: the protocol's and the app transport's attributes
    # hold this object's bound methods, and asyncio drops its own references
    # at connection_lost so that a closed connection is freed by reference
    # counting alone (test_ssl's memory-leak tests check that).
    cdef object proto_ref       # the ringline.aio._sslproto.SSLProtocol
    cdef object app_ref         # its _SSLProtocolTransport
    cdef object backlog         # proto._write_backlog (a deque, never replaced)
    cdef object incoming        # ssl.MemoryBIO
    cdef object outgoing
    cdef object in_write        # incoming.write, bound
    cdef object out_read
    cdef object ssl_read        # the _ssl._SSLSocket's read/write/pending: the
    cdef object ssl_write       # C methods ssl.SSLObject's Python ones call
    cdef object ssl_pending
    cdef Py_ssize_t max_size
    # The protocol's attributes (TLSField):
    cdef public object _state
    cdef public bint _app_reading_paused
    cdef public bint _ssl_reading_paused
    cdef public bint _app_writing_paused
    cdef public bint _ssl_writing_paused
    cdef public bint _app_protocol_is_buffer
    cdef public Py_ssize_t _write_buffer_size
    cdef public object _incoming_high_water
    cdef public object _incoming_low_water
    cdef public object _outgoing_high_water
    cdef public object _outgoing_low_water
    cdef object transport
    cdef object transport_write
    cdef object app_protocol

    def __init__(self, proto):
        if _WRAPPED is None:
            _init_ssl_names()
        self.proto_ref = _weakref(proto)
        self._write_buffer_size = 0
        self._incoming_high_water = self._incoming_low_water = 0
        self._outgoing_high_water = self._outgoing_low_water = 0

    def attach(self, proto):
        """After SSLProtocol.__init__: the BIOs, the SSL object, the app transport."""
        self.app_ref = _weakref(proto._app_transport)
        self.backlog = proto._write_backlog
        self.incoming = proto._incoming
        self.outgoing = proto._outgoing
        self.in_write = self.incoming.write
        self.out_read = self.outgoing.read
        sslobj = proto._sslobj._sslobj
        self.ssl_read = sslobj.read
        self.ssl_write = sslobj.write
        self.ssl_pending = sslobj.pending
        self.max_size = proto.max_size

    def detach(self):
        """At connection_lost: let go of the session (BIOs, the SSL object's
        methods).  asyncio frees a closed connection's SSLObject, and with it
        the SSLContext, even while the app protocol keeps the transport
        (test_ssl's memory-leak tests); the app transport's write() bound to
        this object must not keep them.  SSLProtocol puts asyncio's own
        methods back first, so nothing here runs again."""
        self.incoming = self.outgoing = self.in_write = self.out_read = None
        self.ssl_read = self.ssl_write = self.ssl_pending = None

    @property
    def _transport(self):
        return self.transport

    @_transport.setter
    def _transport(self, transport):
        self.transport = transport
        self.transport_write = None if transport is None else transport.write

    @property
    def _app_protocol(self):
        return self.app_protocol

    @_app_protocol.setter
    def _app_protocol(self, protocol):
        self.app_protocol = protocol

    # ---- incoming ---------------------------------------------------------------

    cdef int feed(self, char *ptr, Py_ssize_t n) except -1:
        """SSLProtocol.buffer_updated for bytes the kernel put at ptr."""
        cdef object proto = _deref(self.proto_ref)
        if self.in_write is None:       # detached: the connection is lost
            return 0
        mv = PyMemoryView_FromMemory(ptr, n, PyBUF_READ)
        try:
            self.in_write(mv)
        finally:
            # The kernel buffer goes back to the ring after us: nothing may
            # keep a view of it (MemoryBIO.write copies and keeps none, so
            # this is only a guard; release() is a Python-level call).
            if Py_REFCNT(mv) > 1:
                mv.release()
        state = self._state
        if state is _WRAPPED:
            self._do_read(proto)
        elif state is _DO_HANDSHAKE:
            proto._do_handshake()
        elif state is _FLUSHING:
            proto._do_flush()
        elif state is _SHUTDOWN:
            proto._do_shutdown()
        return 0

    def do_read(self):
        """SSLProtocol._do_read."""
        proto = _deref(self.proto_ref)
        if proto is not None:       # None: a late call_soon(_do_read) handle
            self._do_read(proto)

    cdef _do_read(self, object proto):
        cdef Py_ssize_t want, size
        if (self._state is not _WRAPPED or self._app_reading_paused or
                self._app_protocol_is_buffer):
            return _base_do_read(proto)
        try:
            # _do_read__copied, without the final SSLWantReadError: with no
            # ciphertext in the incoming BIO and no plaintext held by the
            # SSL object, SSL_read can only want more.  This relies on
            # OpenSSL's read-ahead being off, which Python's ssl module
            # never changes (with it on, whole records could wait inside
            # OpenSSL until the next receive).  The pending counts also
            # size the read (asyncio asks for 256 KiB and shrinks the bytes
            # afterwards); where they undercount a record (part of it
            # already inside OpenSSL, compression) the loop just reads it
            # in more calls.
            first = None
            chunks = None
            eof = False
            while True:
                want = self.incoming.pending
                if want == 0:
                    want = self.ssl_pending()
                    if want == 0:
                        break
                if want > self.max_size:
                    want = self.max_size
                try:
                    chunk = self.ssl_read(want)
                except _SSLAgainErrors:
                    break
                if not chunk:
                    eof = True          # close_notify
                    break
                if first is None:
                    first = chunk
                elif chunks is None:
                    chunks = [first, chunk]
                else:
                    chunks.append(chunk)
            # data_received looked up per call, as asyncio does (a protocol
            # may rebind it).
            if chunks is not None:
                self.app_protocol.data_received(b''.join(chunks))
            elif first is not None:
                self.app_protocol.data_received(first)
            if eof:
                proto._call_eof_received()
                proto._start_shutdown()
            if self.backlog:
                proto._do_write()
            else:
                self._process_outgoing(proto)
            # _control_ssl_reading, called only when it would act.
            size = self.incoming.pending
            if self._ssl_reading_paused:
                if size <= self._incoming_low_water:
                    proto._control_ssl_reading()
            elif size >= self._incoming_high_water:
                proto._control_ssl_reading()
        except Exception as ex:
            proto._fatal_error(ex, 'Fatal error on SSL protocol')

    # ---- outgoing ---------------------------------------------------------------

    def process_outgoing(self):
        """SSLProtocol._process_outgoing."""
        proto = _deref(self.proto_ref)
        if proto is not None:
            self._process_outgoing(proto)

    cdef _process_outgoing(self, object proto, bint output=False):
        # output: SSL_write just produced records, so the BIO is not empty.
        # Otherwise (after a read: usually nothing to send) its pending count
        # is asked first, which costs less than a read() returning b''.
        # read() takes everything, and the transport's write() cannot put
        # records back in this BIO, so the BIO is empty after it.
        cdef Py_ssize_t size
        if output or self.outgoing.pending:
            if not self._ssl_writing_paused:
                data = self.out_read()
                if data:
                    self.transport_write(data)
                size = self._write_buffer_size
            else:
                size = self.outgoing.pending + self._write_buffer_size
        else:
            size = self._write_buffer_size
        # _control_app_writing, called only when it would act.
        if self._app_writing_paused:
            if size <= self._outgoing_low_water:
                proto._control_app_writing()
        elif size >= self._outgoing_high_water:
            proto._control_app_writing()

    def write(self, data):
        """The app transport's write(): _SSLProtocolTransport.write ->
        _write_appdata -> _do_write, for bytes on a WRAPPED session with
        nothing queued before them."""
        cdef object proto
        cdef Py_ssize_t n
        if (type(data) is not bytes or self._state is not _WRAPPED or
                self.backlog or not data):
            return self._write_slow(data)
        proto = _deref(self.proto_ref)
        n = len(data)
        try:
            try:
                count = self.ssl_write(data)
            except _SSLAgainErrors:
                # asyncio keeps it queued and retries after the next read.
                self.backlog.append(data)
                self._write_buffer_size += n
            except BaseException:
                self.backlog.append(data)
                self._write_buffer_size += n
                raise
            else:
                if count < n:
                    # Not with _ssl's modes (no SSL_MODE_ENABLE_PARTIAL_WRITE);
                    # kept as asyncio's _do_write would.
                    rest = data[count:]
                    self.backlog.append(rest)
                    self._write_buffer_size += len(rest)
            self._process_outgoing(proto, True)
        except Exception as ex:
            proto._fatal_error(ex, 'Fatal error on SSL protocol')

    cdef _write_slow(self, data):
        app = _deref(self.app_ref)
        if app is not None:
            return _SSLProtocolTransport_write(app, data)
        # The app transport is gone and this is a write() bound method kept
        # from it: asyncio's checks, then what its transport would have done.
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data: expecting a bytes-like instance, "
                            f"got {type(data).__name__}")
        if not data:
            return
        proto = _deref(self.proto_ref)
        if proto is not None:
            proto._write_appdata((data,))
