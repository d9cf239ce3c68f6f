# cython: language_level=3, boundscheck=False, cdivision=True
# cython: freethreading_compatible=False
#
# ringline's compiled core, built as one unit like uvloop's loop.pyx: the
# parts are included below, in folders by layer.
#
#   driver/     the kernel interface: Ops in, completions out (base.pxi: the
#               Driver interface; uring.pxi: io_uring; readiness.pxi: the
#               poll backend, with epoll.pxi and kqueue.pxi as its mechanisms;
#               uring.h, rl_poll.h, kq.h)
#   loop/       LoopCore (loop.pxi), Op and the socket ops (ops.pxi), Handle,
#               TimerHandle and the timer heap (handles.pxi), read buffers
#               lent per read (bufpool.pxi), child exits reaped in the ring
#               (waitid.pxi)
#   transport/  the shared transport core both faces use: common.pxi (the
#               stream receive and gathered send ops, TransportCore); and
#               the asyncio face's transports: stream.pxi (TCP, Unix,
#               multishot accept), dgram.pxi (UDP), tls.pxi (asyncio
#               SSLProtocol's per-record path)
#   runtime/    the runtime face's connection: ConnCore (conn.pxi), its ops
#               (connops.pxi), kernel buffers (kbuf.pxi), the awaitable
#               (wait.pxi), the send pool (sendpool.pxi), ring sizes and
#               ConnEnv (env.pxi), the metrics block (metrics.pxi)
#   fileops.pxi   file operations for ringline.fs, in the ring or on a pool
#   nvme.pxi      NVMe passthrough for ringline.nvme: URING_CMD on a ring of
#                 128-byte SQEs
#   live.pxi      live counts of what the core lends out (every layer counts)
#   fuzzhooks.pxi test-only entry points for the fuzzers (tests/fuzz/); not API
#
# Each folder's main file (driver/base.pxi, loop/loop.pxi, transport/stream.pxi,
# runtime/conn.pxi) opens with what its layer owns and may not touch.  In
# short: the driver knows Ops, not what started them; the loop knows the
# driver interface, not transports; transport/ and runtime/ are the two faces'
# compiled halves, both built on loop/ and on the shared transport core
# (transport/common.pxi, which knows neither face), and neither face's
# part uses the other's.  Class
# declarations are in core.pxd (shared by every part), the io_uring ABI's in
# uring.pxd, the Python-visible API's types in core.pyi.  Private CPython
# names come from ringline._compat only.

cimport cython
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF, Py_XDECREF
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.exc cimport PyErr_CheckSignals
from cpython.list cimport PyList_GET_SIZE, PyList_GET_ITEM
from cpython.dict cimport PyDict_GetItemWithError, PyDict_SetItem
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release,
                             PyBUF_SIMPLE, PyBUF_WRITABLE)
from cpython.contextvars cimport PyContext_CopyCurrent, PyContext_Enter, PyContext_Exit, PyContext_CheckExact
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t, uintptr_t
from libc.string cimport memset, memcpy
from libc.errno cimport errno
from posix.unistd cimport close, write, read

from .uring cimport *

cdef extern from "pycompat.h":
    # PyWeakref_GetObject's replacement on every version (pycompat.h).
    object rl_weakref_get(object ref)
    int rl_weakref_alive(object ref) except -1
    # One memoryview reused for successive received buffers (runtime/conn.pxi).
    int rl_view_park(object view)
    int rl_view_repoint(object view, object exporter) except -1
    object rl_view_obj(object view)

import collections
import errno as errno_mod
import os
from operator import index as operator_index
import socket as socket_mod
import sys
from weakref import ref as _weakref

from asyncio import Future as _Future
# Private CPython names: from ringline._compat only (its comments say which
# versions have each shape).
from ringline import _compat

try:
    import ssl as _ssl
    _ssl_socket_type = _ssl.SSLSocket
except ImportError:  # pragma: no cover - Python built without ssl
    _ssl_socket_type = None


cdef extern from "Python.h":
    int _PyBytes_Resize(PyObject **bytes, Py_ssize_t newsize) except -1

cdef extern from "<errno.h>":
    enum:
        errno_EINTR "EINTR"
        errno_EAGAIN "EAGAIN"
        errno_EBUSY "EBUSY"
        errno_ETIME "ETIME"
        errno_ECANCELED "ECANCELED"
        errno_ENOSYS "ENOSYS"
        errno_EPERM "EPERM"
        errno_ENOMEM "ENOMEM"
        errno_ENOBUFS "ENOBUFS"
        errno_ECONNABORTED "ECONNABORTED"
        errno_EINVAL "EINVAL"
        errno_EINPROGRESS "EINPROGRESS"
        errno_EALREADY "EALREADY"
        errno_EISCONN "EISCONN"
        errno_ENFILE "ENFILE"
        errno_EOPNOTSUPP "EOPNOTSUPP"

cdef extern from "<poll.h>":
    enum:
        POLLIN
        POLLOUT
        POLLERR
        POLLHUP

cdef extern from "driver/rl_poll.h":      # <sys/eventfd.h> on Linux, ENOSYS stubs elsewhere
    int eventfd(unsigned int initval, int flags)
    enum:
        EFD_NONBLOCK
        EFD_CLOEXEC

cdef extern from "<sys/un.h>":
    struct sockaddr_un:
        unsigned short sun_family
        char sun_path[108]

cdef extern from "<netinet/in.h>":
    struct in_addr:
        pass
    struct in6_addr:
        pass
    struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        unsigned short sin6_family
        unsigned short sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    uint16_t htons(uint16_t)
    uint16_t ntohs(uint16_t)
    uint32_t htonl(uint32_t)
    uint32_t ntohl(uint32_t)

cdef extern from "<arpa/inet.h>":
    int inet_pton(int af, const char *src, void *dst)
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)

cdef extern from "<sys/socket.h>":
    ctypedef struct msghdr_t "struct msghdr":
        pass
    struct sockaddr:
        unsigned short sa_family
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    ssize_t recvmsg(int fd, msghdr_t *msg, int flags)
    ssize_t sendmsg(int fd, const msghdr_t *msg, int flags)
    int accept4(int fd, sockaddr *addr, socklen_t *addrlen, int flags)
    int connect(int fd, const sockaddr *addr, socklen_t addrlen)
    enum:
        AF_INET
        AF_INET6
        AF_UNIX
        SOCK_STREAM
        SOCK_DGRAM
        SOCK_NONBLOCK
        SOCK_CLOEXEC
        MSG_NOSIGNAL
        MSG_DONTWAIT

cdef extern from *:
    """
    #include <stddef.h>
    #include <sys/un.h>
    static inline size_t offsetof_sun_path(void) { return offsetof(struct sockaddr_un, sun_path); }
    """
    size_t offsetof_sun_path()


include "live.pxi"
include "loop/handles.pxi"
include "loop/ops.pxi"
include "driver/base.pxi"
include "driver/uring.pxi"
include "loop/waitid.pxi"
include "driver/readiness.pxi"
include "driver/epoll.pxi"
include "driver/kqueue.pxi"
include "loop/bufpool.pxi"
include "loop/loop.pxi"
include "transport/common.pxi"
include "transport/direct.pxi"
include "transport/tls.pxi"
include "transport/stream.pxi"
include "transport/zcsend.pxi"
include "fileops.pxi"
include "nvme.pxi"
include "transport/dgram.pxi"
include "runtime/conn.pxi"
include "runtime/metrics.pxi"
include "runtime/sendpool.pxi"
include "runtime/env.pxi"
include "runtime/kbuf.pxi"
include "runtime/connops.pxi"
include "runtime/wait.pxi"
include "runtime/direct.pxi"
include "fuzzhooks.pxi"     # test-only entry points for tests/fuzz/
