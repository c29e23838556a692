"""Building a collection from photos, videos and CSVs (geomodel.collect.collection): every bad input is
one line naming the file and the problem, and never costs a good photo its place."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geomodel.collect.collection import CollectConfig, Collector, expand_inputs, staging
from geomodel.collect.exif import write_photo_meta
from geomodel.collect.tracks import Tracks, read_gpx, to_epoch, write_gpx
from geomodel.collect.video import write_video
from geomodel.errors import CollectError

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=timezone.utc)
IST = timedelta(hours=5, minutes=30)


def _photo(path: Path, *, lat=None, lon=None, angle=None, taken=None, zone=None, colour=(90, 120, 60)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_photo_meta(Image.new("RGB", (24, 24), colour), path, latitude=lat, longitude=lon, angle=angle,
                            taken=taken, utc_offset=zone, quality=90)


def _track(path: Path, seconds: int = 120) -> Path:
    """A walk due east from (17.4, 78.3) at 1.5 m/s, one point a second, from T0."""
    times = [T0 + timedelta(seconds=s) for s in range(seconds + 1)]
    lon = [78.3 + np.degrees(1.5 * s / (6_371_008.8 * np.cos(np.radians(17.4)))) for s in range(seconds + 1)]
    return write_gpx(path, [(times, [17.4] * len(times), lon)])


def _collector(tmp_path: Path, tracks: Tracks | None = None, **cfg) -> Collector:
    return Collector(tmp_path / "out" / "images", CollectConfig(**cfg), tracks, progress=False)


def _reasons(c: Collector) -> dict[str, str]:
    return {Path(x.source).name: x.reason for x in c.left_out}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_photos_with_gps_are_copied_unchanged_and_bad_ones_listed(tmp_path):
    good = _photo(tmp_path / "in" / "good.jpg", lat=17.41, lon=78.31, angle=45.0, taken=datetime(2024, 5, 1, 15, 30),
                  zone=IST)
    zero = _photo(tmp_path / "in" / "zero.jpg", lat=0.0, lon=0.0)
    far = _photo(tmp_path / "in" / "far.jpg", lat=17.4, lon=78.3)
    exif = Image.open(far).getexif()
    exif[0x8825] = {**exif.get_ifd(0x8825), 2: (95.0, 0.0, 0.0)}
    Image.new("RGB", (24, 24)).save(far, exif=exif)
    nogps = _photo(tmp_path / "in" / "nogps.jpg")
    (tmp_path / "in" / "text.jpg").write_text("not a photo")
    cut = tmp_path / "in" / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:300])
    c = _collector(tmp_path)
    c.add_photos(sorted((tmp_path / "in").iterdir()))
    assert [e.filename for e in c.entries] == ["good.jpg"]
    e = c.entries[0]
    assert (e.latitude, e.longitude, e.angle, e.located_by) == (pytest.approx(17.41), pytest.approx(78.31), 45.0, "exif")
    assert e.timestamp == "2024-05-01T10:00:00.00Z"  # 15:30 at UTC+05:30
    assert _sha(c.images_dir / "good.jpg") == _sha(good)  # copied, never re-encoded
    reasons = _reasons(c)
    assert set(reasons) == {"zero.jpg", "far.jpg", "nogps.jpg", "text.jpg", "cut.jpg"}
    assert "0,0" in reasons["zero.jpg"] and "latitude 95.000000 is out of range" in reasons["far.jpg"]
    assert "no GPS position in its EXIF, and no capture time" in reasons["nogps.jpg"]
    assert "not an image" in reasons["text.jpg"] or "cannot identify" in reasons["text.jpg"]
    assert "truncated" in reasons["cut.jpg"] or "corrupt" in reasons["cut.jpg"]
    assert nogps.is_file() and zero.is_file()  # inputs are never touched


def test_photos_without_gps_are_placed_on_the_track_by_time(tmp_path):
    tracks = Tracks([read_gpx(_track(tmp_path / "walk.gpx"))])
    on = _photo(tmp_path / "in" / "on.jpg", taken=datetime(2024, 5, 1, 15, 31), zone=IST)  # 10:01 UTC
    zero = _photo(tmp_path / "in" / "zero.jpg", lat=0.0, lon=0.0, taken=datetime(2024, 5, 1, 15, 30, 30), zone=IST)
    late = _photo(tmp_path / "in" / "late.jpg", taken=datetime(2024, 5, 1, 16, 0), zone=IST)
    c = _collector(tmp_path, tracks)
    c.add_photos([on, zero, late])
    placed = {e.filename: e for e in c.entries}
    assert set(placed) == {"on.jpg", "zero.jpg"}  # a 0,0 GPS tag is no fix: the track places it instead
    assert placed["on.jpg"].located_by == "track" and placed["on.jpg"].timestamp == "2024-05-01T10:01:00.00Z"
    east = np.degrees(90.0 / (6_371_008.8 * np.cos(np.radians(17.4))))
    assert placed["on.jpg"].longitude == pytest.approx(78.3 + east, abs=1e-7)
    reason = _reasons(c)["late.jpg"]
    assert "no GPS track covers its time: taken 2024-05-01 16:00:00 by the camera's clock (read as UTC+05:30)" in reason
    assert "2024-05-01 10:00:00 to 2024-05-01 10:02:00 UTC" in reason
    assert c.time_overlap_problem() is None  # some photos did overlap


def test_no_time_overlap_says_the_zones_and_both_ranges_and_time_offset_fixes_it(tmp_path):
    tracks = Tracks([read_gpx(_track(tmp_path / "walk.gpx"))])
    photos = [_photo(tmp_path / "in" / f"p{i}.jpg", taken=datetime(2024, 5, 1, 15, 30, 10 * i)) for i in range(3)]
    c = _collector(tmp_path, tracks)
    c.add_photos(photos)  # camera on India time, no zone tag: read as UTC, 5.5 h after the walk
    assert not c.entries and len(c.left_out) == 3
    problem = c.time_overlap_problem()
    assert "2024-05-01 15:30:00 to 2024-05-01 15:30:20 UTC (read as UTC+00:00)" in problem
    assert "tracks 2024-05-01 10:00:00 to 2024-05-01 10:02:00 UTC" in problem
    assert "EXIF times have no time zone and GPX times are UTC" in problem and "--time-offset" in problem
    c = Collector(tmp_path / "out2" / "images", CollectConfig(time_offset=IST), tracks, progress=False)
    c.add_photos(photos)
    assert len(c.entries) == 3 and not c.left_out


def test_photos_without_gps_and_without_a_track(tmp_path):
    c = _collector(tmp_path)
    c.add_photos([_photo(tmp_path / "in" / "a.jpg", taken=datetime(2024, 5, 1, 15, 30))])
    assert "no GPS track (--gpx) to place it by its time" in _reasons(c)["a.jpg"]


def test_video_frames_are_placed_on_the_track_and_named_uniquely(tmp_path):
    tracks = Tracks([read_gpx(_track(tmp_path / "walk.gpx", seconds=20))])  # the video runs 30 s
    frames = [Image.new("RGB", (64, 48), (i * 4, 80, 120)) for i in range(60)]
    (tmp_path / "in").mkdir()
    video = write_video(tmp_path / "in" / "walk.mp4", frames, fps=2, start=T0)
    clash = _photo(tmp_path / "in" / "walk_00000000ms.jpg", lat=17.4, lon=78.3)
    c = _collector(tmp_path, tracks, max_side=32)
    c.add_photos([clash])
    c.add_video(video)
    frames_out = [e for e in c.entries if e.kind == "frame"]
    # at 1.5 m/s a frame every 2 m is every 1.33 s; with a frame every 0.5 s, every third: 0, 1.5, ... 19.5 s
    assert [round(e.longitude, 7) for e in frames_out] == sorted({round(e.longitude, 7) for e in frames_out})
    assert len(frames_out) == 14
    assert frames_out[0].filename == "walk_00000000ms_2.jpg"  # the photo had the name first
    assert frames_out[1].filename == "walk_00001500ms.jpg"
    assert all(e.angle == pytest.approx(90.0, abs=1) for e in frames_out)  # walking east
    assert frames_out[0].timestamp == "2024-05-01T10:00:00.00Z" and frames_out[0].source.endswith("@ 0.00 s")
    with Image.open(c.images_dir / frames_out[1].filename) as im:
        assert im.format == "JPEG" and im.size == (32, 24)
    assert "19 of 60 frames (20.5 s to 29.5 s) left out: no GPS track covers their time" in _reasons(c)["walk.mp4"]
    assert c.videos == [{"video": str(video), "decoded": 60, "kept": 14, "left_out": 19}]


def test_video_start_time_and_missing_track(tmp_path):
    (tmp_path / "in").mkdir()
    frames = [Image.new("RGB", (32, 32), (i, 0, 0)) for i in range(10)]
    undated = write_video(tmp_path / "in" / "undated.mp4", frames, fps=2)
    tracks = Tracks([read_gpx(_track(tmp_path / "walk.gpx", seconds=30))])
    c = _collector(tmp_path, tracks)
    c.add_video(undated)
    assert "no creation time in its metadata" in _reasons(c)["undated.mp4"] and "--video-start" in _reasons(c)["undated.mp4"]
    c = Collector(tmp_path / "o2", CollectConfig(video_start={"undated.mp4": to_epoch(T0) + 10}), tracks,
                  progress=False)
    c.add_video(undated)
    assert c.entries and c.entries[0].timestamp == "2024-05-01T10:00:10.00Z"
    c = Collector(tmp_path / "o3", CollectConfig(video_start={"": to_epoch(T0)}), None, progress=False)
    c.add_video(undated)
    assert "its frames need a GPS track (--gpx)" in _reasons(c)["undated.mp4"]


def test_unreadable_video_is_listed_and_photos_go_on(tmp_path):
    tracks = Tracks([read_gpx(_track(tmp_path / "walk.gpx", seconds=30))])
    bad = tmp_path / "in" / "bad.mp4"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    c = _collector(tmp_path, tracks)
    c.add_video(bad)
    c.add_photos([_photo(tmp_path / "in" / "ok.jpg", lat=17.4, lon=78.3)])
    assert "not a readable video" in _reasons(c)["bad.mp4"]
    assert [e.filename for e in c.entries] == ["ok.jpg"]


def test_csv_rows_become_entries_and_bad_rows_are_listed(tmp_path):
    images = tmp_path / "data" / "images"
    for name in ("a.jpg", "b.png", "c.jpg"):
        _photo(images / name)
    (images / "c.jpg").write_text("broken")
    _photo(tmp_path / "data" / "secret.jpg")
    csv = tmp_path / "data" / "labels.csv"
    csv.write_text("filename,latitude,longitude,angle,Region_ID\na.jpg,17.4,78.3,10,3\nb.png,17.5,78.4,,1\n"
                   "c.jpg,17.5,78.4,,1\nd.jpg,120.0,78.4,,1\n../secret.jpg,17.5,78.4,,1\ne.jpg,17.5,78.4,,1\n")
    c = _collector(tmp_path)
    c.add_csv(csv)
    assert [(e.filename, e.angle, e.located_by) for e in c.entries] == [("a.jpg", 10.0, "csv"), ("b.png", None, "csv")]
    reasons = {x.source: x.reason for x in c.left_out}
    assert "latitude 120.000000 is out of range" in reasons[f"{csv} line 5 (d.jpg)"]
    assert "outside the images folder" in reasons[f"{csv} line 6 (../secret.jpg)"]
    assert "not found" in reasons[f"{csv} line 7 (e.jpg)"]
    assert f"{csv} line 4 (c.jpg)" in reasons
    planar = Collector(tmp_path / "p", CollectConfig(frame="planar"), progress=False)
    csv.write_text("filename,latitude,longitude\na.jpg,220000.5,143000.25\n")
    planar.add_csv(csv)
    assert [(e.latitude, e.longitude) for e in planar.entries] == [(220000.5, 143000.25)]


def test_bad_csv_is_one_line(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("name,lat\nx,1\n")
    c = _collector(tmp_path)
    c.add_csv(csv)
    assert "missing required column(s) 'filename'" in c.left_out[0].reason


def test_file_names_are_made_safe_and_unique(tmp_path):
    paths = [_photo(tmp_path / "a" / "IMG 1.JPG", lat=1, lon=1), _photo(tmp_path / "b" / "IMG 1.JPG", lat=1, lon=1),
             _photo(tmp_path / "c" / "=cmd|' x.jpg", lat=1, lon=1), _photo(tmp_path / "c" / "-rf.jpg", lat=1, lon=1)]
    c = _collector(tmp_path)
    c.add_photos(paths)
    assert [e.filename for e in c.entries] == ["IMG_1.jpg", "IMG_1_2.jpg", "cmd_x.jpg", "rf.jpg"]


def test_expand_inputs_walks_folders_and_lists_what_it_cannot_use(tmp_path):
    _photo(tmp_path / "in" / "b.jpg")
    _photo(tmp_path / "in" / "sub" / "a.png")
    _photo(tmp_path / "in" / ".hidden" / "x.jpg")
    (tmp_path / "in" / "notes.txt").write_text("x")
    (tmp_path / "in" / "labels.csv").write_text("filename,latitude,longitude\nb.jpg,1,2\n")  # only read when named
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    files, problems = expand_inputs([tmp_path / "in", tmp_path / "in" / "b.jpg", tmp_path / "notes.txt",
                                     tmp_path / "gone.jpg", tmp_path / "empty"])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["in/b.jpg", "in/sub/a.png"]
    assert [(Path(p.source).name, p.reason.split(" (")[0]) for p in problems] == [
        ("notes.txt", "not a photo, video or CSV"), ("gone.jpg", "not found"),
        ("empty", "folder holds no photos or videos")]


def test_staging_refuses_an_existing_out_and_replaces_it_only_at_the_end(tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / "old.txt").write_text("previous collection")
    with pytest.raises(CollectError, match="already exists; choose another --out, or give --overwrite"):
        with staging(out):
            pass
    with pytest.raises(RuntimeError):
        with staging(out, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("half done")
            raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["c"] and (out / "old.txt").is_file()  # nothing lost or left
    with staging(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("complete")
        assert (out / "old.txt").is_file()  # still there while the new one is written
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"] and [p.name for p in tmp_path.iterdir()] == ["c"]
    photos = out / "photos"
    photos.mkdir()
    with pytest.raises(CollectError, match="--overwrite would delete inputs inside it"):
        with staging(out, overwrite=True, protect=[photos]):
            pass
    assert photos.is_dir()
