"""TensorBoard: our writer's tags and layouts, read back by a real `tensorboard` server."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from common.schedules import from_spec
from common.tb import RunWriter, read_scalars

REPO = Path(__file__).resolve().parents[1]


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
        writer.layout({"G and D learning rates": ["lr/G", "lr/D"]}, "gancycle")
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


@contextmanager
def tensorboard(logdir: Path, *flags: str) -> Iterator[str]:
    """A real TensorBoard server on loopback over ``logdir``; yields its data URL; killed after."""
    port = _free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "tensorboard"),
            *("--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)),
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}/data"
    finally:
        server.kill()
        server.wait(timeout=10)


def _wait_for_runs(base: str, runs: set[str], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not runs <= set(_get(f"{base}/runs", timeout=timeout)):
        assert time.monotonic() < deadline, f"TensorBoard never listed {runs}"
        time.sleep(0.5)


def test_tensorboard_server_serves_our_scalars_and_layout(run_folder):
    run, g, _ = run_folder
    with tensorboard(run.parent, "--load_fast=false") as base:
        _wait_for_runs(base, {"demo"})
        points = _get(f"{base}/plugin/scalars/scalars?run=demo&tag=lr/G")
        steps = [p[1] for p in points]
        values = [p[2] for p in points]
        assert steps == list(range(60))
        assert values == pytest.approx([g.value(t) for t in range(60)], rel=1e-6)
        layout = _get(f"{base}/plugin/custom_scalars/layout")
        assert [c["title"] for c in layout["category"]] == ["gancycle"]
        charts = layout["category"][0]["chart"]
        assert charts[0]["title"] == "G and D learning rates"
        assert charts[0]["multiline"]["tag"] == ["lr/G", "lr/D"]


def test_a_resumed_run_reads_as_one_curve(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    with RunWriter(run) as writer:  # killed after step 100, its last checkpoint at step 60
        for t in range(101):
            writer.scalar("loss/G", float(t), t)
    with RunWriter(run, purge_step=60) as writer:  # resumed from the checkpoint
        for t in range(60, 121):
            writer.scalar("loss/G", 1000.0 + t, t)
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    points = [(e.step, e.value) for e in events.Scalars("loss/G")]
    assert [step for step, _ in points] == list(range(121))  # each step once, in order
    assert points == [(t, float(t)) for t in range(60)] + [(t, 1000.0 + t) for t in range(60, 121)]


def test_a_chart_shows_once_the_run_writes_one_of_its_tags(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    def charts(run):
        events = EventAccumulator(str(run), size_guidance={"tensors": 0})
        events.Reload()
        layouts = events.Tensors("custom_scalars__config__")
        layout = layout_pb2.Layout.FromString(layouts[-1].tensor_proto.string_val[0])
        return {c.title: [chart.title for chart in c.chart] for c in layout.category}

    layout = {
        "losses": ["loss/G", "loss/D"],
        "D regularisers": ["hparam/instance_noise", "hparam/label_smoothing"],
        "eval return by difficulty": ["eval/return/d="],
    }
    plain, noisy = tmp_path / "plain", tmp_path / "noisy"
    with RunWriter(plain) as writer:
        writer.layout(layout, "gancycle")
        writer.scalars({"loss/G": 1.0, "loss/D": 2.0}, 0)
        writer.scalars({"eval/return/d=0.5": 3.0}, 1)
    with RunWriter(noisy) as writer:
        writer.layout(layout, "gancycle")
        writer.scalars({"loss/G": 1.0, "hparam/instance_noise": 0.01}, 0)
    assert charts(plain) == {"gancycle": ["losses", "eval return by difficulty"]}
    assert charts(noisy) == {"gancycle": ["losses", "D regularisers"]}
    with RunWriter(tmp_path / "rl") as writer:  # another writer fills the tags (SB3's logger)
        writer.layout(layout, "rlcycle", only_written=False)
    assert charts(tmp_path / "rl") == {"rlcycle": list(layout)}


@pytest.fixture(scope="module")
def gan_and_rl_runs(tmp_path_factory):
    """``runs/`` holding a tiny real GAN run and a tiny real RL run."""
    from test_gan_cli import train_args
    from test_rl_train import tiny

    from gancycle.cli import train_main
    from rlcycle.train import train

    runs = tmp_path_factory.mktemp("tb") / "runs"
    with pytest.raises(SystemExit) as done:
        train_main(train_args(runs / "gan", "12"))
    assert done.value.code == 0
    config = tiny("cartpole", 256, 300)
    config["eval"].update(difficulties=[0.0, 1.0], episodes=1)
    train(config, runs / "rl")
    return runs


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_one_hparams_table_and_a_layout_per_package_over_gan_and_rl_runs(gan_and_rl_runs):
    gan = json.loads((gan_and_rl_runs / "gan" / "metrics.json").read_text())["final"]
    rl = json.loads((gan_and_rl_runs / "rl" / "metrics.json").read_text())
    rl = rl.get("final", rl)  # {"final": ..., "history": ...} once both trainers write that
    with tensorboard(gan_and_rl_runs) as base:  # as `make tensorboard` serves it
        _wait_for_runs(base, {"gan", "rl"})
        experiment = _post(f"{base}/plugin/hparams/experiment", {"experimentName": ""})
        hparams = {h["name"] for h in experiment["hparamInfos"]}
        assert {"lr.G.max", "loss.name", "algo", "curriculum.mode"} <= hparams  # both kinds
        metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert {"hparam_metric/modes", "hparam_metric/kl", "hparam_metric/eval/return"} <= metrics
        groups = _post(
            f"{base}/plugin/hparams/session_groups",
            {
                "experimentName": "",
                "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_RUNNING"],
                "startIndex": 0,
                "sliceSize": 100,
            },
        )["sessionGroups"]
        rows = {
            g["sessions"][0]["name"]: (
                g["hparams"],
                {m["name"]["tag"]: m["value"] for m in g["sessions"][0]["metricValues"]},
            )
            for g in groups
        }
        assert set(rows) == {"gan", "rl"}
        gan_hparams, gan_metrics = rows["gan"]
        rl_hparams, rl_metrics = rows["rl"]
        assert gan_hparams["loss.name"] == "ns" and rl_hparams["algo"] == "ppo"
        assert gan_metrics["hparam_metric/modes"] == pytest.approx(gan["G"]["modes"])
        assert gan_metrics["hparam_metric/kl"] == pytest.approx(gan["G"]["kl"], rel=1e-6)
        assert rl_metrics["hparam_metric/eval/return"] == pytest.approx(rl["eval"]["eval/return"])

        layout = _get(f"{base}/plugin/custom_scalars/layout")
        categories = {
            c["title"]: [chart["title"] for chart in c["chart"]] for c in layout["category"]
        }
        assert categories == {
            "gancycle": [
                "G and D learning rates",
                "schedule levels",
                "losses",
                "D outputs",
                "kinetic energy",
                "gradient norms",
            ],  # no "D regularisers": this run has neither instance noise nor label smoothing
            "rlcycle": [
                "difficulty and lr level",
                "learning rate",
                "training return by difficulty",
                "eval return by difficulty",
            ],  # no ensemble chart: the tiny run keeps no snapshots
        }
        level = _get(f"{base}/plugin/custom_scalars/scalars?run=rl&tag=schedule/level%24")
        assert [tag for tag in level["tag_to_events"]] == ["schedule/level"]
        difficulty = _get(f"{base}/plugin/custom_scalars/scalars?run=rl&tag=curriculum/difficulty")
        assert all(0 <= e[2] <= 1 for e in difficulty["tag_to_events"]["curriculum/difficulty"])


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_tensorboard_serves_the_runs_on_loopback_and_prints_the_url(run_folder):
    run, g, _ = run_folder
    port = _free_port()
    venv = Path(sys.prefix)  # this interpreter's environment; -o: never (re)install it here
    server = subprocess.Popen(
        ["make", "-s", "-C", str(REPO), "-o", f"{venv}/.installed", "tensorboard"]
        + [f"VENV={venv}", f"RUNS={run.parent}", f"PORT={port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # make and its tensorboard: one process group to stop
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        assert server.stdout.readline().strip() == (
            f"TensorBoard over {run.parent}/ at {url} (Ctrl-C stops it)"
        )
        _wait_for_runs(f"{url}data", {"demo"})
        points = _get(f"{url}data/plugin/scalars/scalars?run=demo&tag=lr/G")
        assert [p[1] for p in points] == list(range(60))
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
