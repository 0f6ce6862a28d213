"""Modality values (PS3.3 C.11.1.1.2: stored value x Rescale Slope + Rescale Intercept) of the
synthetic images at sample points, read with pydicom: an implementation independent of the
web app's, so the browser test can check what the canvas shows.

Usage: expected.py FILE... → JSON {sop_uid: {series, number, rows, columns, window: [c, w],
photometric, points: [[column, row, value], ...]}} on stdout.
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


if __name__ == "__main__":
    main(sys.argv[1:])
