"""Which tables run with group commit, and when the campaign suggests it: no database."""

from __future__ import annotations

import dask
import pytest

from djdask.campaign.batching import BatchSizer
from djdask.campaign.checks import group_commits
from djdask.campaign.tables import GROUP_COMMIT_HINT_KEYS, TableState, TableSummary, group_commit_hints
from djdask.errors import InvalidInputError


class Plain:
    def make(self, key):
        pass


class Flagged:
    djdask_group_commit = True

    def make(self, key):
        pass


class Tripartite:
    def make(self, key):  # what DataJoint's AutoPopulate.make is for make_fetch/compute/insert
        yield key


def test_tables_opt_in_by_setting_or_class_attribute_with_the_groups_bounds():
    tables = {"`s`.`__plain`": Plain, "`s`.`__flagged`": Flagged, "`s`.`__tripartite`": Tripartite}
    assert group_commits(tables) == {"Flagged": (200, 0.25)}
    with dask.config.set(
        {
            "djdask.campaign.group-commit": ["Plain"],
            "djdask.campaign.group-commit-keys": 50,
            "djdask.campaign.group-commit-window": "1s",
        }
    ):
        assert group_commits(tables) == {"Plain": (50, 1.0), "Flagged": (50, 1.0)}


def test_a_tripartite_make_or_an_unknown_name_is_refused_with_the_fix():
    with dask.config.set({"djdask.campaign.group-commit": ["Tripartite"]}):
        with pytest.raises(InvalidInputError, match=r"Tripartite cannot run with group commit .* tripartite"):
            group_commits({"t": Tripartite, "p": Plain})
    with dask.config.set({"djdask.campaign.group-commit": ["Plian"]}):
        with pytest.raises(InvalidInputError, match="names Plian, which this pipeline has no .* it has Plain"):
            group_commits({"p": Plain})

    class Odd(Plain):
        djdask_group_commit = "yes"

    with pytest.raises(InvalidInputError, match="Odd.djdask_group_commit is 'yes': set it to True or False"):
        group_commits({"o": Odd})


def state(name: str, made: int, make_s: float, commit_s: float, **kwargs) -> TableState:
    summary = TableSummary(name, succeeded=made, make_seconds=make_s, commit_seconds=commit_s)
    return TableState(None, None, BatchSizer(2.0, 1000), summary, None, **kwargs)


def test_the_campaign_suggests_group_commit_where_commits_dominate_make():
    tables = [
        state("Fast", 5000, 5.0, 1.6),  # a 1 ms make(), a third of it commit
        state("Slow", 5000, 250.0, 1.6),  # a 50 ms make(): its commit does not matter
        state("Few", GROUP_COMMIT_HINT_KEYS - 1, 0.1, 0.05),  # too few keys to say
        state("Grouped", 5000, 1.0, 0.0, group=(200, 0.25)),
        state("Split", 5000, 5.0, 2.0, tripartite=True),  # cannot have it
    ]
    (hint,) = group_commit_hints(tables)
    assert hint.startswith("Fast: its commit took 32% of each key's 1.0 ms."), hint
    assert "djdask_group_commit = True on Fast" in hint and "djdask.campaign.group-commit" in hint
