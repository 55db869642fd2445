"""Tests for digitrec.data.mnist: the IDX reader, dataset lookup, verification and the downloader."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import requires_mnist

from digitrec.data.mnist import (
    DATA_DIR_ENV,
    MNIST_FILES,
    MNIST_SHA256,
    data_status,
    download_mnist,
    find_data_dir,
    load_mnist,
    parse_idx,
    read_idx,
)
from digitrec.errors import DatasetError

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    """name -> (size, mtime_ns, mode) of everything in ``directory``, to detect any write."""
    return {
        p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode)
        for p in sorted(directory.iterdir())
    }


# --- parse_idx / read_idx -------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([5, 0, 4, 1, 9], dtype=np.uint8),
        np.array([[-2, 1 << 20], [7, -(1 << 30)]], dtype=">i4"),
        np.array([-128, 0, 127], dtype=np.int8),
        np.array([[1.5, -2.25]], dtype=">f4"),
        np.array([3.0e300], dtype=">f8"),
        np.zeros((0, 28, 28), dtype=np.uint8),
    ],
    ids=["uint8-3d", "uint8-1d", ">i4-2d", "int8", ">f4", ">f8", "empty-first-dim"],
)
def test_parse_idx_round_trip(idx_bytes, array):
    out = parse_idx(idx_bytes(array))
    assert out.shape == array.shape
    assert out.dtype == array.dtype
    np.testing.assert_array_equal(out, array)
    assert out.flags.writeable  # a copy, so torch can share it without warnings


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "too short"),
        (b"\x00\x00\x08", "too short"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "bad IDX magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "bad IDX magic"),  # unknown type
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (b"\x00\x00\x08\x03" + struct.pack(">2I", 2, 2), "truncated IDX header"),
        (b"\x00\x00\x08\x02" + struct.pack(">2I", 2, 3) + bytes(5), "truncated: expected 6 bytes"),
        (b"\x00\x00\x08\x02" + struct.pack(">2I", 2, 3) + bytes(7), "trailing bytes"),
        (b"\x00\x00\x0c\x01" + struct.pack(">I", 2) + bytes(6), "truncated: expected 8 bytes"),
    ],
    ids=[
        "empty",
        "3-bytes",
        "nonzero-magic",
        "unknown-type",
        "zero-dims",
        "truncated-header",
        "truncated-data",
        "trailing-bytes",
        "truncated-i4",
    ],
)
def test_parse_idx_rejects_malformed(raw, message):
    with pytest.raises(DatasetError, match=message) as info:
        parse_idx(raw, "some-file")
    assert str(info.value).startswith("some-file: ")
    assert "\n" not in str(info.value)


def test_parse_idx_huge_declared_shape_is_a_dataset_error():
    raw = b"\x00\x00\x08\x04" + struct.pack(">4I", 65536, 65536, 65536, 65536)
    with pytest.raises(DatasetError, match="truncated"):
        parse_idx(raw)


def test_parse_idx_huge_shape_reports_true_size():
    raw = b"\x00\x00\x08\x03" + struct.pack(">3I", 60000, 28, 28)
    with pytest.raises(DatasetError, match=f"expected {60000 * 28 * 28} bytes .* found 0"):
        parse_idx(raw)


@pytest.mark.parametrize("compressed", [True, False], ids=["gz", "raw"])
def test_read_idx_gz_and_raw(tmp_path, idx_bytes, compressed):
    array = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    raw = idx_bytes(array)
    path = tmp_path / ("x-idx3-ubyte.gz" if compressed else "x-idx3-ubyte")
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    np.testing.assert_array_equal(read_idx(path), array)
    np.testing.assert_array_equal(read_idx(str(path)), array)


@pytest.mark.parametrize(
    "content",
    [b"this is not gzip at all", "truncated"],
    ids=["not-gzip", "truncated-gzip"],
)
def test_read_idx_corrupt_gzip(tmp_path, idx_bytes, content):
    if content == "truncated":
        full = gzip.compress(idx_bytes(np.zeros((10, 28, 28), dtype=np.uint8)))
        content = full[: len(full) // 2]
    path = tmp_path / "broken-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match="cannot read") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="cannot read"):
        read_idx(tmp_path / "nope-idx1-ubyte")


# --- load_mnist on made-up data -------------------------------------------------------------


def test_load_mnist_tiny_without_verification(tiny_dataset):
    mnist = load_mnist(tiny_dataset.directory, download=False, verify=False)
    arrays = tiny_dataset.arrays
    assert mnist.directory == tiny_dataset.directory
    for split in ("train", "test"):
        images, labels = mnist.split(split)
        np.testing.assert_array_equal(images, arrays[(split, "images")])
        np.testing.assert_array_equal(labels, arrays[(split, "labels")])
        assert images.dtype == np.uint8
        assert labels.dtype == np.int64
    assert mnist.train_images.shape == (50, 28, 28)
    assert mnist.test_images.shape == (20, 28, 28)
    # Digests are of the decompressed content.
    for base in MNIST_FILES.values():
        raw = gzip.decompress((tiny_dataset.directory / f"{base}.gz").read_bytes())
        assert mnist.sha256[base] == hashlib.sha256(raw).hexdigest()
    with pytest.raises(ValueError, match="unknown split"):
        mnist.split("validation")  # type: ignore[arg-type]


def test_load_mnist_uncompressed_files(tmp_path, make_mnist_dir):
    arrays = make_mnist_dir(tmp_path / "raw", n_train=12, n_test=5, gz=False)
    mnist = load_mnist(tmp_path / "raw", download=False, verify=False)
    np.testing.assert_array_equal(mnist.test_images, arrays[("test", "images")])


def test_load_mnist_verify_rejects_wrong_content(tiny_idx_dir):
    with pytest.raises(DatasetError, match="SHA-256") as info:
        load_mnist(tiny_idx_dir, download=False, verify=True)
    message = str(info.value)
    assert "\n" not in message
    assert str(tiny_idx_dir) in message


def test_load_mnist_images_labels_count_mismatch(tmp_path, idx_bytes, make_mnist_dir):
    directory = tmp_path / "mismatch"
    make_mnist_dir(directory)
    labels = np.zeros(49, dtype=np.uint8)  # 50 train images, 49 labels
    (directory / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(DatasetError, match="do not match labels"):
        load_mnist(directory, download=False, verify=False)


def test_load_mnist_not_found_without_download(tmp_path, isolated_cache):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError) as info:
        load_mnist(empty, download=False)
    message = str(info.value)
    assert "MNIST not found" in message
    assert str(empty) in message
    assert DATA_DIR_ENV in message
    assert list(empty.iterdir()) == []


def test_load_mnist_not_found_names_cache_dir(isolated_cache):
    with pytest.raises(DatasetError, match="MNIST not found") as info:
        load_mnist(download=False)
    assert str(isolated_cache) in str(info.value)


def test_load_mnist_does_not_write_to_read_only_dir(tiny_idx_dir):
    # Tests run as root, for whom permissions are not enforced: check that nothing is written.
    files = list(tiny_idx_dir.iterdir())
    for f in files:
        f.chmod(0o444)
    tiny_idx_dir.chmod(0o555)
    try:
        before = snapshot(tiny_idx_dir)
        load_mnist(tiny_idx_dir, download=False, verify=False)
        data_status(tiny_idx_dir)
        assert snapshot(tiny_idx_dir) == before
    finally:
        tiny_idx_dir.chmod(0o755)
        for f in files:
            f.chmod(0o644)


# --- find_data_dir --------------------------------------------------------------------------


def test_find_data_dir_precedence(tmp_path, monkeypatch, isolated_cache, make_mnist_dir):
    explicit, env, cache = tmp_path / "explicit", tmp_path / "env", isolated_cache
    assert find_data_dir() is None
    make_mnist_dir(cache, n_train=1, n_test=1)
    assert find_data_dir() == cache
    make_mnist_dir(env, n_train=1, n_test=1)
    monkeypatch.setenv(DATA_DIR_ENV, str(env))
    assert find_data_dir() == env
    make_mnist_dir(explicit, n_train=1, n_test=1)
    assert find_data_dir(explicit) == explicit
    assert find_data_dir(str(explicit)) == explicit


def test_find_data_dir_falls_back_when_files_missing(tmp_path, monkeypatch, isolated_cache, make_mnist_dir):
    partial = tmp_path / "partial"
    make_mnist_dir(partial, n_train=1, n_test=1)
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv(DATA_DIR_ENV, str(partial))
    assert find_data_dir() is None
    assert find_data_dir(partial) is None
    make_mnist_dir(isolated_cache, n_train=1, n_test=1)
    assert find_data_dir() == isolated_cache
    assert find_data_dir(partial) is None  # an explicit folder is authoritative: no fallback


def test_find_data_dir_accepts_mixed_raw_and_gz(tmp_path, isolated_cache, make_mnist_dir):
    directory = tmp_path / "mixed"
    make_mnist_dir(directory, n_train=1, n_test=1)
    gz = directory / "train-images-idx3-ubyte.gz"
    (directory / "train-images-idx3-ubyte").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    assert find_data_dir(directory) == directory


# --- data_status ----------------------------------------------------------------------------


def test_data_status_not_found(tmp_path, isolated_cache):
    status = data_status(tmp_path / "nothing-here")
    assert status.directory is None
    assert not status.ok
    assert status.files == {} and status.class_counts == {}


def test_data_status_made_up_data_is_not_ok(tiny_dataset):
    status = data_status(tiny_dataset.directory)
    assert status.directory == str(tiny_dataset.directory)
    assert not status.ok
    assert set(status.files) == set(MNIST_FILES.values())
    assert all(entry["ok"] is False for entry in status.files.values())
    assert status.files["train-images-idx3-ubyte"]["shape"] == [50, 28, 28]
    assert status.class_counts == {"train": [5] * 10, "test": [2] * 10}


@requires_mnist
def test_data_status_real_mnist():
    status = data_status()
    assert status.ok
    for base, entry in status.files.items():
        assert entry["sha256"] == MNIST_SHA256[base]
    assert status.files["train-images-idx3-ubyte"]["shape"] == [60000, 28, 28]
    assert status.files["t10k-labels-idx1-ubyte"]["shape"] == [10000]
    assert status.class_counts == {"train": TRAIN_COUNTS, "test": TEST_COUNTS}


@requires_mnist
def test_real_mnist_contents(real_mnist):
    assert real_mnist.train_images.shape == (60000, 28, 28)
    assert real_mnist.test_images.shape == (10000, 28, 28)
    assert real_mnist.train_images.dtype == np.uint8
    assert real_mnist.train_labels[0] == 5
    assert real_mnist.test_labels[0] == 7
    assert np.bincount(real_mnist.train_labels, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(real_mnist.test_labels, minlength=10).tolist() == TEST_COUNTS
    assert real_mnist.sha256 == MNIST_SHA256


@requires_mnist
def test_loading_real_mnist_writes_nothing():
    directory = find_data_dir()
    before = snapshot(directory)
    load_mnist(directory, download=False, verify=True)
    assert snapshot(directory) == before


# --- download_mnist (local HTTP server, no network) -----------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 (http.server API)
        body = self.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def no_proxy(monkeypatch):
    """Make sure urllib talks to 127.0.0.1 directly, whatever proxy the environment sets."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def http_server(no_proxy):
    """A local HTTP server on 127.0.0.1 serving ``routes`` (path -> body); yields (port, routes)."""
    routes: dict[str, bytes] = {}
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], routes
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _made_up_files(idx_bytes) -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    return {
        "train-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (8, 28, 28), dtype=np.uint8)),
        "train-labels-idx1-ubyte": idx_bytes(np.arange(8, dtype=np.uint8)),
        "t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)),
        "t10k-labels-idx1-ubyte": idx_bytes(np.arange(4, dtype=np.uint8)),
    }


def test_download_falls_back_across_mirrors(tmp_path, http_server, idx_bytes):
    port, routes = http_server
    files = _made_up_files(idx_bytes)
    checksums = {base: hashlib.sha256(raw).hexdigest() for base, raw in files.items()}
    for base, raw in files.items():
        routes[f"/wrong/{base}.gz"] = gzip.compress(raw + b"tampered")
        routes[f"/good/{base}.gz"] = gzip.compress(raw)
    mirrors = [f"http://127.0.0.1:{port}/missing/", f"http://127.0.0.1:{port}/wrong/",
               f"http://127.0.0.1:{port}/good/"]
    progress_calls: list[tuple[str, int | None]] = []
    received: dict[str, int] = {}

    def progress(name, total):
        progress_calls.append((name, total))
        received[name] = 0

        def update(n):
            received[name] += n

        return update

    target = tmp_path / "downloaded"
    assert download_mnist(target, mirrors=mirrors, checksums=checksums, timeout=5,
                          progress=progress) == target
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{b}.gz" for b in files)
    for base, raw in files.items():
        assert gzip.decompress((target / f"{base}.gz").read_bytes()) == raw
    # Each mirror that answered reports progress (the 404 one does not); the last one, the good
    # mirror, delivered every byte it announced.
    name, good_size = "train-labels-idx1-ubyte.gz", len(routes["/good/train-labels-idx1-ubyte.gz"])
    assert [call for call in progress_calls if call[0] == name] == [
        (name, len(routes[f"/wrong/{name}"])),
        (name, good_size),
    ]
    assert received[name] == good_size
    # The downloaded files load; they are not the real MNIST, so verification fails.
    mnist = load_mnist(target, download=False, verify=False)
    np.testing.assert_array_equal(mnist.train_labels, np.arange(8))
    with pytest.raises(DatasetError, match="SHA-256"):
        load_mnist(target, download=False, verify=True)


def test_download_skips_files_already_present(tmp_path, http_server, idx_bytes):
    port, routes = http_server
    files = _made_up_files(idx_bytes)
    checksums = {base: hashlib.sha256(raw).hexdigest() for base, raw in files.items()}
    target = tmp_path / "partial"
    target.mkdir()
    for base, raw in files.items():
        if base.startswith("train"):
            (target / base).write_bytes(raw)  # present, uncompressed
        else:
            routes[f"/m/{base}.gz"] = gzip.compress(raw)
    download_mnist(target, mirrors=[f"http://127.0.0.1:{port}/m/"], checksums=checksums, timeout=5)
    assert sorted(p.name for p in target.iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    ]


@pytest.mark.parametrize(
    ("serve", "error"),
    [
        ("wrong-content", "checksum mismatch"),
        ("not-gzip", "Not a gzipped file"),
        ("truncated-gzip", "Compressed file ended"),
        ("nothing", "Not Found"),
    ],
)
def test_download_failure_leaves_no_files(tmp_path, http_server, idx_bytes, serve, error):
    port, routes = http_server
    raw = idx_bytes(np.arange(6, dtype=np.uint8))
    base = "t10k-labels-idx1-ubyte"
    body = {
        "wrong-content": gzip.compress(raw[:-1] + b"\xff"),
        "not-gzip": b"<html>definitely not gzip</html>",
        "truncated-gzip": gzip.compress(raw)[:-12],
        "nothing": None,
    }[serve]
    if body is not None:
        routes[f"/bad/{base}.gz"] = body
    target = tmp_path / "target"
    target.mkdir()
    mirrors = [f"http://127.0.0.1:{port}/missing/", f"http://127.0.0.1:{port}/bad/"]
    with pytest.raises(DatasetError) as info:
        download_mnist(target, mirrors=mirrors, checksums={base: hashlib.sha256(raw).hexdigest()},
                       timeout=5)
    message = str(info.value)
    assert f"could not download {base} from 2 mirror(s)" in message
    assert error in message
    assert str(target) in message and DATA_DIR_ENV in message
    assert "\n" not in message
    assert list(target.iterdir()) == []  # no partial or temporary files


def test_download_with_no_mirrors(tmp_path):
    with pytest.raises(DatasetError, match="no mirrors"):
        download_mnist(tmp_path, mirrors=[], checksums={"x": "0" * 64})


def test_download_unreachable_server(tmp_path, no_proxy):
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DatasetError, match="could not download x from 1 mirror"):
        download_mnist(tmp_path / "t", mirrors=[f"http://127.0.0.1:{port}/"],
                       checksums={"x": "0" * 64}, timeout=2)
    assert not (tmp_path / "t").exists()  # nothing created, not even the directory


@pytest.mark.parametrize(
    ("body", "error"),
    # mtime=0 keeps the gzip bytes, and so the test id, the same in every xdist worker.
    [
        (gzip.compress(bytes(50_000), mtime=0), "decompresses to more than 1,000 bytes"),
        (bytes(5_000), "more than 1,000 bytes"),
    ],
    ids=["gzip-bomb", "oversized-body"],
)
def test_download_refuses_oversized_files(tmp_path, http_server, monkeypatch, body, error):
    """A mirror cannot make digitrec read or inflate more than the per-file cap (gzip bombs)."""
    monkeypatch.setattr("digitrec.data.mnist._MAX_DOWNLOAD_BYTES", 1_000)
    port, routes = http_server
    routes["/m/x.gz"] = body
    with pytest.raises(DatasetError, match=error):
        download_mnist(tmp_path / "t", mirrors=[f"http://127.0.0.1:{port}/m/"], checksums={"x": "0" * 64}, timeout=5)
    assert not (tmp_path / "t").exists()


def test_data_status_reports_every_file_even_when_one_is_unreadable(tiny_dataset):
    bad = tiny_dataset.directory / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(b"not gzip at all")
    status = data_status(tiny_dataset.directory)
    assert not status.ok
    assert "cannot read" in status.files["t10k-images-idx3-ubyte"]["error"]
    assert status.files["train-images-idx3-ubyte"]["shape"] == [50, 28, 28]
    assert status.class_counts["test"] == [2] * 10
