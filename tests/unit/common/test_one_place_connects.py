"""Every connection is opened by one helper per package (flame_service.connect, flame.connect):
no other product module opens a gRPC channel or port, an HTTP client or an MQTT client itself,
so switching TLS on is one change and no plaintext path hides elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PRODUCT = [ROOT / "sdk" / "flame", *(p for p in (ROOT / "services").iterdir() if p.is_dir())]
HELPERS = {
    ROOT / "sdk" / "flame" / "connect.py",
    ROOT / "services" / "common" / "flame_service" / "connect.py",
}
OPENERS = re.compile(
    r"insecure_channel\(|secure_channel\(|add_insecure_port\(|add_secure_port\("
    r"|httpx\.(Async)?Client\(|mqtt\.Client\(|urlopen\("
)


def test_no_module_but_the_helpers_opens_a_connection() -> None:
    offenders = []
    for root in PRODUCT:
        for path in root.rglob("*.py"):
            if path in HELPERS or "flame_proto" in path.parts:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if OPENERS.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
