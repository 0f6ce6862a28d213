"""Modality values (PS3.3 C.11.1.1.2: stored value x Rescale Slope + Rescale Intercept) of the
synthetic images at sample points, read with pydicom: an implementation independent of the
web app's, so the browser test can check what the canvas shows.

Usage: expected.py FILE... → JSON {sop_uid: {series, number, rows, columns, window: [c, w],
photometric, points: [[column, row, value], ...]}} on stdout.

For the viewer tools' test (viewer-tools.test.mjs):
  expected.py --volume OUT FILE...  the slices sorted along their normal (Image Position
      (Patient) projected on Image Orientation's row × column), their modality values written to
      OUT as little-endian int16 (slice, row, column); JSON {shape, sops, spacing: [row, column,
      slice]} on stdout.
  expected.py --roi FILE SHAPE X0 Y0 X1 Y1  numpy's count, mean, population SD, min and max of
      the modality values of the pixels whose centres (column + 0.5, row + 0.5) lie inside the
      rectangle with corners (X0, Y0), (X1, Y1) (SHAPE `rect`, edges included) or the ellipse
      inscribed in it (SHAPE `ellipse`, boundary included).
"""
import json
import sys

import numpy
import pydicom
from pydicom.pixels import apply_modality_lut


# Value ranges to sample inside (Hounsfield units: fat, brain, blood and calcification, bone),
# so that every window preset sees points between its black and white ends.
RANGES = [(-200, 0), (0, 80), (80, 400), (400, 4000)]


def sample_points(values):
    """A 7x7 grid over the image, its centre, and three points in each of RANGES."""
    rows, columns = values.shape
    pts = {(columns // 2, rows // 2)}
    for i in range(7):
        for j in range(7):
            pts.add((int(columns * (i + 0.5) / 7), int(rows * (j + 0.5) / 7)))
    for lo, hi in RANGES:
        inside = numpy.argwhere((values >= lo) & (values < hi))
        for k in (len(inside) // 4, len(inside) // 2, 3 * len(inside) // 4):
            if len(inside):
                r, c = inside[k]
                pts.add((int(c), int(r)))
    return sorted(pts)


def first(v):
    return float(v[0]) if isinstance(v, pydicom.multival.MultiValue) else float(v)


def main(paths):
    out = {}
    for path in paths:
        ds = pydicom.dcmread(path)
        if "PixelData" not in ds or ds.get("SamplesPerPixel", 1) != 1:
            continue
        values = apply_modality_lut(ds.pixel_array, ds)
        rows, columns = int(ds.Rows), int(ds.Columns)
        window = None
        if "WindowCenter" in ds and "WindowWidth" in ds:
            window = [first(ds.WindowCenter), first(ds.WindowWidth)]
        out[ds.SOPInstanceUID] = {
            "series": ds.SeriesInstanceUID,
            "study": ds.StudyInstanceUID,
            "patient_name": str(ds.PatientName),
            "patient_id": ds.PatientID,
            "number": int(ds.get("InstanceNumber", 0)),
            "rows": rows,
            "columns": columns,
            "photometric": ds.PhotometricInterpretation,
            "window": window,
            "spacing": [float(x) for x in ds.PixelSpacing] if "PixelSpacing" in ds else None,
            "points": [[c, r, float(values[r, c])] for c, r in sample_points(values)],
        }
    json.dump(out, sys.stdout)


def volume(out, paths):
    slices = []
    for path in paths:
        ds = pydicom.dcmread(path)
        if "PixelData" not in ds:
            continue
        o = numpy.array([float(x) for x in ds.ImageOrientationPatient])
        normal = numpy.cross(o[:3], o[3:])
        along = float(numpy.dot(normal, [float(x) for x in ds.ImagePositionPatient]))
        slices.append((along, ds))
    slices.sort(key=lambda s: s[0])
    vol = numpy.stack([apply_modality_lut(ds.pixel_array, ds) for _, ds in slices]).astype("<i2")
    vol.tofile(out)
    alongs = [a for a, _ in slices]
    ds0 = slices[0][1]
    json.dump({
        "shape": list(vol.shape),
        "sops": [ds.SOPInstanceUID for _, ds in slices],
        "spacing": [float(ds0.PixelSpacing[0]), float(ds0.PixelSpacing[1]),
                    (alongs[-1] - alongs[0]) / (len(alongs) - 1)],
    }, sys.stdout)


def roi(path, shape, x0, y0, x1, y1):
    ds = pydicom.dcmread(path)
    values = apply_modality_lut(ds.pixel_array, ds).astype(numpy.float64)
    x0, x1 = sorted((float(x0), float(x1)))
    y0, y1 = sorted((float(y0), float(y1)))
    rows, cols = numpy.mgrid[0:values.shape[0], 0:values.shape[1]]
    cx, cy = cols + 0.5, rows + 0.5
    if shape == "rect":
        mask = (cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1)
    else:
        rx, ry = (x1 - x0) / 2, (y1 - y0) / 2
        mask = ((cx - (x0 + rx)) / rx) ** 2 + ((cy - (y0 + ry)) / ry) ** 2 <= 1
    inside = values[mask]
    json.dump({
        "n": int(inside.size),
        "mean": float(inside.mean()),
        "sd": float(inside.std()),
        "min": float(inside.min()),
        "max": float(inside.max()),
    }, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--volume"]:
        volume(sys.argv[2], sys.argv[3:])
    elif sys.argv[1:2] == ["--roi"]:
        roi(*sys.argv[2:8])
    else:
        main(sys.argv[1:])
