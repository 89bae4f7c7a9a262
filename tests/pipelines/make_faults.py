"""What the test pipelines' make() calls share: a line appended to the ledger file, and
the faults ``DJDASK_TEST_FAULTS`` (``"7=memory,13=segv,21=hang,30=raise"``) asks of a key."""

import os
import signal
import threading
import time


def append_to_ledger(line, variable="DJDASK_TEST_LEDGER"):
    """Append ``line`` to the file named by ``variable``: one write of a short line,
    atomic with O_APPEND, so that concurrent workers' lines never interleave."""
    fd = os.open(os.environ[variable], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def misbehave(key_value):
    """Do what ``DJDASK_TEST_FAULTS`` asks of the key whose value is ``key_value``: allocate
    ``DJDASK_TEST_HOG_MB`` (1536) MiB and hold it, die of SIGSEGV, never return, or raise."""
    faults = dict(item.split("=") for item in os.environ.get("DJDASK_TEST_FAULTS", "").split(",") if item)
    fault = faults.get(str(key_value))
    if fault == "memory":
        hog = b"\1" * (int(os.environ.get("DJDASK_TEST_HOG_MB", "1536")) * 2**20)
        time.sleep(5)  # held: the nanny sees it
        del hog
    elif fault == "segv":
        # Sent to this thread (os.kill may hand it to another thread, which takes a moment,
        # time enough for make() to go on and commit), and waited for.
        signal.pthread_kill(threading.get_ident(), signal.SIGSEGV)
        time.sleep(60)
    elif fault == "hang":
        while True:
            time.sleep(1)
    elif fault == "raise":
        raise ValueError(f"source {key_value} is bad")
