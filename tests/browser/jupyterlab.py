"""Start and stop a private JupyterLab for the browser check.

The server runs from the project's environment on 127.0.0.1, on a free port, without a token, with
temporary Jupyter config, data, runtime, settings and workspace folders (nothing from the user's own Jupyter
setup leaks in, nothing is written to it), news and update checks off, the notebook's own kernel started
without asking, and every cell kept in the page (no windowing) so that the check can read any output.
It is stopped by its PID.
Standard library only: this module runs in the small browser environment (.venv-browser).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["WIDGET_EXTENSION", "ServerError", "jupyterlab"]

WIDGET_EXTENSION = "@jupyter-widgets/jupyterlab-manager"
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none", "autoStartDefaultKernel": True},
}


class ServerError(RuntimeError):
    """JupyterLab did not start (the message ends with the tail of its log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_config(base: Path, widgets: bool) -> dict[str, str]:
    """Create the temporary Jupyter folders and settings; returns the environment variables naming them."""
    dirs = {name: base / name for name in ("config", "data", "runtime", "settings", "workspaces")}
    for d in dirs.values():
        d.mkdir(parents=True)
    for name, values in SETTINGS.items():
        path = dirs["settings"] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    if not widgets:  # the negative control: JupyterLab without the ipywidgets renderer
        (dirs["config"] / "labconfig").mkdir()
        (dirs["config"] / "labconfig" / "page_config.json").write_text(
            json.dumps({"disabledExtensions": {WIDGET_EXTENSION: True}}))
    return {"JUPYTER_CONFIG_DIR": str(dirs["config"]), "JUPYTER_DATA_DIR": str(dirs["data"]),
            "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
            "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]), "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"])}


def _wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll /api/status until the server answers; raise ServerError if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"JupyterLab exited with status {process.returncode}: {_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/api/status", timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise ServerError(f"JupyterLab did not answer within {timeout:.0f} s: {_tail(log)}")


def _tail(log: Path, lines: int = 5) -> str:
    return " | ".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server (it shuts its kernels down), SIGKILL its process group if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def jupyterlab(jupyter: Path, root: Path, log: Path, *, widgets: bool = True, env: dict[str, str] | None = None,
               timeout: float = 180) -> Iterator[str]:
    """Run ``jupyter lab`` serving ``root``; yields its base URL (``http://127.0.0.1:PORT``).

    Args:
        jupyter: the ``jupyter`` executable of the project's environment.
        root: the folder the server shows (a temporary copy of the notebooks).
        log: file that receives the server's output.
        widgets: False disables the JupyterLab widget extension (the negative control).
        env: extra environment variables for the server and its kernels (e.g. PYTHONPATH).
        timeout: seconds to wait for the server to answer.
    """
    with tempfile.TemporaryDirectory(prefix="itc-jupyter-") as tmp:
        port = free_port()
        server_env = {**os.environ, **(env or {}), **_write_config(Path(tmp), widgets)}
        command = [str(jupyter), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                   "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
                   f"--ServerApp.root_dir={root}"] + (["--allow-root"] if os.geteuid() == 0 else [])
        with log.open("w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=server_env,
                                       start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process, log, timeout)
            yield url
        finally:
            _stop(process)
