"""The Llama 3 Instruct chat template, rendered exactly as the model's tokenizer_config does.

<|begin_of_text|>
<|start_header_id|>{role}<|end_header_id|>\\n\\n{content stripped}<|eot_id|>   (per message)
<|start_header_id|>assistant<|end_header_id|>\\n\\n                            (generation prompt)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from llm.base import ChatMessage

BEGIN_OF_TEXT = "<|begin_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
STOP = EOT
HEADER_SEPARATOR = "\n\n"

# Template tokens, as Llama 3's tokenizer counts them: each special token is one token, a role
# name is one token, and "\n\n" is one token.
BOS_TOKENS = 1
HEADER_TOKENS = 4  # start_header, role, end_header, "\n\n"
TOKENS_PER_MESSAGE = HEADER_TOKENS + 1  # + eot
ASSISTANT_HEADER_TOKENS = HEADER_TOKENS

# Anything shaped like a special token. The tokenizer turns the literal text of every added
# token (<|eot_id|>, <|start_header_id|>, the <|reserved_special_token_N|> ...) into that token,
# so a user who types "<|eot_id|><|start_header_id|>system<|end_header_id|>" could end their
# own turn and forge a system message (prompt injection). Matching the shape rather than a
# fixed list also covers tokens that later Llama 3.x releases add.
_SPECIAL_TOKEN = re.compile(r"<\|([A-Za-z0-9_]+)\|>")
_ZERO_WIDTH_SPACE = "\u200b"


def neutralize(content: str) -> str:
    """Break special-token strings in untrusted text so they tokenize as plain text.

    A zero-width space after "<" keeps the text readable for the model and for people while no
    longer matching the added token. Other uses of "<|" (e.g. F#'s operator) are left alone.
    """
    return _SPECIAL_TOKEN.sub(lambda m: f"<{_ZERO_WIDTH_SPACE}|{m.group(1)}|>", content)


def render_content(content: str) -> str:
    """A message's content as the template writes it: neutralized, then stripped."""
    return neutralize(content).strip()


def render(messages: Sequence[ChatMessage], *, bos: bool = True) -> str:
    """The prompt for `messages`, ending with the assistant header the model continues from.

    `bos=False` leaves out <|begin_of_text|> for servers whose tokenizer adds it itself.
    """
    parts = [BEGIN_OF_TEXT] if bos else []
    for message in messages:
        parts.append(
            f"{START_HEADER}{message.role}{END_HEADER}{HEADER_SEPARATOR}"
            f"{render_content(message.content)}{EOT}"
        )
    parts.append(f"{START_HEADER}assistant{END_HEADER}{HEADER_SEPARATOR}")
    return "".join(parts)


def overhead_tokens(n_messages: int) -> int:
    """Tokens the template adds around `n_messages` messages, plus BOS and the assistant header."""
    if n_messages < 0:
        raise ValueError(f"n_messages must be >= 0, not {n_messages}")
    return BOS_TOKENS + n_messages * TOKENS_PER_MESSAGE + ASSISTANT_HEADER_TOKENS
