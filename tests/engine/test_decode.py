"""engine.decode: videos and image sequences, ranges, downscaling and bad input."""
from __future__ import annotations

import os

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from engine.decode import DecodeError, open_footage, parse_frame_range  # noqa: E402


def _frames(n=5, w=64, h=48):
    rng = np.random.default_rng(0)
    # smooth content so that lossy codecs reproduce it closely
    small = rng.random((h // 8, w // 8, 3)).astype(np.float32)
    base = (cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255).astype(np.uint8)
    return [np.roll(base, 2 * i, axis=1) for i in range(n)]


def _write_seq(folder, frames, name="frame_{:04d}.png", start=1):
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / name.format(i + start)), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))


def _write_video(path, frames, fps=24.0):
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()


def test_folder_printf_and_hash_patterns_agree(tmp_path):
    fr = _frames()
    _write_seq(tmp_path / "seq", fr)
    a = open_footage(tmp_path / "seq")
    b = open_footage(tmp_path / "seq" / "frame_%04d.png")
    c = open_footage(tmp_path / "seq" / "frame_####.png")
    for fo in (a, b, c):
        assert fo.kind == "sequence" and fo.n_frames == 5 and fo.frame_range == (1, 5)
        assert fo.input_size == (64, 48) and fo.work_size == (64, 48)
        got = list(fo.frames())
        assert len(got) == 5
        np.testing.assert_array_equal(got[2], fr[2])  # PNG is lossless, RGB order kept


def test_frame_range_and_downscale(tmp_path):
    _write_seq(tmp_path / "seq", _frames(6, 80, 40))
    fo = open_footage(tmp_path / "seq" / "frame_####.png", frames=(2, 4), max_side=40)
    assert fo.frame_numbers == [2, 3, 4]
    assert fo.work_size == (40, 20)
    got = list(fo.frames())
    assert len(got) == 3 and got[0].shape == (20, 40, 3) and got[0].dtype == np.uint8
    # working <-> input pixel mapping keeps pixel centres
    xy = np.array([[0.0, 0.0], [39.0, 19.0]], np.float32)
    back = fo.to_work_pixels(fo.to_input_pixels(xy))
    np.testing.assert_allclose(back, xy, atol=1e-5)
    np.testing.assert_allclose(fo.to_input_pixels(xy)[0], [0.5, 0.5], atol=1e-6)


def test_video_streams_all_frames_and_range(tmp_path):
    fr = _frames(7)
    path = tmp_path / "clip.mp4"
    _write_video(path, fr, fps=25)
    fo = open_footage(path)
    assert fo.kind == "video" and fo.n_frames == 7 and abs(fo.fps - 25) < 1e-3
    got = list(fo.frames())
    assert len(got) == 7 and got[0].shape == (48, 64, 3)
    assert np.abs(got[3].astype(int) - fr[3]).mean() < 8  # lossy codec, same picture
    sub = open_footage(path, frames=(2, 3))
    got2 = list(sub.frames())
    assert len(got2) == 2
    np.testing.assert_array_equal(got2[0], got[2])


def test_exr_sequence(tmp_path):
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    folder = tmp_path / "exr"
    folder.mkdir()
    img = np.linspace(0, 1, 32 * 24 * 3, dtype=np.float32).reshape(24, 32, 3)
    for i in range(2):
        if not cv2.imwrite(str(folder / f"r_{i:03d}.exr"), img):
            pytest.skip("this OpenCV build cannot write EXR")
    fo = open_footage(folder / "r_###.exr")
    got = list(fo.frames())
    assert len(got) == 2 and got[0].dtype == np.uint8 and got[0].max() > 200


@pytest.mark.parametrize("case", ["missing", "empty_dir", "no_match", "single_image", "bad_range"])
def test_clear_errors(tmp_path, case):
    if case == "missing":
        target, kw = tmp_path / "nope.mp4", {}
    elif case == "empty_dir":
        (tmp_path / "e").mkdir()
        target, kw = tmp_path / "e", {}
    elif case == "no_match":
        target, kw = tmp_path / "x_####.png", {}
    elif case == "single_image":
        _write_seq(tmp_path / "s", _frames(1))
        target, kw = tmp_path / "s" / "frame_0001.png", {}
    else:
        _write_seq(tmp_path / "s", _frames(3))
        target, kw = tmp_path / "s", {"frames": (10, 20)}
    with pytest.raises(DecodeError) as e:
        open_footage(target, **kw)
    assert str(e.value)


def test_corrupt_video_and_image_and_mixed_sizes(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(DecodeError, match="cannot open|no decodable"):
        open_footage(bad)
    seq = tmp_path / "seq"
    _write_seq(seq, _frames(3))
    (seq / "frame_0002.png").write_bytes(b"not a png at all")
    fo = open_footage(seq)
    with pytest.raises(DecodeError, match="cannot read image"):
        list(fo.frames())
    seq2 = tmp_path / "seq2"
    _write_seq(seq2, _frames(2))
    _write_seq(seq2, _frames(1, 32, 32), start=3)
    with pytest.raises(DecodeError, match="different sizes"):
        list(open_footage(seq2).frames())


def test_parse_frame_range():
    assert parse_frame_range("3:9") == (3, 9)
    assert parse_frame_range("3:") == (3, None)
    assert parse_frame_range(":9") == (None, 9)
    assert parse_frame_range(None) is None
    with pytest.raises(DecodeError):
        parse_frame_range("a:b")
