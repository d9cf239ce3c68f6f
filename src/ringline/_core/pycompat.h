/* C-API calls whose spelling depends on the CPython version, and the one
 * place the core reads a CPython object's layout (memoryview reuse, below).
 *
 * PyWeakref_GetObject returns a borrowed reference, which another thread
 * (free-threaded builds) or a finalizer can free under the caller; it is
 * deprecated in 3.13 and removed in 3.15 (PEP 702 / gh-105927).
 * PyWeakref_GetRef (3.13+) returns a strong reference instead. */
#ifndef RL_PYCOMPAT_H
#define RL_PYCOMPAT_H
#include <Python.h>

/* New reference to the referent, or to None if it is gone; NULL with an
 * exception set if `ref` is not a weak reference. */
static inline PyObject *rl_weakref_get(PyObject *ref)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *obj;
    if (PyWeakref_GetRef(ref, &obj) < 0)
        return NULL;
    if (obj == NULL)
        return Py_NewRef(Py_None);
    return obj;
#else
    PyObject *obj = PyWeakref_GetObject(ref);
    if (obj == NULL)
        return NULL;
    Py_INCREF(obj);
    return obj;
#endif
}

/* 1 if the referent is alive, 0 if gone, -1 with an exception set. */
static inline int rl_weakref_alive(PyObject *ref)
{
    PyObject *obj = rl_weakref_get(ref);
    int alive;
    if (obj == NULL)
        return -1;
    alive = obj != Py_None;
    Py_DECREF(obj);
    return alive;
}

/* One memoryview object reused for successive received buffers (the runtime
 * API's with_data(): a view per message, valid only while the callback
 * runs).  Making one is two GC objects (a managed buffer and the view) and
 * freeing them again; re-pointing an idle one is a buffer request and two
 * stores.  This reads CPython's own layouts, PyMemoryViewObject and
 * _PyManagedBufferObject with their _Py_MEMORYVIEW_RELEASED /
 * _Py_MANAGED_BUFFER_RELEASED flags (memoryobject.h; the same in 3.11-3.14):
 * elsewhere both calls say "no" and a new view is made per message.
 *
 * A view is idle -- nobody but the caller can see it -- when the caller
 * holds the only reference, no weak reference exists, nothing is exported
 * from it, no other view shares its managed buffer and it was not released
 * (the callback did not keep it, slice it or release it). */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030F0000
#define RL_VIEW_REUSE 1
static inline int rl_view_idle(PyMemoryViewObject *mv)
{
    _PyManagedBufferObject *mb = mv->mbuf;
    return Py_REFCNT(mv) == 1 && mv->weakreflist == NULL && mv->exports == 0
        && !(mv->flags & _Py_MEMORYVIEW_RELEASED) && mv->view.ndim == 1
        && mb != NULL && Py_REFCNT(mb) == 1 && mb->exports == 1
        && !(mb->flags & _Py_MANAGED_BUFFER_RELEASED);
}
#endif

/* view.obj (a new reference; None when the view has no exporter), read
 * from the view itself where its layout is known: forward_recv_buf() asks
 * it per message, and the attribute lookup cost ~80 instructions.  A
 * released view takes the attribute path, which raises ValueError. */
static inline PyObject *rl_view_obj(PyObject *view)
{
#ifdef RL_VIEW_REUSE
    PyMemoryViewObject *mv = (PyMemoryViewObject *)view;
    if (PyMemoryView_Check(view) && !(mv->flags & _Py_MEMORYVIEW_RELEASED))
        return Py_NewRef(mv->view.obj != NULL ? mv->view.obj : Py_None);
#endif
    return PyObject_GetAttrString(view, "obj");
}

/* After the callback: if `view` is idle, give its buffer back to the
 * exporter and keep the empty view (1); else 0 (drop it as usual).  A
 * parked view's dealloc later finds no buffer to release. */
static inline int rl_view_park(PyObject *view)
{
#ifdef RL_VIEW_REUSE
    PyMemoryViewObject *mv = (PyMemoryViewObject *)view;
    if (!PyMemoryView_Check(view) || !rl_view_idle(mv) || mv->mbuf->master.obj == NULL)
        return 0;
    PyBuffer_Release(&mv->mbuf->master);        /* master.obj = NULL */
    mv->view.obj = NULL;
    mv->view.buf = NULL;
    mv->view.len = 0;
    mv->view.shape[0] = 0;
    return 1;
#else
    (void)view;
    return 0;
#endif
}

/* A parked view over `exporter`'s buffer (1-D, as memoryview(exporter)
 * would be): 1, or 0 if `view` is not a parked view (make a new one), or -1
 * with an exception if the exporter refused. */
static inline int rl_view_repoint(PyObject *view, PyObject *exporter)
{
#ifdef RL_VIEW_REUSE
    PyMemoryViewObject *mv = (PyMemoryViewObject *)view;
    _PyManagedBufferObject *mb;
    Py_buffer *src;
    if (!PyMemoryView_Check(view) || !rl_view_idle(mv) || mv->mbuf->master.obj != NULL)
        return 0;
    mb = mv->mbuf;
    src = &mb->master;
    if (PyObject_GetBuffer(exporter, src, PyBUF_FULL_RO) < 0)
        return -1;
    if (src->ndim != 1 || src->suboffsets != NULL) {
        PyBuffer_Release(src);
        return 0;
    }
    /* memoryobject.c's init_shared_values / init_shape_strides / init_flags
       for one dimension. */
    mv->view.obj = src->obj;
    mv->view.buf = src->buf;
    mv->view.len = src->len;
    mv->view.itemsize = src->itemsize;
    mv->view.readonly = src->readonly;
    mv->view.format = src->format ? src->format : "B";
    mv->view.internal = src->internal;
    mv->view.shape[0] = src->shape ? src->shape[0] : src->len / src->itemsize;
    mv->view.strides[0] = src->strides ? src->strides[0] : src->itemsize;
    mv->hash = -1;
    mv->flags = (mv->view.shape[0] == 1 || mv->view.strides[0] == mv->view.itemsize)
        ? (_Py_MEMORYVIEW_C | _Py_MEMORYVIEW_FORTRAN) : 0;
    return 1;
#else
    (void)view; (void)exporter;
    return 0;
#endif
}

#endif
