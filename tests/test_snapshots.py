"""Snapshot ensembles taken by restart hooks during a real training run."""

import pytest
import torch
from conftest import digits
from torch import nn

from common.schedules import from_spec
from common.snapshots import SnapshotEnsemble
from common.torch_driver import ResetOptimizerState, drive_optimizer


def test_snapshots_at_cycle_ends_and_ensemble_prediction(tmp_path):
    torch.manual_seed(0)
    x, y = digits()
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    driver = drive_optimizer(opt, from_spec({"kind": "cosine_restarts", "max": 0.2, "period": 30}))
    ensemble = SnapshotEnsemble(max_snapshots=3, directory=tmp_path / "snapshots")
    driver.on_restart(ensemble.hook(model))
    ends = {}
    for t in range(151):
        driver.step()  # at t = 30, 60, ...: a restart, the hook snapshots the cycle just ended
        if t == 150:
            break
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:512]), y[:512]).backward()
        opt.step()
        if t % 30 == 29:
            ends[t // 30] = {k: v.clone() for k, v in model.state_dict().items()}

    # Five cycles ended (at steps 30, 60, ..., 150); only the newest three are kept.
    assert ensemble.cycles == [2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == [
        "cycle_2.pt",
        "cycle_3.pt",
        "cycle_4.pt",
    ]
    for cycle, state in zip(ensemble.cycles, ensemble.state_dicts, strict=True):
        for k in state:
            assert torch.equal(state[k], ends[cycle][k])

    own = {k: v.clone() for k, v in model.state_dict().items()}
    probs = ensemble.predict(model, x[1000:])
    manual = 0
    probe = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    for state in ensemble.state_dicts:
        probe.load_state_dict(state)
        manual = manual + probe(x[1000:]).softmax(-1)
    torch.testing.assert_close(probs, manual / 3)
    assert all(torch.equal(v, own[k]) for k, v in model.state_dict().items())
    assert model.training  # mode restored
    # The ensemble is a real classifier: better than chance by far on held-out digits.
    assert (probs.argmax(-1) == y[1000:]).float().mean() > 0.8

    reloaded = SnapshotEnsemble(max_snapshots=3).load(tmp_path / "snapshots")
    torch.testing.assert_close(reloaded.predict(model, x[1000:]), probs)


def test_empty_ensemble_and_bad_sizes_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        SnapshotEnsemble().predict(nn.Linear(2, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="max_snapshots"):
        SnapshotEnsemble(max_snapshots=0)
    with pytest.raises(FileNotFoundError, match="cycle_"):
        SnapshotEnsemble().load(tmp_path)


def test_a_limited_schedule_resets_at_its_restart_and_snapshots_both_cycles(tmp_path):
    """cosine_restarts with cycle_limit 2: a restart at 10, the end at 20. Adam's moments are reset
    once; the snapshot of each ended cycle is named after it, cycle_0 and cycle_1."""
    torch.manual_seed(0)
    x, y = digits()
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    opt = torch.optim.Adam(model.parameters())
    lr = {"kind": "cosine_restarts", "max": 1e-2, "period": 10, "cycle_limit": 2}
    driver = drive_optimizer(opt, from_spec(lr))
    resets = ResetOptimizerState(opt)
    ensemble = SnapshotEnsemble(max_snapshots=5, directory=tmp_path)
    driver.on_restart(resets).on_restart(ensemble.hook(model)).on_end(ensemble.hook(model))
    ends = []
    for t in range(26):
        driver.step()
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:256]), y[:256]).backward()
        opt.step()
        if t in (9, 19):
            ends.append({k: v.clone() for k, v in model.state_dict().items()})
    assert resets.resets == 1
    assert ensemble.cycles == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cycle_0.pt", "cycle_1.pt"]
    for k, end in enumerate(ends):
        on_disk = torch.load(tmp_path / f"cycle_{k}.pt", weights_only=True)
        assert all(torch.equal(on_disk[name], end[name]) for name in end)
