"""The links a campaign prints and records: addresses where its scheduler's web server answers.

Dask's own link (``Client.dashboard_link``) names the host of the scheduler's
address, through the ``distributed.dashboard.link`` template, and Dask's
dashboard at ``/status``.  Neither need answer: a batch profile's scheduler
takes this host's network address (its workers must reach it), while its web
server listens on loopback (``dashboard-address``, ``127.0.0.1:0`` by
default: see :mod:`djdask.clusters.security`), so a link naming the network
address is refused; and a headless campaign (``djdask.campaign.dask-dashboard:
false``) has no ``/status`` (404), though its campaign page answers.

So the links name the address the server is bound to: loopback, with the one
SSH tunnel a user elsewhere needs to reach it; the address ``dashboard-address``
names; or, where the server listens on every address, the scheduler's host,
as Dask's link does.  Where the server is not in this process (a scheduler
djdask did not start) its bound address is unknown: Dask's link is kept.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

from distributed.utils import format_dashboard_link

__all__ = ["Links", "WebServer", "links_to", "login_host", "page_link", "served_at"]

PAGE = "djdask"


def page_link(dashboard_link: str | None) -> str | None:
    """The campaign page's address, from a dashboard link as Dask formats it.

    The link honours ``distributed.dashboard.link`` (jupyter-server-proxy, SSH
    tunnels), which usually ends in ``/status``: the page is its sibling.
    """
    if not dashboard_link:
        return None
    base, sep, query = dashboard_link.partition("?")
    base = base[: -len("status")] if base.endswith("/status") else base.rstrip("/") + "/"
    return base + PAGE + (sep + query if sep else "")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    ip = _ip(host)
    return ip.is_loopback if ip is not None else host.lower() == "localhost"


def _in_url(host: str) -> str:
    """``host`` as a URL's or ssh's ``-L`` spec writes it: an IPv6 address in brackets."""
    ip = _ip(host)
    return f"[{ip}]" if ip is not None and ip.version == 6 else host


@dataclass(frozen=True)
class Links:
    """What a campaign prints of its scheduler's web server.

    Attributes
    ----------
    dashboard : str or None
        Dask's dashboard (``/status``); None when the scheduler has none (headless).
    page : str or None
        The campaign page (``/djdask``), served with or without Dask's dashboard.
    tunnel : str or None
        The SSH command that forwards the links' port from a user's machine to this
        host, where the server listens on loopback only.
    """

    dashboard: str | None = None
    page: str | None = None
    tunnel: str | None = None

    @property
    def recorded(self) -> str | None:
        """The link a campaign's record keeps: Dask's dashboard, else the campaign page."""
        return self.dashboard or self.page

    def lines(self) -> list[str]:
        """The lines the terminal prints, labels aligned with the campaign's others."""
        lines = []
        if self.dashboard:
            lines.append(f"Dask dashboard: {self.dashboard}")
        if self.page:
            lines.append(f"Campaign page:  {self.page}")
        if self.tunnel and lines:
            lines.append(f"From elsewhere: {self.tunnel}   (then open the links above there)")
        return lines


def links_to(
    dask_link: str | None,
    *,
    plots: bool,
    served: WebServer | tuple[str, int] | None = None,
    scheduler_host: str | None = None,
    tunnel_from: str | None = None,
) -> Links:
    """The links to print and record for a scheduler's web server.

    Parameters
    ----------
    dask_link : str or None
        Dask's dashboard link for the scheduler (``Client.dashboard_link``); None or
        empty: the scheduler has no web server, and there is nothing to link.
    plots : bool
        Whether Dask's dashboard (``/status``) is served there.
    served : (host, port, ...), optional
        The address the web server is bound to (a :class:`WebServer`); None: unknown,
        Dask's link is kept.
    scheduler_host : str, optional
        The host of the scheduler's address, named where the server listens on
        every address.
    tunnel_from : str, optional
        This host's name as the user's machine reaches it (:func:`login_host`): a
        tunnel is given when the server listens on loopback; None: no tunnel (the
        user is at this host).
    """
    if not dask_link:
        return Links()
    link = dask_link
    if served is not None:
        host, port = served[0], served[1]
        ip = _ip(host)
        if ip is not None and ip.is_unspecified:  # every address: the scheduler's host is one of them
            host = scheduler_host or urlsplit(dask_link).hostname or host
        link = format_dashboard_link(_in_url(host), port)
    tunnel = None
    where = urlsplit(link)
    if tunnel_from and _is_loopback(where.hostname) and where.port:
        tunnel = f"ssh -L {where.port}:{_in_url(where.hostname)}:{where.port} {tunnel_from}"
    return Links(dashboard=link if plots else None, page=page_link(link), tunnel=tunnel)


class WebServer(NamedTuple):
    """A scheduler's web server as it runs: the address it is bound to, and whether Dask's
    own dashboard (its Bokeh pages, ``/status``) is among what it serves."""

    host: str
    port: int
    plots: bool


def served_at(cluster: object) -> WebServer | None:
    """The web server of a cluster's scheduler, when that scheduler runs in this process
    (LocalCluster, dask-jobqueue's clusters); None otherwise, or without one."""
    # distributed's ServerNode.start_http_server notes the bound address on its server, and
    # Dask's dashboard adds its Bokeh application to the server's routes; a scheduler elsewhere
    # (an `address` profile, Kubernetes) has no such objects here.
    scheduler = getattr(cluster, "scheduler", None)
    server = getattr(scheduler, "http_server", None)
    address, port = getattr(server, "address", None), getattr(server, "port", None)
    if not isinstance(address, str) or not isinstance(port, int):
        return None
    return WebServer(address, port, bool(getattr(scheduler.http_application, "applications", None)))


def login_host() -> str:
    """This host's name, as a user's machine would reach it: the fully qualified name when
    it has one, else the host name (``getfqdn`` says ``localhost`` on hosts without DNS)."""
    fqdn = socket.getfqdn()
    return fqdn if fqdn and not _is_loopback(fqdn) and fqdn != "localhost.localdomain" else socket.gethostname()
