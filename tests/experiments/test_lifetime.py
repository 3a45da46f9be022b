"""lowp.experiments.lifetime: a process that called ``die_with_parent`` ends when its parent is SIGKILLed (parent-death
signal on Linux, watchdog elsewhere), and exits at once when its parent is already not the one named."""
import os
import signal
import subprocess
import sys
import time

import pytest

ENV = dict(os.environ, PYTHONPATH=os.getcwd())
CHILD = ("import os, sys, time\nfrom lowp.experiments.lifetime import die_with_parent\n"
         "die_with_parent(int(sys.argv[1]), poll_s=0.2)\nprint(os.getpid(), flush=True)\ntime.sleep(120)\n")


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_wrong_parent_exits_at_once():
    p = subprocess.run([sys.executable, "-c", CHILD, "999999999"], env=ENV, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1 and p.stdout == ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_child_dies_with_sigkilled_parent():
    parent_code = ("import os, subprocess, sys\n"
                   "c = subprocess.Popen([sys.executable, '-c', sys.argv[1], str(os.getpid())], "
                   "stdout=subprocess.PIPE, text=True)\nprint(c.stdout.readline().strip(), flush=True)\nimport time; time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", parent_code, CHILD], env=ENV, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    end = time.monotonic() + 5
    while _alive(child) and time.monotonic() < end:
        time.sleep(0.05)
    try:
        assert not _alive(child)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
