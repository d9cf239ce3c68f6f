"""What the fuzz targets share: importing ringline, a byte-string input
decoder, and the entry point that runs a target under atheris (or replays
files without it).

Each target module defines ``one_input(data: bytes) -> None``, which raises
AssertionError for a wrong result; any other exception that escapes it is a
finding too, except the ones the target says are the expected answer to
invalid input.  A crash of the interpreter (SIGSEGV from a guard page,
abort) is the worst finding; atheris/libFuzzer then saves the input under
the artifact prefix.

    python tests/fuzz/fuzz_sockaddr.py [libFuzzer flags] [corpus dirs]   # fuzz (atheris)
    python tests/fuzz/fuzz_sockaddr.py --replay FILE_OR_DIR...          # no atheris needed
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

try:
    import ringline  # noqa: F401  (installed, or on PYTHONPATH)
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "src"))
    import ringline  # noqa: F401


class Input:
    """Structured values taken from the front of a byte string; past its
    end every value is 0 / empty, so any input is a complete one (as
    atheris' FuzzedDataProvider, but replayable without atheris)."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def bytes(self, n: int) -> bytes:
        b = self.data[self.pos:self.pos + n]
        self.pos += len(b)
        return b

    def uint(self, nbytes: int) -> int:
        return int.from_bytes(self.bytes(nbytes).ljust(nbytes, b"\0"), "little")

    def int_in(self, lo: int, hi: int) -> int:
        """An int in lo..hi (inclusive)."""
        span = hi - lo + 1
        nbytes = max(1, (span.bit_length() + 7) // 8)
        return lo + self.uint(nbytes) % span

    def choice(self, seq):
        return seq[self.int_in(0, len(seq) - 1)]

    def bool(self) -> bool:
        return bool(self.uint(1) & 1)

    def sized_bytes(self, maxlen: int) -> bytes:
        return self.bytes(self.int_in(0, maxlen))

    def text(self, maxlen: int) -> str:
        """Any str, surrogates and NULs included (decoded as UTF-16 code units
        half the time, Latin-1 the other half)."""
        raw = self.sized_bytes(maxlen)
        if self.bool():
            raw = raw[: len(raw) // 2 * 2]
            return raw.decode("utf-16-le", "surrogatepass")
        return raw.decode("latin-1")

    def weird_int(self) -> int:
        """Boundary-heavy ints: small, 2**k +- 1, negative, huge."""
        kind = self.int_in(0, 5)
        if kind == 0:
            return self.int_in(0, 255)
        if kind == 1:
            return self.int_in(0, 65535)
        if kind == 2:
            k = self.int_in(0, 80)
            return (1 << k) + self.int_in(-1, 1)
        if kind == 3:
            return -self.int_in(0, 1 << 40)
        if kind == 4:
            return self.uint(4)
        return self.uint(8)

    def value(self):
        """An int most of the time, else another type (for type checks)."""
        kind = self.int_in(0, 11)
        if kind <= 7:
            return self.weird_int()
        return (None, 1.5, "80", True, b"\x01", [1], 2 ** 100)[self.int_in(0, 6)]


def main(one_input, name: str) -> None:
    args = sys.argv[1:]
    if args and args[0] == "--replay":
        n = 0
        for path in args[1:]:
            files = ([os.path.join(path, f) for f in sorted(os.listdir(path))]
                     if os.path.isdir(path) else [path])
            for f in files:
                with open(f, "rb") as fh:
                    one_input(fh.read())
                n += 1
        print(f"{name}: replayed {n} inputs, all passed")
        return
    import atheris
    atheris.Setup([sys.argv[0], *args], one_input)
    _instrument(atheris)
    atheris.Fuzz()


def _instrument(atheris) -> None:
    """Coverage of ringline's Python half and of the target: its functions
    and methods, not the whole standard library (atheris.instrument_all()
    takes half a minute here)."""
    import types
    done = set()

    def fn(f):
        if isinstance(f, (staticmethod, classmethod)):
            f = f.__func__
        if isinstance(f, types.FunctionType) and id(f) not in done:
            done.add(id(f))
            try:
                atheris.instrument_func(f)
            except Exception:       # noqa: BLE001  (a function atheris cannot rewrite)
                pass

    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == "__main__" or name.startswith(("ringline", "fuzz_", "_common"))):
            continue
        for obj in list(vars(mod).values()):
            if isinstance(obj, type) and obj.__module__ == mod.__name__:
                for attr in list(vars(obj).values()):
                    fn(attr)
            elif getattr(obj, "__module__", None) == mod.__name__:
                fn(obj)
