# Callback handles: asyncio.Handle / asyncio.TimerHandle semantics, compiled.
#
# Same public surface as asyncio's (cancel, cancelled, get_context, when,
# _run, repr) so code that introspects handles keeps working; the run path
# enters the callback's context with PyContext_Enter instead of a
# Context.run() method call.


# What the loop resumes right after its poll, with no Handle in between:
# the runtime API's direct resume of a handler task (runtime/direct.pxi).
# The loop runs at most its direct budget of these per iteration; the rest
# wait for the next one, after the ready queue and the timers had their turn.
cdef class Resumable:

    cdef int resume(self) except -1:
        return 0


cdef extern from *:
    """
    /* Empty a list but keep its storage (del l[:] frees it, and the next
       append allocates again): the loop's two swapped queues. */
    static void rl_list_reset(PyObject *l) {
        Py_ssize_t n;
        while ((n = PyList_GET_SIZE(l)) > 0) {
            PyObject *x = PyList_GET_ITEM(l, n - 1);
            Py_SET_SIZE(l, n - 1);          /* out of the list before it can go */
            Py_DECREF(x);
        }
    }
    /* del d[k] if present (no KeyError to raise and clear). */
    static int rl_dict_discard(PyObject *d, PyObject *k) {
        if (PyDict_DelItem(d, k) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError))
                return -1;
            PyErr_Clear();
        }
        return 0;
    }
    """
    void rl_list_reset(list l)
    int rl_dict_discard(dict d, object k) except -1


#: The {loop: task} dict current_task() reads (3.11-3.13; None on 3.14): a
#: direct step stores its task there, and _run_direct removes it after the
#: batch (see _compat.current_tasks).
cdef dict _current_tasks = _compat.current_tasks


@cython.freelist(256)
cdef class Handle:

    def __init__(self, callback, args, loop, context=None):
        self._init(callback, args, <LoopCore>loop, context)

    cdef inline _init(self, object callback, tuple args, LoopCore loop, object context):
        if context is None:
            context = PyContext_CopyCurrent()
        self._callback = callback
        self._args = args
        self._loop = loop
        self._context = context
        self._cancelled = False
        self._repr = None
        if loop._debug:
            self._source_traceback = _caller_stack()
        else:
            self._source_traceback = None

    def get_context(self):
        return self._context

    def cancel(self):
        if not self._cancelled:
            self._cancelled = True
            if self._loop._debug:
                # Keep a representation for debugging before clearing.
                self._repr = repr(self)
            self._callback = None
            self._args = None

    def cancelled(self):
        return self._cancelled

    def _repr_info(self):
        info = [self.__class__.__name__]
        if self._cancelled:
            info.append('cancelled')
        if self._callback is not None:
            info.append(_compat.format_callback_source(
                self._callback, self._args, self._loop._debug))
        if self._source_traceback:
            frame = self._source_traceback[-1]
            info.append(f'created at {frame[0]}:{frame[1]}')
        return info

    def __repr__(self):
        if self._repr is not None:
            return self._repr
        return '<{}>'.format(' '.join(self._repr_info()))

    def _run(self):
        self.run()

    cdef int run(self) except -1:
        cdef object callback = self._callback
        cdef tuple args = self._args
        cdef object context = self._context
        cdef Py_ssize_t n
        try:
            # The callback runs in its context; the exception handler
            # outside it, as asyncio's Handle._run (context.run(...) inside
            # the try).  3.12+'s call_exception_handler enters the handle's
            # context itself: entering it twice raises RuntimeError.
            PyContext_Enter(context)
            try:
                n = len(args)
                if n == 0:
                    callback()
                elif n == 1:
                    callback(args[0])
                else:
                    callback(*args)
            finally:
                PyContext_Exit(context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            cb = _compat.format_callback_source(callback, args, self._loop._debug)
            ctx = {
                'message': f'Exception in callback {cb}',
                'exception': exc,
                'handle': self,
            }
            if self._source_traceback:
                ctx['source_traceback'] = self._source_traceback
            self._loop.call_exception_handler(ctx)
        return 0


cdef object _caller_stack():
    # Debug mode's _source_traceback, last frame the caller's, as asyncio's
    # (its Handle.__init__ skips its own frames; call_soon/_call_at drop
    # theirs).  Compiled methods have no frame: the innermost Python frame
    # is the code that called call_soon/call_later/add_reader.
    try:
        f = sys._getframe(0)
    except ValueError:       # called from C with no Python frame at all
        return []
    return _compat.extract_stack(f)


@cython.final
cdef class TimerHandle(Handle):

    def __init__(self, when, callback, args, loop, context=None):
        self._init(callback, args, <LoopCore>loop, context)
        self._when = when
        self._heap_index = -1

    def when(self):
        return self._when

    @property
    def _scheduled(self):
        return self._heap_index >= 0

    def cancel(self):
        if not self._cancelled:
            if self._heap_index >= 0:
                self._loop._timers.remove(self)
            Handle.cancel(self)

    def _repr_info(self):
        info = Handle._repr_info(self)
        info.insert(2 if self._cancelled else 1, f'when={self._when}')
        return info

    def __hash__(self):
        return hash(self._when)

    def __lt__(self, other):
        return self._when < (<TimerHandle?>other)._when

    def __le__(self, other):
        return self._when <= (<TimerHandle?>other)._when

    def __gt__(self, other):
        return self._when > (<TimerHandle?>other)._when

    def __ge__(self, other):
        return self._when >= (<TimerHandle?>other)._when

    def __eq__(self, other):
        if isinstance(other, TimerHandle):
            return (self._when == (<TimerHandle>other)._when and
                    self._callback == (<TimerHandle>other)._callback and
                    self._args == (<TimerHandle>other)._args and
                    self._cancelled == (<TimerHandle>other)._cancelled)
        return NotImplemented


# A binary min-heap of TimerHandles ordered by (when, seq).  Each handle
# knows its index, so cancel() removes it at once (O(log n)) instead of
# leaving a tombstone for the loop to skip, and the loop's wait timeout is
# always the true next deadline.
@cython.final
cdef class TimerHeap:

    def __cinit__(self):
        self.items = []
        self.seq = 0

    cdef inline bint _less(self, TimerHandle a, TimerHandle b):
        return a._when < b._when or (a._when == b._when and a._seq < b._seq)

    cdef inline void _place(self, Py_ssize_t i, TimerHandle h):
        self.items[i] = h
        h._heap_index = i

    cdef void _sift_up(self, Py_ssize_t i):
        cdef list items = self.items
        cdef TimerHandle h = <TimerHandle>items[i]
        cdef Py_ssize_t parent
        cdef TimerHandle p
        while i > 0:
            parent = (i - 1) >> 1
            p = <TimerHandle>items[parent]
            if not self._less(h, p):
                break
            self._place(i, p)
            i = parent
        self._place(i, h)

    cdef void _sift_down(self, Py_ssize_t i):
        cdef list items = self.items
        cdef Py_ssize_t n = len(items)
        cdef TimerHandle h = <TimerHandle>items[i]
        cdef Py_ssize_t child
        cdef TimerHandle c
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            if child + 1 < n and self._less(<TimerHandle>items[child + 1], <TimerHandle>items[child]):
                child += 1
            c = <TimerHandle>items[child]
            if not self._less(c, h):
                break
            self._place(i, c)
            i = child
        self._place(i, h)

    cdef push(self, TimerHandle h):
        h._seq = self.seq
        self.seq += 1
        self.items.append(h)
        h._heap_index = len(self.items) - 1
        self._sift_up(h._heap_index)

    cdef TimerHandle pop(self):
        cdef list items = self.items
        cdef TimerHandle top = <TimerHandle>items[0]
        cdef TimerHandle last = <TimerHandle>items.pop()
        top._heap_index = -1
        if len(items):
            self._place(0, last)
            self._sift_down(0)
        return top

    cdef remove(self, TimerHandle h):
        cdef list items = self.items
        cdef Py_ssize_t i = h._heap_index
        cdef TimerHandle last
        if i < 0:
            return
        h._heap_index = -1
        last = <TimerHandle>items.pop()
        if last is h:
            return
        self._place(i, last)
        if i > 0 and self._less(last, <TimerHandle>items[(i - 1) >> 1]):
            self._sift_up(i)
        else:
            self._sift_down(i)

    cdef clear(self):
        cdef TimerHandle h
        for h in self.items:
            h._heap_index = -1
        self.items = []

    def __len__(self):
        return len(self.items)
