# Direct resume: a handler's coroutine stepped from the completion batch, on
# its Task's behalf.
#
# A worker runs each connection handler as an ordinary asyncio Task over a
# DirectCoro, which drives the handler's coroutine.  When the handler waits
# on a connection (with_data(), send(), drain()), the connection's awaitable
# (wait.pxi) yields _DIRECT_WAIT to the DirectCoro instead of a future, and
# the DirectCoro gives the Task one future, which stays pending while the
# handler runs from completions: the connection queues the DirectCoro on
# the loop (a Resumable, loop/handles.pxi) and the loop resumes it after its
# poll -- in the Task's context, with the Task as current_task() -- so a
# message costs no future, no call_soon and no Task step.
#
# The moment the coroutine yields anything else (a lock's or a sleep's
# future, a bare yield), returns or raises, the DirectCoro keeps that
# outcome and resolves the Task's future; the Task's next step takes the
# outcome from send(), and asyncio's own machinery goes on from there.
# Cancellation is the Task's: task.cancel() cancels the future it waits on,
# and the Task throws CancelledError in where the coroutine waits.  A task
# that cancels itself during a direct step is cancelled at its next wait,
# as asyncio's would be.  Debug mode takes the ordinary path (its slow-
# callback report times the Task's steps).

cdef extern from *:
    """
    /* coro.send(value) through PyIter_Send (am_send for native coroutines,
       3.10+): no StopIteration object when it returns. */
    static PyObject *rl_coro_send(PyObject *coro, PyObject *value, int *done) {
        PyObject *res = NULL;
        PySendResult st = PyIter_Send(coro, value, &res);
        if (st == PYGEN_RETURN)
            *done = 1;
        return res;
    }
    static PyObject *(*rl_dc_step)(PyObject *, PyObject *, int *) = NULL;
    static PySendResult rl_dc_am_send(PyObject *self, PyObject *arg, PyObject **result) {
        int done = 0;
        PyObject *r = rl_dc_step(self, arg, &done);
        *result = r;
        if (r == NULL)
            return PYGEN_ERROR;
        return done ? PYGEN_RETURN : PYGEN_NEXT;
    }
    static int rl_dc_install(PyObject *t, void *step) {
        PyTypeObject *tp = (PyTypeObject *)t;
        if (tp->tp_as_async == NULL)
            return 0;
        rl_dc_step = (PyObject *(*)(PyObject *, PyObject *, int *))step;
        tp->tp_as_async->am_send = rl_dc_am_send;
        return 1;
    }
    """
    object rl_coro_send(object coro, object value, int *done)
    int rl_dc_install(object t, void *step)

cdef enum:
    DC_RUN = 0          # the Task drives the coroutine, or it waits on a connection
    DC_YIELD = 1        # in a direct step it yielded `outcome`: the Task's next step gets it
    DC_RETURN = 2       # ... it returned `outcome`
    DC_RAISE = 3        # ... it raised `outcome`

#: What a connection's awaitable yields to the DirectCoro driving it.
cdef object _DIRECT_WAIT = object()
#: The DirectCoro whose coroutine runs now (send, throw or a direct step).
cdef DirectCoro _direct_current = None
cdef object _enter_task = _compat.enter_task
cdef object _leave_task = _compat.leave_task


@cython.final
cdef class DirectCoro(Resumable):
    """The coroutine a handler's Task runs: it drives the handler's own
    coroutine, and resumes it straight from completions while it waits on
    a connection (see the top of runtime/direct.pxi)."""

    def __init__(self, coro, LoopCore loop not None, context):
        if not hasattr(coro, 'send') or not hasattr(coro, 'throw'):
            raise TypeError(f'a coroutine was expected, got {coro!r}')
        if not PyContext_CheckExact(context):
            raise TypeError(f'context must be a contextvars.Context, got {type(context).__name__}')
        self.coro = coro
        self.loop = loop
        self.context = context

    # ---- the coroutine protocol, for the Task -------------------------------

    def send(self, value):
        cdef int done = 0
        r = _dc_send(self, value, &done)
        if done:
            raise StopIteration(r)
        return r

    def __next__(self):
        return self.send(None)

    def throw(self, typ, val=None, tb=None):
        cdef int st = self.state
        cdef object out = self.outcome
        cdef int done = 0
        global _direct_current
        cdef bint self_cancelled = self.cancelled_in_step
        self.outcome = None
        self.state = DC_RUN
        self.waiter = None
        self.cancelled_in_step = False
        if st == DC_RAISE:
            self._finish()
            raise out               # the coroutine's own exception wins, as in a Task step
        if st == DC_RETURN:
            self._finish()
            if self_cancelled:
                # It cancelled its own task, then returned: asyncio's task
                # ends cancelled.  (The Task throws an instance.)
                raise typ
            raise StopIteration(out)
        if st == DC_YIELD and out is not None:
            # The Task throws before it saw what the coroutine yielded (it
            # was cancelled meanwhile): cancel that, as a Task cancels the
            # future it waits on, and throw in where the coroutine waits.
            cancel = getattr(out, 'cancel', None)
            if cancel is not None:
                cancel()
        prev = _direct_current
        _direct_current = self
        self.wait_target = None
        try:
            if val is None and tb is None:
                r = self.coro.throw(typ)
            else:
                r = self.coro.throw(typ, val, tb)
        except StopIteration as e:
            self._finish()
            raise StopIteration(e.value) from None
        except BaseException:
            self._finish()
            raise
        finally:
            _direct_current = prev
        return _dc_yielded(self, r)

    def close(self):
        self.outcome = None
        self.state = DC_RUN
        self._finish()
        return self.coro.close()

    def __await__(self):
        return self

    # ---- introspection: the handler's coroutine (Task repr, get_stack) ----

    @property
    def __name__(self):
        return getattr(self.coro, '__name__', type(self.coro).__name__)

    @property
    def __qualname__(self):
        return getattr(self.coro, '__qualname__', type(self.coro).__qualname__)

    @property
    def cr_frame(self):
        return getattr(self.coro, 'cr_frame', None)

    @property
    def cr_code(self):
        return getattr(self.coro, 'cr_code', None)

    @property
    def cr_running(self):
        return getattr(self.coro, 'cr_running', False)

    @property
    def cr_await(self):
        return getattr(self.coro, 'cr_await', None)

    @property
    def cr_suspended(self):
        # inspect.getcoroutinestate() reads it (3.11+; anyio asks it of a
        # task's coroutine).
        return getattr(self.coro, 'cr_suspended', False)

    @property
    def cr_origin(self):
        return getattr(self.coro, 'cr_origin', None)

    @property
    def coroutine(self):
        """The handler's coroutine this drives."""
        return self.coro

    # ---- the direct path -----------------------------------------------------

    cdef inline int schedule(self) except -1:
        # A connection it waits on has something: resume after the poll.
        if not self.queued:
            self.queued = True
            self.loop._direct.append(self)
        return 0

    cdef int resume(self) except -1:
        cdef object w = self.waiter
        cdef object ctx = self.context
        cdef object task = self.task
        cdef object r
        cdef int done = 0
        cdef object w_done = self.waiter_done
        self.queued = False
        if w is None or task is None or w_done():
            return 0            # not waiting on us: the Task steps the coroutine itself
        try:
            PyContext_Enter(ctx)
        except RuntimeError:
            # Entered already: the loop iterates inside this task's own step
            # (a nested run).  The Task resumes it instead.
            w.set_result(None)
            return 0
        try:
            if _current_tasks is not None:
                # _enter_task's check and store, inline.  The entry stays
                # for the next direct step of the batch, which replaces it;
                # _run_direct deletes it after the batch.
                if not self.loop._direct_task_in:
                    if PyDict_GetItemWithError(_current_tasks, self.loop) != NULL:
                        w.set_result(None)  # another task runs (a nested run): as above
                        return 0
                    self.loop._direct_task_in = True
                PyDict_SetItem(_current_tasks, self.loop, task)
            else:
                try:
                    _enter_task(self.loop, task)
                except RuntimeError:
                    w.set_result(None)  # another task runs (a nested run): as above
                    return 0
            try:
                r = _dc_drive(self, None, &done)
            except BaseException as exc:
                self.outcome = exc
                self.state = DC_RAISE
            else:
                if done:
                    self.outcome = r
                    self.state = DC_RETURN
                elif r is _DIRECT_WAIT:
                    return 0    # waits on a connection again (the finally clauses run)
                else:
                    self.outcome = r
                    self.state = DC_YIELD
            finally:
                if _current_tasks is None:
                    _leave_task(self.loop, task)
        finally:
            PyContext_Exit(ctx)
        if w_done():
            # The step cancelled its own task: the Task throws next.
            self.cancelled_in_step = True
        else:
            w.set_result(None)
        return 0

    cdef int _finish(self) except -1:
        # The coroutine is over: drop the cycle through the Task.
        self.task = None
        self.waiter = None
        self.waiter_done = None
        self.wait_target = None
        return 0


cdef object _dc_drive(DirectCoro self, object value, int *done):
    # coro.send(value) with this DirectCoro current, so the connection's
    # awaitable yields _DIRECT_WAIT and registers it.
    global _direct_current
    cdef DirectCoro prev = _direct_current
    _direct_current = self
    self.wait_target = None
    try:
        return rl_coro_send(self.coro, value, done)
    finally:
        _direct_current = prev


cdef object _dc_send(DirectCoro self, object value, int *done):
    # The Task's step: an outcome a direct step kept, or the coroutine's next.
    cdef int st = self.state
    cdef object r
    if st != DC_RUN:
        r = self.outcome
        self.outcome = None
        self.state = DC_RUN
        self.waiter = None
        self.cancelled_in_step = False
        if st == DC_YIELD:
            return r
        self._finish()
        if st == DC_RETURN:
            done[0] = 1
            return r
        raise r
    self.waiter = None
    try:
        r = _dc_drive(self, value, done)
    except BaseException:
        self._finish()
        raise
    if done[0]:
        self._finish()
        return r
    return _dc_yielded(self, r)


cdef object _dc_yielded(DirectCoro self, object r):
    # What the Task gets for a yield: for a connection wait, one future it
    # waits on while direct steps run the coroutine.
    cdef object w
    if r is _DIRECT_WAIT:
        w = _new_waiter(self.loop)
        self.waiter = w
        self.waiter_done = w.done
        return w
    return r


rl_dc_install(DirectCoro, <void*>_dc_send)
import collections.abc as _abc
_abc.Coroutine.register(DirectCoro)
