"""crisp_pl as a researcher installs it: the wheel built from this tree, installed into a fresh virtual
environment, used from folders outside the repository. The built-in studies and presets come from
inside the wheel, the user's files live in workspaces, and nothing is written under the install."""

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from crisp_pl import workspace
from crisp_pl.config import SourceConfig
from crisp_pl.corpus.readers import read_source

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("crisp_pl", "analysis", "studies", "configs", "pyproject.toml", "README.md")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the wheel, the venv's python, its crisp_pl folder): built from a copy of the sources (an in-tree build
    would reuse a stale build/), installed --no-deps into a venv that sees this environment's packages."""
    tmp = tmp_path_factory.mktemp("package")
    source = tmp / "source"
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if (ROOT / name).is_dir() else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
                    str(source)], check=True, cwd=tmp)
    wheel = next((tmp / "dist").glob("crisp_pl-*.whl"))
    env = tmp / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--ignore-installed",
                    str(wheel)], check=True, env=clean, cwd=tmp)
    # then the dependencies, after its own packages (written first, pip would see this environment's editable crisp_pl)
    (purelib / "test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return wheel, python, purelib / "crisp_pl"


def crisp(python: Path, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in (workspace.ENV, "PYTHONPATH")}
    return subprocess.run([str(python.parent / "crisp"), *args], cwd=cwd, capture_output=True, text=True,
                          env={**environment, **(env or {})}, timeout=600)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_the_wheel_holds_every_built_in_study_and_preset(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"crisp_pl/_builtin/{p.relative_to(ROOT)}" for kind in workspace.KINDS for p in (ROOT / kind).rglob("*.yaml")}
    assert shipped and shipped <= names
    assert not any(name.startswith(("studies/", "configs/")) for name in names)  # inside the package, not beside it


def test_the_installed_package_works_from_workspaces_outside_the_clone(installed, tmp_path):
    _, python, package = installed
    before = snapshot(package)
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    listed = crisp(python, "study", "list", cwd=outside)
    assert listed.returncode == 0, listed.stderr
    for study in ("quickstart", "baselines", "clusters"):  # the built-in studies come from the wheel
        assert any(line.startswith(study) and "[built-in]" in line for line in listed.stdout.splitlines())
    refused = crisp(python, "task", "new", "mine", "--from", str(tmp_path), cwd=outside)
    assert refused.returncode == 2 and "crisp init" in refused.stderr  # no workspace: nothing is written

    files = tmp_path / "my_files"
    files.mkdir()
    for i, doc in enumerate(read_source(SourceConfig(name="shakespeare"), max_docs=20, max_chars=800)):
        (files / f"doc{i:02d}.txt").write_text(doc.text)
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        made = crisp(python, "init", str(folder), cwd=outside)
        assert made.returncode == 0, made.stderr
    made = crisp(python, "task", "new", "mine", "--from", str(files), "--study", cwd=first)
    assert made.returncode == 0, made.stderr
    assert (first / "configs" / "tasks" / "mine.yaml").is_file() and (first / "studies" / "mine.yaml").is_file()

    for study, count in (("mine", 12), ("quickstart", 9)):  # the user's study includes the built-in corpora and scales by name
        planned = crisp(python, "study", "plan", study, cwd=first)
        assert planned.returncode == 0, planned.stderr
        assert f"{count} of {count} points to compute" in planned.stdout
    status = crisp(python, "study", "status", "mine", cwd=first)
    pending = [line for line in status.stdout.splitlines() if line.startswith("pending")]
    assert status.returncode == 0 and len(pending) == 12, status.stdout + status.stderr  # every point known, none run
    shown = crisp(python, "study", "show", "quickstart", cwd=first)
    assert f"results_dir: {first / 'results'}" in shown.stdout  # a workspace's studies write into its results/
    mine = next(line for line in crisp(python, "study", "list", cwd=first).stdout.splitlines() if line.startswith("mine"))
    assert "[workspace]" in mine
    assert "mine" not in crisp(python, "--workspace", str(second), "study", "list", cwd=outside).stdout  # the second sees none of it
    assert "mine" not in crisp(python, "study", "list", cwd=outside, env={workspace.ENV: str(second)}).stdout
    assert snapshot(package) == before  # nothing written under the install
