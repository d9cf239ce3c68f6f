"""The driver reports capabilities; nothing else asks which backend it is.
And the transports' compiled code is written once.

What differs between io_uring and the poll backend is reported by the driver
(driver/base.pxi: direct_send, batched_reads, zero_copy_send,
file_ops_in_ring, provided_buffers, pbuf/dpbuf, counters(), reserve()).
Outside src/ringline/_core/driver/, no code tests the driver's type or name
or compares a backend name, except where the ALLOWED list below says why.
A new check fails this test: ask the driver for a capability instead (or,
if it is one of the two allowed kinds, add it below with its reason).

The stream, datagram and runtime connection cores share their ops, flow
control and error paths through transport/common.pxi: no run of DUP_RUN
code lines may appear in two of them (test_no_copied_transport_code).
"""

from __future__ import annotations

import collections
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "ringline"
DRIVER_DIR = SRC / "_core" / "driver"

# What a backend check looks like.
CHECKS = [
    ("isinstance of a driver class",
     re.compile(r"isinstance\([^)]*\b\w*Driver\b")),
    ("type() compared with a driver class",
     re.compile(r"type\([^)]*\)\s*(is|is not|==|!=)\s*\w*Driver\b")),
    ("unchecked cast to a driver class",
     re.compile(r"<\s*\w*Driver\s*>")),
    ("the driver's name compared",
     re.compile(r"_driver\s*\.\s*name\s*(==|!=|\bin\b|\bis\b)")),
    ("a backend name compared",
     re.compile(r"\b_?backend\w*\s*(==|!=|\bis\b|\bin\b)\s*[(\[{]?\s*['\"](io_uring|poll)['\"]")),
    ("a backend name compared",
     re.compile(r"['\"](io_uring|poll)['\"]\s*(==|!=)\s*\w*backend")),
]

# (path relative to src/ringline, a substring of the line, why it is allowed)
ALLOWED = [
    # The loop factory: choosing which driver to build is naming a backend.
    ("_core/loop/loop.pxi", "if backend is None or backend == 'io_uring':",
     "loop factory (_make_driver) chooses the driver"),
    ("_core/loop/loop.pxi", "if backend == 'poll':",
     "loop factory (_make_driver) chooses the driver"),
    # User-facing reporting (loop.backend, loop.stats(), `python -m ringline
    # info`) reads the driver's name without comparing it, so it matches no
    # pattern and needs no entry; one that compares would be listed here.
]

SUFFIXES = {".py", ".pyx", ".pxi", ".pxd"}


def _sources():
    for p in sorted(SRC.rglob("*")):
        if p.suffix in SUFFIXES and DRIVER_DIR not in p.parents:
            yield p


def _code(line: str) -> str:
    """The line without a trailing comment (good enough for these patterns)."""
    i = line.find("#")
    return line if i < 0 else line[:i]


def _findings():
    found = []
    for p in _sources():
        rel = p.relative_to(SRC).as_posix()
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            code = _code(line)
            for what, rx in CHECKS:
                if rx.search(code):
                    found.append((rel, n, line.strip(), what))
                    break
    return found


def _allowed(rel, line):
    return any(rel == a_rel and a_sub in line for a_rel, a_sub, _ in ALLOWED)


def test_sources_found():
    names = {p.relative_to(SRC).as_posix() for p in _sources()}
    assert "_core/transport/stream.pxi" in names
    assert "_core/runtime/conn.pxi" in names
    assert "aio/_loop.py" in names
    assert not any(n.startswith("_core/driver/") for n in names)


def test_no_backend_checks_outside_the_driver():
    bad = [f"{rel}:{n}: {what}: {line}"
           for rel, n, line, what in _findings() if not _allowed(rel, line)]
    assert not bad, ("backend checks outside _core/driver/ (ask the driver's "
                     "capabilities instead):\n" + "\n".join(bad))


def test_allow_list_is_current():
    # Every allowed entry still matches a finding: a stale entry would let a
    # new check through on that line unnoticed.
    found = [(rel, line) for rel, _, line, _ in _findings()]
    for a_rel, a_sub, why in ALLOWED:
        assert any(rel == a_rel and a_sub in line for rel, line in found), (a_rel, a_sub, why)


@pytest.mark.parametrize("line", [
    "        if isinstance(d, UringDriver):",
    "    if not isinstance(drv, (_ReadinessDriver, PollDriver)):",
    "        if type(loop._driver) is not UringDriver:",
    "        cdef UringDriver d = <UringDriver>self.loop._driver",
    "        self.direct_send = loop._driver.name == \"poll\"",
    "        if self._backend != \"io_uring\":",
    "            backend == \"io_uring\" and _zc_supported(), 0,",
    "    if loop.backend in ('poll',):",
    "    if \"poll\" == backend:",
])
def test_patterns_catch(line):
    assert any(rx.search(_code(line)) for _, rx in CHECKS), line


@pytest.mark.parametrize("line", [
    "        if self.loop._driver.batched_reads:",
    "    d = <UringDriver?>drv           # checked, after a capability check",
    "        return self._driver.name",
    "    cdef Driver d = self.loop._driver",
])
def test_patterns_pass(line):
    assert not any(rx.search(_code(line)) for _, rx in CHECKS), line


CAPABILITIES = ("direct_send", "batched_reads", "zero_copy_send", "file_ops_in_ring",
                "provided_buffers")


def test_capabilities_reported():
    # Each backend sets every capability; the poll backend has none of the
    # ring's (zero-copy send, file ops in the ring, provided buffers).
    import ringline
    import ringline.aio

    for backend in ringline.available_backends():
        loop = ringline.aio.new_event_loop(backend)
        try:
            drv = loop._driver
            caps = {c: getattr(drv, c) for c in CAPABILITIES}
            assert all(type(v) is bool for v in caps.values()), caps
            if backend == "poll":
                assert caps == {"direct_send": True, "batched_reads": True,
                                "zero_copy_send": False, "file_ops_in_ring": False,
                                "provided_buffers": False}
            else:
                assert caps["file_ops_in_ring"] and not caps["direct_send"], caps
        finally:
            loop.close()
        assert not drv.provided_buffers     # a closed driver lends no buffers


# ---- one compiled transport core ------------------------------------------------

# The compiled transport code of each face (conn.pxi and connops.pxi are one
# face's, so together).  What two of them need goes in transport/common.pxi.
TRANSPORT_FACES = {
    "stream": ["_core/transport/stream.pxi", "_core/transport/zcsend.pxi"],
    "dgram": ["_core/transport/dgram.pxi"],
    "conn": ["_core/runtime/conn.pxi", "_core/runtime/connops.pxi"],
}
DUP_RUN = 6     # code lines (comments and blank lines skipped, whitespace normalised)


def _code_lines(path):
    """(line number, normalised code) of each line that has code."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        code = re.sub(r"\s+", " ", line.split("#")[0]).strip()
        if code:
            out.append((n, code))
    return out


def _shared_runs(faces, run=DUP_RUN, root=SRC):
    """[(rel:line, rel:line), ...]: windows of `run` code lines that occur in
    two different faces (one pair per window, its first line in each)."""
    where = collections.defaultdict(list)       # window -> [(face, rel, line)]
    for face, rels in faces.items():
        for rel in rels:
            lines = _code_lines(root / rel)
            for k in range(len(lines) - run + 1):
                key = tuple(code for _, code in lines[k:k + run])
                where[key].append((face, rel, lines[k][0]))
    pairs = []
    for places in where.values():
        firsts = {}
        for face, rel, n in places:
            firsts.setdefault(face, f"{rel}:{n}")
        if len(firsts) > 1:
            names = sorted(firsts.values())
            pairs.extend((a, b) for i, a in enumerate(names) for b in names[i + 1:])
    return sorted(pairs)


def test_no_copied_transport_code():
    pairs = _shared_runs(TRANSPORT_FACES)
    assert not pairs, (
        f"{len(pairs)} runs of {DUP_RUN} code lines copied between transport cores "
        "(share them through _core/transport/common.pxi):\n"
        + "\n".join(f"{a}  =  {b}" for a, b in pairs))


def test_copied_transport_code_is_found(tmp_path):
    # The check itself: a copied run is reported with both places, however
    # it is indented; comments and blank lines do not hide it.
    body = [f"x{i} = f(y{i})" for i in range(DUP_RUN)]
    (tmp_path / "a.pxi").write_text("\n".join(body) + "\n")
    (tmp_path / "b.pxi").write_text("# a comment\n" + "\n\n".join("    " + b for b in body) + "\n")
    faces = {"a": ["a.pxi"], "b": ["b.pxi"]}
    assert _shared_runs(faces, root=tmp_path) == [("a.pxi:1", "b.pxi:2")]
    assert _shared_runs(faces, DUP_RUN + 1, root=tmp_path) == []
