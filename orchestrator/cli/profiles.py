"""``djdask clusters``: the cluster profiles listed and shown, and the job script (or, for a
Kubernetes profile, the objects) each would submit."""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING

import yaml

from djdask.cli.check import check
from djdask.cli.output import print_table
from djdask.cli.parser import build_parser
from djdask.clusters import profile_names, resolve
from djdask.errors import InvalidInputError, ProfileError

if TYPE_CHECKING:
    import argparse

__all__ = ["clusters"]


def clusters(args: argparse.Namespace) -> int:
    """``djdask clusters list|show|script|check [PROFILE]``."""
    if args.action == "list":
        rows = [{"profile": n, "kind": resolve(n).raw.get("kind")} for n in profile_names()]
        print_table(rows, ["profile", "kind"])
        return 0
    if not args.profile:
        raise ProfileError(f"`djdask clusters {args.action}` needs a profile name: djdask clusters {args.action} slurm")
    if args.module and args.action != "check":
        raise InvalidInputError(
            f"`djdask clusters {args.action}` takes one profile; {args.module!r} is one word too many "
            "(a MODULE is for `djdask clusters check PROFILE MODULE`)."
        )
    if args.action == "check":
        return check(args)
    profile = resolve(args.profile)
    if args.action == "show":
        print(yaml.safe_dump({args.profile: profile.shown()}, sort_keys=False).rstrip())
    elif not hasattr(profile.kind, "script"):
        raise ProfileError(f"Profile {args.profile!r} is of kind {profile.kind.name!r}, which submits no job script.")
    elif getattr(args, "controller", None) is not None:
        if profile.kind.name != "kubernetes":
            raise ProfileError(
                f"--controller: profile {args.profile!r} is {profile.kind.name}; on a batch system the "
                f"controller is a job of `djdask submit MODULE --cluster {args.profile}`."
            )
        print(profile.kind.script(args.profile, profile.raw, controller=_controller_args(args.controller)), end="")
    elif getattr(args, "scheduler", None):
        if not re.match(r"^(tcp|tls)://[^/:]+:\d+$", args.scheduler):
            raise InvalidInputError(
                f"--scheduler {args.scheduler!r} is not a scheduler address: write it as tcp://HOST:PORT "
                "(or tls://HOST:PORT), as a campaign prints it on its `Scheduler:` line."
            )
        if not hasattr(profile.kind, "submit_command"):
            raise ProfileError(
                f"--scheduler: profile {args.profile!r} ({profile.kind.name}) starts its own scheduler in the "
                "cluster; the option is for batch profiles."
            )
        print(profile.kind.script(args.profile, profile.raw, scheduler=args.scheduler))
    else:
        print(profile.kind.script(args.profile, profile.raw))
    return 0


def _controller_args(text: str) -> list[str]:
    """``--controller 'MODULE [OPTIONS]'``: the ``djdask populate`` arguments of a Kubernetes
    controller, checked as ``djdask populate`` checks them."""
    try:
        words = shlex.split(text)
    except ValueError as err:
        raise InvalidInputError(
            f"--controller {text!r}: {err}. Quote it as one argument: 'MODULE [OPTIONS]'."
        ) from None
    if not words or words[0].startswith("-"):
        raise InvalidInputError(
            "--controller needs the pipeline module first, then populate's options: "
            "--controller 'mylab.pipeline --target Segmentation'."
        )
    if any(w == "--cluster" or w.startswith("--cluster=") for w in words):
        raise InvalidInputError(
            "--controller: leave --cluster out; the controller runs on the profile you name "
            "(djdask clusters script PROFILE --controller ...)."
        )
    build_parser().parse_args(["populate", *words])  # a wrong option stops here, as populate would
    return words
