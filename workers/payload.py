"""The task payload as it sits in the broker: the message with its text sealed.

The ingress must answer within Slack's 3 seconds, so it does not run the (CPU-bound)
redaction; it encrypts the text instead (AES-GCM, microseconds), bound to the message so a
sealed text cannot be replayed into another task. The worker opens it and redacts before the
text reaches memory, logs or the model.
"""

from __future__ import annotations

from typing import Any

from parley.message import InboundMessage
from privacy.crypto import Sealer

SEALED_FIELD = "sealed_text"


def seal_message(message: InboundMessage, sealer: Sealer) -> dict[str, Any]:
    payload = message.model_dump(mode="json")
    payload[SEALED_FIELD] = sealer.seal(payload.pop("text"), context=message.message_key)
    return payload


def open_message(payload: dict[str, Any], sealer: Sealer) -> InboundMessage:
    """Raises pydantic.ValidationError for a malformed payload (an unsealed one included),
    privacy.crypto.SealError for a sealed text that does not open (wrong key, tampering)."""
    fields = dict(payload)
    sealed = fields.pop(SEALED_FIELD, None)
    draft = InboundMessage.model_validate({**fields, "text": ""})
    if not isinstance(sealed, str):
        raise ValueError(f"task payload without {SEALED_FIELD}")
    text = sealer.open(sealed, context=draft.message_key).decode()
    return draft.model_copy(update={"text": text})
