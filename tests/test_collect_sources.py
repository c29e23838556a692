"""Reading a walk's sources: EXIF GPS/heading/time (Pillow), GPX tracks (gpxpy), walk videos (PyAV),
on material the tests make; and the planar <-> WGS84 mapping the synthetic campus uses."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geomodel.collect.exif import exif_gps, read_photo_meta, write_photo_meta
from geomodel.collect.tracks import Track, Tracks, make_segment, read_gpx, read_tracks, to_epoch, write_gpx
from geomodel.collect.video import SampleReport, parse_time, probe_video, sample_frames, write_video
from geomodel.errors import CollectError
from geomodel.geo import bearing, haversine, planar_to_wgs84, wgs84_to_planar

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=timezone.utc)


def _save_with_gps(path: Path, lat_ref="N", lat=(17.0, 26.0, 42.0), lon_ref="E", lon=(78.0, 20.0, 56.4)) -> Path:
    exif = Image.Exif()
    exif[0x8825] = {1: lat_ref, 2: lat, 3: lon_ref, 4: lon}
    Image.new("RGB", (48, 48), (120, 90, 60)).save(path, exif=exif)
    return path


def _north_track(path: Path, seconds: int = 60, speed: float = 1.5, pause: tuple[int, int] | None = None) -> Path:
    """A walk due north from (17.4, 78.3), one point a second, standing still during ``pause``."""
    metres, times, lat = 0.0, [], []
    for s in range(seconds + 1):
        times.append(T0 + timedelta(seconds=s))
        lat.append(17.4 + np.degrees(metres / 6_371_008.8))
        if not (pause and pause[0] <= s < pause[1]):
            metres += speed
    return write_gpx(path, [(times, lat, [78.3] * len(lat))])


# ------------------------------------------------------------------------------------------ EXIF


def test_exif_gps_extraction(tmp_path):
    north_east = _save_with_gps(tmp_path / "ne.jpg")
    assert exif_gps(north_east) == pytest.approx((17.445, 78.349))
    assert exif_gps(Image.open(north_east)) == pytest.approx((17.445, 78.349))
    south_west = _save_with_gps(tmp_path / "sw.jpg", lat_ref="S", lon_ref="W")
    assert exif_gps(south_west) == pytest.approx((-17.445, -78.349))
    Image.new("RGB", (8, 8)).save(tmp_path / "none.jpg")
    assert exif_gps(tmp_path / "none.jpg") is None
    assert exif_gps(_save_with_gps(tmp_path / "zero.jpg", lat=(0.0, 0.0, 0.0), lon=(0.0, 0.0, 0.0))) is None
    assert exif_gps(_save_with_gps(tmp_path / "range.jpg", lat=(95.0, 0.0, 0.0))) is None
    assert exif_gps(_save_with_gps(tmp_path / "ref.jpg", lat_ref="X")) is None
    (tmp_path / "text.jpg").write_text("not an image")
    assert exif_gps(tmp_path / "text.jpg") is None


def test_photo_meta_says_why_gps_is_unusable(tmp_path):
    zero = read_photo_meta(_save_with_gps(tmp_path / "zero.jpg", lat=(0.0, 0.0, 0.0), lon=(0.0, 0.0, 0.0)))
    assert not zero.has_gps and "0,0" in zero.gps_problem
    far = read_photo_meta(_save_with_gps(tmp_path / "range.jpg", lat=(95.0, 0.0, 0.0)))
    assert "latitude 95.000000 is out of range" in far.gps_problem
    assert "reference" in read_photo_meta(_save_with_gps(tmp_path / "ref.jpg", lat_ref="X")).gps_problem
    Image.new("RGB", (8, 8)).save(tmp_path / "none.jpg")
    none = read_photo_meta(tmp_path / "none.jpg")
    assert not none.has_gps and none.gps_problem is None and none.taken is None


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_photo_meta_round_trip_position_heading_time(tmp_path, suffix):
    taken = datetime(2024, 5, 1, 15, 30, 3, 250000)
    path = write_photo_meta(Image.new("RGB", (16, 16), "red"), tmp_path / f"p{suffix}", latitude=-33.8567844,
                            longitude=151.213108, angle=371.5, taken=taken, utc_offset=timedelta(hours=10))
    meta = read_photo_meta(path)
    assert meta.latitude == pytest.approx(-33.8567844, abs=1e-7)
    assert meta.longitude == pytest.approx(151.213108, abs=1e-7)
    assert meta.angle == pytest.approx(11.5)
    assert meta.taken == taken and meta.utc_offset == timedelta(hours=10)


# ------------------------------------------------------------------------------------------ geo


def test_planar_wgs84_mapping_is_metric_and_invertible():
    lat, lon = planar_to_wgs84(np.array([0.0, 1000.0, 0.0]), np.array([0.0, 0.0, 1000.0]))
    assert haversine(lat[0], lon[0], lat[1], lon[1]) == pytest.approx(1000.0, rel=1e-3)
    assert haversine(lat[0], lon[0], lat[2], lon[2]) == pytest.approx(1000.0, rel=1e-3)
    assert bearing(lat[0], lon[0], lat[2], lon[2]) == pytest.approx(90.0, abs=0.1)
    y, x = wgs84_to_planar(*planar_to_wgs84(220000.0, 143000.0, planar_origin=(219000.0, 142000.0),
                                            metres_per_unit=0.5), planar_origin=(219000.0, 142000.0),
                           metres_per_unit=0.5)
    assert (float(y), float(x)) == pytest.approx((220000.0, 143000.0), abs=1e-6)


# ------------------------------------------------------------------------------------------ GPX


def test_gpx_round_trip_and_interpolation(tmp_path):
    track = read_gpx(_north_track(tmp_path / "walk.gpx", seconds=10))
    assert track.n_points == 11 and track.start == to_epoch(T0) and track.end == to_epoch(T0) + 10
    tracks = Tracks([track])
    t0 = to_epoch(T0)
    where = tracks.locate(np.array([t0 + 2.5, t0 - 1, t0 + 11]))
    assert where.covered.tolist() == [True, False, False]
    assert where.walked[0] == pytest.approx(3.75, abs=0.01)  # 2.5 s at 1.5 m/s
    assert tracks.heading(np.array([t0 + 5]))[0] == pytest.approx(0.0, abs=0.5)  # due north
    assert tracks.speed(np.array([t0 + 5]))[0] == pytest.approx(1.5, rel=0.01)
    assert "2024-05-01 10:00:00 to 2024-05-01 10:00:10 UTC" == tracks.describe_span()


def test_gpx_times_without_zone_are_utc(tmp_path):
    path = _north_track(tmp_path / "walk.gpx", seconds=3)
    path.write_text(path.read_text().replace("Z</time>", "</time>"))
    assert read_gpx(path).start == to_epoch(T0)


def test_no_interpolation_across_gaps_or_segments():
    seg = make_segment(np.array([0.0, 1.0, 200.0, 201.0]), np.array([10.0, 10.001, 10.002, 10.003]),
                       np.array([20.0] * 4))
    tracks = Tracks([Track("t.gpx", (seg,))], max_gap=60)
    assert tracks.locate(np.array([0.5, 100.0, 200.0, 200.5])).covered.tolist() == [True, False, True, True]


def test_standing_still_has_no_heading(tmp_path):
    tracks = Tracks([read_gpx(_north_track(tmp_path / "w.gpx", seconds=40, pause=(10, 30)))])
    t0 = to_epoch(T0)
    heading = tracks.heading(np.array([t0 + 5.0, t0 + 20.0, t0 + 35.0]))
    assert np.isfinite(heading[[0, 2]]).all() and np.isnan(heading[1])


@pytest.mark.parametrize("content, problem", [
    ("this is not xml", "not a readable GPX file"),
    ("<gpx><trk><trkseg><trkpt lat='1' lon='2'>", "not a readable GPX file"),
    ('<gpx version="1.1"><trk><trkseg><trkpt lat="17.4" lon="78.3"></trkpt><trkpt lat="17.5" lon="78.3">'
     "</trkpt></trkseg></trk></gpx>", "its 2 track points have no timestamps"),
    ('<gpx version="1.1"><wpt lat="17.4" lon="78.3"></wpt></gpx>', "no track points (0 route(s), 1 waypoint(s))"),
])
def test_bad_gpx_names_the_file_and_the_problem(tmp_path, content, problem):
    path = tmp_path / "bad.gpx"
    path.write_text(content)
    with pytest.raises(CollectError) as err:
        read_gpx(path)
    assert str(err.value).startswith(f"{path}: ") and problem in str(err.value)


def test_one_bad_gpx_does_not_cost_the_good_ones(tmp_path):
    (tmp_path / "bad.gpx").write_text("garbage")
    tracks, problems = read_tracks([tmp_path / "bad.gpx", _north_track(tmp_path / "good.gpx"), tmp_path / "gone.gpx"])
    assert len(tracks.tracks) == 1 and len(problems) == 2
    assert "bad.gpx: not a readable GPX file" in problems[0] and "gone.gpx: GPX file not found" in problems[1]


# ------------------------------------------------------------------------------------------ video


def _ramp_video(path: Path, seconds: float = 40, fps: float = 5, **kw) -> Path:
    """Frames whose brightness encodes their index, so a test can tell which were kept."""
    n = int(seconds * fps)
    frames = (Image.new("RGB", (32, 16), (int(255 * i / n),) * 3) for i in range(n))
    return write_video(path, frames, fps=fps, start=T0, **kw)


def test_video_start_from_container_and_parse_time(tmp_path):
    info = probe_video(_ramp_video(tmp_path / "v.mp4", seconds=2))
    assert info.start == to_epoch(T0) and info.duration == pytest.approx(2.0, abs=0.3) and info.fps == 5.0
    assert parse_time("2024-05-01T15:30:00+0530") == to_epoch(T0)
    assert parse_time("2024-05-01T10:00:00") == to_epoch(T0) == parse_time("2024-05-01T10:00:00.000000Z")
    assert parse_time("yesterday") is None


def test_frames_by_distance_skip_standing_still(tmp_path):
    tracks = Tracks([read_gpx(_north_track(tmp_path / "w.gpx", seconds=40, speed=1.0, pause=(10, 30)))])
    video = _ramp_video(tmp_path / "v.mp4", seconds=40)
    report = SampleReport()
    frames = list(sample_frames(video, to_epoch(T0), tracks, every_m=2.0, report=report))
    offsets = [f.offset for f in frames]
    steps = np.diff([haversine(17.4, 78.3, f.latitude, f.longitude) for f in frames])
    assert report.decoded == 200 and report.uncovered == 0 and report.kept == len(frames)
    assert not any(11 < o < 29 for o in offsets)  # no frames while standing
    assert len(frames) == pytest.approx(10, abs=1)  # 20 m walked in all, one frame per 2 m
    assert (steps >= 2.0 - 1e-6).all()
    assert frames[2].heading == pytest.approx(0.0, abs=1)  # walking north
    assert frames[0].image.size == (32, 16)


def test_frames_by_time_and_uncovered_frames_are_counted(tmp_path):
    tracks = Tracks([read_gpx(_north_track(tmp_path / "w.gpx", seconds=20))])
    video = _ramp_video(tmp_path / "v.mp4", seconds=30)
    report = SampleReport()
    frames = list(sample_frames(video, to_epoch(T0) + 5, tracks, every_m=None, every_s=3.0, report=report))
    assert [round(f.offset) for f in frames] == [0, 3, 6, 9, 12, 15]  # video seconds 0..15 = track 5..20
    assert report.uncovered == 74 and report.uncovered_span == pytest.approx((15.2, 29.8))


def test_rotated_video_frames_come_out_upright(tmp_path):
    upright = Image.new("RGB", (16, 32), "white")
    upright.paste((255, 0, 0), (0, 0, 16, 8))  # red band at the top
    stored = upright.rotate(-90, expand=True)  # the sensor's landscape frame
    video = write_video(tmp_path / "r.mp4", [stored] * 10, fps=5, start=T0, rotation=90)
    tracks = Tracks([read_gpx(_north_track(tmp_path / "w.gpx", seconds=5))])
    frame = next(sample_frames(video, to_epoch(T0), tracks, every_m=None, every_s=1.0))
    assert frame.image.size == (16, 32)
    top, bottom = frame.image.getpixel((8, 2)), frame.image.getpixel((8, 29))
    assert top[0] > 200 and top[1] < 80 and min(bottom) > 200


def test_unreadable_videos_name_the_file(tmp_path):
    tracks = Tracks([read_gpx(_north_track(tmp_path / "w.gpx", seconds=5))])
    text = tmp_path / "text.mp4"
    text.write_text("not a video at all")
    good = _ramp_video(tmp_path / "v.mp4", seconds=4).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good[:600])
    blank = bytearray(good)  # a whole container whose picture data is zeros: no frame decodes
    at = blank.find(b"mdat")
    size = int.from_bytes(blank[at - 4:at], "big")
    blank[at + 4:at - 4 + size] = bytes(size - 8)
    (tmp_path / "blank.mp4").write_bytes(blank)
    for path, problem in ((text, "not a readable video"), (cut, "not a readable video"),
                          (tmp_path / "blank.mp4", "no readable frames"), (tmp_path / "missing.mp4", "not found")):
        with pytest.raises(CollectError) as err:
            list(sample_frames(path, to_epoch(T0), tracks, every_m=2.0))
        assert str(err.value).startswith(f"{path}: ") and problem in str(err.value)
