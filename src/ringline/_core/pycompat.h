/* C-API calls whose spelling depends on the CPython version.
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
#endif
