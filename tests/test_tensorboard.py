"""TensorBoard: our writer's tags and layouts, read back by a real `tensorboard` server."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from common.schedules import from_spec
from common.tb import RunWriter, read_scalars


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture
def run_folder(tmp_path):
    run = tmp_path / "runs" / "demo"
    g = from_spec({"kind": "cosine_restarts", "max": 1e-3, "period": 20})
    d = from_spec({"kind": "cosine_restarts", "max": 1e-3, "period": 20, "offset": 0.5})
    with RunWriter(run) as writer:
        writer.layout({"G and D learning rates": ["lr/G", "lr/D"]})
        for t in range(60):
            writer.scalars(
                {"lr/G": g.value(t), "lr/D": d.value(t), "schedule/level": g.phase(t).level}, t
            )
        writer.hparams({"lr.max": 1e-3, "schedule": "cosine_restarts"}, {"final_loss": 0.5})
    return run, g, d


def test_event_files_read_back(run_folder):
    run, g, d = run_folder
    series = read_scalars(run, "lr/D")
    assert [s for s, _ in series] == list(range(60))
    assert [v for _, v in series] == pytest.approx([d.value(t) for t in range(60)], rel=1e-6)
    with pytest.raises(KeyError, match="lr/X: not in"):
        read_scalars(run, "lr/X")


def test_tensorboard_server_serves_our_scalars_and_layout(run_folder):
    run, g, _ = run_folder
    port = _free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "tensorboard"),
            "--logdir",
            str(run.parent),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast=false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}/data"
        deadline = time.monotonic() + 90
        while "demo" not in _get(f"{base}/runs", timeout=90) and time.monotonic() < deadline:
            time.sleep(0.5)
        points = _get(f"{base}/plugin/scalars/scalars?run=demo&tag=lr/G")
        steps = [p[1] for p in points]
        values = [p[2] for p in points]
        assert steps == list(range(60))
        assert values == pytest.approx([g.value(t) for t in range(60)], rel=1e-6)
        layout = _get(f"{base}/plugin/custom_scalars/layout")
        charts = layout["category"][0]["chart"]
        assert charts[0]["title"] == "G and D learning rates"
        assert charts[0]["multiline"]["tag"] == ["lr/G", "lr/D"]
    finally:
        server.terminate()
        server.wait(timeout=10)
