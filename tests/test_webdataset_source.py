"""The webdataset source (issue 19): existing webdataset / img2dataset tars imported as a fetched
dataset, by each label kind, from a folder, a glob, a brace pattern or HTTP; img2dataset's parquet
rows; damaged and hostile tars; and the folder source's refusal of shard output. Tiny tars made here
with tarfile, served (HTTP) from 127.0.0.1 only."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.fetch.archives import Entry
from tests.conftest import run_cli
from tests.scripted import jpeg

SOURCE = ["fetch", "--source", "webdataset", "--out", "ds"]


def member(name: str, data: bytes = b"", **fields) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def write_tar(path: Path, members: list[tuple[str, bytes] | tuple[tarfile.TarInfo, bytes]], mode: str = "w") -> Path:
    """A tar of `members` ((name, bytes), or (TarInfo, bytes) for anything else), in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tf:
        for name, data in members:
            info = name if isinstance(name, tarfile.TarInfo) else member(name, data)[0]
            tf.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(cwd: Path, path: str, *sets: str, check: bool = True):
    sets = [arg for value in sets for arg in ("-S", value)]
    return run_cli("-S", f"fetch.webdataset.path={path}", *sets, *SOURCE, cwd=cwd, check=check)


def manifest(root: Path) -> dict[str, dict]:
    frame = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    return {row["origin"]: row for row in frame.to_dict("records")}


def stored(root: Path) -> dict[str, set[str]]:
    """class -> the SHA-256 of every image stored under it (the files themselves, rehashed; hidden
    folders such as a URL-list fetch's `.shards/` left out)."""
    out: dict[str, set[str]] = {}
    for path in root.glob("[!.]*/*"):
        out.setdefault(path.parent.name, set()).add(sha(path.read_bytes()))
    return out


def one_error(proc) -> str:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# --- the webdataset convention ----------------------------------------------------------------------


def test_samples_are_grouped_as_webdataset_groups_them(tmp_path):
    """Keys with folders and dots in them, multi-part and upper-case extensions, a member that is no
    sample's, a key that comes back later: the same samples as webdataset's own reader makes."""
    from webdataset import tariterators

    from pipeline.fetch.archives import iter_tar
    from pipeline.fetch.sources.webdataset import samples

    tar = write_tar(
        tmp_path / "x.tar",
        [("a/b.c/x.jpg", b"1"), ("a/b.c/x.seg.png", b"2"), ("y.JPG", b"3"), ("y.cls", b"0"), ("README", b"r")]
        + [("z.txt", b"t"), ("a/b.c/x2.jpg", b"4"), ("y.json", b"{}"), ("._y.jpg", b"5")],
    )
    ours = [
        (item.key, {ext: entry.data for ext, entry in item.members.items()})
        for item in samples(iter_tar(tar, 100, 1000))
        if not isinstance(item, Entry)
    ]
    with open(tar, "rb") as fh:
        grouped = tariterators.group_by_keys(tariterators.tar_file_expander([{"url": str(tar), "stream": fh}]))
        theirs = [(s["__key__"], {k: v for k, v in s.items() if not k.startswith("__")}) for s in grouped]
    assert ours == theirs and len(ours) == 5


# --- labels --------------------------------------------------------------------------------------


def test_cls_labels_named_by_dataset_json_then_prepare(tiny_project):
    """`cls` indices named by the dataset.json beside the tars (a folder of two shards); every sample
    gets a row, whatever happened to it; then `prepare` reads the import as any dataset."""
    cats, dogs = [jpeg(i) for i in range(6)], [jpeg(100 + i) for i in range(6)]
    shards = tiny_project / "shards"
    write_tar(shards / "00000.tar", [m for i, d in enumerate(cats) for m in ((f"c{i}.jpg", d), (f"c{i}.cls", b"0\n"))])
    write_tar(
        shards / "00001.tar",
        [m for i, d in enumerate(dogs) for m in ((f"d{i}.JPEG", d), (f"d{i}.cls", b" 2 "))]
        + [("dup.jpg", cats[0]), ("dup.cls", b"2"), ("nolabel.png", jpeg(7)), ("noimage.cls", b"0")]
        + [("bad.jpg", jpeg(8)), ("bad.cls", b"two"), ("far.jpg", jpeg(9)), ("far.cls", b"7")]
        + [("broken.jpg", b"not an image at all" * 4), ("broken.cls", b"0"), ("README", b"hi")],
    )
    (shards / "dataset.json").write_text(json.dumps({"source": "x", "classes": ["cat", "bird", "dog"]}))
    (shards / "notes.txt").write_text("not a tar: not read")
    fetch(tiny_project, "shards")
    ds = tiny_project / "ds"
    rows = manifest(ds)
    assert json.loads((ds / "dataset.json").read_text()) == {"source": "webdataset", "classes": ["cat", "dog"]}
    assert stored(ds) == {"cat": {sha(d) for d in cats}, "dog": {sha(d) for d in dogs}}
    expect = {
        "shards/00001.tar#dup": ("duplicate", "duplicate of shards/00000.tar#c0"),
        "shards/00001.tar#nolabel": ("skipped", "no label: the sample has no .cls member"),
        "shards/00001.tar#noimage": ("skipped", "no image: the sample has no jpg"),
        "shards/00001.tar#bad": ("skipped", "bad label: bad.cls 'two' is not a class index"),
        "shards/00001.tar#far": ("skipped", "bad label: class index 7 is outside dataset.json's 3 classes"),
        "shards/00001.tar#broken": ("skipped", "not an image"),
        "shards/00001.tar#README": ("skipped", "not a sample member"),
    }
    for origin, (status, reason) in expect.items():
        assert (rows[origin]["status"], rows[origin]["error_message"][: len(reason)]) == (status, reason), rows[origin]
    assert sum(row["status"] == "success" for row in rows.values()) == 12 and len(rows) == 12 + len(expect)
    ok = [row for row in rows.values() if row["status"] == "success"]
    assert all((ds / row["path"]).read_bytes() and row["path"].startswith(f"{row['class']}/") for row in ok)
    summary = json.loads((ds / "summary.json").read_text())
    assert summary["counts"] == {"duplicate": 1, "success": 12, "skipped": 6}

    run_cli("prepare", "--in", "ds", "--out", "prepared", "--size", "16x16", cwd=tiny_project)
    meta = json.loads((tiny_project / "prepared" / "meta.json").read_text())
    assert sum(meta["splits"].values()) == 12 and meta["classes"] == ["cat", "dog"]


def test_cls_without_dataset_json_uses_the_indices(tiny_project):
    write_tar(
        tiny_project / "a.tar",
        [m for i in range(12) for m in ((f"{i}.jpg", jpeg(i)), (f"{i}.cls", b"%d" % (i % 3 * 5)))],
    )
    fetch(tiny_project, "a.tar")
    assert json.loads((tiny_project / "ds" / "dataset.json").read_text())["classes"] == ["0", "5", "10"]  # by index


def test_txt_captions_by_glob_with_a_compressed_tar(tiny_project):
    """`txt`: the caption is the class (stripped); a caption that cannot be a folder name is skipped,
    never written; a glob picks .tar and .tar.gz alike and nothing else."""
    shards = tiny_project / "shards"
    write_tar(
        shards / "00000.tar", [("a.jpg", jpeg(1)), ("a.txt", b"  tabby cat \n"), ("b.jpg", jpeg(2)), ("b.txt", b"dog")]
    )
    write_tar(
        shards / "00001.tar.gz",
        [("c.jpg", jpeg(3)), ("c.txt", b"dog"), ("d.jpg", jpeg(4)), ("d.txt", b"../../escaped")]
        + [("e.jpg", jpeg(5)), ("e.txt", b"   "), ("f.jpg", jpeg(6)), ("f.txt", b"manifest.csv")],
        mode="w:gz",
    )
    (shards / "00000.parquet.bak").write_bytes(b"x")
    fetch(tiny_project, "shards/0000*", "fetch.webdataset.label=txt")
    ds = tiny_project / "ds"
    rows = manifest(ds)
    assert json.loads((ds / "dataset.json").read_text())["classes"] == ["dog", "tabby cat"]
    assert stored(ds) == {"dog": {sha(jpeg(2)), sha(jpeg(3))}, "tabby cat": {sha(jpeg(1))}}
    assert rows["shards/00001.tar.gz#d"]["error_message"].startswith(
        "bad label: d.txt '../../escaped' cannot name a class"
    )
    assert rows["shards/00001.tar.gz#e"]["error_message"] == "bad label: e.txt '' cannot name a class folder (empty)"
    assert "dataset's own files" in rows["shards/00001.tar.gz#f"]["error_message"]
    assert not (tiny_project / "escaped").exists() and files_under(tiny_project / "ds") == {
        "manifest.csv", "dataset.json", "summary.json", "dog", "tabby cat",
        *(f"dog/{sha(jpeg(i))}.jpg" for i in (2, 3)), f"tabby cat/{sha(jpeg(1))}.jpg",
    }  # fmt: skip


def test_json_field_by_brace_pattern(tiny_project):
    """`json:<field>`: a string or an integer field of the sample's .json, whose url is recorded; a
    brace pattern names the shards, and one it names that is missing is one line."""
    for shard in range(3):
        write_tar(
            tiny_project / f"s/{shard:05d}.tar",
            [(f"{shard}{i}.webp" if i == 0 else f"{shard}{i}.jpg", jpeg(10 * shard + i)) for i in range(1)]
            + [
                ("x.jpg", jpeg(50 + shard)),
                ("x.json", json.dumps({"label": 7, "url": f"http://h/{shard}.jpg"}).encode()),
            ]
            + [("y.png", jpeg(60 + shard)), ("y.json", json.dumps({"label": "ship", "url": "u"}).encode())]
            + [("z.jpg", jpeg(70 + shard)), ("z.json", b'{"other": 1}')]
            + [("w.jpg", jpeg(80 + shard)), ("w.json", b'{"label": [1]}')],
        )
    fetch(tiny_project, "s/{00000..00001}.tar", "fetch.webdataset.label=json:label")
    ds = tiny_project / "ds"
    rows = manifest(ds)
    assert json.loads((ds / "dataset.json").read_text())["classes"] == ["7", "ship"]
    assert {row["origin"].split("#")[0] for row in rows.values()} == {"s/00000.tar", "s/00001.tar"}
    assert rows["s/00001.tar#x"]["url"] == "http://h/1.jpg" and rows["s/00001.tar#x"]["class"] == "7"
    assert rows["s/00000.tar#z"]["error_message"] == "no label: z.json has no field 'label'"
    assert rows["s/00000.tar#w"]["error_message"] == "bad label: w.json 'label' is [1], not a string or an integer"
    assert rows["s/00000.tar#00"]["error_message"].startswith("no label: the sample has no .json member")
    assert stored(ds)["ship"] == {sha(jpeg(60)), sha(jpeg(61))}
    missing = fetch(tiny_project, "s/{00000..00003}.tar", "fetch.webdataset.label=json:label", check=False)
    assert "shard not found: s/00003.tar" in one_error(missing) and missing.returncode == 2


def test_http_urls_with_braces_and_a_remote_dataset_json(server, tiny_project):
    """URLs the user configured (trusted: no allow_networks needed for 127.0.0.1) are downloaded
    through the HTTP client into the cache; a rerun reads the cached tars without requesting them."""
    tars = {}
    for shard in range(2):
        tars[shard] = [
            m
            for i in range(4)
            for m in ((f"{shard}{i}.jpg", jpeg(10 * shard + i)), (f"{shard}{i}.cls", b"%d" % (i % 2)))
        ]
        server.file(
            f"/wds/{shard:05d}.tar",
            write_tar(tiny_project / f"t{shard}.tar", tars[shard]).read_bytes(),
            "application/x-tar",
        )
    server.file("/wds/dataset.json", json.dumps({"classes": ["bike", "ship"]}).encode(), "application/json")
    url = f"{server.url}/wds/{{00000..00001}}.tar"
    fetch(tiny_project, url)
    ds = tiny_project / "ds"
    rows = manifest(ds)
    assert json.loads((ds / "dataset.json").read_text())["classes"] == ["bike", "ship"]
    assert stored(ds) == {
        "bike": {sha(jpeg(i)) for i in (0, 2, 10, 12)},
        "ship": {sha(jpeg(i)) for i in (1, 3, 11, 13)},
    }
    assert f"{server.url}/wds/00001.tar#13" in rows
    assert len(list((tiny_project / "downloads" / "webdataset").glob("*-0000?.tar"))) == 2
    hits = {path: n for path, n in server.hits.items() if path.endswith(".tar")}
    assert hits == {"/wds/00000.tar": 1, "/wds/00001.tar": 1}
    fetch(tiny_project, url)
    assert {path: n for path, n in server.hits.items() if path.endswith(".tar")} == hits
    gone = fetch(tiny_project, f"{server.url}/wds/00009.tar", check=False)
    assert "00009.tar: HTTP 404" in one_error(gone)


def test_img2dataset_parquet_failed_rows_and_urls(tiny_project):
    """img2dataset's `<NNNNN>.parquet`: failed rows become failed manifest rows with their reason,
    url and class (the caption); stored images get their url. A parquet of another shape is ignored,
    with a warning."""
    out = tiny_project / "i2d"
    rows, members = [], []
    for i in range(6):
        key, caption = f"00000{i:04d}", ["cat", "dog"][i % 2]
        row = {"key": key, "url": f"http://images.example/{i}.jpg", "caption": caption}
        if i in (4, 5):
            rows.append({**row, "status": "failed_to_download", "error_message": "HTTP Error 404: Not Found"})
            continue
        rows.append({**row, "status": "success", "error_message": None})
        members += [(f"{key}.jpg", jpeg(i)), (f"{key}.txt", caption.encode())]
        members += [(f"{key}.json", json.dumps({"key": key}).encode())]
    write_tar(out / "00000.tar", members)
    pq.write_table(pa.Table.from_pylist(rows), out / "00000.parquet")
    write_tar(out / "00001.tar", [("k.jpg", jpeg(20)), ("k.txt", b"cat")])
    pq.write_table(pa.table({"something": [1]}), out / "00001.parquet")
    (out / "00000_stats.json").write_text("{}")
    proc = fetch(tiny_project, "i2d", "fetch.webdataset.label=txt")
    assert "00001.parquet: not img2dataset's parquet" in proc.stdout + proc.stderr
    ds = tiny_project / "ds"
    got = manifest(ds)
    assert got["i2d/00000.tar#000000004"]["status"] == "failed_to_download"  # img2dataset's status, kept
    assert got["i2d/00000.tar#000000004"]["error_message"] == "HTTP Error 404: Not Found"
    assert got["i2d/00000.tar#000000003"]["key"] == "000000003"  # img2dataset's key, in the key column
    assert got["i2d/00000.tar#000000005"]["url"] == "http://images.example/5.jpg"
    assert got["i2d/00000.tar#000000005"]["class"] == "dog"
    assert got["i2d/00000.tar#000000003"]["url"] == "http://images.example/3.jpg"
    assert got["i2d/00000.tar#000000003"]["status"] == "success" and got["i2d/00001.tar#k"]["url"] == ""
    summary = json.loads((ds / "summary.json").read_text())
    assert summary["counts"] == {"failed_to_download": 2, "success": 5}
    assert summary["warnings"] and "00001.parquet" in summary["warnings"][0]


# --- damage and hostility ----------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "not a tar"])
def test_a_damaged_tar_is_one_line_naming_it(tiny_project, damage):
    good = write_tar(tiny_project / "s/00000.tar", [("a.jpg", jpeg(1)), ("a.cls", b"0")])
    bad = write_tar(
        tiny_project / "s/00001.tar", [m for i in range(4) for m in ((f"{i}.jpg", jpeg(i)), (f"{i}.cls", b"0"))]
    )
    bad.write_bytes(bad.read_bytes()[:2000] if damage == "truncated" else b"<html>not a tar</html>" * 30)
    assert good.exists()
    line = one_error(fetch(tiny_project, "s", check=False))
    assert (
        "s/00001.tar: not a valid or complete tar archive" in line and "leave it out of fetch.webdataset.path" in line
    )
    assert (tiny_project / "ds" / ".incomplete").exists(), "the partial import is not trusted"


def test_a_hostile_tar_writes_nothing_outside_and_is_capped(tiny_project):
    """Names with `..` and absolute names, links, devices and members over the cap each get a
    failed row; nothing is written but the dataset's own files under --out."""
    root = tiny_project
    big = jpeg(9, (400, 400))
    write_tar(
        root / "evil.tar",
        [("ok.jpg", jpeg(1)), ("ok.cls", b"0"), ("../../escape.jpg", jpeg(2)), ("../../escape.cls", b"0")]
        + [("/tmp/abs.jpg", jpeg(3)), ("/tmp/abs.cls", b"0")]
        + [member("link.jpg", type=tarfile.SYMTYPE, linkname="/etc/passwd"), ("link.cls", b"0")]
        + [member("hard.jpg", type=tarfile.LNKTYPE, linkname="ok.jpg"), ("hard.cls", b"0")]
        + [member("dev.jpg", type=tarfile.CHRTYPE, devmajor=1, devminor=3), ("dev.cls", b"0")]
        + [("big.jpg", big), ("big.cls", b"0"), ("huge.jpg", jpeg(4)), ("huge.cls", b"0" * 30_000)]
        + [("deep.jpg", jpeg(6)), ("deep.cls", b"9" * 5000), ("ok2.jpg", jpeg(5)), ("ok2.cls", b"0")],
    )
    before = files_under(root)
    fetch(root, "evil.tar", "fetch.webdataset.max_member_bytes=20000")
    rows = manifest(root / "ds")
    expect = {
        "../../escape": "unsafe name: path traversal", "/tmp/abs": "unsafe name: absolute path",
        "link": "refused: symlink", "hard": "refused: hardlink", "dev": "refused: not a regular file",
        "big": "too large: ", "huge": "bad label: huge.cls: too large", "deep": "bad label: deep.cls '999",
    }  # fmt: skip
    for key, reason in expect.items():
        row = rows[f"evil.tar#{key}"]
        assert row["error_message"].startswith(reason) and row["status"] in ("failed", "skipped"), row
    assert {r["origin"] for r in rows.values() if r["status"] == "success"} == {"evil.tar#ok", "evil.tar#ok2"}
    assert {p for p in files_under(root) - before if not p.startswith(("ds", ".ds.lock"))} == set()
    assert not Path("/tmp/abs.jpg").exists() or Path("/tmp/abs.jpg").read_bytes() != jpeg(3)
    assert len(list((root / "ds").rglob("*.jpg"))) == 2

    total = fetch(root, "evil.tar", "fetch.webdataset.max_total_bytes=3000", check=False)
    assert "evil.tar: archive expands to over 3001 bytes, more than max_total_bytes 3000" in one_error(total)
    write_tar(root / "more.tar", [("a.jpg", jpeg(1)), ("a.cls", b"0")])  # under the cap alone, over it with evil.tar
    cap = f"fetch.webdataset.max_total_bytes={sum(len(jpeg(i)) for i in (1, 4, 5, 6)) + 5100}"  # what evil.tar has read
    total = fetch(root, "./{evil,more}.tar", cap, "fetch.webdataset.max_member_bytes=20000", check=False)
    assert "more.tar: the tars expand to more than max_total_bytes" in one_error(total)
    count = fetch(root, "evil.tar", "fetch.webdataset.max_members=5", check=False)
    assert "more than max_members" in one_error(count)


def test_user_errors_are_one_line(tiny_project):
    bad = run_cli("-S", "fetch.webdataset.label=caption", *SOURCE, "--path", "x.tar", cwd=tiny_project, check=False)
    line = one_error(bad)
    assert "fetch.webdataset.label" in line and "cls, txt or json:<field>" in line and bad.returncode == 2
    unset = run_cli(*SOURCE, cwd=tiny_project, check=False)
    assert "fetch.webdataset.path is not set: give --path TARS" in one_error(unset)
    assert "no tar files match" in one_error(fetch(tiny_project, "nothing/*.tar", check=False))
    assert "not a brace pattern (Unbalanced braces" in one_error(fetch(tiny_project, "s/{00000..", check=False))
    assert "pipe: commands are not run" in one_error(fetch(tiny_project, "pipe:curl -s http://x", check=False))
    assert "unsupported URL scheme 's3'" in one_error(fetch(tiny_project, "s3://bucket/a.tar", check=False))
    write_tar(tiny_project / "ds" / "in.tar", [("a.jpg", jpeg(1)), ("a.cls", b"0")])
    assert "would hold the tars it reads" in one_error(fetch(tiny_project, "ds/in.tar", check=False))


# --- the folder source refuses shard output ----------------------------------------------------------


def test_folder_source_refuses_webdataset_and_img2dataset_output(tiny_project):
    root = tiny_project
    i2d = root / "i2d"  # img2dataset --output_format webdataset: tars, parquet, stats
    write_tar(i2d / "00000.tar", [("0.jpg", jpeg(1)), ("0.txt", b"cat")])
    (i2d / "00000.parquet").write_bytes(b"PAR1")
    (i2d / "00000_stats.json").write_text("{}")
    files = root / "files"  # img2dataset --output_format files: <shard>/<key>.jpg .txt .json
    for shard in range(2):
        for i in range(3):
            (files / f"{shard:05d}").mkdir(parents=True, exist_ok=True)
            (files / f"{shard:05d}" / f"{i}.jpg").write_bytes(jpeg(i))
            (files / f"{shard:05d}" / f"{i}.txt").write_text("cat")
            (files / f"{shard:05d}" / f"{i}.json").write_text("{}")
    numbered = root / "numbered"  # images only, in folders numbered like shards
    for shard in range(3):
        (numbered / f"{shard:05d}").mkdir(parents=True)
        (numbered / f"{shard:05d}" / "a.jpg").write_bytes(jpeg(shard))
    expect = {
        "i2d": "3 of its 3 files are tars or sidecars (.json, .parquet, .tar), as in webdataset or img2dataset",
        "files": "12 of its 18 files are tars or sidecars (.json, .txt), as in img2dataset's --output_format files",
        "numbered": "its subfolders 00000, 00001, 00002 are numbered like shards",
    }
    for name, what in expect.items():
        proc = run_cli("fetch", "--source", "folder", "--path", name, "--out", f"out-{name}", cwd=root, check=False)
        line = one_error(proc)
        assert what in line and "--source webdataset" in line and proc.returncode == 2, line
        assert not (root / f"out-{name}").exists(), "refused before anything is written"
    digits = root / "digits"  # MNIST as folders: 0..9 are classes
    for k in range(3):
        (digits / str(k)).mkdir(parents=True)
        (digits / str(k) / "a.jpg").write_bytes(jpeg(k))
    run_cli("fetch", "--source", "folder", "--path", "digits", "--out", "out-digits", cwd=root)
    assert json.loads((root / "out-digits" / "dataset.json").read_text())["classes"] == ["0", "1", "2"]
