"""A non-editable `pip install` of the checkout, used from a user's project that has its own `trainer.py`
and `data/` package (both raise on import): gradwatch claims only the `gradwatch` name and its CLI works.

The clean venv reuses this environment's dependencies through a .pth line (so no torch download), but
not its editable gradwatch: the one gradwatch it can import is the installed wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

USER_LOOP = textwrap.dedent("""
    import sys
    import torch
    from gradwatch import Run
    import gradwatch
    assert "site-packages" in gradwatch.__file__ and {repo!r} not in gradwatch.__file__, gradwatch.__file__
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Run(logdir="logs", name="user-run") as run:
        run.watch(model, every=1)
        for step in range(6):
            x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            run.log(step, train_loss=loss.item())
    print(run.path)
    bad = sorted(m for m in sys.modules if m.split(".")[0] in ("trainer", "data", "dashboard"))
    assert not bad, bad
""")


BUILD_OUTPUT: list[str] = []  # the wheel build's verbose output (the installed fixture fills it)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, venv bin dir, user project dir) with gradwatch installed from a built wheel."""
    root = tmp_path_factory.mktemp("install")
    source = root / "checkout"  # a copy: building must not leave build/ or egg-info in the real tree
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    wheels = root / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w",
                            str(wheels), str(source)], check=True, capture_output=True, text=True, timeout=300)
    BUILD_OUTPUT.append(built.stdout + built.stderr)
    venv = root / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)],
                   check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies come from this environment; its .pth files (the editable gradwatch) are not run.
    # Every site folder of this interpreter (a venv's and, with --system-site-packages, the base's).
    site_dirs = [entry for entry in sys.path if entry.endswith("site-packages") and Path(entry).is_dir()]
    Path(purelib, "deps.pth").write_text("\n".join(site_dirs) + "\n")
    wheel = next(wheels.glob("gradwatch-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    user = root / "user-project"
    (user / "data").mkdir(parents=True)
    (user / "trainer.py").write_text("raise ImportError('this is the user\\'s own trainer.py')\n")
    (user / "data" / "__init__.py").write_text("raise ImportError('this is the user\\'s own data package')\n")
    return python, venv / "bin", user


def _run(installed, *args, timeout=180):
    python, bindir, user = installed
    env = {**os.environ, "PYTHONPATH": str(user)}  # the user's modules are first on the path
    env.pop("GRADWATCH_LOGDIR", None)
    return subprocess.run(list(args), cwd=user, env=env, capture_output=True, text=True, timeout=timeout)


def test_installed_gradwatch_trains_inspects_diagnoses_and_serves_beside_user_code(installed):
    python, bindir, user = installed
    loop = _run(installed, str(python), "-c", USER_LOOP.format(repo=str(REPO)))
    assert loop.returncode == 0, loop.stderr
    run_dir = user / loop.stdout.strip().splitlines()[-1]  # relative to the user's folder, as given
    assert run_dir.is_dir() and run_dir.parent == user / "logs"

    inspect = _run(installed, str(bindir / "gradwatch"), "inspect", str(run_dir), "--json")
    assert inspect.returncode == 0, inspect.stderr
    summary = json.loads(inspect.stdout)
    assert summary["status"] == "finished" and summary["name"] == "user-run"
    assert summary["steps_logged"] == 6 and summary["last_step"] == 5 and len(summary["layers"]) == 2

    diagnose = _run(installed, str(bindir / "gradwatch"), "diagnose", str(run_dir), "--json")
    assert diagnose.returncode == 0, diagnose.stderr
    assert isinstance(json.loads(diagnose.stdout)["flags"], list)

    version = _run(installed, str(bindir / "gradwatch"), "--version")
    dist = _run(installed, str(python), "-c", "import importlib.metadata as m; print(m.version('gradwatch'))")
    assert version.returncode == 0 and version.stdout.strip() == f"gradwatch {dist.stdout.strip()}"

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(user)}
    server = subprocess.Popen([str(bindir / "gradwatch"), "ui", "--logdir", str(user / "logs"), "--port", str(port)],
                              cwd=user, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, body = time.monotonic() + 90, None
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                    body = json.loads(response.read())
            except OSError:
                assert server.poll() is None, server.stdout.read()
                time.sleep(0.5)
        assert body is not None, "the dashboard never answered /healthz"
        assert body["status"] == "ok" and body["runs"] == 1 and body["version"] == dist.stdout.strip()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_python_dash_m_gradwatch_is_the_same_cli(installed):
    python, bindir, _ = installed
    for args in (["--version"], ["presets"], ["ui", "--help"]):
        via_module = _run(installed, str(python), "-m", "gradwatch", *args)
        via_script = _run(installed, str(bindir / "gradwatch"), *args)
        assert via_module.returncode == via_script.returncode == 0, via_module.stderr + via_script.stderr
        assert via_module.stdout == via_script.stdout


def test_the_build_prints_no_setuptools_warning_and_ships_the_assets(installed):
    """setuptools printed a 35-line deprecation warning about gradwatch.dashboard.assets on every install."""
    output = BUILD_OUTPUT[-1]
    assert "SetuptoolsDeprecationWarning" not in output and "as data is deprecated" not in output
    python, _, user = installed
    found = subprocess.run([str(python), "-c", "import importlib.resources as r; "
                            "print(sorted(p.name for p in r.files('gradwatch.dashboard').joinpath('assets').iterdir()))"],
                           cwd=user, capture_output=True, text=True, check=True).stdout
    assert "style.css" in found and "plotly-gradwatch.min.js" in found and "gradwatch.js" in found
