"""Building a labelled collection from geotagged photos, GPS tracks and walk videos.

`exif` reads (and, for test material, writes) a photo's GPS position, heading and capture time
with Pillow; `tracks` reads GPX tracks with gpxpy and places times on them; `video` samples a
walk video's frames with PyAV; `collection` puts them together into a training set
(`images/`, `labels.csv`, `regions.geojson`, `summary.json`). Importing does no work.
"""
