"""pipeline.fetch.archives: members are read one at a time, and unsafe or oversized ones are refused."""

from __future__ import annotations

import io
import random
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from pipeline.core.errors import InputError
from pipeline.fetch.archives import iter_tar, iter_zip, unsafe_name

BIG = 1 << 30


def zip_member(zf: zipfile.ZipFile, name: str, data: bytes, mode: int = stat.S_IFREG | 0o644) -> None:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix: external_attr carries the file type
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def make_zip(path: Path, members: list[tuple]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for member in members:
            zip_member(zf, *member)
    return path


def by_name(entries) -> dict:
    return {entry.name: entry for entry in entries}


@pytest.mark.parametrize(
    ("name", "unsafe"),
    [
        ("a/b.jpg", False),
        ("a..b/c..jpg", False),
        ("../x", True),
        ("a/../../x", True),
        ("a/..", True),
        ("/etc/passwd", True),
        ("\\windows\\x", True),
        ("C:/x", True),
        ("C:x", True),
        ("..\\x", True),
        ("", True),
        ("a\x00b", True),
    ],
)
def test_unsafe_name(name, unsafe):
    assert bool(unsafe_name(name)) == unsafe


def test_zip_escaping_members_refused_rest_read(tmp_path):
    path = make_zip(
        tmp_path / "a.zip",
        [
            ("ok/one.txt", b"one"),
            ("../escape.txt", b"evil"),
            ("ok/../../escape2.txt", b"evil"),
            ("/abs.txt", b"evil"),
            ("ok/link", b"/etc/passwd", stat.S_IFLNK | 0o777),
            ("ok/fifo", b"", stat.S_IFIFO | 0o644),
            ("ok/two.txt", b"two"),
        ],
    )
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("ok/sub/", b"")  # a directory entry: not a member to read
    entries = list(iter_zip(path, BIG, BIG))
    assert [e.name for e in entries] == [
        "ok/one.txt",
        "../escape.txt",
        "ok/../../escape2.txt",
        "/abs.txt",
        "ok/link",
        "ok/fifo",
        "ok/two.txt",
    ]
    got = by_name(entries)
    assert got["ok/one.txt"].data == b"one" and got["ok/two.txt"].data == b"two"
    assert got["ok/one.txt"].problem == "" and got["ok/two.txt"].problem == ""
    assert "path traversal" in got["../escape.txt"].problem and "path traversal" in got["ok/../../escape2.txt"].problem
    assert "absolute" in got["/abs.txt"].problem
    assert got["ok/link"].problem == "refused: symlink"
    assert "not a regular file" in got["ok/fifo"].problem
    assert all(e.data is None for e in entries if e.problem)


def test_zip_member_cap_from_header(tmp_path):
    path = make_zip(tmp_path / "a.zip", [("small", b"x" * 10), ("big", b"\0" * 5000)])
    got = by_name(iter_zip(path, 100, BIG))
    assert got["small"].data == b"x" * 10
    assert got["big"].data is None and got["big"].problem == "too large: 5000 bytes > max_member_bytes 100"


def test_zip_total_cap_is_an_error_before_reading(tmp_path):
    path = make_zip(tmp_path / "a.zip", [(f"f{i}", b"\0" * 1000) for i in range(5)])
    assert len(list(iter_zip(path, BIG, 5000))) == 5
    with pytest.raises(InputError, match="max_total_bytes 4999"):
        next(iter_zip(path, BIG, 4999))


def test_zip_lying_size_reads_no_more_than_declared(tmp_path):
    """A header declaring fewer bytes than the data holds (a zip-bomb trick): the read stops there and fails."""
    path = make_zip(tmp_path / "a.zip", [("bomb", b"\0" * 100_000), ("ok", b"fine")])
    raw = bytearray(path.read_bytes())
    central = raw.index(b"PK\x01\x02")  # the first central directory entry: "bomb"
    raw[central + 24 : central + 28] = (100).to_bytes(4, "little")  # uncompressed size in the central directory
    local = raw.index(b"PK\x03\x04")
    raw[local + 22 : local + 26] = (100).to_bytes(4, "little")  # and in the local header
    path.write_bytes(bytes(raw))
    got = by_name(iter_zip(path, 1000, 1000))
    assert got["bomb"].data is None and "corrupt archive member" in got["bomb"].problem
    assert got["ok"].data == b"fine"


def test_zip_bad_crc_is_a_member_problem(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:  # stored, so the bytes can be flipped in place
        zf.writestr("a.txt", b"A" * 100)
        zf.writestr("b.txt", b"B" * 100)
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b"A" * 100, b"A" * 99 + b"Z"))
    got = by_name(iter_zip(path, BIG, BIG))
    assert "CRC" in got["a.txt"].problem and got["b.txt"].data == b"B" * 100


def test_zip_missing_or_not_a_zip(tmp_path):
    with pytest.raises(InputError, match="archive not found"):
        next(iter_zip(tmp_path / "nope.zip", BIG, BIG))
    html = tmp_path / "page.zip"
    html.write_bytes(b"<html><body>Sorry, this file has moved</body></html>")
    with pytest.raises(InputError, match="not a valid zip archive"):
        next(iter_zip(html, BIG, BIG))


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def special(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_tar_escaping_and_special_members_refused_rest_read(tmp_path):
    path = make_tar(
        tmp_path / "a.tar.gz",
        [
            ("d/one", b"one"),
            ("../up", b"evil"),
            ("/abs", b"evil"),
            special("d/sym", tarfile.SYMTYPE, "/etc/passwd"),
            special("d/hard", tarfile.LNKTYPE, "d/one"),
            special("d/dev", tarfile.CHRTYPE),
            special("d/fifo", tarfile.FIFOTYPE),
            special("d/sub", tarfile.DIRTYPE),
            ("d/two", b"two"),
        ],
    )
    entries = list(iter_tar(path, BIG, BIG))
    got = by_name(entries)
    assert "d/sub" not in got and len(entries) == 8
    assert got["d/one"].data == b"one" and got["d/two"].data == b"two"
    assert "path traversal" in got["../up"].problem and "absolute" in got["/abs"].problem
    assert got["d/sym"].problem == "refused: symlink" and got["d/hard"].problem == "refused: hardlink"
    assert "not a regular file" in got["d/dev"].problem and "not a regular file" in got["d/fifo"].problem


def test_tar_caps(tmp_path):
    path = make_tar(tmp_path / "a.tar.gz", [("a", b"\0" * 3000), ("b", b"\0" * 3000), ("c", b"x")])
    got = by_name(iter_tar(path, 2000, BIG))
    assert "too large" in got["a"].problem and got["c"].data == b"x"
    entries = iter_tar(path, BIG, 5000)
    assert next(entries).data == b"\0" * 3000
    with pytest.raises(InputError, match="max_total_bytes 5000"):
        next(entries)


def test_tar_truncated_or_not_a_tar(tmp_path):
    path = make_tar(tmp_path / "a.tar.gz", [("a", random.Random(0).randbytes(100_000))])
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(InputError, match="not a valid or complete tar"):
        list(iter_tar(cut, BIG, BIG))
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"<html>not found</html>")
    with pytest.raises(InputError, match="not a valid or complete tar"):
        list(iter_tar(junk, BIG, BIG))
