"""Nothing lost, nothing broken trusted (issue 10): hostile input, full and read-only disks, a
second writer, kill -9 and Ctrl-C, across the stages. Each numbered case of the issue has a test
named after it; then the fault-injection suite and the params fuzz."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import cli
from pipeline.core.errors import ConfigError, DataError, ImageError, InputError
from pipeline.core.files import read_capped
from pipeline.core.prepared import load_split
from pipeline.fetch.http import Client, DownloadError
from pipeline.fetch.params import DownloadSettings
from pipeline.fetch.sources import CatsDogsParams, FolderParams
from pipeline.fetch.sources.cifar10 import load_batch
from pipeline.prepare.params import PrepareParams
from pipeline.prepare.prepare import prepare
from pipeline.prepare.survey import survey_shapes
from tests.conftest import ROOT, TINY_PARAMS, fetch_source, kill_at, pause_at, run_cli

SMALL = (12, 16)


def make_folder(root: Path, counts: dict[str, int], shape=(24, 32)) -> Path:
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = np.random.default_rng([i, *cls.encode()]).integers(0, 255, (*shape, 3), dtype=np.uint8)
            cv2.imwrite(str(root / cls / f"{i}.png"), img)
    return root


def one_error_line(stderr: str) -> str:
    """The run's error line; fails unless there is exactly one and no traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def invoke(*args: str) -> tuple[int, str]:
    """The command line in-process: (exit code, stderr)."""
    stderr = io.StringIO()
    handler = signal.getsignal(signal.SIGINT)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            cli.main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    else:
        code = 0
    finally:
        signal.signal(signal.SIGINT, handler)
    return code, stderr.getvalue()


@pytest.fixture
def plain(tmp_path) -> Path:
    return make_folder(tmp_path / "raw", {"a": 8, "b": 8})


# --- severe ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_case_01_killed_prepare_never_leaves_arrays_train_would_trust(plain, tmp_path):
    """Kill -9 a second prepare (another size) over a finished one after each of its three groups
    of images: the folder is always one complete run's, old or new; a damaged folder is refused by
    every reader."""
    out = tmp_path / "out"
    run_cli("prepare", "--in", str(plain), "--out", str(out), "--size", "12x16", cwd=tmp_path)
    big = make_folder(tmp_path / "big", {"a": 300, "b": 300}, shape=(48, 64))  # three groups of 256
    for group in (1, 2, 3):
        args = ["prepare", "--in", str(big), "--out", str(out), "--size", "24x32"]
        assert kill_at(args, tmp_path, "prepare.group", group), "prepare finished before its kill: nothing tested"
        meta = json.loads((out / "meta.json").read_text())
        assert meta["input_shape"] == [12, 16, 3]  # still the finished run's
        for split in ("train", "val"):
            x, y = load_split(out, split)  # consistent, whichever run it is
            assert x.shape == (meta["splits"][split], *meta["input_shape"])
    # a damaged folder: arrays that do not match their meta.json
    np.save(out / "train_x.npy", np.zeros((3, 5, 5, 3), np.uint8))
    with pytest.raises(InputError, match="do not match meta.json"):
        load_split(out, "train")
    proc = run_cli(
        "train", "--arch", "mlp", "--data", str(out), "--out", str(tmp_path / "m"), cwd=tmp_path, check=False
    )
    assert proc.returncode == 2 and "do not match meta.json" in one_error_line(proc.stderr)


def test_case_02_predict_reads_no_endless_or_huge_input(tmp_path):
    with pytest.raises(ImageError, match="not a regular file"):
        read_capped(Path("/dev/zero"), 1000)
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as fh:
        fh.truncate(10**9)  # sparse: a billion bytes claimed, none stored
    with pytest.raises(ImageError, match="too large: 1000000000 bytes > 1000"):
        read_capped(huge, 1000)
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(ImageError, match="not a regular file"):
        read_capped(tmp_path / "pipe.jpg", 1000)  # would block forever if opened for a plain read


def test_case_02_predict_cli_refuses_dev_zero_and_still_predicts_the_rest(evaluated_project):
    image = next((evaluated_project / "data/raw/synthetic/vertical").glob("*.jpg"))
    proc = run_cli("predict", "--arch", "cnn", "/dev/zero", str(image), "--json", cwd=evaluated_project, check=False)
    assert proc.returncode == 1 and "/dev/zero: not a regular file" in one_error_line(proc.stderr)
    rows = json.loads(proc.stdout)
    assert rows[0]["error"].startswith("not a regular file") and rows[1]["cls"] in ("vertical", "horizontal")


def png_claiming(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_case_03_prepare_caps_pixels_before_decoding(plain, tmp_path):
    (plain / "a" / "bomb.png").write_bytes(png_claiming(20000, 20000))
    result = prepare(plain, tmp_path / "out", PrepareParams(size=SMALL))
    assert ("a/bomb.png", "too many pixels: 20000x20000 > prepare.max_pixels 100000000") in result.skipped
    assert sum(result.sizes.values()) == 16


# --- defects -----------------------------------------------------------------------------------


class Endless(BaseHTTPRequestHandler):
    """A body without a length that goes on (bounded here at 50 MB, so the test ends regardless)."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b"\0" * 65536
        with contextlib.suppress(OSError):
            for _ in range(800):
                self.wfile.write(chunk)

    def log_message(self, *args):
        pass


def test_case_04_archive_downloads_are_capped(tmp_path):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        settings = DownloadSettings(max_archive_bytes=1_000_000, retries=0)
        with (
            Client(settings) as client,
            pytest.raises(DownloadError, match="larger than fetch.download.max_archive_bytes"),
        ):
            client.download(f"http://127.0.0.1:{httpd.server_address[1]}/x.zip", tmp_path / "x.zip")
    finally:
        httpd.shutdown()
    assert not list(tmp_path.iterdir())  # no partial file left to fill the disk next time


def test_case_05_a_second_writer_fails_fast(plain, tmp_path):
    from filelock import FileLock

    out = tmp_path / "out"
    with FileLock(tmp_path / ".out.lock"):  # as a running `pipeline prepare` holds it
        with pytest.raises(InputError, match="being written by another `pipeline prepare`"):
            prepare(plain, out, PrepareParams(size=SMALL))
    assert not out.exists()
    prepare(plain, out, PrepareParams(size=SMALL))  # free again


def test_case_06_fifo_in_an_image_folder_is_skipped(plain, tmp_path):
    os.mkfifo(plain / "a" / "pipe.jpg")
    assert survey_shapes(plain).images == 16
    result = prepare(plain, tmp_path / "out", PrepareParams(size=SMALL))
    assert ("a/pipe.jpg", "not a regular file (FIFO, socket or device)") in result.skipped


def fail_with(code: int, after: int = 0, real=None):
    """An os function that fails with `code`, after `after` calls that go through to `real`."""
    calls = []

    def fail(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    return fail


@pytest.mark.parametrize(
    "code, message",
    [(errno.ENOSPC, "no space left on device writing "), (errno.EROFS, "read-only file system: cannot write ")],
)
def test_case_07_file_system_errors_are_one_line_and_leave_nothing_trusted(plain, tmp_path, monkeypatch, code, message):
    """ENOSPC and EROFS injected into every writer (the atomic file writer, the array writer):
    one error line, the previous output untouched, no temporary leftovers."""
    out, survey = tmp_path / "out", tmp_path / "survey.json"
    assert invoke("prepare", "--in", str(plain), "--out", str(out), "--size", "12x16")[0] == 0
    assert invoke("survey-shapes", str(plain), "--out", str(survey))[0] == 0
    before = {p.name: p.read_bytes() for p in [*out.iterdir(), survey]}
    for target, after, args in [
        ("pwrite", 5, ["prepare", "--in", str(plain), "--out", str(out), "--size", "8x8"]),  # the arrays
        ("fdopen", 0, ["prepare", "--in", str(plain), "--out", str(out), "--size", "8x8"]),  # meta, index
        ("fdopen", 0, ["survey-shapes", str(plain), "--out", str(survey)]),
        (
            "fdopen",
            3,
            ["fetch", "--source", "folder", "--path", str(plain), "--out", str(tmp_path / "fetched")],
        ),  # marker, 2 images, then full
    ]:
        with monkeypatch.context() as patch:
            patch.setattr(os, target, fail_with(code, after, getattr(os, target)))
            status, stderr = invoke(*args)
        assert status == 1
        assert message + str(tmp_path) in one_error_line(stderr)  # names the file
    assert {p.name: p.read_bytes() for p in [*out.iterdir(), survey]} == before
    assert not [p for p in tmp_path.rglob(".*") if "tmp" in p.name]
    assert (tmp_path / "fetched" / ".incomplete").exists()  # never read as a dataset
    status, stderr = invoke("prepare", "--in", str(tmp_path / "fetched"), "--out", str(tmp_path / "p2"))
    assert status == 2 and "unfinished fetch" in one_error_line(stderr)


def test_case_07_params_folder_and_symlink_loop(plain, tmp_path):
    status, stderr = invoke("--params", str(tmp_path), "check-params")
    assert status == 2 and "is a folder, not a params file" in one_error_line(stderr)
    (plain / "a" / "loop.jpg").symlink_to(plain / "a" / "loop.jpg")
    (plain / "b" / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    result = prepare(plain, tmp_path / "out", PrepareParams(size=SMALL))
    assert {("a/loop.jpg", "symbolic link, not followed"), ("b/dangling.jpg", "symbolic link, not followed")} <= set(
        result.skipped
    )


def test_case_08_names_that_are_not_utf8_are_data(plain, tmp_path):
    raw = os.fsencode(plain / "a") + b"/caf\xe9.png"
    shutil.copy(plain / "a" / "0.png", raw)
    result = prepare(plain, tmp_path / "out", PrepareParams(size=SMALL, dedupe="none"))  # (keep the same-bytes copy)
    assert sum(result.sizes.values()) == 17
    assert "a/caf\\xe9.png" in (tmp_path / "out" / "index.csv").read_text()
    fetched = fetch_source(tmp_path / "fetched", FolderParams(path=str(plain)), DownloadSettings())
    assert fetched.counts["success"] == 16  # the copy is the same bytes as 0.png: one of them is a duplicate
    assert "a/caf\\xe9.png" in (tmp_path / "fetched" / "manifest.csv").read_text()


def test_case_09_output_inside_input_refused(plain):
    with pytest.raises(ConfigError, match="is inside --in"):
        prepare(plain, plain / "prepared", PrepareParams(size=SMALL))
    assert not (plain / "prepared").exists()


def test_case_10_single_class_refused(tmp_path):
    with pytest.raises(DataError, match="at least two class"):
        prepare(make_folder(tmp_path / "raw", {"only": 6}), tmp_path / "out", PrepareParams(size=SMALL))


@pytest.mark.parametrize(
    "args, expected",
    [
        (["-S", "prepare.scale=.inf", "check-params"], "prepare.scale"),
        (
            ["prepare", "--size", "100000x100000"],
            "prepare.size: expected auto or [height, width] of integers from 1 to 8192",
        ),
        (["-S", "evaluate.thresholds=1000000000000", "check-params"], "evaluate.thresholds"),
        (["train", "--lr", "inf"], "learning_rate"),
        (["-S", "train.epochs=10000000", "check-params"], "train.epochs"),
    ],
)
def test_case_11_extreme_values_fail_at_the_boundary(tmp_path, args, expected):
    (tmp_path / "params.yaml").write_text(TINY_PARAMS)
    proc = run_cli(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and expected in one_error_line(proc.stderr)


def test_case_12_malformed_set_values_and_params_files(tmp_path):
    status, stderr = invoke("-S", "train.epochs=[1", "check-params")
    assert status == 2 and "not valid YAML" in one_error_line(stderr)
    (tmp_path / "latin1.yaml").write_bytes("train:\n  archs: [caf\xe9]\n".encode("latin-1"))
    status, stderr = invoke("--params", str(tmp_path / "latin1.yaml"), "check-params")
    assert status == 2 and "not UTF-8" in one_error_line(stderr)


@pytest.mark.parametrize(
    "text", ['{"most_common_shape": [375', "not json", '{"images": 3}', '{"most_common_shape": [0, -1]}', "[]"]
)
def test_case_13_bad_survey_files_refused(plain, tmp_path, text):
    (tmp_path / "survey.json").write_text(text)
    with pytest.raises(InputError, match="survey"):
        prepare(plain, tmp_path / "out", PrepareParams(), tmp_path / "survey.json")


def test_case_14_cifar_batch_values_over_255(tmp_path):
    batch = {b"data": np.full((2, 3072), 300, dtype=np.int64), b"labels": [0, 1]}
    with pytest.raises(InputError, match="pixel values are not bytes"):
        load_batch("data_batch_1", pickle.dumps(batch, protocol=2))


def test_case_15_a_failed_fetch_is_never_read_as_a_dataset(tmp_path, monkeypatch):
    import pipeline.fetch.sources.folder as folder

    src = make_folder(tmp_path / "src", {"a": 3, "b": 3})
    real = folder.write_manifest

    def crash(*args, **kwargs):
        raise InputError("the source failed before its manifest")

    monkeypatch.setattr(folder, "write_manifest", crash)
    with pytest.raises(InputError):
        fetch_source(tmp_path / "raw", FolderParams(path=str(src)), DownloadSettings())
    assert list((tmp_path / "raw").rglob("*.png"))  # images were written...
    for read in (
        lambda: survey_shapes(tmp_path / "raw"),
        lambda: prepare(tmp_path / "raw", tmp_path / "out", PrepareParams(size=SMALL)),
    ):
        with pytest.raises(InputError, match="unfinished fetch"):  # ...but nobody reads them as a dataset
            read()
    monkeypatch.setattr(folder, "write_manifest", real)
    fetch_source(tmp_path / "raw", FolderParams(path=str(src)), DownloadSettings())
    assert survey_shapes(tmp_path / "raw").images == 6


def test_case_16_params_file_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, stderr = invoke("--params", "/nonexistent.yaml", "check-params")
    assert status == 2 and "--params /nonexistent.yaml: file not found" in one_error_line(stderr)
    status, stderr = invoke("check-params")
    assert status == 0 and "warning: no params.yaml" in stderr


def test_case_17_empty_archs_refused(tmp_path):
    status, stderr = invoke("-S", "train.archs=[]", "check-params")
    assert status == 2 and "train.archs" in one_error_line(stderr)


def test_case_18_one_symlink_policy(plain, tmp_path):
    """A linked class folder is no class for prepare, as for fetch; nothing outside is read."""
    outside = make_folder(tmp_path / "outside", {"c": 4})
    (plain / "c").symlink_to(outside / "c")
    result = prepare(plain, tmp_path / "out", PrepareParams(size=SMALL))
    assert result.classes == ["a", "b"]
    fetched = fetch_source(tmp_path / "fetched", FolderParams(path=str(plain)), DownloadSettings())
    assert fetched.classes == ["a", "b"]


def test_case_19_archive_url_naming_no_file(tmp_path):
    with pytest.raises(DownloadError, match="the URL names no file"):
        fetch_source(tmp_path / "out", CatsDogsParams(url="http://127.0.0.1:9/.."), DownloadSettings())


def test_case_20_all_items_skipped_is_an_error_naming_the_param(tmp_path):
    src = make_folder(tmp_path / "digits", {"0": 3, "1": 3}, shape=(8, 8))
    with pytest.raises(
        DataError, match=r"no usable image fetched: 6 of 6 .*too small \(set by fetch.download.min_side\)"
    ):
        fetch_source(tmp_path / "out", FolderParams(path=str(src)), DownloadSettings())
    result = fetch_source(tmp_path / "out", FolderParams(path=str(src)), DownloadSettings(min_side=8))
    assert result.counts == {"success": 6}


@pytest.mark.slow
def test_case_21_ctrl_c_is_one_line_and_quick(tmp_path):
    (tmp_path / "params.yaml").write_text(TINY_PARAMS)
    args = ["fetch", "--per-class", "100000", "--out", "big"]
    proc = pause_at(args, tmp_path, "fetch.item", 50, stderr=subprocess.PIPE, text=True)
    assert proc.returncode is None, "the fetch ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    start = time.perf_counter()
    _, stderr = proc.communicate(timeout=30)
    assert time.perf_counter() - start < 2
    assert proc.returncode == 130
    assert "interrupted" in one_error_line(stderr)


# --- kill -9 at random points, then a rerun: the uninterrupted result --------------------------


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize(
    "stage, point, counts", [("fetch", "fetch.item", (1, 300, 600)), ("prepare", "prepare.group", (1, 2, 3))]
)
def test_kill_at_points_of_progress_then_rerun_gives_the_uninterrupted_result(tmp_path, stage, point, counts):
    """kill -9 after the first item (or group of items), half way and after the last one (before
    the outputs are committed): a rerun gives the uninterrupted run's files, nothing left behind."""
    (tmp_path / "params.yaml").write_text(TINY_PARAMS)
    run_cli("fetch", "--per-class", "300", cwd=tmp_path)
    args = {
        "fetch": ["fetch", "--per-class", "300", "--out", "x"],
        "prepare": ["prepare", "--size", "60x80", "--out", "x"],
    }[stage]
    run_cli(*args[:-1], "reference", cwd=tmp_path)
    reference = files_of(tmp_path / "reference")
    for n in counts:
        assert kill_at(args, tmp_path, point, n), f"{stage} finished before {point} {n}: the test tested nothing"
    run_cli(*args, cwd=tmp_path)
    assert files_of(tmp_path / "x") == reference
    assert not [p for p in tmp_path.glob(".*") if p.name != ".x.lock" and not p.name.startswith(".reference")]


@pytest.mark.slow
def test_kill_evaluate_then_rerun(tmp_path, evaluated_project):
    """kill -9 once the model's predictions are made (nothing written yet) and once the metrics are
    written (the plots not yet): the metrics are whole or absent, and a rerun gives the same bytes."""
    root = tmp_path / "p"
    shutil.copytree(evaluated_project, root)
    reference = (root / "metrics/cnn.json").read_bytes()
    (root / "metrics/cnn.json").unlink()
    for point in ("evaluate.predicted", "evaluate.metrics"):
        assert kill_at(["evaluate", "--arch", "cnn"], root, point, 1), f"evaluate finished before {point}"
        if (root / "metrics/cnn.json").exists():  # written whole or not at all
            assert (root / "metrics/cnn.json").read_bytes() == reference
        else:
            assert point == "evaluate.predicted"
    run_cli("evaluate", "--arch", "cnn", cwd=root)
    assert (root / "metrics/cnn.json").read_bytes() == reference


# --- params fuzz: exit 0, or exactly one error line; never a traceback -------------------------

KEYS = [
    "fetch.source",
    "fetch.synthetic.per_class",
    "fetch.download.concurrency",
    "survey.sample",
    "prepare.size",
    "prepare.scale",
    "prepare.train_size",
    "prepare.aspect",
    "train.epochs",
    "train.archs",
    "train.learning_rate",
    "train.cnn.filters",
    "train.augment",
    "train.mixed_precision",
    "evaluate.thresholds",
    "compare.sort",
    "train",
    "fetch",
    "nonsense.key",
    "train..epochs",
    "",
    " ",
]
VALUES = st.one_of(
    st.text(max_size=12),
    st.integers().map(str),
    st.floats().map(str),
    st.lists(st.integers(min_value=-3, max_value=10**6), max_size=3).map(str),
    st.sampled_from(["auto", "null", "true", "[1", "{a: 1}", "inf", ".nan", "-1", "1e400", "[0, 0]", "seed001", "cnn"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sets=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=3))
def test_fuzz_set_values(sets):
    args = [arg for key, value in sets for arg in ("-S", f"{key}={value}")]
    status, stderr = invoke("--params", str(ROOT / "params.yaml"), *args, "check-params")
    if status:
        one_error_line(stderr)
    else:
        assert "Traceback" not in stderr


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.one_of(
        st.text(max_size=80),
        st.sampled_from(
            ["train: [", "train:\n  epochs: !!python/object:os.system x", "a: b: c", "- 1\n- 2", "fetch: 3"]
        ),
    )
)
def test_fuzz_params_files(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    status, stderr = invoke("--params", str(path), "check-params")
    if status:
        one_error_line(stderr)
    else:
        assert "Traceback" not in stderr


@pytest.mark.slow
def test_case_21_ctrl_c_stops_training_at_once(tmp_path, evaluated_project):
    """The slow case: TensorFlow's threads took 10.9 s to wind down after a KeyboardInterrupt."""
    root = tmp_path / "p"
    shutil.copytree(evaluated_project, root)
    args = ["train", "--arch", "cnn", "--epochs", "500", "--out", "models/long"]
    proc = pause_at(args, root, "train.epoch", 1, stderr=subprocess.PIPE, text=True)
    assert proc.returncode is None, "training ended before its first epoch was backed up"
    proc.send_signal(signal.SIGINT)
    start = time.perf_counter()
    _, stderr = proc.communicate(timeout=60)
    assert time.perf_counter() - start < 2
    assert proc.returncode == 130 and "interrupted" in one_error_line(stderr)


def test_nan_loss_is_an_error_and_nothing_is_kept(tmp_path):
    from pipeline.train.loop import _check_finite
    from pipeline.train.settings import TrainSettings

    backup = tmp_path / "backup"
    backup.mkdir()
    _check_finite([{"epoch": 1, "loss": 0.5, "val_loss": 0.4}], backup, TrainSettings())  # finite: fine
    with pytest.raises(
        DataError,
        match=r"training diverged: the loss became nan in epoch 2; "
        r"lower the learning rate \(train.learning_rate is 0.0003\)",
    ):
        _check_finite([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": float("nan")}], backup, TrainSettings())
    assert not backup.exists()  # a diverged run is not resumed
