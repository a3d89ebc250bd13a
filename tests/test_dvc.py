"""The DVC pipeline itself: dvc repro, nothing rerun the second time, metrics, experiments."""

import json
import subprocess


def dvc(project, *args, check=True):
    proc = subprocess.run(["dvc", *args], cwd=project, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_repro_then_up_to_date_then_experiment(dvc_project):
    dvc(dvc_project, "repro")
    metrics = {arch: (dvc_project / f"metrics/{arch}.json").read_bytes() for arch in ("mlp", "cnn")}
    assert (dvc_project / "reports/compare.md").read_text().count("|") > 10

    second = dvc(dvc_project, "repro")
    assert "Running stage" not in second.stdout
    assert "up to date" in second.stdout

    shown = json.loads(dvc(dvc_project, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    assert {"metrics/mlp.json", "metrics/cnn.json"} <= set(files)

    subprocess.run(["git", "add", "-A"], cwd=dvc_project, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny run"], cwd=dvc_project, check=True)
    dvc(dvc_project, "exp", "run", "-S", "train.epochs=2")
    assert json.loads((dvc_project / "metrics/cnn.json").read_text())["epochs"] == 2
    assert (dvc_project / "metrics/mlp.json").read_bytes() != metrics["mlp"]

    # DVC refuses a new key unless it is forced with `+`; the stage itself must then refuse it.
    typo = dvc(dvc_project, "exp", "run", "-S", "+train.epocs=2", check=False)
    assert typo.returncode != 0
    assert "train.epocs: unknown key" in typo.stdout + typo.stderr
