"""A campaign seen from outside: whether it is alive (``/djdask/health``, for a liveness
probe) and what a following campaign is doing (a line of the campaign page).

Both read only the state the campaign last published to the scheduler
(:meth:`StatePublisher.state <djdask.monitor.publisher.StatePublisher.state>`), so they
answer where the scheduler runs, with Dask's dashboard on or off, and never touch the
database themselves.
"""

from __future__ import annotations

import datetime
from typing import Any

__all__ = ["STALE_AFTER_INTERVALS", "STALE_AFTER_LEAST", "following_line", "health_verdict"]

#: A published state older than this many publish intervals says the campaign's loop is stuck or
#: gone: a campaign publishes every interval, idle or not (it waits for nothing longer while it
#: follows) ...
STALE_AFTER_INTERVALS = 5
#: ... and never less than this many seconds, so that a loaded machine or a slow sweep of a big
#: pipeline is not taken for a dead campaign.
STALE_AFTER_LEAST = 10.0


def _iso(when: float | None) -> str | None:
    return None if when is None else datetime.datetime.fromtimestamp(when, datetime.timezone.utc).isoformat()


def _clock(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%H:%M:%S UTC")


def health_verdict(state: dict[str, Any] | None, *, age: float | None, now: float) -> tuple[int, dict[str, Any]]:
    """The verdict on a campaign from its last published ``state``: an HTTP status (200
    healthy, 503 not) and the JSON body that says why.

    Parameters
    ----------
    state : dict or None
        The state the campaign last published (None: none yet).
    age : float or None
        Seconds since the scheduler received that state (its own clock, so that a campaign
        on another machine with a skewed clock is judged right).
    now : float
        The current Unix time, for how long ago the last look was.

    Unhealthy: no state, a state older than :data:`STALE_AFTER_INTERVALS` publish intervals
    (at least :data:`STALE_AFTER_LEAST` s: the campaign ended, hangs or lost the scheduler),
    or a database the campaign says it cannot reach.
    """
    if state is None or "campaign" not in state:
        return 503, {"healthy": False, "why": ["no campaign has published its state to this scheduler"]}
    interval = float(state.get("publish_interval") or 1.0)
    stale_after = max(STALE_AFTER_LEAST, STALE_AFTER_INTERVALS * interval)
    following = state.get("following") or None
    last_look = following.get("last_look") if following else None
    reachable = state.get("database_reachable", True)
    campaign = state["campaign"]
    why = []
    if age is None or age > stale_after:
        why.append(f"its last state is {age if age is None else round(age, 1)} s old (stale after {stale_after:g} s)")
    if not reachable:
        why.append(f"the database is unreachable: {state.get('notice')}")
    body = {
        "healthy": not why,
        "why": why,
        "campaign": campaign.get("id"),
        "module": campaign.get("module"),
        "finished": bool(campaign.get("finished")),
        "following": following is not None,
        "last_look": _iso(last_look),
        "last_look_seconds_ago": None if last_look is None else round(max(0.0, now - last_look), 1),
        "last_found": _iso(following.get("last_found") if following else None),
        "database_reachable": bool(reachable),
        "state_age_seconds": None if age is None else round(age, 1),
    }
    return (503 if why else 200), body


def following_line(following: dict[str, Any] | None, *, finished: bool = False) -> str | None:
    """What a following campaign is doing, in one line: ``following: idle since 12:03:10 UTC,
    next look in 20 s`` or ``following: working, last found work 12:03:10 UTC``, then its
    looks and the keys they found; None for a campaign that does not follow.

    ``following`` is :meth:`Follower.state <djdask.campaign.follow.Follower.state>` as
    published (its times Unix times).
    """
    if not following:
        return None
    if finished:
        head = "following: stopped"
    elif following.get("idle_since") is not None:
        head = (
            f"following: idle since {_clock(following['idle_since'])}, "
            f"next look in {following.get('next_look_in', 0):.0f} s"
        )
    elif following.get("last_found") is not None:
        head = f"following: working, last found work {_clock(following['last_found'])}"
    else:
        head = "following: working"
    looks = int(following.get("looks") or 0)
    return (
        f"{head} ({looks} look{'s' if looks != 1 else ''}, every {following.get('interval', 0):g} s; "
        f"{int(following.get('enqueued') or 0)} key(s) found by them)"
    )
