"""djdask's settings against their schema: every misfit named with where it was set, before
any command touches anything; the reference docs generated from the same schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from djdask.config import schema as settings
from djdask.errors import SettingsError
from tests.conftest import ROOT, clean_env


def test_shipped_defaults_fit_and_every_default_is_documented():
    settings.check()  # this process: the shipped defaults (and the test's environment)
    with open(settings.DEFAULTS_PATH) as f:
        shipped = yaml.safe_load(f)["djdask"]
    settings.check(shipped)

    def paths(tree, prefix="djdask"):
        for key, value in tree.items():
            if isinstance(value, dict) and value and key not in ("chunks", "resources", "timeouts", "pools"):
                yield from paths(value, f"{prefix}.{key}")
            else:
                yield f"{prefix}.{key}"

    documented = {path for path, _ in settings.leaves()}
    assert set(paths(shipped)) == documented - {"djdask.clusters"}
    assert all(spec.get("description") for _, spec in settings.leaves())


@pytest.mark.parametrize(
    ("namespace", "fragments"),
    [
        ({"campaign": {"max-attempts": "lots"}}, ["djdask.campaign.max-attempts is 'lots'", "a whole number >= 1"]),
        ({"campaign": {"max_attempts": 0}}, ["djdask.campaign.max_attempts is 0", ">= 1"]),
        ({"campaign": {"grace-period": "soon"}}, ["grace-period is 'soon'", 'e.g. "90s"']),
        ({"campaign": {"worker-memory": "lots"}}, ["worker-memory is 'lots'", "byte size", "'auto'"]),
        ({"campaign": {"timeouts": {"Entry": "-4s"}}}, ["djdask.campaign.timeouts.Entry is '-4s'", "> 0 s"]),
        (
            {"campaign": {"max-atempts": 3}},
            ["max-atempts is not a setting djdask knows", "did you mean djdask.campaign.max-attempts?"],
        ),
        ({"campain": {}}, ["djdask.campain", "did you mean djdask.campaign"]),
        ({"campaign": {"trace-memory": "yes"}}, ["trace-memory is 'yes'", "true or false"]),
        ({"campaign": {"dashboard-address": "localhost"}}, ["dashboard-address is 'localhost'", "matching"]),
        ([1, 2], ["djdask is [1, 2]", "a mapping"]),
        ({"campaign": {"notify": {"webhooks": ["ftp://x"]}}}, ["notify.webhooks[0] is 'ftp://x'", "^https?://"]),
        ({"campaign": {"notify": {"email": {"port": 0}}}}, ["notify.email.port is 0", ">= 1 and <= 65535"]),
    ],
    ids=[
        "text",
        "zero",
        "duration",
        "bytes",
        "nested",
        "typo",
        "section-typo",
        "boolean",
        "pattern",
        "list",
        "webhook",
        "smtp-port",
    ],
)
def test_a_setting_that_does_not_fit_is_named_with_what_fits(namespace, fragments):
    with pytest.raises(SettingsError) as err:
        settings.check(namespace)
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)


def test_values_that_fit_pass():
    settings.check(
        {
            "campaign": {"max-attempts": 5, "grace-period": 10, "worker-memory": "4GiB", "timeouts": {"A": "2h"}},
            "jobs": {"lease-timeout": None},
            "storage": {"chunks": {"movie": {"time": 100}}},
        }
    )
    settings.check({"campaign": {"worker-memory": "auto", "walltime-margin": 2}})


def test_settings_of_a_fresh_process_hold_the_shipped_defaults():
    """``settings()`` is what `djdask config` lists: in a process that imported nothing else of
    djdask, the shipped defaults would be missing from it (``djdask.config`` the package loads
    none of them)."""
    code = "from djdask.config.schema import settings; print(settings()['campaign']['max-attempts'])"
    result = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    with open(settings.DEFAULTS_PATH) as f:
        assert result.stdout.strip() == str(yaml.safe_load(f)["djdask"]["campaign"]["max-attempts"])


def djdask(*args, config: Path | None = None, **env):
    extra = {"DASK_CONFIG": str(config)} if config else {}
    return subprocess.run(
        [sys.executable, "-m", "djdask.cli", *args],
        env=clean_env({**extra, **env}),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_exit_2(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("djdask: "), result.stderr
    text = " ".join(result.stderr.split())
    for fragment in fragments:
        assert fragment in text, text


def test_a_malformed_config_file_names_file_and_line_on_every_command(tmp_path):
    bad = tmp_path / "djdask.yaml"
    bad.write_text("djdask:\n  campaign:\n    max-attempts: 3\n   grace-period: [\n")
    for command in (["status", "mylab.pipeline"], ["config"], ["clusters", "list"]):
        assert_exit_2(djdask(*command, config=bad), str(bad), "line 4", "not valid YAML", "Fix it")


def test_a_config_file_that_is_not_a_mapping_or_has_a_list_for_djdask(tmp_path):
    bad = tmp_path / "djdask.yaml"
    bad.write_text("- 1\n- 2\n")
    assert_exit_2(djdask("status", "mylab.pipeline", config=bad), str(bad), "not a mapping")
    bad.write_text("djdask: [1, 2]\n")  # Dask's merge would drop it silently
    assert_exit_2(djdask("status", "mylab.pipeline", config=bad), "djdask is [1, 2]", f"{bad}, line 1", "a mapping")


def test_a_bad_value_is_traced_to_its_file_line_or_variable(tmp_path):
    config = tmp_path / "conf"
    config.mkdir()
    (config / "djdask.yaml").write_text("djdask:\n  campaign:\n    # how often\n    max-attempts: lots\n")
    assert_exit_2(
        djdask("status", "mylab.pipeline", config=config),
        "djdask.campaign.max-attempts is 'lots'",
        f"{config / 'djdask.yaml'}, line 4",
    )
    assert_exit_2(
        djdask("status", "mylab.pipeline", DASK_DJDASK__CAMPAIGN__WORKER_MEMORY="lots"),
        "environment variable DASK_DJDASK__CAMPAIGN__WORKER_MEMORY",
    )


def test_config_lists_settings_with_where_they_were_set(tmp_path):
    config = tmp_path / "djdask.yaml"
    config.write_text("djdask:\n  campaign:\n    max-attempts: 7\n")
    result = djdask("config", config=config)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("djdask.campaign.max-attempts "))
    assert "7" in line and f"{config}, line 3" in line
    assert "default" in next(line for line in result.stdout.splitlines() if "djdask.campaign.grace-period" in line)


def test_the_settings_reference_is_generated_from_the_schema():
    assert (ROOT / "docs" / "settings.md").read_text() == settings.markdown(), (
        "docs/settings.md is stale: djdask config --markdown > docs/settings.md"
    )
