"""Slack-style :shortcodes: as emoji, for platforms that show them literally (Teams, the
console). The pipeline and the admin commands write shortcodes because Slack renders them;
unknown ones are left as they are."""

from __future__ import annotations

import re

SHORTCODES = {
    ":warning:": "⚠️",
    ":hourglass:": "⌛",
    ":hourglass_flowing_sand:": "⏳",
    ":scissors:": "✂️",
    ":no_entry:": "⛔",
    ":lock:": "🔒",
    ":key:": "🔑",
    ":white_check_mark:": "✅",
    ":zzz:": "💤",
    ":speech_balloon:": "💬",
    ":memo:": "📝",
    ":books:": "📚",
    ":mag:": "🔍",
    ":leftwards_arrow_with_hook:": "↩️",
    ":gear:": "⚙️",
    ":wastebasket:": "🗑️",
    ":large_green_circle:": "🟢",
    ":red_circle:": "🔴",
    ":+1:": "👍",
    ":-1:": "👎",
}
_SHORTCODE = re.compile(r":[a-z0-9_+-]+:")


def render_shortcodes(text: str) -> str:
    return _SHORTCODE.sub(lambda m: SHORTCODES.get(m.group(), m.group()), text)
