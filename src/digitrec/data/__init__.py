"""Data: MNIST (IDX reader, checksum-verified provider, downloader), preprocessing, augmentation, generated lines."""

from digitrec.data.mnist import (  # noqa: F401
    DATA_DIR_ENV,
    MIRRORS,
    MNIST,
    MNIST_FILES,
    MNIST_SHA256,
    DataStatus,
    Split,
    data_status,
    default_cache_dir,
    download_mnist,
    find_data_dir,
    load_mnist,
    parse_idx,
    read_idx,
)

__all__ = [
    "DATA_DIR_ENV",
    "MIRRORS",
    "MNIST_FILES",
    "MNIST_SHA256",
    "MNIST",
    "Split",
    "DataStatus",
    "read_idx",
    "parse_idx",
    "default_cache_dir",
    "find_data_dir",
    "load_mnist",
    "download_mnist",
    "data_status",
    "split_train_val",
]
