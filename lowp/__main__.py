import signal
import sys

from .cli import main

rc = main()
if rc == 130:  # interrupted and exiting: a late Ctrl-C during interpreter shutdown must not turn 130 into a death by signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.exit(rc)
