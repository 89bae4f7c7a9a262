"""What a profile's ``security`` turns into, without a cluster: TLS credentials made per
campaign (or the site's files), the workers' copies in an owner-only folder, a dashboard on
loopback; plain TCP only when asked, and a clear error for files that are not there."""

from __future__ import annotations

import logging
import stat

import pytest

from djdask.clusters.security import DEFAULT_DASHBOARD, client_security, secure_scheduler, security_of
from djdask.errors import ProfileError


def test_batch_profiles_get_tls_made_for_the_campaign(tmp_path):
    shared = tmp_path / "tls"
    kwargs = secure_scheduler("cpu", {"shared-temp-directory": str(shared)}, {"host": "10.0.0.5"})
    security = kwargs["security"]
    assert kwargs["protocol"] == "tls://" and kwargs["shared_temp_directory"] == str(shared)
    assert security.require_encryption and "BEGIN CERTIFICATE" in security.tls_ca_file  # in memory, made now
    assert stat.S_IMODE(shared.stat().st_mode) == 0o700
    assert kwargs["scheduler_options"] == {
        "host": "10.0.0.5",
        "dashboard_address": DEFAULT_DASHBOARD,
        "dashboard": True,
    }
    other = secure_scheduler("cpu", {"shared-temp-directory": str(shared)}, None)["security"]
    assert other.tls_ca_file != security.tls_ca_file  # each campaign its own authority


def test_the_profile_names_the_dashboard_address_and_may_turn_tls_off(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        kwargs = secure_scheduler("open", {"security": "none", "dashboard-address": "0.0.0.0:8787"}, None)
    assert "security" not in kwargs and "protocol" not in kwargs
    assert kwargs["scheduler_options"]["dashboard_address"] == "0.0.0.0:8787"
    assert "TLS is off" in caplog.text and "can submit code that runs as you" in caplog.text


def test_site_certificate_files(tmp_path):
    files = {name: tmp_path / f"{name}.pem" for name in ("ca-file", "cert", "key")}
    for path in files.values():
        path.write_text("-----BEGIN-----\n")
    security = security_of("site", {"security": {k: str(v) for k, v in files.items()}}, create=True)
    assert security.tls_ca_file == str(files["ca-file"]) and security.tls_worker_key == str(files["key"])
    assert security.require_encryption
    files["key"].unlink()
    with pytest.raises(ProfileError, match=r"no readable file for key"):
        security_of("site", {"security": {k: str(v) for k, v in files.items()}})


def test_an_unknown_security_value_is_refused():
    with pytest.raises(ProfileError, match="security is 'tls'.*temporary"):
        security_of("x", {"security": "tls"})


def test_schedulers_djdask_did_not_start_use_tls_only_when_given_files(tmp_path):
    assert client_security("here", {"address": "tcp://10.0.0.5:8786"}) == {}
    files = {name: tmp_path / f"{name}.pem" for name in ("ca-file", "cert", "key")}
    for path in files.values():
        path.write_text("x")
    given = client_security("here", {"security": {k: str(v) for k, v in files.items()}})
    assert given["security"].tls_client_cert == str(files["cert"])
