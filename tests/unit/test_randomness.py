"""The global random generators of a worker process belong to the thread that runs make().

Each check runs in a fresh interpreter: isolating the generators changes the
process's ``random`` and ``numpy.random`` functions, as it does in a worker.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import random, threading, time
    import numpy as np
    import distributed.protocol.compression as compression  # holds `from random import randint`
    from djdask.worker import randomness

    randomness.isolate()
    from random import random as imported_after  # a pipeline's own import, made after isolate()

    stop = threading.Event()
    def busy():  # what a Dask worker's event loop does while make() waits
        while not stop.is_set():
            random.sample(range(100), 5); compression.randint(0, 10); np.random.choice(10, 3); time.sleep(0)
    thread = threading.Thread(target=busy); thread.start()

    with randomness.owned_by_this_thread():
        random.seed("key-1"); np.random.seed(7)
        got = []
        for _ in range(300):
            time.sleep(0.0005)  # "waits on the database"; the other thread draws meanwhile
            got.append((random.random(), imported_after(), random.randint(0, 9), float(np.random.rand())))
    stop.set(); thread.join()

    expected_py = random.Random("key-1"); expected_np = np.random.RandomState(7)
    want = [(expected_py.random(), expected_py.random(), expected_py.randint(0, 9), float(expected_np.rand()))
            for _ in range(300)]
    assert got == want, "make()'s draws were disturbed by another thread"
    # The generator objects are the global ones: libraries holding them see what make() seeded.
    with randomness.owned_by_this_thread():
        np.random.seed(3)
        assert np.random.mtrand._rand.rand() == np.random.RandomState(3).rand()
    import pickle  # the replaced functions pickle by name, as the originals do
    assert pickle.loads(pickle.dumps(random.random)) is random.random
    print("ok")
    """
)


def test_other_threads_do_not_draw_from_the_generators_make_seeded():
    """A make() that seeds the global generators and draws between waits must get exactly the
    sequence a plain process gets, while another thread draws through random.sample,
    a name imported with `from random import randint` before isolation, and numpy.random;
    a failure means seeded pipelines give other numbers under djdask than under populate()."""
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"


def test_without_isolation_the_same_draws_are_disturbed():
    """The check above can fail: without isolate(), the other thread's draws change the
    sequence (if this passes, the first test proves nothing)."""
    script = SCRIPT.replace("randomness.isolate()", "pass")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "disturbed" in result.stderr
