"""The /parley slash command, answered ephemerally within Slack's 3 seconds."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp

COMMAND = "/parley"

HELP = """*Parley* answers questions with your company's own language model; nothing leaves
your network.
• Mention `@Parley` in a channel with your question: it answers in a thread.
• Reply in that thread to follow up; Parley remembers the thread's earlier turns.
• Or write to Parley directly in a DM.
`/parley help` shows this message."""


def register_commands(app: AsyncApp) -> None:
    @app.command(COMMAND)
    async def on_parley(ack: Any, command: dict[str, Any]) -> None:
        words = str(command.get("text", "")).split()
        if not words or words[0].lower() == "help":
            await ack(response_type="ephemeral", text=HELP)
            return
        await ack(
            response_type="ephemeral",
            text=f"I don't know `{COMMAND} {words[0]}`.\n\n{HELP}",
        )
