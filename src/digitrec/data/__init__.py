"""Data: MNIST (IDX reader, checksums, downloader), decoding, preprocessing, augmentation, generated lines."""

from digitrec.data import mnist
from digitrec.data.mnist import *  # noqa: F403  (what the old digitrec.data module exported)

__all__ = list(mnist.__all__)
