"""Microsoft Teams through the Bot Framework: inbound (POST /api/messages) and outbound
(proactive replies, streamed in personal chats). Every botbuilder/botframework import of
Parley lives in this package, so that moving to the Microsoft 365 Agents SDK touches
nothing else."""
