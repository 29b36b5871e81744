#!/usr/bin/env python
"""Train an SB3 agent on a difficulty curriculum; the same as ``rlcycle-train``."""

from rlcycle.cli import train_main

if __name__ == "__main__":
    train_main()
