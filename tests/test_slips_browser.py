"""Login slips in a real browser: headless Chromium renders the page; the screenshot is checked."""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from helpers import require_tool

from bakery.day.handouts import write_slips

WIDTH, HEIGHT = 1240, 1754  # A4 at 150 dpi
URLS = ["https://one.example.org/", "https://two.example.org/<b>"]


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of grey levels (0 black .. 255 white) of an 8-bit RGB(A) PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        chunks += [body] if kind == b"IDAT" else []
        pos += 12 + length
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    channels = 3 if color == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(min(line[x : x + 3]) for x in range(0, stride, channels)))
        prev = line
    return width, height, rows


@pytest.fixture(scope="module")
def screenshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten slips on two hubs, rendered by headless Chromium at A4 size."""
    chromium = require_tool("chromium")
    folder = tmp_path_factory.mktemp("slips")
    config = folder / "workshop.yaml"
    config.write_text(
        "name: python-101\nusers: {count: 10, admins: [boss]}\nopenstack: {count: 2}\n"
    )
    page = folder / "slips.html"
    write_slips(config_path=config, output=page, urls=URLS)
    out = folder / "slips.png"
    subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={folder / 'profile'}", f"--screenshot={out}",
            f"--window-size={WIDTH},{HEIGHT}", page.as_uri(),
        ],
        capture_output=True, timeout=180, check=True,
    )  # fmt: skip
    return out


def test_chromium_renders_the_slips(screenshot: Path) -> None:
    width, height, rows = read_png(screenshot)
    assert (width, height) == (WIDTH, HEIGHT)
    dark = sum(1 for row in rows for g in row if g < 128)
    # Not blank (text, cut lines and ten QR codes), not a black page either.
    assert 0.01 < dark / (width * height) < 0.5, dark
    # Two columns of slips: ink on both halves of the page, below the note at the top.
    left = sum(1 for row in rows[200:] for g in row[: width // 4] if g < 128)
    right = sum(1 for row in rows[200:] for g in row[width // 4 : width // 2] if g < 128)
    assert left > 1000 and right > 1000, (left, right)


def test_every_qr_code_decodes_to_its_hub(screenshot: Path) -> None:
    zbarimg = require_tool("zbarimg")
    result = subprocess.run(
        [zbarimg, "--quiet", "--raw", str(screenshot)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    decoded = sorted(result.stdout.splitlines())
    assert decoded == sorted([URLS[0]] * 5 + [URLS[1]] * 5)


def test_png_reader_reads_what_it_should(tmp_path: Path) -> None:
    """The reader itself: a 2x2 image, black/white, filtered rows (so the checks above can fail)."""
    pixels = [b"\x00\x00\x00\xff\xff\xff", b"\xff\xff\xff\x00\x00\x00"]
    raw = (
        b"\x00"
        + pixels[0]
        + b"\x02"
        + bytes((cur - up) & 255 for up, cur in zip(*pixels, strict=True))
    )

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    png = tmp_path / "x.png"
    png.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    assert read_png(png) == (2, 2, [b"\x00\xff", b"\xff\x00"])
