"""The Teams app package under deploy/teams: a manifest Teams accepts, and both icons."""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "deploy" / "teams"
PLACEHOLDER = "00000000-0000-0000-0000-000000000000"
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PACKAGE / "manifest.json").read_text(encoding="utf-8"))
    return data


def test_the_manifest_names_the_bot_by_a_placeholder_id(manifest: dict[str, Any]) -> None:
    version = tuple(int(n) for n in manifest["manifestVersion"].split("."))
    assert version >= (1, 17)
    assert f"/v{manifest['manifestVersion']}/" in manifest["$schema"]
    assert GUID.fullmatch(manifest["id"])
    [bot] = manifest["bots"]
    assert bot["botId"] == manifest["id"] == PLACEHOLDER
    assert set(bot["scopes"]) == {"personal", "team", "groupChat"}
    assert bot["supportsFiles"] is False
    assert bot["isNotificationOnly"] is False


def test_the_manifest_fits_teams_limits(manifest: dict[str, Any]) -> None:
    assert len(manifest["name"]["short"]) <= 30
    assert len(manifest["name"]["full"]) <= 100
    assert len(manifest["description"]["short"]) <= 80
    assert len(manifest["description"]["full"]) <= 4000
    assert re.fullmatch(r"#[0-9A-Fa-f]{6}", manifest["accentColor"])
    for key in ("websiteUrl", "privacyUrl", "termsOfUseUrl"):
        assert manifest["developer"][key].startswith("https://")
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])


def test_the_command_lists_hold_the_admin_commands(manifest: dict[str, Any]) -> None:
    lists = manifest["bots"][0]["commandLists"]
    covered: set[str] = set()
    for command_list in lists:
        commands = command_list["commands"]
        assert 1 <= len(commands) <= 10
        titles = [c["title"] for c in commands]
        assert len(set(titles)) == len(titles)
        for command in commands:
            assert 0 < len(command["title"]) <= 32
            assert 0 < len(command["description"]) <= 128
            # Teams puts the title in the compose box; the bot reads `config …`.
            assert command["title"].startswith("config "), command["title"]
        for scope in command_list["scopes"]:
            covered.add(scope)
            assert {"config help", "config status", "config forget me"} <= set(titles), scope
    assert covered == {"personal", "team", "groupChat"}
    [channels] = [c for c in lists if "team" in c["scopes"]]
    subcommands = {c["title"].split()[1] for c in channels["commands"]}
    assert subcommands >= {"enable", "mode", "persona", "set", "forget", "admins", "kb"}


def test_the_manifest_asks_to_read_channel_messages_for_mode_all(
    manifest: dict[str, Any],
) -> None:
    """Without this resource-specific consent Teams only delivers channel posts that
    mention the bot, and `config mode all` could not work."""
    permissions = manifest["authorization"]["permissions"]["resourceSpecific"]
    assert {"name": "ChannelMessage.Read.Group", "type": "Application"} in permissions
    # RSC needs webApplicationInfo naming the app (the same placeholder id as the bot).
    info = manifest["webApplicationInfo"]
    assert info["id"] == PLACEHOLDER
    assert info["resource"]


def _read_png(path: Path) -> tuple[int, int, int, list[bytes]]:
    """(width, height, colour type, unfiltered rows) of an 8-bit, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    pos, idat = 8, b""
    width = height = color_type = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, interlace) == (8, 0)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    channels = {2: 3, 6: 4}[color_type]
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prior = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        method, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = prior[i], prior[i - channels] if i >= channels else 0
            if method == 1:
                line[i] = (line[i] + left) & 0xFF
            elif method == 2:
                line[i] = (line[i] + up) & 0xFF
            elif method == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif method == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prior = rows[-1]
    return width, height, color_type, rows


def test_the_icons_have_the_sizes_teams_requires(manifest: dict[str, Any]) -> None:
    width, height, _, _ = _read_png(PACKAGE / manifest["icons"]["color"])
    assert (width, height) == (192, 192)
    width, height, color_type, rows = _read_png(PACKAGE / manifest["icons"]["outline"])
    assert (width, height) == (32, 32)
    assert color_type == 6, "the outline icon needs an alpha channel"
    pixels = [row[i : i + 4] for row in rows for i in range(0, len(row), 4)]
    opaque = [p for p in pixels if p[3] > 0]
    assert opaque, "the outline icon shows something"
    assert len(opaque) < len(pixels), "on a transparent background"
    assert all(p[:3] == b"\xff\xff\xff" for p in opaque), "drawn in white only"
