"""Checks the wheel `make wheel` built (run by `make wheel-check`, part of `make check`): its tags,
the glibc its extension needs, that the extension is stripped, and that it installs into a fresh
virtualenv (dependencies from the package index) and works there — the command, the embedded App,
`cueapi serve` and the client — with no source tree and no Rust toolchain on the path.

    python tests/wheel_check.py dist/cueapi-*.whl
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SMOKE = r"""
import json, sys, tempfile, threading, time, urllib.request
import cueapi

assert "site-packages" in cueapi.__file__, cueapi.__file__
d = tempfile.mkdtemp()
app = cueapi.App(d + "/w.db")
done = threading.Event()

@app.cue("0 2 * * *")
def nightly(ctx):
    done.set()
    return cueapi.Outcome(result="ran from the wheel", external_id="w1")

url = app.serve("127.0.0.1", 0)
ran = app.fire("nightly")
assert done.wait(30)
req = urllib.request.Request(url + "/v1/auth/register", data=json.dumps({"email": "w@example.com"}).encode(),
                             headers={"Content-Type": "application/json"})
key = json.load(urllib.request.urlopen(req))["api_key"]
with cueapi.CueAPI(key, base_url=url) as client:
    cue = client.cues.create("from-the-wheel", cron="*/5 * * * *", transport="worker")
    assert client.cues.get(cue.id).schedule.cron == "*/5 * * * *"
deadline = time.time() + 30
while app.execution(ran).status != "success" and time.time() < deadline:
    time.sleep(0.05)
assert app.execution(ran).outcome.result == "ran from the wheel"
app.close()
print("wheel works")
"""


def section_names(elf: bytes) -> list[str]:
    """The section names of a 64-bit little-endian ELF file, from its section headers."""
    assert elf[:4] == b"\x7fELF" and elf[4] == 2 and elf[5] == 1, "not a 64-bit little-endian ELF file"
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    strtab = headers[shstrndx][4]
    return [elf[strtab + h[0] : elf.index(b"\0", strtab + h[0])].decode() for h in headers]


def glibc_needed(so: bytes) -> tuple[int, ...]:
    """The newest GLIBC_x.y symbol version the extension refers to."""
    versions = {tuple(int(p) for p in m.split(b".")) for m in re.findall(rb"GLIBC_(\d+(?:\.\d+)+)", so)}
    return max(versions) if versions else (0,)


def main(wheel: str) -> int:
    path = Path(wheel)
    name = path.name
    assert "-cp310-abi3-" in name, f"{name}: not an abi3 wheel for CPython 3.10+"
    assert "manylinux_2_17_x86_64" in name or "manylinux2014" in name, f"{name}: not manylinux2014"
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        (so_name,) = [n for n in names if n.endswith(".so")]
        so = z.read(so_name)
        assert any(n.endswith("LICENSE") for n in names), "the wheel carries no LICENSE"
        assert "cueapi/py.typed" in names
    glibc = glibc_needed(so)
    assert glibc <= (2, 17), f"the extension needs glibc {glibc}, newer than manylinux2014's 2.17"
    sections = section_names(so)
    assert not [n for n in sections if n == ".symtab" or n.startswith(".debug")], f"not stripped: {sections}"
    print(
        f"{name}: {path.stat().st_size / 1e6:.1f} MB wheel, extension {len(so) / 1e6:.1f} MB, glibc >= "
        f"{'.'.join(map(str, glibc))}"
    )
    with tempfile.TemporaryDirectory() as d:
        venv = Path(d) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = venv / "bin" / "python"
        subprocess.run([str(py), "-m", "pip", "install", "-q", str(path)], check=True)
        version = subprocess.run(
            [str(venv / "bin" / "cueapi"), "--version"], check=True, capture_output=True, text=True, cwd=d
        ).stdout
        assert version.startswith("cueapi, version "), version
        out = subprocess.run([str(py), "-c", SMOKE], check=True, capture_output=True, text=True, cwd=d)
        assert "wheel works" in out.stdout, out.stdout + out.stderr
    print("installed in a fresh virtualenv: `cueapi --version`, the App, the server and the client work")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
