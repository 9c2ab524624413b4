"""Building the analyzer and analyzing text opens no network connection.

A fresh interpreter (clean imports: nothing loaded before the guard) replaces socket
connect and name resolution with a guard that refuses and records anything but loopback,
then builds the analyzer and analyzes e-mails, URLs and hostnames, which would make
Presidio's e-mail/URL recognizers ask tldextract to download the public suffix list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from privacy.analyzer import PersonalDataAnalyzer

ROOT = Path(__file__).resolve().parents[2]

GUARDED_RUN = r"""
import json, socket

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
attempts = []

def _allowed(address):
    host = address[0] if isinstance(address, tuple) else address
    return isinstance(host, (bytes, str)) and (
        str(host) in LOOPBACK or str(host).startswith("127.") or str(host).startswith("/")
    )

def _guard(original):
    def guarded(self, address, *args):
        if self.family != getattr(socket, "AF_UNIX", None) and not _allowed(address):
            attempts.append("connect " + repr(address))
            raise OSError("network access refused by the test")
        return original(self, address, *args)
    return guarded

socket.socket.connect = _guard(socket.socket.connect)
socket.socket.connect_ex = _guard(socket.socket.connect_ex)
_getaddrinfo = socket.getaddrinfo

def guarded_getaddrinfo(host, *args, **kwargs):
    if host is not None and not _allowed((host,)):
        attempts.append("resolve " + repr(host))
        raise socket.gaierror("name resolution refused by the test")
    return _getaddrinfo(host, *args, **kwargs)

socket.getaddrinfo = guarded_getaddrinfo

from privacy.analyzer import build_analyzer

analyzer = build_analyzer(patterns={"EMPLOYEE_ID": r"\bEMP-\d{6}\b"})
text = (
    "Write to ana.garcia@empresa.es or j.smith@contoso.co.uk, see https://intranet.example.com"
    "/wiki and http://user:Pa55word!@vpn.example.com:8443, host srv-db-01.corp.local, "
    "Sarah Miller, +34 612 345 678, 10.20.30.40, EMP-204518."
)
findings = [f.entity for f in analyzer.find(text)]
during = list(attempts)

# The guard itself works: a real outbound connection is refused and recorded.
try:
    socket.create_connection(("203.0.113.1", 443), timeout=1)
except OSError:
    pass
print(json.dumps({"attempts": during, "guard_caught": attempts[len(during):],
                  "findings": findings}))
"""


def test_analyzer_never_touches_the_network() -> None:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", GUARDED_RUN],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["attempts"] == [], "the analyzer tried to reach the network"
    assert report["guard_caught"], "the guard did not catch a real outbound connection"
    assert report["findings"].count("EMAIL_ADDRESS") == 2
    assert "SECRET" in report["findings"]


def test_no_recognizer_that_needs_tldextract(analyzer: PersonalDataAnalyzer) -> None:
    names = {type(r).__name__ for r in analyzer.engine.registry.recognizers}
    assert names.isdisjoint({"EmailRecognizer", "UrlRecognizer"})
