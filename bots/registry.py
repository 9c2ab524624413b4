"""Platform name -> its outbound half. Adding a platform is one package plus one line here.

Imports are lazy so a worker only loads the SDKs of the platforms it actually answers on.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from bots.base import Outbound
from parley.settings import Settings

OutboundFactory = Callable[[Settings], Outbound]

_OUTBOUND: dict[str, str] = {
    "slack": "bots.slack.outbound:create_outbound",
    "teams": "bots.teams.outbound:create_outbound",
    "console": "bots.console.outbound:create_outbound",
}


class UnknownPlatform(LookupError):
    pass


def platforms() -> list[str]:
    return sorted(_OUTBOUND)


def outbound_factory(platform: str) -> OutboundFactory:
    try:
        target = _OUTBOUND[platform]
    except KeyError:
        raise UnknownPlatform(
            f"no outbound adapter for platform {platform!r}; known: {', '.join(platforms())}"
        ) from None
    module_name, _, attr = target.partition(":")
    factory: OutboundFactory = getattr(importlib.import_module(module_name), attr)
    return factory
