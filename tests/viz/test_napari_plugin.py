"""The napari plugin: its npe2 manifest, the reader for results and recordings, napari-ome-zarr
for result.zarr, and the live-volume dock widget fed by a real publisher (napari's headless viewer).

Skipped without napari (CI's ``.[test]`` may not have the ``[napari]`` extra). The machine has no
OpenGL; the fixture below tells napari's vispy layers what a GL context would (as napari's own
tests do), which changes nothing this plugin does.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari", reason="the napari plugin needs the [napari] extra")
pytest.importorskip("pytestqt", reason="make_napari_viewer needs pytest-qt")

from tiltstream.stream import TiltSeries, write_result, write_series  # noqa: E402
from tiltstream.stream.messages import VolumeMsg  # noqa: E402
from tiltstream.stream.sockets import tcp_endpoint  # noqa: E402
from tiltstream.stream.transport import Publisher  # noqa: E402
from tiltstream.viz import napari_plugin  # noqa: E402

T, Z, Y, X = 3, 9, 11, 13
SID = "0ddba11" + "0" * 25


@pytest.fixture(autouse=True)
def no_opengl(monkeypatch):
    """What vispy would ask the (absent) GL context: float textures and the texture size."""
    monkeypatch.setattr("napari._vispy.layers.image.get_gl_extensions", lambda: "GL_ARB_texture_float")
    for mod in ("napari._vispy.layers.image", "napari._vispy.layers.base"):
        monkeypatch.setattr(f"{mod}.get_max_texture_sizes", lambda: (4096, 256))


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def test_manifest_declares_the_reader_and_the_widget():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("tiltstream")
    assert [r.command for r in manifest.contributions.readers] == ["tiltstream.get_reader"]
    assert "*.h5" in manifest.contributions.readers[0].filename_patterns
    assert [w.display_name for w in manifest.contributions.widgets] == ["Live volume"]
    for command in manifest.contributions.commands:  # every python_name resolves
        assert callable(command.exec) or command.python_name


def test_reader_opens_a_result_with_scale_times_and_provenance(viewer, tmp_path, rng):
    volumes = rng.random((T, Z, Y, X), dtype=np.float32)
    times = np.array([1.0, 2.5, 4.0])
    write_result(tmp_path / "r.h5", volumes, times, attrs={"method": "sirt", "voxel_nm": 0.5})
    layers = viewer.open(str(tmp_path / "r.h5"), plugin="tiltstream")
    (layer,) = layers
    np.testing.assert_array_equal(np.asarray(layer.data), volumes)
    np.testing.assert_allclose(layer.scale, [1.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(layer.translate, [1.0, 0, 0, 0])
    assert tuple(layer.axis_labels) == ("t", "z", "y", "x")
    assert [str(u) for u in layer.units] == ["second", "nanometer", "nanometer", "nanometer"]
    np.testing.assert_array_equal(layer.metadata["times_s"], times)
    assert layer.metadata["tiltstream"]["method"] == "sirt"


def test_reader_opens_a_recording_with_angles_and_times(viewer, tmp_path, rng):
    frames = rng.random((4, Y, X), dtype=np.float32)
    angles = np.array([-30.0, 10.0, 50.0, -5.0])
    write_series(tmp_path / "rec.h5", TiltSeries(frames=frames, angles_deg=angles, times_s=[0, 1, 2, 3],
                                                 pixel_nm=0.25))
    (layer,) = viewer.open(str(tmp_path / "rec.h5"), plugin="tiltstream")
    np.testing.assert_array_equal(np.asarray(layer.data), frames)
    np.testing.assert_array_equal(layer.metadata["angles_deg"], angles)
    np.testing.assert_array_equal(layer.metadata["times_s"], [0, 1, 2, 3])
    np.testing.assert_allclose(layer.scale, [1.0, 0.25, 0.25])


def test_get_reader_declines_what_it_does_not_read(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"")
    assert napari_plugin.get_reader(str(tmp_path / "a.tif")) is None
    assert napari_plugin.get_reader(str(tmp_path / "missing.h5")) is None
    assert napari_plugin.get_reader([str(tmp_path / "a.h5")]) is None


def test_napari_opens_result_zarr_with_napari_ome_zarr(viewer, tmp_path, rng, monkeypatch):
    pytest.importorskip("napari_ome_zarr", reason="napari opens OME-Zarr with the napari-ome-zarr plugin")
    volumes = rng.random((T, Z, Y, X), dtype=np.float32)
    write_result(tmp_path / "r.zarr", volumes, [0.0, 2.0, 4.0], attrs={"voxel_nm": 0.3})
    from napari.settings import get_settings
    from npe2 import PluginManager

    from napari.errors import MultipleReaderError
    from napari.settings import get_settings

    path = str(tmp_path / "r.zarr")
    # `napari r.zarr` opens through this call; napari's builtin reader claims *.zarr too (without
    # the scale), so napari asks which reader, and remembers the choice as below
    with pytest.raises(MultipleReaderError) as err:
        viewer._open_or_raise_error([path])
    assert "napari-ome-zarr" in err.value.available_plugins and "tiltstream" not in err.value.available_plugins
    monkeypatch.setattr(get_settings().plugins, "extension2reader", {"*.zarr/": "napari-ome-zarr"})  # folder: "/"
    layers = viewer._open_or_raise_error([path])
    assert len(layers) == 1
    np.testing.assert_array_equal(np.asarray(layers[0].data), volumes)
    np.testing.assert_allclose(layers[0].scale, [2.0, 0.3, 0.3, 0.3])
    assert tuple(layers[0].axis_labels) == ("t", "z", "y", "x")


def volume(seq):
    data = np.full((Z, Y, X), float(seq), np.float32)
    return VolumeMsg(stream_id=SID, seq=seq, t_s=0.5 * seq, data=data, source="sirt", n_frames_used=seq,
                     voxel_nm=0.8)


def test_live_widget_shows_published_volumes_on_a_time_axis(viewer, qtbot):
    with Publisher(tcp_endpoint(0)) as pub:
        dock, widget = viewer.window.add_plugin_dock_widget("tiltstream", "Live volume")
        widget.endpoint.setText(pub.endpoint)
        widget.button.click()
        assert widget.feed is not None and widget.button.text() == "Disconnect"
        seq = 0

        def volumes_shown():
            nonlocal seq
            pub.send(volume(seq))  # until the subscription is through, and then some
            seq += 1
            layer = widget.feed.layer
            assert layer is not None and layer.data.shape[0] >= 3

        qtbot.waitUntil(volumes_shown, timeout=10000)
        layer = widget.feed.layer
        n = layer.data.shape[0]
        assert layer.data.shape[1:] == (Z, Y, X)
        np.testing.assert_allclose(layer.scale, [1.0, 0.8, 0.8, 0.8])
        last = np.asarray(layer.data[-1])
        np.testing.assert_array_equal(last, np.full((Z, Y, X), last.flat[0]))
        assert viewer.dims.current_step[0] == n - 1  # follows the newest
        assert np.diff(layer.metadata["times_s"]).min() > 0
        assert f"{n} volume(s)" in widget.status.text()
        widget.button.click()
        assert widget.feed is None and widget.button.text() == "Connect"


def test_live_feed_refresh_never_waits_and_surfaces_receiver_errors(viewer):
    feed = napari_plugin.LiveVolumeFeed(viewer, tcp_endpoint(0))
    feed.receiver._error = RuntimeError("socket gone")  # what the thread keeps when it dies
    with pytest.raises(RuntimeError, match="socket gone"):
        feed.refresh()
    assert feed.refresh() is False and feed.layer is None  # nothing received: no layer, no wait
