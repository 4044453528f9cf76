"""VGG-Face architectures, keras-vggface weight files, download-weights against local servers."""

from __future__ import annotations

import functools
import http.server
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from ml.models import normalize
from training.cli import app
from training.vggface import (
    ARCHITECTURES,
    WeightFileInvalid,
    WeightFileMissing,
    WeightShapeMismatch,
    cached_weight_file,
    keras_layer_name,
    load_vggface_weights,
    normalization_for,
    rcmalli_name,
    save_vggface_weights,
    vggface_resnet50,
    vggface_senet50,
    vggface_vgg16,
    weighted_layers,
)
from training.weights import (
    DownloadFailed,
    download_weights,
    expected_shapes,
    file_sha256,
)

SMALL = (32, 32, 3)  # layer names and weight shapes are those of 224x224 (fc6 of VGG16 aside)
NOTOP_RESNET = "rcmalli_vggface_tf_notop_resnet50.h5"


def names(model) -> list[str]:
    """keras-vggface names of the layers that own weights, in order."""
    return [rcmalli_name(layer) for layer in weighted_layers(model)]


def outputs(model, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(-100, 100, (2, *SMALL)).astype(np.float32)
    return np.asarray(model(x, training=False))


@pytest.fixture(scope="module")
def resnet():
    return vggface_resnet50(include_top=False, input_shape=SMALL)


@pytest.fixture(scope="module")
def resnet_file(resnet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model's weights written as keras-vggface published them."""
    return save_vggface_weights(resnet, tmp_path_factory.mktemp("published") / NOTOP_RESNET)


def test_resnet50_has_keras_vggface_layer_names_and_shapes(resnet) -> None:
    assert resnet.name == "vggface_resnet50"
    assert resnet.output_shape == (None, 1, 1, 2048)
    assert resnet.count_params() == 23_561_152  # keras-vggface's summary of the notop model
    # Functional models list layers in graph order, so the shortcut may come before its block.
    assert set(names(resnet)[:10]) == {
        "conv1/7x7_s2",
        "conv1/7x7_s2/bn",
        "conv2_1_1x1_reduce",
        "conv2_1_1x1_reduce/bn",
        "conv2_1_3x3",
        "conv2_1_3x3/bn",
        "conv2_1_1x1_increase",
        "conv2_1_1x1_increase/bn",
        "conv2_1_1x1_proj",
        "conv2_1_1x1_proj/bn",
    }
    assert len(names(resnet)) == 106 and "conv5_3_1x1_increase/bn" in names(resnet)
    assert resnet.get_layer("avg_pool").output.shape == (None, 1, 1, 2048)
    assert resnet.get_layer(keras_layer_name("conv1/7x7_s2")).weights[0].shape == (7, 7, 3, 64)
    assert all(keras_layer_name(rcmalli_name(layer)) == layer.name for layer in resnet.layers)


def test_senet50_adds_squeeze_excitation_with_biases() -> None:
    model = vggface_senet50(include_top=True, input_shape=SMALL)
    assert (model.name, model.output_shape) == ("vggface_senet50", (None, 8631))
    layer_names = names(model)
    assert layer_names[8:12] == [
        "conv2_1_1x1_down",
        "conv2_1_1x1_up",
        "conv2_1_1x1_proj",
        "conv2_1_1x1_proj/bn",
    ]
    assert len(layer_names) == 139 and layer_names[-1] == "classifier"
    down, up = model.get_layer("conv2_1_1x1_down"), model.get_layer("conv2_1_1x1_up")
    assert [tuple(w.shape) for w in down.weights] == [(1, 1, 256, 16), (16,)]
    assert [tuple(w.shape) for w in up.weights] == [(1, 1, 16, 256), (256,)]
    assert model.get_layer("conv2_1_3x3_bn").epsilon == pytest.approx(1e-4)
    assert model.get_layer("classifier").weights[0].shape == (2048, 8631)


def test_vgg16_has_the_vggface_layer_names_and_2622_identities() -> None:
    model = vggface_vgg16(include_top=True, input_shape=SMALL)
    assert (model.name, model.output_shape) == ("vggface_vgg16", (None, 2622))
    convs = [
        f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)
    ]
    assert names(model) == [*convs, "fc6", "fc7", "fc8"]
    every = [rcmalli_name(layer) for layer in model.layers]
    assert {"pool5", "flatten", "fc6/relu", "fc7/relu", "fc8/softmax"} <= set(every)
    assert expected_shapes("vgg16", include_top=True)["fc6"] == [(25088, 4096), (4096,)]


def test_weights_in_the_published_layout_load_back_by_name(resnet, resnet_file: Path) -> None:
    with h5py.File(resnet_file) as root:
        layer_names = [n.decode() for n in root.attrs["layer_names"]]
        assert "conv1/7x7_s2/bn" in layer_names and "avg_pool" in layer_names
        weight_names = [n.decode() for n in root["conv1/7x7_s2/bn"].attrs["weight_names"]]
        assert weight_names == [
            "conv1/7x7_s2/bn/gamma:0",
            "conv1/7x7_s2/bn/beta:0",
            "conv1/7x7_s2/bn/moving_mean:0",
            "conv1/7x7_s2/bn/moving_variance:0",
        ]
    fresh = vggface_resnet50(include_top=False, input_shape=SMALL)
    assert not np.allclose(outputs(fresh), outputs(resnet))
    load_vggface_weights(fresh, resnet_file)
    np.testing.assert_array_equal(outputs(fresh), outputs(resnet))


def test_bad_weight_files_fail_naming_the_file_or_layer(tmp_path: Path) -> None:
    model = vggface_vgg16(include_top=False, input_shape=SMALL)
    with pytest.raises(WeightFileMissing, match=r"nowhere\.h5 does not exist"):
        load_vggface_weights(model, tmp_path / "nowhere.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(WeightFileInvalid, match=r"text\.h5 is not an HDF5"):
        load_vggface_weights(model, tmp_path / "text.h5")
    with h5py.File(tmp_path / "wrong.h5", "w") as root:
        root.attrs["layer_names"] = np.array([b"conv1_1"])
        group = root.create_group("conv1_1")
        group.attrs["weight_names"] = np.array([b"conv1_1/kernel:0", b"conv1_1/bias:0"])
        group.create_dataset("conv1_1/kernel:0", data=np.zeros((3, 3, 3, 32), np.float32))
        group.create_dataset("conv1_1/bias:0", data=np.zeros(32, np.float32))
    with pytest.raises(
        WeightShapeMismatch, match=r"'conv1_1' has weights of shapes \[\(3, 3, 3, 32\)"
    ):
        load_vggface_weights(model, tmp_path / "wrong.h5")
    with pytest.raises(WeightFileInvalid, match="no weights for 12 layer"):
        load_vggface_weights(model, _only_first_layer(model, tmp_path / "partial.h5"))


def _only_first_layer(model, path: Path) -> Path:
    """A Keras 2 file holding conv1_1 alone, with the right shapes."""
    layer = model.get_layer("conv1_1")
    with h5py.File(path, "w") as root:
        root.attrs["layer_names"] = np.array([b"conv1_1"])
        group = root.create_group("conv1_1")
        group.attrs["weight_names"] = np.array([b"conv1_1/kernel:0", b"conv1_1/bias:0"])
        for name, value in zip(("kernel", "bias"), layer.get_weights(), strict=True):
            group.create_dataset(f"conv1_1/{name}:0", data=value)
    return path


def test_vggface_normalisations_subtract_the_means_in_bgr() -> None:
    rgb = np.array([[[10.0, 20.0, 30.0]]], np.float32)
    np.testing.assert_allclose(
        normalize("vggface1", rgb)[0, 0], [30 - 93.5940, 20 - 104.7624, 10 - 129.1863]
    )
    np.testing.assert_allclose(
        normalize("vggface2", rgb)[0, 0], [30 - 91.4953, 20 - 103.8827, 10 - 131.0912]
    )
    assert [normalization_for(a) for a in ARCHITECTURES] == ["vggface1", "vggface2", "vggface2"]
    with pytest.raises(ValueError, match="unknown normalization 'vggface3'"):
        normalize("vggface3", rgb)  # type: ignore[arg-type]


# --- download-weights ---------------------------------------------------------------------------


class _Counting(http.server.SimpleHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def server(resnet_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local HTTP server holding one good and one damaged weight file."""
    root = tmp_path_factory.mktemp("release")
    shutil.copyfile(resnet_file, root / NOTOP_RESNET)
    (root / "rcmalli_vggface_tf_notop_senet50.h5").write_bytes(b"<html>rate limited</html>")
    handler = functools.partial(_Counting, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_download_verifies_caches_and_then_reuses_the_file(
    server: str, resnet, resnet_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{server}/{NOTOP_RESNET}"
    first = download_weights("resnet50", cache_dir=tmp_path, url=url, progress=False)
    assert first.downloaded and first.path == tmp_path / NOTOP_RESNET
    assert first.sha256 == file_sha256(resnet_file)
    served = len(_Counting.requests)
    again = download_weights("resnet50", cache_dir=tmp_path, url=url, progress=False)
    assert not again.downloaded and len(_Counting.requests) == served
    assert sorted(p.name for p in tmp_path.iterdir()) == [NOTOP_RESNET]
    monkeypatch.setenv("MOODBOT_WEIGHTS_DIR", str(tmp_path))
    assert cached_weight_file("resnet50") == first.path
    loaded = vggface_resnet50(include_top=False, weights="vggface", input_shape=SMALL)
    np.testing.assert_array_equal(outputs(loaded), outputs(resnet))


def test_download_refuses_damaged_files_and_wrong_hashes(server: str, tmp_path: Path) -> None:
    with pytest.raises(WeightFileInvalid, match="not an HDF5 weight file"):
        download_weights(
            "senet50",
            cache_dir=tmp_path,
            url=f"{server}/rcmalli_vggface_tf_notop_senet50.h5",
            progress=False,
        )
    with pytest.raises(WeightFileInvalid, match="expected 00ff"):
        download_weights(
            "resnet50",
            cache_dir=tmp_path,
            url=f"{server}/{NOTOP_RESNET}",
            sha256="00ff",
            progress=False,
        )
    with pytest.raises(DownloadFailed, match="HTTP 404"):
        download_weights("vgg16", cache_dir=tmp_path, url=f"{server}/missing.h5", progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing half-written stays behind


def test_offline_download_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/{NOTOP_RESNET}"
    started = time.perf_counter()
    with pytest.raises(DownloadFailed, match=r"Could not download .* copy it to"):
        download_weights("resnet50", cache_dir=tmp_path, url=url, progress=False, timeout=5)
    assert time.perf_counter() - started < 5
    result = CliRunner().invoke(
        app,
        ["download-weights", "resnet50", "--cache-dir", str(tmp_path)],
        env={"MOODBOT_WEIGHTS_URL": f"http://127.0.0.1:{closed_port()}"},
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("moodbot download-weights: Could not download")
    assert "Traceback" not in result.output
    with pytest.raises(WeightFileMissing, match="moodbot download-weights senet50"):
        cached_weight_file("senet50", cache_dir=tmp_path)
