"""The MNIST case study through ``LightningCLI``, with ``LDAMCallback`` configured in YAML.

    python examples/mnist_cli.py fit --config examples/config.yaml

Any value can be overridden on the command line, e.g. ``--trainer.max_epochs 5``; print the full
configuration with ``--print_config``.
"""
import os
import sys

from lightning.pytorch.cli import LightningCLI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist import MNISTClassifier, MNISTDataModule  # noqa: E402


def main(args=None) -> LightningCLI:
    return LightningCLI(MNISTClassifier, MNISTDataModule, args=args)


if __name__ == "__main__":
    main()
