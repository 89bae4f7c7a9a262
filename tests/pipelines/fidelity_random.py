"""A fidelity test pipeline whose make() seeds Python's and NumPy's global random
generators from the key, then alternates waiting on the database with new draws.

Run sequentially by DataJoint's populate() the draws depend on the key alone.  On
a worker, anything else in the process that draws from the same global generators
while make() waits (Dask's ``sizeof`` samples long lists with ``random.sample``)
changes the draws that follow: the rows differ from populate()'s.
"""

import random
import time

import datajoint as dj
import numpy as np

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_fidelity_random")

#: Rounds of (wait, draw) in each make().
ROUNDS = 12
#: Seconds each round sleeps besides its query.
WAIT = 0.002


@schema
class Trial(dj.Manual):
    definition = """
    trial_id : int32
    ---
    n_draws : int16
    """


@schema
class Simulation(dj.Computed):
    definition = """
    -> Trial
    ---
    py_draws : <blob>      # random.random() after each wait
    np_total : float64     # sum of numpy.random draws
    choice : int32         # random.choice after the last wait
    """

    def make(self, key):
        random.seed(f"trial-{key['trial_id']}")
        np.random.seed(key["trial_id"])
        n_draws = (Trial & key).fetch1("n_draws")
        py_draws, np_total = [random.random()], float(np.random.standard_normal(n_draws).sum())
        for _ in range(ROUNDS):
            # Waiting (on the database, or a short sleep) releases the GIL: the
            # worker's other threads run meanwhile.
            (Trial & key).fetch1("n_draws")
            time.sleep(WAIT)
            py_draws.append(random.random())
            np_total += float(np.random.standard_normal(n_draws).sum())
        self.insert1(
            {**key, "py_draws": np.array(py_draws), "np_total": np_total, "choice": random.choice(range(1000))}
        )


AUTO = (Simulation,)


def seed(trials: int = 200) -> None:
    Trial.insert([{"trial_id": t, "n_draws": 3 + t % 5} for t in range(1, trials + 1)])
