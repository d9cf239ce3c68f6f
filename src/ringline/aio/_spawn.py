"""posix_spawn(p) from libc with the GIL released.

``os.posix_spawn``/``os.posix_spawnp`` hold the GIL for the whole call
(CPython's py_posix_spawn has no Py_BEGIN_ALLOW_THREADS), and the call lasts
until the child has exec'd (glibc spawns with CLONE_VFORK): a few hundred
microseconds for a small program, during which a spawner thread would stop
the loop thread.  ctypes releases the GIL around foreign calls, so the
spawner pool calls libc's posix_spawnp itself.  glibc also offers what the
os module does not expose: ``posix_spawn_file_actions_addclosefrom_np``
(close_fds without listing the fds) -- this module is used only where libc
has it (glibc >= 2.34); elsewhere _subprocess falls back to os.posix_spawnp.

Signal dispositions: glibc's spawn child sets its internal signals (32 and
33: SIGCANCEL, SIGSETXID) to SIG_IGN unless they are in the SETSIGDEF set,
and ignored dispositions survive exec; a fork/exec child (subprocess.Popen)
starts with them at SIG_DFL.  The set is a raw bit mask and glibc copies it
as is, so they are put in it (sigaddset refuses them), and children start
as Popen's do.
"""

from __future__ import annotations

import ctypes
import os
import signal

__all__ = ("AVAILABLE", "spawn")

# <spawn.h> flags (the same values in glibc and musl).
_SETPGROUP = 0x02
_SETSIGDEF = 0x04
_SETSID = 0x80

# Opaque libc structures: generous buffers (glibc x86_64: 80, 336, 128 bytes).
_FA_SIZE = 512
_ATTR_SIZE = 1024
_SIGSET_BYTES = 128
_ULONG_BITS = 8 * ctypes.sizeof(ctypes.c_ulong)

AVAILABLE = False
try:
    if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
        raise OSError("not glibc")
    _libc = ctypes.CDLL(None, use_errno=True)
    _c_int_p = ctypes.POINTER(ctypes.c_int)
    _vp = ctypes.c_void_p

    def _fn(name, *argtypes):
        f = getattr(_libc, name)
        f.argtypes = argtypes
        f.restype = ctypes.c_int
        return f

    _posix_spawn = _fn("posix_spawn", _c_int_p, ctypes.c_char_p, _vp, _vp, _vp, _vp)
    _posix_spawnp = _fn("posix_spawnp", _c_int_p, ctypes.c_char_p, _vp, _vp, _vp, _vp)
    _fa_init = _fn("posix_spawn_file_actions_init", _vp)
    _fa_destroy = _fn("posix_spawn_file_actions_destroy", _vp)
    _fa_adddup2 = _fn("posix_spawn_file_actions_adddup2", _vp, ctypes.c_int, ctypes.c_int)
    _fa_addclosefrom = _fn("posix_spawn_file_actions_addclosefrom_np", _vp, ctypes.c_int)
    _attr_init = _fn("posix_spawnattr_init", _vp)
    _attr_destroy = _fn("posix_spawnattr_destroy", _vp)
    _attr_setflags = _fn("posix_spawnattr_setflags", _vp, ctypes.c_short)
    _attr_setsigdefault = _fn("posix_spawnattr_setsigdefault", _vp, _vp)
    _attr_setpgroup = _fn("posix_spawnattr_setpgroup", _vp, ctypes.c_int)
    _environ = ctypes.c_void_p.in_dll(_libc, "environ")
    AVAILABLE = True
except (OSError, AttributeError, ValueError):  # pragma: no cover - non-glibc
    pass


def _sigset(signums):
    words = (ctypes.c_ulong * (_SIGSET_BYTES // ctypes.sizeof(ctypes.c_ulong)))()
    for sig in signums:
        words[(sig - 1) // _ULONG_BITS] |= 1 << ((sig - 1) % _ULONG_BITS)
    return words


# glibc's internal signals: from __SIGRTMIN (32) up to SIGRTMIN (34 here).
_INTERNAL_SIGNALS = tuple(range(32, signal.SIGRTMIN)) if hasattr(signal, "SIGRTMIN") else ()
_SIGDEF_PLAIN = _sigset(_INTERNAL_SIGNALS)
_SIGDEF_RESTORE = _sigset(_INTERNAL_SIGNALS + tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name)))


def _cstring(value) -> bytes:
    b = os.fsencode(value)
    if b"\0" in b:
        raise ValueError("embedded null byte")
    return b


def _envlist(env):
    items = []
    for k, v in env.items():
        k = _cstring(k)
        if not k or b"=" in k:
            raise ValueError("illegal environment variable name")
        items.append(k + b"=" + _cstring(v))
    return items


def spawn(path, argv, env, *, search, dup2s=(), closefrom=-1, setsid=False,
          pgroup=None, restore_signals=True) -> int:
    """posix_spawnp (``search``) or posix_spawn of ``path``; returns the pid.

    ``env`` None passes the process's own environment (C ``environ``, as
    Popen's execv does); ``dup2s`` are (fd, target) pairs applied in order;
    ``closefrom`` >= 0 then closes every fd from there up in the child.
    Raises the OSError of a failed exec with ``path`` as its filename.
    """
    c_path = _cstring(path)
    args = [_cstring(a) for a in argv]
    if not args:
        raise ValueError("argv must not be empty")
    c_argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
    if env is None:
        c_envp = _environ.value
    else:
        envs = _envlist(env)
        c_envp = (ctypes.c_char_p * (len(envs) + 1))(*envs, None)
    fa = ctypes.create_string_buffer(_FA_SIZE)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    pid = ctypes.c_int()
    err = _fa_init(fa)
    if err:
        raise OSError(err, os.strerror(err))
    try:
        err = _attr_init(attr)
        if err:
            raise OSError(err, os.strerror(err))
        try:
            for fd, target in dup2s:
                err = err or _fa_adddup2(fa, fd, target)
            if closefrom >= 0:
                err = err or _fa_addclosefrom(fa, closefrom)
            flags = _SETSIGDEF
            err = err or _attr_setsigdefault(
                attr, ctypes.byref(_SIGDEF_RESTORE if restore_signals else _SIGDEF_PLAIN))
            if setsid:
                flags |= _SETSID
            if pgroup is not None:
                flags |= _SETPGROUP
                err = err or _attr_setpgroup(attr, pgroup)
            err = err or _attr_setflags(attr, flags)
            if err:
                raise OSError(err, os.strerror(err))
            # The GIL is released for this call (ctypes).
            err = (_posix_spawnp if search else _posix_spawn)(
                ctypes.byref(pid), c_path, fa, attr, c_argv, c_envp)
        finally:
            _attr_destroy(attr)
    finally:
        _fa_destroy(fa)
    if err:
        raise OSError(err, os.strerror(err), path)
    return pid.value
