"""rlcycle: curriculum RL on stable-baselines3, difficulty in anti-phase with the learning rate.

Importing the package registers the curriculum environments (``rlcycle/CartPole-v1``,
``rlcycle/LunarLander-v3``, ``rlcycle/LunarLanderContinuous-v3``, ``rlcycle/Pendulum-v1``)
with gymnasium. Train with :func:`rlcycle.train.train` or ``rlcycle-train``.
"""

from rlcycle import envs as envs  # registers the environment ids
