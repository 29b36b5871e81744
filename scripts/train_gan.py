#!/usr/bin/env python
"""Train a GAN with out-of-phase G/D learning-rate cycles; the same as ``gancycle-train``."""

from gancycle.cli import train_main

if __name__ == "__main__":
    train_main()
