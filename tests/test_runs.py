"""Run folders you can trust: one writer per folder, atomic writes, damaged checkpoints."""

import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

from common.config import ConfigError
from common.runs import (
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    hold_run_folder,
    load_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args], env=env, text=True, **kwargs
    )


@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path/run`` until it is killed."""
    run = tmp_path / "run"
    process = _python(
        """
        import sys, time
        from common.runs import hold_run_folder
        with hold_run_folder(sys.argv[1], resume=False):
            print("held", flush=True)
            time.sleep(120)
        """,
        str(run),
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout.readline().strip() == "held"
        yield run, process
    finally:
        process.kill()
        process.wait()


def test_a_second_trainer_gets_the_folder_and_the_holders_pid(holder):
    run, process = holder
    for resume in (False, True):
        with pytest.raises(ConfigError) as caught:
            with hold_run_folder(run, resume=resume):
                pytest.fail("two holders of one run folder")
        message = str(caught.value)
        assert message.startswith(f"{run}: in use by another trainer (pid {process.pid})")
        assert "\n" not in message
    process.send_signal(signal.SIGKILL)  # even a SIGKILLed holder releases the folder
    process.wait()
    with hold_run_folder(run, resume=True) as held:
        assert held == run
        assert (run / ".lock").read_text().strip() == str(os.getpid())
    with hold_run_folder(run, resume=True):  # released at the end of the block
        pass


def test_a_fresh_run_never_takes_over_a_folder_holding_a_run(tmp_path):
    run = tmp_path / "run"
    with hold_run_folder(run, resume=False):  # a new folder is created
        atomic_torch_save({"step": 5}, run / "checkpoints" / "last.pt")
    with pytest.raises(ConfigError, match=r"already holds a run; continue it with --resume$") as e:
        with hold_run_folder(run, resume=False):
            pytest.fail("a fresh run in a folder holding one")
    assert str(e.value) == f"--out {run}: already holds a run; continue it with --resume"
    with hold_run_folder(run, resume=True):  # the refused fresh run released the lock
        assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 5


def test_out_naming_a_file_is_one_line(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    with pytest.raises(ConfigError, match=r"notes.txt: is a file, not a run folder"):
        with hold_run_folder(path, resume=False):
            pass
    with pytest.raises(ConfigError, match=r"notes.txt/run: cannot use as a run folder"):
        with hold_run_folder(path / "run", resume=False):
            pass
    assert path.read_text() == "mine"


def test_temp_files_of_killed_writes_are_removed_when_the_folder_is_held(tmp_path):
    run = tmp_path / "run"
    for name in ("metrics.json", "checkpoints/last.pt", "snapshots/cycle_0.pt"):
        killed = _python(  # a writer SIGKILLed mid-write, as a machine going down would
            """
            import os, signal, sys
            from common.runs import atomic_write

            def write(f):
                f.write(b"half")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)

            atomic_write(sys.argv[1], write)
            """,
            str(run / name),
        )
        assert killed.wait() == -signal.SIGKILL
    left = sorted(p.relative_to(run).parent.as_posix() + "/" + p.name[:-9] for p in run.rglob(".*"))
    assert left == ["./.metrics.json", "checkpoints/.last.pt", "snapshots/.cycle_0.pt"]
    (run / ".keep.me").write_text("a user's file")  # not the temp pattern: kept
    (run / "checkpoints" / "last.pt").write_bytes(b"whole")
    with hold_run_folder(run, resume=True):
        remaining = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())
    assert remaining == [".keep.me", ".lock", "checkpoints/last.pt"]


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_atomic_writes_follow_the_umask(tmp_path, umask):
    before = os.umask(umask)
    try:
        paths = [
            atomic_write(tmp_path / "a.bin", lambda f: f.write(b"x")),
            atomic_write_json({"a": 1}, tmp_path / "metrics.json"),
            atomic_torch_save({"w": torch.ones(1)}, tmp_path / "checkpoints" / "last.pt"),
        ]
    finally:
        os.umask(before)
    for path in paths:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def _small_tmpfs(path: Path) -> bool:
    """Mount a 256 KiB tmpfs at ``path`` (needs root); False where mounting is not allowed."""
    path.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)], capture_output=True
    )
    return result.returncode == 0


def test_a_full_disk_is_one_line_naming_the_file(tmp_path):
    disk = tmp_path / "disk"
    mounted = _small_tmpfs(disk)
    try:
        last = disk / "checkpoints" / "last.pt"
        atomic_torch_save({"step": 1}, last)
        if mounted:  # a real full disk: torch.save fails inside its zip writer
            with pytest.raises(ConfigError) as caught:
                atomic_torch_save({"step": 2, "w": torch.zeros(200_000)}, last)
        else:  # no root: a real write that fails with ENOSPC (/dev/full), inside the callback

            def fill(f):
                f.write(b"partial")
                with open("/dev/full", "wb") as full:
                    full.write(b"x" * 4096)
                    full.flush()

            with pytest.raises(ConfigError) as caught:
                atomic_write(last, fill)
        message = str(caught.value)
        assert message.startswith(f"{last}: not written (No space left on device)")
        assert "free some space" in message and "\n" not in message
        assert load_checkpoint(last)["step"] == 1  # the previous checkpoint is whole
        assert [p.name for p in last.parent.iterdir()] == ["last.pt"]  # no temp file left
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)


def _damaged(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: damaged or not a cyclelab checkpoint (")
    assert "restore a good copy or start a new run" in message
    assert "weights_only" not in message and "\n" not in message
    return message


class _Payload:
    """Unpickling this runs ``open(flag, "w")``: what a crafted checkpoint would do."""

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def __reduce__(self):
        return (open, (self.flag, "w"))


def test_damaged_checkpoints_are_one_line_and_run_no_code(tmp_path):
    good = tmp_path / "good.pt"
    atomic_torch_save({"step": 7, "w": torch.arange(1000.0)}, good)
    data = good.read_bytes()

    for name, content in [
        ("truncated.pt", data[: len(data) // 2]),
        ("garbage.pt", os.urandom(4096)),
        ("empty.pt", b""),
        ("text.pt", b"step = 7\n"),
    ]:
        (tmp_path / name).write_bytes(content)
        assert "(truncated, or not a file that torch.save wrote)" in _damaged(tmp_path / name)

    cut_tensor = tmp_path / "cut_tensor.pt"  # a whole zip whose tensor data was cut short
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(cut_tensor, "w") as target:
        for name in source.namelist():
            content = source.read(name)
            target.writestr(name, content[:10] if name.endswith("/data/0") else content)
    _damaged(cut_tensor)

    not_a_dict = tmp_path / "tensor.pt"
    torch.save(torch.ones(3), not_a_dict)
    assert "holds a Tensor, not a dict" in _damaged(not_a_dict)

    flag = tmp_path / "payload_ran"
    crafted = tmp_path / "crafted.pt"
    torch.save({"step": 1, "model": _Payload(str(flag))}, crafted)
    assert "objects other than tensors" in _damaged(crafted)
    assert not flag.exists()

    assert load_checkpoint(good)["step"] == 7
