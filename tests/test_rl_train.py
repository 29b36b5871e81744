"""Real SB3 runs (tiny): the learning rate through SB3's lr_schedule, difficulty in the workers,
optimizer resets at restarts, snapshots, the curvature probe, the run folder."""

import json
import math
import re

import numpy as np
import pytest
import torch
from conftest import logged_difficulty, sent_difficulty
from stable_baselines3.common.callbacks import BaseCallback

from common.config import ConfigError, load_config, read_config
from common.runs import load_checkpoint
from common.schedules import from_spec
from common.tb import read_scalars
from rlcycle.algos import ALGOS, algo_optimizers
from rlcycle.checkpoints import policy_weights, read_checkpoint
from rlcycle.curriculum import curriculum_from_spec
from rlcycle.evaluate import evaluate, evaluate_run, rebuild_policy
from rlcycle.settings import check_config
from rlcycle.train import train


def tiny(name: str, steps: int, period: float, **top) -> dict:
    """A shipped config cut down to a few seconds of CPU."""
    config = load_config(name, "rlcycle")
    config.update(steps=steps, device="cpu", progress=False, **top)
    config["log"]["every"] = 1
    config["lr"]["period"] = period
    config["snapshots"]["max"] = 0
    config["eval"].update(difficulties=[0.0], episodes=1)
    return config


TINY = {
    "ppo": lambda: tiny("cartpole", 1024, 300),
    "a2c": lambda: tiny("cartpole", 480, 150, algo="a2c"),
    "dqn": lambda: {
        **tiny("cartpole", 600, 200, algo="dqn", n_envs=1),
        "dqn": {"learning_starts": 100, "train_freq": 16, "gradient_steps": 2, "batch_size": 32},
    },
    "sac": lambda: {
        **tiny("pendulum", 300, 100),
        "sac": {"learning_starts": 100, "buffer_size": 1000, "batch_size": 32},
    },
}


def clock_and_curriculum(config):
    clock = from_spec(config["lr"])
    return clock, curriculum_from_spec(config["curriculum"], clock, config["steps"], config["seed"])


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    """One PPO CartPole run with snapshots, shared by several tests."""
    config = tiny("cartpole", 1280, 300)
    config["snapshots"]["max"] = 5
    config["eval"].update(difficulties=[0.0, 1.0], episodes=2)
    run = tmp_path_factory.mktemp("ppo_run")
    return config, run, train(config, run)


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn", "sac"])
def test_sb3_logs_the_core_learning_rate_at_every_step(algo, tmp_path):
    config = TINY[algo]()
    steps = train(config, tmp_path)["final"]["steps"]
    clock, _ = clock_and_curriculum(config)
    logged = read_scalars(tmp_path, "train/learning_rate")
    assert len({v for _, v in logged}) >= 3  # the schedule moves
    for step, value in logged:
        assert value == pytest.approx(clock.value(step), rel=1e-6), step
    # Every optimizer of the algorithm follows (SAC: actor, critic, entropy coefficient) ...
    names = {"sac": {"policy", "critic", "ent_coef"}}.get(algo, {"policy"})
    for name in names:
        for step, value in read_scalars(tmp_path, f"lr/{name}"):
            assert value == pytest.approx(clock.value(step), rel=1e-6), (name, step)
    # ... and the model.zip written for SB3 users (our own: safe to unpickle here) reloads with
    # the last update's learning rate in each of them.
    model = ALGOS[config["algo"]].load(tmp_path / "model.zip", device="cpu")
    assert set(algo_optimizers(model)) == names
    final = clock.value(steps)
    for optimizer in algo_optimizers(model).values():
        assert optimizer.param_groups[0]["lr"] == pytest.approx(final, rel=1e-9)
    assert model.lr_schedule(1.0 - steps / config["steps"]) == pytest.approx(final)


def test_logged_difficulty_follows_the_curriculum(ppo_run):
    config, run, _ = ppo_run
    clock, curriculum = clock_and_curriculum(config)
    difficulty = read_scalars(run, "curriculum/difficulty")
    level = read_scalars(run, "schedule/level")
    assert len(difficulty) == len(level) >= 5
    for (step, d), (_, lv) in zip(difficulty, level, strict=True):
        assert d == pytest.approx(logged_difficulty(config, curriculum, step), abs=1e-6), step
        assert lv == pytest.approx(clock.phase(step).level, abs=1e-6)
    assert len({round(d, 2) for _, d in difficulty}) >= 3


def test_ppo_clip_range_follows_a_schedule_table_like_rl_zoo_lin(tmp_path):
    # rl-zoo's lin_0.2: 0.2 falling linearly to 0 over the run, half a triangle of twice it.
    config = tiny("cartpole", 1024, 300)
    zoo = {"kind": "triangular", "max": 0.2, "min": 0.0, "period": 2048, "offset": 0.5}
    config["ppo"]["clip_range"] = zoo
    train(config, tmp_path)
    logged = read_scalars(tmp_path, "train/clip_range")
    assert len(logged) >= 3
    for step, value in logged:
        assert value == pytest.approx(0.2 * (1 - step / 1024), abs=1e-6), step
    built = check_config(config).extras["scheduled"]  # built once, where the config is checked
    assert list(built) == ["clip_range"] and built["clip_range"].value(512) == pytest.approx(0.1)
    bad = {**zoo, "pct_up": 1.5}
    with pytest.raises(ConfigError, match=r"ppo.clip_range.pct_up"):
        check_config({**config, "ppo": {**config["ppo"], "clip_range": bad}})


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("n_steps", 0, "an integer >= 1"),
        ("batch_size", 0, "an integer >= 1"),
        ("n_epochs", 0, "an integer >= 1"),
        ("gamma", 2.0, "a number in [0, 1]"),
        ("gae_lambda", -3.0, "a number in [0, 1]"),
        ("clip_range", -1.0, "a number > 0"),
        ("clip_range", float("nan"), "a number > 0"),
        ("ent_coef", float("nan"), "a finite number >= 0"),
        ("vf_coef", -1.0, "a finite number >= 0"),
        ("max_grad_norm", 0.0, "a number > 0"),
        ("clip_range", "abc", "a number > 0"),
    ],
)
def test_ppo_arguments_out_of_range_are_one_line_at_check_time(key, value, allowed):
    """Before, SB3 asserted at build time (a traceback), trained with them (gamma = 2) or
    failed mid-run (n_epochs = 0); now check_config, so --check too, names the key."""
    config = tiny("cartpole", 256, 300)
    config["ppo"][key] = value
    with pytest.raises(ConfigError, match=rf"ppo\.{key} = .*: must be {re.escape(allowed)}"):
        check_config(config)


class Watch(BaseCallback):
    """Records, after the curriculum callback, what the workers and optimizers look like."""

    def __init__(self, config, every: int = 1):
        super().__init__()
        self.clock, self.curriculum = clock_and_curriculum(config)
        self.config, self.every = config, every
        self.seen: list[tuple[int, float, list[float]]] = []  # step, expected, workers' values
        self.restarts: list[dict[str, float]] = []  # |exp_avg| per optimizer at each restart
        self.before: list[dict[str, float]] = []  # the same one step earlier
        self.cycle = 0
        self.last: dict[str, float] = {}

    def moments(self) -> dict[str, float]:
        out = {}
        for name, optimizer in algo_optimizers(self.model).items():
            out[name] = sum(
                float(state["exp_avg"].abs().sum())
                for state in optimizer.state.values()
                if "exp_avg" in state
            )
        return out

    def _on_step(self) -> bool:
        step = self.num_timesteps
        if self.n_calls % self.every == 0:
            expected = sent_difficulty(self.config, self.curriculum, step)
            self.seen.append((step, expected, self.training_env.get_attr("next_difficulty")))
        now = self.moments()
        if self.clock.cycle(step) > self.cycle:
            self.cycle = self.clock.cycle(step)
            self.restarts.append(now)
            self.before.append(self.last)
        self.last = now
        return True


def test_difficulty_reaches_subprocess_workers_during_training(tmp_path):
    config = tiny("cartpole", 768, 300, n_envs=2, vec="subproc")
    config["ppo"]["batch_size"] = 64
    watch = Watch(config, every=8)
    train(config, tmp_path, callbacks=[watch])
    assert len(watch.seen) >= 40
    for step, expected, workers in watch.seen:
        assert workers == [expected, expected], step
    assert len({e for _, e, _ in watch.seen}) >= 5


class EpisodeDifficulties(BaseCallback):
    """Each training environment's finished episodes' difficulties, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.played: dict[int, list[float]] = {}

    def _on_step(self) -> bool:
        for i, done in enumerate(self.locals["dones"]):
            if done:
                self.played.setdefault(i, []).append(self.locals["infos"][i]["difficulty"])
        return True


def test_random_d_plays_each_episode_at_its_own_draw(tmp_path):
    config = tiny("cartpole", 768, 300, n_envs=2)
    config["curriculum"] = {"mode": "random_d"}
    config["ppo"].update(n_steps=256, batch_size=64, n_epochs=1)
    seen, pairs = EpisodeDifficulties(), RolloutPairs()
    final = train(config, tmp_path, callbacks=[seen, pairs])["final"]
    _, curriculum = clock_and_curriculum(config)
    # metrics.json: the episodes in play during the last rollout, on average over its steps
    assert final["difficulty"] == pytest.approx(pairs.difficulties[-1])
    for env, played in seen.played.items():  # episode k of env i at draw (seed, i, k)
        assert len(played) >= 10
        assert played == [curriculum.episode_difficulty(env, k) for k in range(len(played))]
    assert sorted(seen.played) == [0, 1] and len({*seen.played[0], *seen.played[1]}) >= 5


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_restarts_reset_every_optimizer(algo, tmp_path):
    config = TINY[algo]()
    config["steps"] = {"ppo": 1280, "sac": 400}[algo]
    config["reset"]["policy"] = "momentum"
    watch = Watch(config)
    train(config, tmp_path / "reset", callbacks=[watch])
    assert len(watch.restarts) == 4  # steps 300, 600, 900, 1200 (ppo); 100 ... 400 (sac)
    # Restarts after the first update: every optimizer had moments a step before, none after.
    pairs = list(zip(watch.restarts, watch.before, strict=True))
    trained = [(now, before) for now, before in pairs if any(before.values())]
    assert len(trained) >= 3
    for now, before in trained:
        assert set(now) == set(before) == set(algo_optimizers(watch.model))
        assert all(v == 0.0 for v in now.values()), now
        assert all(v > 0.0 for v in before.values()), before
    # Without the option, the moments survive the restarts.
    config["reset"]["policy"] = "none"
    control = Watch(config)
    train(config, tmp_path / "keep", callbacks=[control])
    assert all(v > 0.0 for now in control.restarts[1:] for v in now.values())


def test_snapshots_at_cycle_ends_and_ensemble_evaluation(ppo_run):
    config, run, metrics = ppo_run
    final = metrics["final"]
    # Cycles end at 300, 600, 900, 1200; the last (unfinished) cycle is kept at the end.
    assert final["snapshot_cycles"] == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == [
        f"cycle_{k}.pt" for k in range(5)
    ]
    state = torch.load(run / "snapshots" / "cycle_1.pt", weights_only=True)
    assert any(k.startswith("action_net") for k in state)
    for d in ("0", "1"):
        assert final["eval"][f"eval/ensemble_return/d={d}"] >= 8.0  # CartPole's shortest
    again = evaluate_run(run, [1.0], episodes=2, ensemble=True)
    assert again["eval/ensemble_return/d=1"] == final["eval"]["eval/ensemble_return/d=1"]
    assert again["eval/return/d=1"] == final["eval"]["eval/return/d=1"]


def test_run_folder_metrics_and_hparams(ppo_run):
    config, run, metrics = ppo_run
    for name in ("config.toml", "metrics.json", "model.zip", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == {"final": metrics["final"], "history": metrics["history"]}
    final = saved["final"]
    keys = {"steps", "wall_s", "steps_per_s", "eval", "snapshot_cycles", "resumes", "difficulty"}
    assert set(final) == keys
    assert final["steps"] == 1280 and final["resumes"] == 0
    _, curriculum = clock_and_curriculum(config)
    # the difficulty the last update trained on (its rollout's mean), not the next one sent
    assert final["difficulty"] == pytest.approx(logged_difficulty(config, curriculum, 1280))
    assert final["steps_per_s"] == pytest.approx(1280 / final["wall_s"])
    assert saved["history"] == [{"step": 1280, "metrics": final["eval"]}]
    assert read_config(run / "config.toml")["steps"] == 1280
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    assert checkpoint["step"] == 1280
    ret = read_scalars(run, "eval/return/d=1")
    assert ret == [(1280, pytest.approx(final["eval"]["eval/return/d=1"]))]
    assert read_scalars(run, "hparam_metric/eval/return")
    buckets = [f"curriculum/return/d={lo}-{hi}" for lo, hi in (("0", "0.25"), ("0.25", "0.5"))]
    assert all(read_scalars(run, tag) for tag in buckets)


def test_entropy_coupling_and_curvature_probe(tmp_path):
    config = tiny("cartpole", 1024, 512)
    config["couplings"]["ent_coef"].update(enabled=True, lo=0.0, hi=0.02)
    config["probe"].update(every=1, iters=5, batch=128)
    watch = Watch(config)
    train(config, tmp_path, callbacks=[watch])
    clock, _ = clock_and_curriculum(config)
    ent = read_scalars(tmp_path, "hparam/ent_coef")
    for step, value in ent:
        assert value == pytest.approx(0.02 * (1 - clock.phase(step).level), abs=1e-6)
    assert watch.model.ent_coef == pytest.approx(0.02 * (1 - clock.phase(1024).level))
    margins = read_scalars(tmp_path, "dynamics/stability_margin")
    assert len(margins) >= 3
    assert all(math.isfinite(m) and m != 0.0 for _, m in margins)
    assert len({m for _, m in margins}) >= 3
    assert np.isfinite(np.array([v for _, v in read_scalars(tmp_path, "train/loss")])).all()


def test_a_schedule_that_ends_snapshots_its_last_cycle_once(tmp_path):
    config = tiny("cartpole", 1024, 512)
    config["lr"] = {"kind": "cosine", "max": 1e-3, "min": 1e-5, "period": 512}
    config["snapshots"]["max"] = 5
    config["reset"]["policy"] = "momentum"
    watch = Watch(config)
    metrics = train(config, tmp_path, callbacks=[watch])
    assert metrics["final"]["snapshot_cycles"] == [0]  # at its end (512), not again at 1024
    assert [p.name for p in (tmp_path / "snapshots").iterdir()] == ["cycle_0.pt"]
    # The end (step 512) is no restart: Adam's moments survive it.
    assert len(watch.restarts) == 1 and all(v > 0.0 for v in watch.restarts[0].values())


def test_sampled_evaluation_beside_the_deterministic_one(tmp_path):
    """``eval.sampled`` also scores the stochastic policy (actions drawn, as SB3 trains it)."""
    config = tiny("cartpole", 256, 300)
    config["eval"].update(difficulties=[0.0], episodes=3, sampled=True)
    final = train(config, tmp_path / "run")["final"]["eval"]
    assert set(final) >= {"eval/return/d=0", "eval/sampled_return/d=0", "eval/sampled_success/d=0"}
    # An untrained policy: acting on its argmax and drawing from it give different episodes.
    assert final["eval/sampled_return/d=0"] != final["eval/return/d=0"]
    again = evaluate_run(tmp_path / "run", [0.0], episodes=3, sampled=True)
    assert again["eval/sampled_return/d=0"] == final["eval/sampled_return/d=0"]


def test_each_evaluation_episode_starts_from_its_own_seed(ppo_run):
    """Episode i of an evaluation is the one-episode evaluation seeded ``seed + i``: a policy's
    score on 7 episodes is the mean of the first 7 of 50, whatever the count (all stepped
    together, one environment per episode)."""
    config, run, _ = ppo_run
    policy = rebuild_policy(check_config(config), policy_weights(read_checkpoint(run)))
    env_id, seed = config["env"]["id"], 123
    alone = [evaluate(policy, env_id, 1.0, 1, seed + i)[0] for i in range(7)]
    assert len(set(alone)) > 1  # the starts differ, so the check below can fail
    assert evaluate(policy, env_id, 1.0, 7, seed)[0] == pytest.approx(np.mean(alone), abs=1e-9)


def test_the_final_difficulty_is_the_last_trained_rollouts_not_the_restart_sent_next(tmp_path):
    """A run that ends one rollout before a restart trained its last update on the cycle's
    hardest rollout; the environments were already sent the next cycle's easiest (one rollout
    ahead), which no update trains on. The run reports the former, as curriculum/difficulty
    logs it."""
    config = tiny("cartpole", 3 * 256, 2 * 256)  # rollouts of 8 x 32, two to a cycle: the
    config["curriculum"].update(mode="anti", lo=0.0, hi=1.0, ceiling=1.0, rise=0.0)  # run
    final = train(config, tmp_path)["final"]  # ends one rollout before the second restart
    _, curriculum = clock_and_curriculum(config)
    assert sent_difficulty(config, curriculum, 768) == 0.0  # the restart, sent ahead
    assert final["difficulty"] == pytest.approx(logged_difficulty(config, curriculum, 768))
    logged = read_scalars(tmp_path, "curriculum/difficulty")
    assert final["difficulty"] == pytest.approx(logged[-1][1])
    assert final["difficulty"] > 0.5


class RolloutPairs(BaseCallback):
    """Per PPO update: the learning rate it applied (read once SB3's ``train()`` set it) and
    the mean difficulty of the episodes in the rollout it trained on (from the workers)."""

    def __init__(self):
        super().__init__()
        self.rates: list[float] = []
        self.difficulties: list[float] = []
        self._seen: list[float] = []

    def _applied(self) -> None:
        if len(self.rates) < len(self.difficulties):
            self.rates.append(float(self.model.policy.optimizer.param_groups[0]["lr"]))

    def _on_rollout_start(self) -> None:
        self._applied()
        self._seen = []

    def _on_step(self) -> bool:
        self._seen += [info["difficulty"] for info in self.locals["infos"]]
        return True

    def _on_rollout_end(self) -> None:
        self.difficulties.append(float(np.mean(self._seen)))

    def _on_training_end(self) -> None:
        self._applied()


def test_each_ppo_update_applies_the_rate_in_anti_phase_with_the_rollout_it_trains_on(tmp_path):
    """SB3 trains on a rollout after collecting it and reads the learning rate then: the update
    at a restart applies the peak rate, so it must train on the cycle's easiest rollout, not
    on the hardest one just collected (4 rollouts per cycle here). An episode takes the
    difficulty sent before its reset, so rollouts are long against episodes here (128 steps
    per environment, an untrained CartPole's episodes last about 20)."""
    config = tiny("cartpole", 16 * 1024, 4 * 1024)
    config["ppo"].update(n_steps=128, n_epochs=2)  # 8 envs x 128 steps = 1024 per rollout
    config["curriculum"].update(mode="anti", lo=0.0, hi=1.0, ceiling=1.0, rise=0.0)
    pairs = RolloutPairs()
    train(config, tmp_path, callbacks=[pairs])
    rates, hardness = np.array(pairs.rates), np.array(pairs.difficulties)
    assert len(rates) == len(hardness) == 16
    assert np.corrcoef(rates, hardness)[0, 1] < -0.9
    for cycle in range(4):
        rollouts = slice(4 * cycle, 4 * cycle + 4)
        assert np.argmax(rates[rollouts]) == np.argmin(hardness[rollouts]), cycle
        assert np.argmin(rates[rollouts]) == np.argmax(hardness[rollouts]), cycle
