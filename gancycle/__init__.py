"""gancycle: GANs whose generator and discriminator learning rates run cycles out of phase.

Start with :func:`gancycle.trainer.train` (or ``gancycle-train --help``); the configs shipped in
``gancycle/configs`` are ``ring8``, ``grid25``, ``digits``, ``mnist`` and ``cifar10``.
"""
