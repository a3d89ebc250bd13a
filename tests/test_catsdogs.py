"""The cats-dogs source: safe zip reading, every decodable image kept, each bad file skipped with a
reason, the user's archive untouched, and resumable, checksummed downloads from a local server."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.core.errors import InputError
from pipeline.fetch.http import DownloadError
from pipeline.fetch.params import DownloadSettings, FetchParams
from pipeline.fetch.sources import CatsDogsParams
from pipeline.fetch.sources.catsdogs import fetch
from tests.conftest import run_cli
from tests.httpserver import Failure, FileServer

FAST = FetchParams(download=DownloadSettings(retries=0, backoff=0.0, connect_timeout=2.0, read_timeout=2.0))


# --- a catalogue of real-world files: valid oddities to keep, broken files to skip -------------------


def noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def encode(img: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def without_jfif(jpeg: bytes) -> bytes:
    """Drop the APP0 JFIF segment that follows SOI, as cameras that write only Exif do."""
    assert jpeg[2:4] == b"\xff\xe0" and jpeg[6:11] == b"JFIF\0"
    return jpeg[:2] + jpeg[4 + int.from_bytes(jpeg[4:6], "big") :]


def catalogue(seed: int = 0) -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, expected status, expected reason prefix). Names as in PetImages/<Class>/."""
    rgb = Image.fromarray(noise(48, 64, seed))
    jfif = encode(rgb)
    exif = Image.Exif()
    exif[0x010F] = "Canon"  # Make
    exif_only = without_jfif(encode(Image.fromarray(noise(50, 40, seed + 1)), exif=exif))
    assert b"JFIF" not in exif_only[:64] and exif_only[6:10] == b"Exif"
    gray16 = np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 50 + seed
    png16 = cv2.imencode(".png", gray16)[1].tobytes()
    assert png16[24] == 16  # bit depth in IHDR
    big = encode(Image.fromarray(noise(120, 160, seed + 2)), quality=95)
    return {
        "1.jpg": (jfif, "success", ""),
        "2.jpg": (exif_only, "success", ""),
        "3.jpg": (encode(Image.fromarray(noise(30, 45, seed + 3)), "PNG"), "success", ""),  # a PNG named .jpg
        "4.jpg": (encode(Image.fromarray(noise(36, 36, seed + 4)).convert("CMYK")), "success", ""),
        "5.jpg": (encode(Image.fromarray(noise(33, 44, seed + 5)).convert("L")), "success", ""),
        "6.jpg": (png16, "success", ""),
        "7.jpg": (jfif[:-2] + b"\0\0\0" + jfif[-2:], "success", ""),  # libjpeg: "3 extraneous bytes before marker 0xd9"
        "666.jpg": (b"", "skipped", "empty file"),
        "11702.jpg": (b"\x00\x01garbage, not an image at all" * 10, "skipped", "not an image"),
        "8.jpg": (big[: len(big) // 2], "skipped", "truncated"),
        "9.jpg": (b"<!DOCTYPE html><html><body>404</body></html>", "skipped", "HTML page"),
        "10.jpg": (encode(Image.fromarray(noise(8, 300, seed + 6))), "skipped", "too small"),
        "Thumbs.db": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500), "skipped", "system file"),
        "11.jpg": (jfif, "duplicate", "duplicate of "),  # the same bytes as 1.jpg
    }


def pet_zip(path: Path, extra: list[tuple[str, bytes, int]] = ()) -> tuple[Path, dict[str, tuple[bytes, str, str]]]:
    """A PetImages zip: the catalogue under Cat (seed 0) and Dog (seed 100), plus junk outside and `extra`."""
    expected = {}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("PetImages/", b"")
        for folder, seed in (("Cat", 0), ("Dog", 100)):
            for name, (data, status, reason) in catalogue(seed).items():
                zf.writestr(f"PetImages/{folder}/{name}", data)
                expected[f"PetImages/{folder}/{name}"] = (data, status, reason)
        zf.writestr("readme[1].txt", b"Microsoft cats and dogs")
        expected["readme[1].txt"] = (b"", "skipped", "not in PetImages")
        for name, data, mode in extra:
            info = zipfile.ZipInfo(name)
            info.create_system, info.external_attr = 3, mode << 16
            zf.writestr(info, data)
    return path, expected


def rows_by_origin(out: Path) -> dict[str, dict]:
    frame = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    return {row["origin"]: row for row in frame.to_dict("records")}


def check_output(out: Path, expected: dict[str, tuple[bytes, str, str]]) -> dict[str, dict]:
    rows = rows_by_origin(out)
    assert set(rows) == set(expected), "one manifest row per archive member"
    for origin, (data, status, reason) in expected.items():
        row = rows[origin]
        assert row["status"] == status, (origin, row)
        assert row["error_message"].startswith(reason), (origin, row["error_message"])
        if status == "success":
            stored = out / row["path"]
            assert stored.read_bytes() == data, origin
            ext = "png" if data.startswith(b"\x89PNG") else "jpg"
            assert row["path"] == f"{row['class']}/{hashlib.sha256(data).hexdigest()}.{ext}"
        if status == "duplicate":
            assert rows[row["error_message"].removeprefix("duplicate of ")]["path"] == row["path"]
    assert json.loads((out / "dataset.json").read_text())["classes"] == ["dog", "cat"]
    ok = [row for row in rows.values() if row["status"] == "success"]
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*") if p.is_file()) == sorted(
        r["path"] for r in ok
    )
    return rows


# --- from an archive on disk ---------------------------------------------------------------------


def test_archive_catalogue_kept_and_skipped_with_reasons(tmp_path):
    archive, expected = pet_zip(tmp_path / "pets.zip")
    before = (archive.read_bytes(), archive.stat().st_mtime_ns)
    result = fetch(tmp_path / "raw" / "cats-dogs", CatsDogsParams(archive=str(archive)), FAST)
    rows = check_output(tmp_path / "raw" / "cats-dogs", expected)
    assert (archive.read_bytes(), archive.stat().st_mtime_ns) == before, "the user's archive is left as it was"
    assert result.counts == {"duplicate": 2, "success": 14, "skipped": 13}
    assert rows["PetImages/Cat/1.jpg"]["class"] == "cat" and rows["PetImages/Dog/1.jpg"]["class"] == "dog"
    assert not (tmp_path / "raw" / "downloads").exists(), "nothing is downloaded or cached for --archive"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pets.zip", "raw"]


def test_unsafe_and_oversized_members_refused_rest_extracted(tmp_path):
    img = encode(Image.fromarray(noise(40, 40, 7)))
    archive, expected = pet_zip(
        tmp_path / "pets.zip",
        [
            ("PetImages/Cat/../../../escape.jpg", img, stat.S_IFREG | 0o644),
            ("/PetImages/Cat/abs.jpg", img, stat.S_IFREG | 0o644),
            ("PetImages/Cat/link.jpg", b"/etc/passwd", stat.S_IFLNK | 0o777),
            ("PetImages/Dog/huge.jpg", bytes(60_000) + img, stat.S_IFREG | 0o644),
        ],
    )
    expected |= {
        "PetImages/Cat/../../../escape.jpg": (b"", "failed", "unsafe name: path traversal"),
        "/PetImages/Cat/abs.jpg": (b"", "failed", "unsafe name: absolute path"),
        "PetImages/Cat/link.jpg": (b"", "failed", "refused: symlink"),
        "PetImages/Dog/huge.jpg": (b"", "failed", "too large"),
    }
    out = tmp_path / "out"
    fetch(out, CatsDogsParams(archive=str(archive), max_member_bytes=50_000), FAST)
    check_output(out, expected)
    assert not (tmp_path / "escape.jpg").exists() and not list(tmp_path.rglob("escape.jpg"))


def test_total_size_cap_and_bad_archives_are_errors(tmp_path):
    archive, _ = pet_zip(tmp_path / "pets.zip")
    with pytest.raises(InputError, match="max_total_bytes"):
        fetch(tmp_path / "out", CatsDogsParams(archive=str(archive), max_total_bytes=10_000), FAST)
    with pytest.raises(InputError, match="archive not found"):
        fetch(tmp_path / "out", CatsDogsParams(archive=str(tmp_path / "missing.zip")), FAST)
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(InputError, match="SHA-256 mismatch"):
        fetch(tmp_path / "out", CatsDogsParams(archive=str(archive), sha256=wrong), FAST)
    assert archive.exists()


def test_rerun_is_identical(tmp_path):
    archive, _ = pet_zip(tmp_path / "pets.zip")
    fetch(tmp_path / "out", CatsDogsParams(archive=str(archive)), FAST)
    first = (tmp_path / "out" / "manifest.csv").read_bytes()
    fetch(tmp_path / "out", CatsDogsParams(archive=str(archive)), FAST)
    assert (tmp_path / "out" / "manifest.csv").read_bytes() == first


# --- downloads from a local server -----------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    """A zip of several download chunks: a cut transfer leaves a partial file (the bytes of the
    chunk being read when the connection drops are lost, so it is at most the bytes sent)."""
    noise_member = ("PetImages/Dog/noise.bin", np.random.default_rng(1).bytes(600_000), stat.S_IFREG | 0o644)
    archive, expected = pet_zip(tmp_path / "pets.zip", [noise_member])
    expected[noise_member[0]] = (b"", "skipped", "not an image: unknown file signature")
    data = archive.read_bytes()
    with FileServer({"/pets.zip": data}) as server:
        yield server, data, expected


def test_download_then_cached(served, tmp_path):
    server, data, expected = served
    out = tmp_path / "raw" / "cats-dogs"
    fetch(out, CatsDogsParams(url=server.url("/pets.zip")), FAST)
    check_output(out, expected)
    cached = tmp_path / "raw" / "downloads" / "pets.zip"
    assert cached.read_bytes() == data and server.bytes_sent() == len(data)
    fetch(out, CatsDogsParams(url=server.url("/pets.zip"), sha256=hashlib.sha256(data).hexdigest()), FAST)
    assert server.bytes_sent() == len(data), "a second run reads the cached, verified archive"


def test_range_resume_after_a_cut_transfer(served, tmp_path):
    server, data, expected = served
    cut = len(data) // 3
    server.fail("/pets.zip", Failure("cut", after=cut))
    params = CatsDogsParams(url=server.url("/pets.zip"), sha256=hashlib.sha256(data).hexdigest())
    with pytest.raises(DownloadError, match="rerun to resume"):
        fetch(tmp_path / "out", params, FAST)
    part = tmp_path / "downloads" / "pets.zip.part"
    have = len(part.read_bytes())
    assert 0 < have <= cut and part.read_bytes() == data[:have] and not (tmp_path / "downloads" / "pets.zip").exists()
    fetch(tmp_path / "out", params, FAST)  # the rerun fetches only the rest
    assert [(r.status, r.range, r.sent) for r in server.requests()] == [
        (200, None, cut),
        (206, f"bytes={have}-", len(data) - have),
    ]
    assert (tmp_path / "downloads" / "pets.zip").read_bytes() == data and not part.exists()
    check_output(tmp_path / "out", expected)


def test_cut_transfer_resumed_within_one_run(served, tmp_path):
    server, data, expected = served
    server.fail("/pets.zip", Failure("cut", after=200_000), Failure("cut", after=300_000))
    fetch(
        tmp_path / "out",
        CatsDogsParams(url=server.url("/pets.zip")),
        FetchParams(download=DownloadSettings(retries=3, backoff=0.0)),
    )
    requests = server.requests()
    assert [r.status for r in requests] == [200, 206, 206] and requests[0].range is None
    first, second = (int(r.range.removeprefix("bytes=").rstrip("-")) for r in requests[1:])
    assert 0 < first <= 200_000 < second <= first + 300_000, "each retry asks only for the missing bytes"
    assert requests[2].sent == len(data) - second
    assert (tmp_path / "downloads" / "pets.zip").read_bytes() == data
    check_output(tmp_path / "out", expected)


def test_range_ignored_restarts_from_scratch(served, tmp_path):
    server, data, expected = served
    cut = len(data) // 2
    server.fail("/pets.zip", Failure("cut", after=cut))
    with pytest.raises(DownloadError):
        fetch(tmp_path / "out", CatsDogsParams(url=server.url("/pets.zip")), FAST)
    have = (tmp_path / "downloads" / "pets.zip.part").stat().st_size
    assert have > 0
    server.ranges = False  # now the server answers every Range request with 200 and the whole file
    fetch(tmp_path / "out", CatsDogsParams(url=server.url("/pets.zip")), FAST)
    assert [(r.status, r.range, r.sent) for r in server.requests()] == [
        (200, None, cut),
        (200, f"bytes={have}-", len(data)),
    ]
    assert (tmp_path / "downloads" / "pets.zip").read_bytes() == data
    check_output(tmp_path / "out", expected)


def test_checksum_mismatch_is_an_error_and_keeps_the_file(served, tmp_path):
    server, data, _ = served
    wrong = hashlib.sha256(b"not the archive").hexdigest()
    with pytest.raises(
        DownloadError, match=f"SHA-256 mismatch: expected {wrong}, got {hashlib.sha256(data).hexdigest()}"
    ):
        fetch(tmp_path / "out", CatsDogsParams(url=server.url("/pets.zip"), sha256=wrong), FAST)
    assert (tmp_path / "downloads" / "pets.zip.part").read_bytes() == data, "kept for inspection"
    assert not (tmp_path / "downloads" / "pets.zip").exists() and not (tmp_path / "out" / "manifest.csv").exists()


def test_http_error_and_html_instead_of_zip(served, tmp_path):
    server, _, _ = served
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(tmp_path / "out", CatsDogsParams(url=server.url("/missing.zip")), FAST)
    server.files["/moved.zip"] = b"<html><body>This download has moved</body></html>"
    with pytest.raises(InputError, match="not a valid zip archive"):
        fetch(tmp_path / "out", CatsDogsParams(url=server.url("/moved.zip")), FAST)


# --- the command line ------------------------------------------------------------------------------


def test_cli_archive_then_prepare(tiny_project):
    archive, expected = pet_zip(tiny_project / "pets.zip")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    proc = run_cli(
        "fetch", "--source", "cats-dogs", "--archive", "pets.zip", "--sha256", digest, "--out", "pets", cwd=tiny_project
    )
    assert "cats-dogs" in proc.stdout and "system file" in proc.stdout
    rows = check_output(tiny_project / "pets", expected)
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == digest
    run_cli("prepare", "--in", "pets", "--out", "prepared", "--size", "24x32", cwd=tiny_project)
    meta = json.loads((tiny_project / "prepared" / "meta.json").read_text())
    n_ok = sum(row["status"] == "success" for row in rows.values())
    assert meta["classes"] == ["dog", "cat"] and meta["input_shape"] == [24, 32, 3]
    assert sum(meta["splits"].values()) == n_ok and meta["skipped"] == 0
    index = pd.read_csv(tiny_project / "prepared" / "index.csv")
    assert set(zip(index["class"], index["label"])) == {("dog", 0), ("cat", 1)}


def test_cli_url(tiny_project):
    archive, expected = pet_zip(tiny_project / "pets.zip")
    with FileServer({"/x.zip": archive.read_bytes()}) as server:
        run_cli(
            "fetch",
            "--source",
            "cats-dogs",
            "--url",
            server.url("/x.zip"),
            "--out",
            "data/raw/cats-dogs",
            cwd=tiny_project,
        )
    check_output(tiny_project / "data/raw/cats-dogs", expected)
    assert (tiny_project / "data/raw/downloads/x.zip").read_bytes() == archive.read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--archive", "missing.zip"], "archive not found: missing.zip"),
        (["--url", "ftp://example.org/x.zip"], "unsupported URL scheme 'ftp'"),
        (["--sha256", "abc"], "fetch.cats-dogs.sha256"),
        (["--path", "somewhere"], "fetch.cats-dogs.path: unknown key"),
    ],
)
def test_cli_user_errors_are_one_line(tiny_project, args, message):
    proc = run_cli("fetch", "--source", "cats-dogs", *args, "--out", "pets", cwd=tiny_project, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_checksum_mismatch(tiny_project):
    archive, _ = pet_zip(tiny_project / "pets.zip")
    with FileServer({"/x.zip": archive.read_bytes()}) as server:
        proc = run_cli(
            "fetch",
            "--source",
            "cats-dogs",
            "--url",
            server.url("/x.zip"),
            "--sha256",
            "0" * 64,
            "--out",
            "pets",
            cwd=tiny_project,
            check=False,
        )
    assert proc.returncode == 1 and "SHA-256 mismatch" in proc.stderr and "Traceback" not in proc.stderr
    assert (tiny_project / "downloads" / "x.zip.part").read_bytes() == archive.read_bytes()
