"""imagededup_baseline: images/s of imagededup's perceptual hash (PHash) over a folder of JPEGs, a
baseline for hashing rate, run in an environment of its own.

Run:  python -m benchmarks.imagededup_baseline     2,000 synthetic 375x500 JPEGs, 2 workers

imagededup is never installed in the project's environment: the first run builds
`benchmarks/.venv-imagededup` (git-ignored, about 330 MB) with `python -m venv` and pip, as
fetch_scale builds its img2dataset environment, and later runs reuse it.

Its install is the lightest one that runs the hashing code, not imagededup's full one. imagededup
0.3.3.post2 requires torch and torchvision, and `imagededup.methods` and `imagededup.utils` import
them (and matplotlib) in their __init__ for the CNN method and the plotter; a default `pip install
imagededup` fetches the CUDA build of torch with its nvidia-* wheels, about 2.9 GB of wheels over 50
packages. PyPI has no CPU-only torch for Linux, and a CPU torch next to PyPI's torchvision fails at
import (`operator torchvision::nms does not exist`). Hashing needs none of it: hashing.py imports
numpy, PyWavelets, scipy (fftpack's DCT), Pillow, tqdm and, through its search module, scikit-learn.
So the environment gets those, then imagededup itself with `--no-deps`, and the subprocess loads
`imagededup.methods.hashing` with its two parent packages registered as bare packages, so that their
__init__ (the torch imports) does not run. Every module the hash runs through is imagededup's own,
unmodified: PHash().encode_images with its multiprocessing Pool, the same code as
`from imagededup.methods import PHash` would reach.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV = Path(__file__).with_name(".venv-imagededup")
PIN = "imagededup==0.3.3.post2"
# What imagededup/methods/hashing.py imports at import time (Pillow's bound is imagededup's own).
HASHING_DEPS = ["numpy", "scipy", "PyWavelets", "Pillow>=9.0", "tqdm", "scikit-learn"]
BUILD_TIMEOUT = 900.0  # seconds for each pip command (about 15 s here with a cold pip cache)
START_TIMEOUT = 120.0  # seconds for the subprocess to start and import, on top of the per-image allowance
PER_IMAGE_TIMEOUT = 0.1  # seconds per image (about 1.1 ms each here with 2 workers)

# Runs in the venv: argv = folder, workers, result file. Only the encode call is timed.
ENCODE = """
import importlib.util, json, multiprocessing, sys, time, types
from pathlib import Path

# imagededup.methods and imagededup.utils import torch, torchvision and matplotlib in their
# __init__; register them as bare packages so that only the modules the hashing imports load.
root = Path(importlib.util.find_spec("imagededup").origin).parent
for name in ("methods", "utils"):
    package = types.ModuleType(f"imagededup.{name}")
    package.__path__ = [str(root / name)]
    sys.modules[package.__name__] = package
from imagededup.methods.hashing import PHash

# encode_images pickles PHash's bound method to its Pool: a spawned worker would import
# imagededup.methods for real (and torch). Fork, Linux's default up to Python 3.13, inherits the above.
multiprocessing.set_start_method("fork")
folder, workers, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
hasher = PHash(verbose=False)
start = time.perf_counter()
hashes = hasher.encode_images(image_dir=folder, num_enc_workers=workers)
seconds = time.perf_counter() - start
Path(out).write_text(json.dumps({"seconds": seconds, "hashes": hashes}))
"""


def _python() -> Path:
    return VENV / "bin" / "python"


def _installed() -> bool:
    """imagededup goes in last, so its metadata at the pinned version marks a finished build."""
    version = PIN.split("==")[1]
    return _python().exists() and any(VENV.glob(f"lib/python*/site-packages/imagededup-{version}.dist-info"))


def _run(cmd: list[str], what: str, timeout: float) -> subprocess.CompletedProcess:
    """Run `cmd` to the end, or raise RuntimeError naming `what` it waited for (and its output's tail)."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}") from exc
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-2000:]
        raise RuntimeError(f"{what} failed with exit status {done.returncode}:\n{tail}")
    return done


def venv_python() -> Path:
    """The python of benchmarks/.venv-imagededup, built first if missing (or from another pin):
    `python -m venv`, then pip installs the hashing dependencies, then the pinned imagededup with
    --no-deps (no torch, torchvision or matplotlib). A failed build is removed."""
    if _installed():
        return _python()
    print(f"imagededup_baseline: building {VENV} with {PIN}, no torch (once; about 330 MB)", file=sys.stderr)
    pip = [str(_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    try:
        _run([sys.executable, "-m", "venv", "--clear", str(VENV)], f"python -m venv {VENV}", BUILD_TIMEOUT)
        _run([*pip, *HASHING_DEPS], f"pip install of {' '.join(HASHING_DEPS)} into {VENV}", BUILD_TIMEOUT)
        _run([*pip, "--no-deps", PIN], f"pip install --no-deps {PIN} into {VENV}", BUILD_TIMEOUT)
    except BaseException:
        shutil.rmtree(VENV, ignore_errors=True)
        raise
    return _python()


def rate(folder: Path, workers: int, *, timeout: float | None = None) -> dict:
    """imagededup's PHash().encode_images(image_dir=folder, num_enc_workers=workers) in its own
    environment, timed around that call alone (its Pool's start included; not the interpreter's
    start nor the imports): {"images", "seconds", "img_per_s", "hashes": {file name: 16-hex hash}}.
    "images" counts the hashes returned (imagededup leaves out a file it cannot read). `timeout`
    bounds the whole subprocess [default: 120 s + 0.1 s per file in the folder]."""
    folder = Path(folder).resolve()
    python = venv_python()
    files = sum(1 for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if timeout is None:
        timeout = START_TIMEOUT + PER_IMAGE_TIMEOUT * files
    with tempfile.TemporaryDirectory(prefix="imagededup-") as tmp:
        out = Path(tmp) / "result.json"
        what = f"imagededup PHash.encode_images over {files} files in {folder} with {workers} workers"
        _run([str(python), "-I", "-c", ENCODE, str(folder), str(workers), str(out)], what, timeout)
        result = json.loads(out.read_text())
    n, seconds = len(result["hashes"]), result["seconds"]
    return {"images": n, "seconds": seconds, "img_per_s": n / seconds, "hashes": result["hashes"]}


def _versions() -> str:
    """The versions that the measurement ran with, as "name version, ..."."""
    names = ["imagededup", "numpy", "scipy", "PyWavelets", "Pillow", "scikit-learn"]
    code = "import importlib.metadata as m, sys; print(', '.join(f'{n} {m.version(n)}' for n in sys.argv[1:]))"
    return _run([str(venv_python()), "-I", "-c", code, *names], "the versions in the venv", 60).stdout.strip()


def make_jpegs(folder: Path, n: int, seed: int = 0) -> None:
    """n 375x500 JPEGs of smooth random colour fields with a few filled circles each."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = rng.integers(0, 256, size=(rng.integers(3, 8), rng.integers(3, 8), 3), dtype=np.uint8)
        image = cv2.resize(small, (500, 375), interpolation=cv2.INTER_CUBIC)
        for _ in range(rng.integers(1, 5)):
            centre = (int(rng.integers(0, 500)), int(rng.integers(0, 375)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.circle(image, centre, int(rng.integers(10, 80)), colour, thickness=-1, lineType=cv2.LINE_AA)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])


def main(n: int = 2_000, workers: int = 2) -> dict:
    start = time.perf_counter()
    venv_python()
    print(f"environment: {VENV} ready in {time.perf_counter() - start:.1f} s: {_versions()}")
    with tempfile.TemporaryDirectory(prefix="imagededup-bench-") as tmp:
        folder = Path(tmp)
        make_jpegs(folder, n)
        result = rate(folder, workers)
    print(
        f"imagededup {PIN.split('==')[1]} PHash.encode_images: {result['images']} of {n} images, "
        f"{workers} workers, {result['seconds']:.2f} s, {result['img_per_s']:.0f} images/s"
    )
    return result


if __name__ == "__main__":
    main()
