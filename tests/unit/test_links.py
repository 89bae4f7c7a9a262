"""The links a campaign prints: the address its scheduler's web server is bound to, the
tunnel to a loopback one, and only pages that are there (djdask.monitor.links)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import dask.config
import pytest
from distributed import LocalCluster

from djdask.monitor.links import Links, WebServer, links_to, login_host, page_link, served_at

#: Dask's link for a batch profile's scheduler, which took this host's network address.
DASK_LINK = "http://192.0.2.2:43741/status"


def test_a_loopback_server_is_linked_at_loopback_with_the_tunnel_to_this_host():
    """The issue's case: Dask names the scheduler's address, the server listens on 127.0.0.1."""
    links = links_to(
        DASK_LINK,
        plots=True,
        served=WebServer("127.0.0.1", 43741, True),
        scheduler_host="192.0.2.2",
        tunnel_from="login1",
    )
    assert links.lines() == [
        "Dask dashboard: http://127.0.0.1:43741/status",
        "Campaign page:  http://127.0.0.1:43741/djdask",
        "From elsewhere: ssh -L 43741:127.0.0.1:43741 login1   (then open the links above there)",
    ]
    assert links.recorded == "http://127.0.0.1:43741/status"


def test_no_tunnel_for_a_user_at_this_host():
    links = links_to(DASK_LINK, plots=True, served=("127.0.0.1", 43741), tunnel_from=None)
    assert links.tunnel is None and [line[:15] for line in links.lines()] == ["Dask dashboard:", "Campaign page: "]


def test_a_headless_scheduler_is_linked_and_recorded_by_its_campaign_page_only():
    """/status is 404 without Dask's dashboard: neither printed nor recorded."""
    links = links_to(DASK_LINK, plots=False, served=("127.0.0.1", 43741), tunnel_from="login1")
    assert links.dashboard is None and links.recorded == links.page == "http://127.0.0.1:43741/djdask"
    assert links.lines() == [
        "Campaign page:  http://127.0.0.1:43741/djdask",
        "From elsewhere: ssh -L 43741:127.0.0.1:43741 login1   (then open the links above there)",
    ]


def test_a_server_on_every_address_is_linked_at_the_schedulers_host_without_a_tunnel():
    for wildcard in ("0.0.0.0", "::"):
        links = links_to(
            DASK_LINK, plots=True, served=(wildcard, 43741), scheduler_host="192.0.2.2", tunnel_from="login1"
        )
        assert links == Links("http://192.0.2.2:43741/status", "http://192.0.2.2:43741/djdask", None), wildcard


def test_a_server_on_one_address_is_linked_there():
    links = links_to(DASK_LINK, plots=True, served=("198.51.100.7", 8787), scheduler_host="192.0.2.2", tunnel_from="x")
    assert links.dashboard == "http://198.51.100.7:8787/status" and links.tunnel is None


def test_an_ipv6_loopback_server_is_written_in_brackets():
    links = links_to("http://[fd00::2]:8787/status", plots=True, served=("::1", 8787), tunnel_from="login1")
    assert links.dashboard == "http://[::1]:8787/status"
    assert links.tunnel == "ssh -L 8787:[::1]:8787 login1"


def test_the_configured_link_template_shapes_the_links():
    """`distributed.dashboard.link` behind jupyter-server-proxy names no host: no tunnel either."""
    with dask.config.set({"distributed.dashboard.link": "https://hub.example/user/ana/proxy/{port}/status"}):
        links = links_to(DASK_LINK, plots=True, served=("127.0.0.1", 43741), tunnel_from="login1")
    assert links == Links(
        "https://hub.example/user/ana/proxy/43741/status", "https://hub.example/user/ana/proxy/43741/djdask", None
    )


def test_a_scheduler_elsewhere_keeps_dasks_link():
    """Where the server is not in this process, its bound address is unknown."""
    assert links_to(DASK_LINK, plots=True, tunnel_from="login1") == Links(DASK_LINK, "http://192.0.2.2:43741/djdask")
    local = links_to("http://127.0.0.1:8787/status", plots=True, tunnel_from="login1")
    assert local.tunnel == "ssh -L 8787:127.0.0.1:8787 login1"


def test_no_web_server_no_lines():
    assert links_to(None, plots=True, tunnel_from="login1").lines() == []
    assert links_to("", plots=False).recorded is None


def test_page_link_honours_the_configured_dashboard_link():
    assert page_link("http://127.0.0.1:8787/status") == "http://127.0.0.1:8787/djdask"
    assert (
        page_link("https://hub.example/user/ana/proxy/8787/status") == "https://hub.example/user/ana/proxy/8787/djdask"
    )
    assert page_link("http://localhost:9000/dask/") == "http://localhost:9000/dask/djdask"
    assert page_link("http://h:1/status?token=x") == "http://h:1/djdask?token=x"
    assert page_link(None) is None


def test_login_host_is_a_name_of_this_host_not_localhost():
    name = login_host()
    assert name in (socket.getfqdn(), socket.gethostname())
    assert name not in ("localhost", "localhost.localdomain") or socket.gethostname() == name
    assert socket.gethostbyname(name)  # the user's tunnel names a host that resolves


@pytest.mark.parametrize("dashboard", [True, False])
def test_served_at_finds_where_an_in_process_scheduler_listens(dashboard):
    """A real scheduler in this process, its web server on loopback: the bound address, and
    whether Dask's pages are there, as the server's own answer at /status confirms."""
    with LocalCluster(
        n_workers=0, processes=False, dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": dashboard}
    ) as cluster:
        server = served_at(cluster)
        assert server is not None and server.host == "127.0.0.1", server
        status = f"http://127.0.0.1:{server.port}/status"
        try:
            answered = urllib.request.urlopen(status, timeout=10).status
        except urllib.error.HTTPError as err:
            answered = err.code
        assert (server.plots, answered) == (dashboard, 200 if dashboard else 404)
    assert served_at(None) is None and served_at(object()) is None
