"""engine.decode: videos and image sequences, ranges, downscaling and bad input."""
from __future__ import annotations

import os

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from engine.decode import (DecodeError, open_footage, parse_frame_range,  # noqa: E402
                           srgb_eotf, srgb_oetf)


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


def _write_float_seq(folder, images, name="r_{:03d}.exr"):
    """Float32 EXR frames (RGB in, BGR on disk); skips when this OpenCV cannot write EXR."""
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        if not cv2.imwrite(str(folder / name.format(i)),
                           np.ascontiguousarray(img[..., ::-1], dtype=np.float32)):
            pytest.skip("this OpenCV build cannot write EXR")
    return folder / name.replace("{:03d}", "###")


def _srgb_test_image(w=64, h=48):
    """An 8-bit sRGB picture with smooth texture and a full dark-to-bright ramp (the dark end is
    where a plain gamma and the sRGB curve differ most)."""
    img = _frames(1, w, h)[0].copy()
    img[:4] = np.linspace(0, 255, w).round().astype(np.uint8)[None, :, None]
    return img


def test_oetf_is_the_piecewise_srgb_curve():
    x = np.array([0.0, 0.002, 0.0031308, 0.01, 0.18, 0.5, 1.0], np.float32)
    want = np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)
    np.testing.assert_allclose(srgb_oetf(x), want, atol=1e-6)
    assert abs(float(srgb_oetf(np.float32(0.18))) - 0.4613561) < 1e-5   # mid grey: 118/255
    v = np.linspace(0, 1, 1001, dtype=np.float32)
    np.testing.assert_allclose(srgb_oetf(srgb_eotf(v)), v, atol=1e-5)


def test_linear_exr_decodes_like_the_srgb_png(tmp_path):
    """colorspace=linear: a scene-linear EXR of a picture decodes to the 8-bit sRGB PNG of the
    same picture within one level, frame by frame; auto keeps its plain-gamma guess."""
    base = _srgb_test_image()
    frames = [base, np.roll(base, 3, axis=1)]
    _write_seq(tmp_path / "png", frames)
    exr = _write_float_seq(tmp_path / "exr", [srgb_eotf(f / 255.0) for f in frames])
    png = list(open_footage(tmp_path / "png").frames())
    lin = list(open_footage(exr, colorspace="linear").frames())
    assert len(lin) == 2 and lin[0].dtype == np.uint8
    for a, b in zip(lin, png):
        assert np.abs(a.astype(int) - b).max() <= 1
    # auto is unchanged: clip + plain display gamma 1/2.2 (so it does NOT match the PNG)
    auto = next(open_footage(exr).frames())
    lin0 = srgb_eotf(frames[0] / 255.0)
    np.testing.assert_array_equal(auto, (np.clip(lin0, 0, 1) ** (1 / 2.2) * 255 + 0.5)
                                  .astype(np.uint8))
    assert np.abs(auto.astype(int) - png[0]).max() > 5
    # downscaled working frames agree as well (conversion before resampling, like auto)
    small_png = next(open_footage(tmp_path / "png", max_side=32).frames())
    small_lin = next(open_footage(exr, max_side=32, colorspace="linear").frames())
    assert np.abs(small_lin.astype(int) - small_png).max() <= 1


def test_linear_16bit_png_and_8bit_linear(tmp_path):
    base = _srgb_test_image()
    lin = srgb_eotf(base / 255.0)
    d16 = tmp_path / "p16"
    d16.mkdir()
    for i in range(2):
        cv2.imwrite(str(d16 / f"f_{i:02d}.png"),
                    cv2.cvtColor((lin * 65535 + 0.5).astype(np.uint16), cv2.COLOR_RGB2BGR))
    got = next(open_footage(d16, colorspace="linear").frames())
    assert np.abs(got.astype(int) - base).max() <= 1
    # 16-bit as display-encoded: srgb and raw rescale with rounding, auto keeps the top byte
    enc = tmp_path / "e16"
    enc.mkdir()
    v16 = (base.astype(np.uint16) * 257 + np.uint16(200))
    for i in range(2):
        cv2.imwrite(str(enc / f"f_{i:02d}.png"), cv2.cvtColor(v16, cv2.COLOR_RGB2BGR))
    want = np.round(v16 / 257.0).clip(0, 255).astype(np.uint8)
    for cs in ("srgb", "raw"):
        np.testing.assert_array_equal(next(open_footage(enc, colorspace=cs).frames()), want)
    np.testing.assert_array_equal(next(open_footage(enc).frames()), (v16 >> 8).astype(np.uint8))
    # 8-bit: srgb / raw / auto are the file itself; linear applies the curve
    _write_seq(tmp_path / "p8", [base, base])
    for cs in ("auto", "srgb", "raw"):
        np.testing.assert_array_equal(next(open_footage(tmp_path / "p8", colorspace=cs).frames()),
                                      base)
    np.testing.assert_array_equal(next(open_footage(tmp_path / "p8", colorspace="linear").frames()),
                                  (srgb_oetf(base / 255.0) * 255 + 0.5).astype(np.uint8))


def test_srgb_float_is_clipped_and_raw_is_normalised_over_the_clip(tmp_path):
    base = _srgb_test_image()
    enc = base / 255.0
    hot = enc.copy()
    hot[10, 10] = 1.7          # over-range and negative values are clipped, not wrapped
    hot[11, 11] = -0.3
    exr = _write_float_seq(tmp_path / "srgb", [hot, hot])
    got = next(open_footage(exr, colorspace="srgb").frames())
    want = (enc * 255 + 0.5).astype(np.uint8)
    want[10, 10], want[11, 11] = 255, 0
    assert np.abs(got.astype(int) - want).max() <= 1 and (got[10, 10] == 255).all()
    # raw: data in 3..10 (a depth-like pass); the first frame's robust range maps to 0..255 and
    # the same mapping holds for later frames (a darker second frame stays darker)
    data0 = 3.0 + 7.0 * enc
    data1 = 3.0 + 3.5 * enc
    exr = _write_float_seq(tmp_path / "raw", [data0, data1])
    fo = open_footage(exr, colorspace="raw")
    lo, hi = np.percentile(data0.astype(np.float32), (0.5, 99.5))
    assert fo.value_range == pytest.approx((lo, hi), rel=1e-5)
    f0, f1 = list(fo.frames())
    want0 = (np.clip((data0 - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)
    want1 = (np.clip((data1 - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.abs(f0.astype(int) - want0).max() <= 1 and np.abs(f1.astype(int) - want1).max() <= 1
    assert f1.mean() < f0.mean() - 40
    with pytest.raises(DecodeError, match="colorspace"):
        open_footage(exr, colorspace="acescg")


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
