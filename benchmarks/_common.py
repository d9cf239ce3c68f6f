"""Shared helpers for the benchmark scripts: loop factories, CPU pinning, /proc CPU
accounting and markdown tables.  Standard library only, so every script runs on a bare
interpreter (plus whichever event loops are installed)."""
import importlib
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))

# Short names accepted by every script; anything else must be MODULE:FACTORY.
LOOP_FACTORIES = {
    "asyncio": "asyncio:new_event_loop",
    "uvloop": "uvloop:new_event_loop",
    "rloop": "rloop:new_event_loop",
    "ringline": "ringline:new_event_loop",
}


# ----------------------------------------------------------------------------- coroutine floor
class CoroutineFloor:
    """Mixin for an asyncio.Protocol: data_received hands each read to the
    coroutine self.reader() (``data = await next_read()``), resumed by send()
    inside a task switch (the task stored where asyncio.current_task() reads
    it, as a Task step does).  It is the least a coroutine-per-connection API
    (the runtime API's ``await conn.with_data(fn)``) adds to a data_received
    callback: one coroutine resumed per read, with no future, no loop callback
    and no buffer handling.  benchmarks/resume_floor.py counts it in
    instructions; echo_server.py --api floor and http_bench.py's "floor" loop
    measure it in a server."""

    __slots__ = ()

    def start_reader(self, loop):
        from ringline import _compat        # the {loop: task} dict (None on 3.14)
        self._floor = (loop, object(), _compat.current_tasks, _compat)
        self._coro = self.reader()
        self._coro.send(None)

    def data_received(self, data):
        loop, task, current_tasks, compat = self._floor
        if current_tasks is not None:
            current_tasks[loop] = task
            try:
                self._coro.send(data)
            finally:
                del current_tasks[loop]
        else:
            compat.enter_task(loop, task)
            try:
                self._coro.send(data)
            finally:
                compat.leave_task(loop, task)

    def stop_reader(self):
        self._coro.close()


@types.coroutine
def next_read():
    """What CoroutineFloor.reader() awaits: the next read (the cheapest awaitable)."""
    return (yield)


# ----------------------------------------------------------------------------- loops
def loop_factory(name):
    """Zero-argument callable that creates the event loop called NAME."""
    target = LOOP_FACTORIES.get(name, name)
    module, sep, attr = target.partition(":")
    if not sep:
        raise ValueError(f"unknown loop {name!r}: use one of {', '.join(LOOP_FACTORIES)} or MODULE:FACTORY")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def new_loop(name):
    return loop_factory(name)()


def loop_class_name(loop):
    cls = type(loop)
    return f"{cls.__module__}.{cls.__qualname__}"


def loop_version(name):
    """Distribution version of the package behind loop NAME ('' if unknown)."""
    module = LOOP_FACTORIES.get(name, name).partition(":")[0].split(".")[0]
    if module == "asyncio":
        return "python " + sys.version.split()[0]
    try:
        from importlib.metadata import version
        return version(module)
    except Exception:  # noqa: BLE001 - not installed as a distribution, or no metadata
        return ""


def probe_loop(name, python=sys.executable):
    """None if loop NAME can be created (and closed) by PYTHON, else the reason it cannot.

    Done in a subprocess: a half-built extension may crash the interpreter on import,
    and the calling process should not load any loop it does not measure."""
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import _common; "
            f"_common.new_loop({name!r}).close()")
    try:
        r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "creating the loop took more than 60 s"
    if r.returncode == 0:
        return None
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    return lines[-1] if lines else exit_reason(r.returncode)


def exit_reason(returncode):
    if returncode is not None and returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            pass
    return f"exit status {returncode}"


def split_list(text):
    return [x.strip() for x in text.split(",") if x.strip()]


def usable_loops(names, python=sys.executable):
    """The NAMES that can be created; prints why the others are skipped."""
    ok = []
    for name in names:
        why = probe_loop(name, python)
        if why is None:
            ok.append(name)
        else:
            print(f"skipping loop {name}: {why}", file=sys.stderr, flush=True)
    return ok


def prime_malloc():
    """Raise glibc's dynamic mmap threshold now rather than at some random later point.

    Stock asyncio reads with sock.recv(256 KiB).  While the threshold is at its start-up
    value (128 KiB) each such buffer is mmapped and unmapped again, costing syscalls and
    page faults on every read; glibc raises the threshold the first time a big mmapped
    block is freed.  A long-running server gets there eventually, a fresh benchmark
    process may or may not, so results would depend on history.  Freeing 1 MiB once
    settles it for every loop alike."""
    block = bytearray(1 << 20)
    del block


# ----------------------------------------------------------------------------- CPUs
def cpu_available(cpu):
    return cpu is not None and cpu in os.sched_getaffinity(0)


def pinned(cpu):
    """preexec_fn for subprocess.Popen that pins the child (and all its threads) to CPU."""
    if not cpu_available(cpu):
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def warn_if_unpinnable(*cpus):
    missing = [c for c in cpus if not cpu_available(c)]
    if missing:
        print(f"warning: CPU(s) {missing} not available (have {sorted(os.sched_getaffinity(0))}); "
              "those processes run unpinned", file=sys.stderr, flush=True)


_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid):
    """User + system CPU seconds used so far by process PID (all its threads), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # comm (field 2) may contain spaces and parentheses: split after the last ')'
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def proc_cpu_split(pid):
    """(user, system) CPU seconds used so far by process PID, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def tree_cpu_split(pid):
    """proc_cpu_split() summed over PID and every process descended from it (a launcher
    and its worker processes, say), or None if PID is gone."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total = proc_cpu_split(pid)
    if total is None:
        return None
    user, system = total
    todo = list(children.get(pid, ()))
    while todo:
        p = todo.pop()
        u, s = proc_cpu_split(p) or (0.0, 0.0)
        user, system = user + u, system + s
        todo += children.get(p, ())
    return user, system


def machine_busy_seconds():
    """CPU seconds all CPUs together have spent busy since boot (user, nice, system, irq,
    softirq), from /proc/stat.  Compared with what the benchmark's own processes used over
    the same window it shows whether something else was running."""
    with open("/proc/stat") as f:
        fields = f.readline().split()  # the aggregate "cpu" line
    user, nice, system, idle, iowait, irq, softirq = (int(x) for x in fields[1:8])
    return (user + nice + system + irq + softirq) / _TICK


# ----------------------------------------------------------------------------- echo servers
class EchoServer:
    """An echo_server.py process for LOOP and API, optionally pinned to CPU.

    start() returns once the server printed its READY line (fields in .ready, port in
    .port) and raises RuntimeError, with the end of its stderr, if it does not."""

    def __init__(self, loop, api, cpu=None, python=sys.executable):
        self.loop, self.api, self.cpu, self.python = loop, api, cpu, python
        self.proc = None
        self.ready = {}
        self.port = None

    def start(self, timeout=30.0):
        cmd = [self.python, os.path.join(HERE, "echo_server.py"), "--loop", self.loop, "--api", self.api,
               "--port", "0"]
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr,
                                     stdin=subprocess.DEVNULL, preexec_fn=pinned(self.cpu))
        line = _read_line(self.proc.stdout, timeout)
        if not line.startswith("READY"):
            try:  # EOF on stdout comes a moment before the exit can be reaped
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            exited = self.proc.poll() is not None
            self.stop()
            what = (f"exited ({exit_reason(self.proc.returncode)})" if exited
                    else f"printed no READY line within {timeout:.0f} s (got {line!r})")
            raise RuntimeError(f"server {what}; stderr: {self.stderr_tail()}")
        self.ready = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
        self.port = int(self.ready["port"])
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_tail(self):
        self.stderr.seek(0)
        lines = [l for l in self.stderr.read().decode(errors="replace").splitlines() if l.strip()]
        return lines[-1] if lines else "(empty)"

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _read_line(pipe, timeout):
    """First line from PIPE, or '' on EOF or timeout (a hung server must not hang us)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([pipe], [], [], left)[0]:
            break
        chunk = os.read(pipe.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\n", 1)[0].decode(errors="replace")


def least_disturbed(run, badness, retries, pause=0.5):
    """RUN() up to 1 + RETRIES times while BADNESS(result) > 1 (the run was disturbed by
    other load on the machine); returns (the least disturbed result, number of retries)."""
    best = run()
    tries = 0
    while badness(best) > 1.0 and tries < retries:
        tries += 1
        time.sleep(pause)  # let a short burst of other load pass
        r = run()
        if badness(r) < badness(best):
            best = r
    return best, tries


# ----------------------------------------------------------------------------- statistics
def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def paired_ratio(values, base):
    """Median over repetitions of values[rep] / base[rep] (dicts keyed by repetition).

    Runs of the same repetition are close in time, so slow drift of the machine affects
    both sides of each ratio alike."""
    ratios = [values[r] / base[r] for r in values if r in base and base[r] and values[r] is not None]
    return statistics.median(ratios) if ratios else None


def spread(values):
    """(max - min) / median: how much the repetitions disagree."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return None
    m = statistics.median(values)
    return (max(values) - min(values)) / m if m else None


# ----------------------------------------------------------------------------- formatting
def fmt_int(x):
    return "–" if x is None else f"{x:,.0f}"


def fmt_ratio(x):
    return "–" if x is None else f"{x:.2f}×"


def fmt_pct(x):
    return "–" if x is None else f"{x * 100:.0f}%"


def fmt_float(x, digits=2):
    return "–" if x is None else f"{x:,.{digits}f}"


def md_table(header, rows, align=None):
    """Markdown table; ALIGN is a string of 'l'/'r' per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_summary():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    except OSError:
        pass
    u = os.uname()
    return f"Linux {u.release}, {os.cpu_count()} CPUs ({model}), Python {sys.version.split()[0]}"
