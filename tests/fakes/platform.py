"""A chat platform's side of admin commands, for tests of the platform-neutral commands:
users are plain ids, mentions are written "@U123", links are "link:<channel>/<thread>"."""

from __future__ import annotations


class FakeCommandPlatform:
    """bots.base.CommandPlatform with a fixed set of workspace admins."""

    def __init__(self, workspace_admins: set[str] | None = None) -> None:
        self.workspace_admins = workspace_admins or set()
        self.admin_checks: list[str] = []

    async def is_platform_admin(self, user: str) -> bool:
        self.admin_checks.append(user)
        return user in self.workspace_admins

    async def resolve_user(self, token: str) -> str | None:
        return token[1:] if token.startswith("@") and len(token) > 1 else None

    def parse_thread_link(self, link: str) -> tuple[str, str] | None:
        if not link.startswith("link:") or "/" not in link:
            return None
        channel, _, thread = link[len("link:") :].partition("/")
        return (channel, thread) if channel and thread else None

    def show_user(self, user: str) -> str:
        return f"@{user}"
