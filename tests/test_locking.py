"""One writer per folder (dualloop.locking): a second process is refused naming the holder, and the lock of
a process that died is taken over."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from dualloop.locking import LockHeld, file_lock, lock_path
from dualloop.pipeline import reproduce

_HOLDING = textwrap.dedent("""
    import sys, time
    from dualloop.locking import file_lock
    with file_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(30)
""")


@pytest.mark.usefixtures("api_key")
def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDING, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f"PID {holder.pid} on "):
            with file_lock(out, timeout=0):
                pass
        with pytest.raises(LockHeld, match=f"PID {holder.pid}"):
            reproduce("smoke", phases=[0], out=out)
        assert not (out / "reproduce.log").exists()
    finally:
        holder.kill()
        holder.wait()
    with file_lock(out, timeout=0):  # a holder that was killed leaves a lock that is taken over
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()
    assert lock_path(out).read_text() == ""  # released


@pytest.mark.usefixtures("api_key")
def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    target = tmp_path / "decisions.jsonl"
    lock_path(target).write_text(json.dumps({"pid": int(dead.stdout), "host": "h", "started": "t", "command": "c"}))
    with file_lock(target, timeout=0):
        pass
    assert f"taking over the lock of PID {int(dead.stdout)}" in capsys.readouterr().out
