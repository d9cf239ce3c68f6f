"""ringline.process on every backend: Command building, spawn on the
spawner pool, exit via the pidfd in the ring, pipes as asyncio streams,
exit statuses, signals, errors."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ringline_only

PY = sys.executable


@pytest.fixture
def P():
    from ringline import process
    return process


def test_output_captures_and_status(run, P):
    async def main():
        out = await P.Command("sh").args(["-c", "echo out; echo err >&2; exit 3"]).output()
        assert out.stdout == b"out\n" and out.stderr == b"err\n"
        assert not out.status.success()
        assert out.status.code == 3 and out.status.signal is None
        assert out.status.returncode == 3
        status, stdout, stderr = out
        assert status == P.ExitStatus(3)
        ok = await P.Command("true").output()
        assert ok.status.success() and ok.stdout == b"" and ok.stderr == b""
        with pytest.raises(subprocess.CalledProcessError):
            out.status.check()
        ok.status.check()
        assert "code=3" in repr(out.status)
    run(main())


def test_status_inherits_and_stdin_default(run, P):
    async def main():
        st = await P.Command("sh").args(["-c", "exit 0"]).stdout(P.DEVNULL).status()
        assert st.success()
        # output(): stdin is /dev/null unless set, so cat ends at once
        out = await P.Command("cat").output()
        assert out.status.success() and out.stdout == b""
    run(main())


def test_pipes_roundtrip_large(run, P):
    data = os.urandom(3 << 20)

    async def main():
        child = await P.Command("cat").stdin(P.PIPE).stdout(P.PIPE).spawn()
        assert child.pid > 0 and child.stderr is None
        assert isinstance(child.stdin, asyncio.StreamWriter)
        assert isinstance(child.stdout, asyncio.StreamReader)

        async def feed():
            child.stdin.write(data)
            await child.stdin.drain()
            child.stdin.close()
            await child.stdin.wait_closed()
        got, _ = await asyncio.gather(child.stdout.read(), feed())
        assert got == data
        st = await child.wait()
        assert st.success() and child.returncode == 0
    run(main(), timeout=30)


def test_readline_from_child(run, P):
    async def main():
        child = await (P.Command(PY).args(["-c", "print('a'); print('b')"])
                       .stdout(P.PIPE).spawn())
        assert await child.stdout.readline() == b"a\n"
        assert await child.stdout.readline() == b"b\n"
        assert await child.stdout.readline() == b""
        assert (await child.wait()).code == 0
    run(main())


def test_wait_closes_stdin(run, P):
    async def main():
        child = await P.Command("cat").stdin(P.PIPE).stdout(P.DEVNULL).spawn()
        assert child.stdout is None
        st = await asyncio.wait_for(child.wait(), 10)
        assert st.success()
    run(main())


def test_kill_and_signals(run, P):
    async def main():
        child = await P.Command("sleep").arg("30").spawn()
        assert child.try_wait() is None and child.returncode is None
        child.kill()
        st = await child.wait()
        assert st.signal == signal.SIGKILL and st.code is None and not st.success()
        assert st.returncode == -signal.SIGKILL
        assert "SIGKILL" in repr(st)
        assert child.try_wait() == st
        child.kill()                     # reaped: nothing to do, no error
        child.send_signal(signal.SIGTERM)

        child = await P.Command("sleep").arg("30").spawn()
        child.send_signal(signal.SIGTERM)
        assert (await child.wait()).signal == signal.SIGTERM

        child = await P.Command("sleep").arg("30").spawn()
        child.terminate()
        assert (await child.wait()).signal == signal.SIGTERM
    run(main())


def test_env_and_cwd(run, P, tmp_path):
    prog = "import os; print(os.environ.get('A'), os.environ.get('B'), os.environ.get('HOME') is not None, os.getcwd())"

    async def main():
        out = await P.Command(PY).args(["-c", prog]).env("A", "1").cwd(tmp_path).output()
        a, b, home, cwd = out.stdout.decode().split()
        assert (a, b, home) == ("1", "None", "True")
        assert os.path.samefile(cwd, tmp_path)
        out = await (P.Command(PY).args(["-c", prog]).env_clear().env("B", "2")
                     .env("A", "x").env_remove("A").output())
        assert out.stdout.decode().split()[:3] == ["None", "2", "False"]
        out = await P.Command(PY).args(["-c", prog]).envs({"A": "m", "B": "n"}).output()
        assert out.stdout.decode().split()[:2] == ["m", "n"]
    run(main())


def test_spawn_errors(run, P, tmp_path):
    async def main():
        with pytest.raises(FileNotFoundError):
            await P.Command("/nonexistent/program").spawn()
        with pytest.raises(FileNotFoundError):
            await P.Command("true").cwd(tmp_path / "missing").spawn()
        with pytest.raises(PermissionError):
            await P.Command(str(tmp_path)).spawn()          # a directory
    run(main())
    with pytest.raises(TypeError):
        P.Command("x").args("abc")
    with pytest.raises(ValueError):
        P.Command("x").stdout("bogus")


def test_command_reuse_and_introspection(run, P):
    cmd = P.Command("echo").arg("x").args(["y", "z"])
    assert cmd.get_program() == "echo" and cmd.get_args() == ["x", "y", "z"]
    assert "echo" in repr(cmd)

    async def main():
        a = await cmd.output()
        b = await cmd.output()
        assert a.stdout == b.stdout == b"x y z\n"
    run(main())


def test_many_concurrent(run, P):
    async def main():
        sem = asyncio.Semaphore(32)

        async def one(i):
            async with sem:
                out = await P.Command("sh").args(["-c", f"echo {i}; exit {i % 7}"]).output()
                assert out.stdout == f"{i}\n".encode()
                assert out.status.code == i % 7
        await asyncio.gather(*(one(i) for i in range(100)))
    run(main(), timeout=60)


def test_stdio_to_fd_and_file(run, P, tmp_path):
    path = tmp_path / "out.txt"

    async def main():
        with open(path, "wb") as f:
            st = await P.Command("sh").args(["-c", "echo to-file"]).stdout(f).status()
        assert st.success()
        assert path.read_bytes() == b"to-file\n"
        with open(path, "rb") as f:
            out = await P.Command("cat").stdin(f.fileno()).output()
        assert out.stdout == b"to-file\n"
    run(main())


def test_wait_cancel_does_not_lose_status(run, P):
    async def main():
        child = await P.Command("sleep").arg("0.2").spawn()
        t = asyncio.ensure_future(child.wait())
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert (await child.wait()).success()
    run(main())


@pytest.mark.skipif(shutil.which("true") is None, reason="no `true` program")
def test_pidfd_exit_in_ring(backend, loop, run, P):
    if backend != "io_uring":
        pytest.skip("counts SQEs of the io_uring driver")

    async def main():
        before = loop.stats()["sqes_submitted"]
        assert (await P.Command("true").status()).success()
        return loop.stats()["sqes_submitted"] - before
    assert run(main()) >= 1          # the pidfd poll went through the ring
