# TLS over a stream transport: the compiled half of ringline._sslproto.
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
# defers to asyncio's method for anything but the common case.  The private
# attributes read here are asyncio's own (stable since 3.11, when this
# SSLProtocol replaced the old one).

from cpython.memoryview cimport PyMemoryView_FromMemory

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
    return <object>PyWeakref_GetObject(ref)


cdef _init_ssl_names():
    global _WRAPPED, _DO_HANDSHAKE, _FLUSHING, _SHUTDOWN, _SSLAgainErrors
    global _SSLProtocolTransport_write, _base_do_read
    from asyncio import sslproto
    st = sslproto.SSLProtocolState
    _WRAPPED = st.WRAPPED
    _DO_HANDSHAKE = st.DO_HANDSHAKE
    _FLUSHING = st.FLUSHING
    _SHUTDOWN = st.SHUTDOWN
    _SSLAgainErrors = sslproto.SSLAgainErrors
    _SSLProtocolTransport_write = sslproto._SSLProtocolTransport.write
    _base_do_read = sslproto.SSLProtocol._do_read


@cython.final
cdef class SSLCore:
    # Weak references: the protocol's and the app transport's attributes
    # hold this object's bound methods, and asyncio's own references are
    # dropped at connection_lost so that a closed connection is freed by
    # reference counting alone (test_ssl's memory-leak tests check that).
    cdef object proto_ref       # the ringline._sslproto.SSLProtocol
    cdef object app_ref         # its _SSLProtocolTransport
    cdef object incoming        # ssl.MemoryBIO
    cdef object outgoing
    cdef object in_write        # incoming.write, bound
    cdef object out_read
    cdef object ssl_read        # the _ssl._SSLSocket's read/write/pending: the
    cdef object ssl_write       # C methods ssl.SSLObject's Python ones call
    cdef object ssl_pending
    cdef Py_ssize_t max_size

    def __init__(self, proto, app_transport):
        if _WRAPPED is None:
            _init_ssl_names()
        self.proto_ref = _weakref(proto)
        self.app_ref = _weakref(app_transport)
        self.incoming = proto._incoming
        self.outgoing = proto._outgoing
        self.in_write = self.incoming.write
        self.out_read = self.outgoing.read
        sslobj = proto._sslobj._sslobj
        self.ssl_read = sslobj.read
        self.ssl_write = sslobj.write
        self.ssl_pending = sslobj.pending
        self.max_size = proto.max_size

    # ---- incoming ---------------------------------------------------------------

    cdef int feed(self, char *ptr, Py_ssize_t n) except -1:
        """SSLProtocol.buffer_updated for bytes the kernel put at ptr."""
        cdef object proto = _deref(self.proto_ref)
        mv = PyMemoryView_FromMemory(ptr, n, PyBUF_READ)
        try:
            self.in_write(mv)
        finally:
            mv.release()    # the kernel buffer goes back to the ring after us
        state = proto._state
        if state is _WRAPPED:
            self.do_read()
        elif state is _DO_HANDSHAKE:
            proto._do_handshake()
        elif state is _FLUSHING:
            proto._do_flush()
        elif state is _SHUTDOWN:
            proto._do_shutdown()
        return 0

    def do_read(self):
        """SSLProtocol._do_read."""
        cdef object proto = _deref(self.proto_ref)
        cdef Py_ssize_t want
        state = proto._state
        if (state is not _WRAPPED or proto._app_reading_paused or
                proto._app_protocol_is_buffer):
            return _base_do_read(proto)
        try:
            # _do_read__copied, without the final SSLWantReadError: with no
            # ciphertext in the incoming BIO and no plaintext held by the
            # SSL object, SSL_read can only want more (Python's _ssl never
            # turns on read-ahead, which would hide bytes in OpenSSL).  A
            # record's plaintext is shorter than its ciphertext, so the
            # pending counts also size the read (asyncio asks for 256 KiB
            # and shrinks the bytes afterwards).
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
            if chunks is not None:
                proto._app_protocol.data_received(b''.join(chunks))
            elif first is not None:
                proto._app_protocol.data_received(first)
            if eof:
                proto._call_eof_received()
                proto._start_shutdown()
            if proto._write_backlog:
                proto._do_write()
            else:
                self._process_outgoing(proto)
            # _control_ssl_reading, called only when it would act.
            size = self.incoming.pending
            if proto._ssl_reading_paused:
                if size <= proto._incoming_low_water:
                    proto._control_ssl_reading()
            elif size >= proto._incoming_high_water:
                proto._control_ssl_reading()
        except Exception as ex:
            proto._fatal_error(ex, 'Fatal error on SSL protocol')

    # ---- outgoing ---------------------------------------------------------------

    def process_outgoing(self):
        """SSLProtocol._process_outgoing."""
        return self._process_outgoing(_deref(self.proto_ref))

    cdef _process_outgoing(self, object proto):
        if not proto._ssl_writing_paused:
            data = self.out_read()
            if data:
                proto._transport.write(data)
        # _control_app_writing, called only when it would act.
        size = self.outgoing.pending + proto._write_buffer_size
        if proto._app_writing_paused:
            if size <= proto._outgoing_low_water:
                proto._control_app_writing()
        elif size >= proto._outgoing_high_water:
            proto._control_app_writing()

    def write(self, data):
        """The app transport's write(): _SSLProtocolTransport.write ->
        _write_appdata -> _do_write, for bytes on a WRAPPED session with
        nothing queued before them."""
        cdef object proto = _deref(self.proto_ref)
        cdef Py_ssize_t n
        if (type(data) is not bytes or proto is None or proto._state is not _WRAPPED or
                proto._write_backlog or not data):
            return _SSLProtocolTransport_write(_deref(self.app_ref), data)
        n = len(data)
        try:
            try:
                count = self.ssl_write(data)
            except _SSLAgainErrors:
                # asyncio keeps it queued and retries after the next read.
                proto._write_backlog.append(data)
                proto._write_buffer_size += n
            except BaseException:
                proto._write_backlog.append(data)
                proto._write_buffer_size += n
                raise
            else:
                if count < n:
                    # Not with _ssl's modes (no SSL_MODE_ENABLE_PARTIAL_WRITE);
                    # kept as asyncio's _do_write would.
                    rest = data[count:]
                    proto._write_backlog.append(rest)
                    proto._write_buffer_size += len(rest)
            self._process_outgoing(proto)
        except Exception as ex:
            proto._fatal_error(ex, 'Fatal error on SSL protocol')
