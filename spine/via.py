"""VGG Image Annotator (VIA) JSON: read every variant, write VIA 2.

Read: VIA 1.x exports (regions as a dict), VIA 2.x exports (regions as a list), VIA 2.x
project files (`_via_img_metadata`), and VIA 3 projects (`file` / `metadata` with `xy` codes).
Shapes: polygon, polyline (closed), rect, circle, ellipse; points are ignored with a warning.
Write: VIA 2 export JSON with one simplified polygon per instance mask.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from skimage import draw, measure

from spine.errors import AnnotationError

logger = logging.getLogger(__name__)

CLASS_ATTRIBUTES = ("vertebra", "name", "level", "label", "class", "type")
# VIA 3 shape codes (xy[0]).
_VIA3_SHAPES = {1: "point", 2: "rect", 3: "circle", 4: "ellipse", 5: "polyline", 6: "polyline",
                7: "polygon", 8: "rect", 9: "circle"}  # fmt: skip


@dataclass
class Region:
    """One annotated shape. params: the VIA shape attributes (pixels, x right, y down)."""

    shape: str
    params: dict[str, Any]
    label: str | None = None


@dataclass
class ViaImage:
    """One image's annotations."""

    filename: str
    regions: list[Region] = field(default_factory=list)
    size: int = -1
    file_attributes: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- reading


def read_via(source: str | Path | dict, attribute: str | None = None) -> list[ViaImage]:
    """A VIA file (path), its parsed dict, or JSON text -> images with their regions.

    attribute: the region attribute holding the class/level name (default: the first of
    vertebra/name/level/label/class/type present). Raises AnnotationError on bad input.
    """
    data = _load_json(source)
    if not isinstance(data, dict):
        raise AnnotationError("The VIA JSON must be an object (dict) at the top level")
    if "_via_img_metadata" in data:
        data = data["_via_img_metadata"]
    elif "file" in data and "metadata" in data:
        return _read_via3(data, attribute)
    images = []
    for key, entry in data.items():
        if not isinstance(entry, dict) or "filename" not in entry:
            raise AnnotationError(
                f"VIA entry {key!r} has no 'filename'; is this a VIA export or project file?"
            )
        raw_regions = entry.get("regions", [])
        if isinstance(raw_regions, dict):  # VIA 1.x: {"0": region, "1": region}
            raw_regions = [raw_regions[k] for k in sorted(raw_regions, key=_int_or_str)]
        if not isinstance(raw_regions, list):
            raise AnnotationError(f"'regions' of {entry['filename']!r} must be a list or dict")
        regions = []
        for raw in raw_regions:
            if not isinstance(raw, dict) or "shape_attributes" not in raw:
                raise AnnotationError(f"A region of {entry['filename']!r} has no shape_attributes")
            shape = dict(raw["shape_attributes"])
            name = str(shape.pop("name", ""))
            region = _make_region(
                name, shape, raw.get("region_attributes", {}), attribute, entry["filename"]
            )
            if region is not None:
                regions.append(region)
        images.append(
            ViaImage(
                str(entry["filename"]),
                regions,
                _as_int(entry.get("size", -1)),
                dict(entry.get("file_attributes", {}) or {}),
            )  # fmt: skip
        )
    return images


def _read_via3(data: dict, attribute: str | None) -> list[ViaImage]:
    """VIA 3 project: files by fid, views listing fids, metadata regions keyed to views."""
    anames = {aid: a.get("aname", aid) for aid, a in data.get("attribute", {}).items()}
    files = data["file"]
    view_file = {vid: v.get("fid_list", [vid])[0] for vid, v in data.get("view", {}).items()}
    images = {fid: ViaImage(str(f.get("fname", fid))) for fid, f in files.items()}
    for mid, meta in data["metadata"].items():
        xy = meta.get("xy", [])
        if meta.get("z") or not xy:
            continue  # temporal segments (video) or file-level metadata
        fid = view_file.get(meta.get("vid"), meta.get("vid"))
        if fid not in images:
            raise AnnotationError(
                f"VIA 3 region {mid!r} refers to unknown view/file {meta.get('vid')!r}"
            )
        code, v = int(xy[0]), [float(t) for t in xy[1:]]
        shape = _VIA3_SHAPES.get(code, "unknown")
        params: dict[str, Any]
        if shape == "rect":
            params = {"x": v[0], "y": v[1], "width": v[2], "height": v[3]}
        elif shape == "circle":
            params = {"cx": v[0], "cy": v[1], "r": v[2]}
        elif shape == "ellipse":
            params = {"cx": v[0], "cy": v[1], "rx": v[2], "ry": v[3], "theta": 0.0}
        elif shape in ("polygon", "polyline"):
            params = {"all_points_x": v[0::2], "all_points_y": v[1::2]}
        else:
            params = {"cx": v[0] if v else 0, "cy": v[1] if len(v) > 1 else 0}
        attrs = {anames.get(k, k): val for k, val in meta.get("av", {}).items()}
        region = _make_region(shape, params, attrs, attribute, images[fid].filename)
        if region is not None:
            images[fid].regions.append(region)
    return list(images.values())


def _make_region(
    name: str, shape: dict, attrs: Any, attribute: str | None, filename: str
) -> Region | None:
    """Validate one shape; None (with a warning) for points and unknown shapes."""
    if name == "point":
        msg = f"{filename}: a point annotation was ignored (only outlines become masks)"
        logger.warning(msg)
        warnings.warn(msg, stacklevel=3)
        return None
    needed = {
        "polygon": ("all_points_x", "all_points_y"), "polyline": ("all_points_x", "all_points_y"),
        "rect": ("x", "y", "width", "height"), "circle": ("cx", "cy", "r"),
        "ellipse": ("cx", "cy", "rx", "ry"),
    }  # fmt: skip
    if name not in needed:
        msg = f"{filename}: unsupported VIA shape {name!r} was ignored"
        logger.warning(msg)
        warnings.warn(msg, stacklevel=3)
        return None
    missing = [k for k in needed[name] if k not in shape]
    if missing:
        raise AnnotationError(f"{filename}: a {name} region lacks {', '.join(missing)}")
    if name in ("polygon", "polyline"):
        xs, ys = shape["all_points_x"], shape["all_points_y"]
        if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
            raise AnnotationError(f"{filename}: a {name} has different numbers of x and y points")
    try:
        for k, val in shape.items():
            if k != "name":
                np.asarray(val, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationError(f"{filename}: a {name} region has non-numeric coordinates") from None
    return Region(name, shape, _class_name(attrs, attribute))


def _class_name(attrs: Any, attribute: str | None) -> str | None:
    """The class/level name from region_attributes (text, dropdown, or checkbox dict)."""
    if not isinstance(attrs, dict):
        return None
    keys = [attribute] if attribute else [k for k in CLASS_ATTRIBUTES if k in attrs]
    for key in keys:
        value = attrs.get(key)
        if isinstance(value, dict):  # checkbox: {"L1": true}
            value = next((k for k, on in value.items() if on), None)
        if value not in (None, ""):
            return str(value)
    return None


def _load_json(source: str | Path | dict) -> Any:
    if isinstance(source, dict):
        return source
    text = str(source)
    if isinstance(source, Path) or not text.lstrip().startswith(("{", "[")):
        path = Path(source)
        if not path.is_file():
            raise AnnotationError(f"VIA file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AnnotationError(f"Cannot read VIA file {path}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"The VIA annotation is not valid JSON ({exc.msg} at line {exc.lineno}); "
            "export it again from VIA (Annotation > Export as JSON)"
        ) from None


def _int_or_str(key: str) -> tuple[int, Any]:
    return (0, int(key)) if str(key).isdigit() else (1, key)


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


# ----------------------------------------------------------------------------- rasterising


def region_to_mask(region: Region, shape: tuple[int, int]) -> np.ndarray:
    """One region -> bool [H, W] mask (pixel centres inside the outline)."""
    h, w = shape
    p = region.params
    if region.shape in ("polygon", "polyline"):
        xs = np.asarray(p["all_points_x"], np.float64)
        ys = np.asarray(p["all_points_y"], np.float64)
        if len(xs) < 3:
            return np.zeros(shape, bool)
        return draw.polygon2mask((h, w), np.stack([ys, xs], axis=1))
    if region.shape == "rect":
        x, y, rw, rh = (float(p[k]) for k in ("x", "y", "width", "height"))
        mask = np.zeros(shape, bool)
        mask[max(0, round(y)) : max(0, round(y + rh)), max(0, round(x)) : max(0, round(x + rw))] = (
            True
        )
        return mask
    cx, cy = float(p["cx"]), float(p["cy"])
    if region.shape == "circle":
        rx = ry = float(p["r"])
        theta = 0.0
    else:
        rx, ry, theta = float(p["rx"]), float(p["ry"]), float(p.get("theta", 0.0) or 0.0)
    if rx <= 0 or ry <= 0:
        return np.zeros(shape, bool)
    # Pixel centres inside the ellipse; theta rotates it clockwise on screen (y down), as VIA.
    yy, xx = np.mgrid[:h, :w]
    dx, dy = xx - cx, yy - cy
    along = dx * np.cos(theta) + dy * np.sin(theta)
    across = -dx * np.sin(theta) + dy * np.cos(theta)
    return (along / rx) ** 2 + (across / ry) ** 2 <= 1.0


def regions_to_masks(regions: list[Region], shape: tuple[int, int]) -> np.ndarray:
    """Regions -> bool [H, W, N] (N = len(regions))."""
    masks = np.zeros((shape[0], shape[1], len(regions)), bool)
    for i, region in enumerate(regions):
        masks[..., i] = region_to_mask(region, shape)
    return masks


# ----------------------------------------------------------------------------- writing


def mask_to_polygon(mask: np.ndarray, tolerance: float = 0.5) -> np.ndarray:
    """bool [H, W] -> [K, (x, y)] outline of its largest component (simplified); [0, 2] if empty."""
    padded = np.pad(np.asarray(mask, bool), 1)
    contours = measure.find_contours(padded.astype(np.float32), 0.5)
    if not contours:
        return np.zeros((0, 2))
    contour = max(contours, key=lambda c: _area(c))
    contour = measure.approximate_polygon(contour, tolerance) if tolerance > 0 else contour
    if len(contour) > 3 and np.allclose(contour[0], contour[-1]):
        contour = contour[:-1]
    return contour[:, ::-1] - 1.0  # (row, col) in padded -> (x, y) in the image


def _area(contour: np.ndarray) -> float:
    y, x = contour[:, 0], contour[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def masks_to_via_entry(
    filename: str,
    masks: np.ndarray,
    labels: list[str] | None = None,
    size: int = -1,
    attribute: str = "vertebra",
    tolerance: float = 0.5,
) -> dict[str, Any]:
    """bool [H, W, N] instance masks -> one VIA 2 image entry with N polygon regions."""
    regions = []
    for i in range(masks.shape[-1]):
        poly = mask_to_polygon(masks[..., i], tolerance)
        if len(poly) < 3:
            continue
        regions.append({
            "shape_attributes": {
                "name": "polygon",
                "all_points_x": [round(float(v), 2) for v in poly[:, 0]],
                "all_points_y": [round(float(v), 2) for v in poly[:, 1]],
            },
            "region_attributes": {attribute: labels[i] if labels else "vertebra"},
        })  # fmt: skip
    return {"filename": filename, "size": int(size), "regions": regions, "file_attributes": {}}


def write_via(entries: list[dict[str, Any]], path: str | Path) -> Path:
    """Write VIA 2 export JSON (keys filename + size, as VIA does), atomically."""
    from mrcnn.atomic import atomic_write

    data = {f"{e['filename']}{e['size']}": e for e in entries}
    text = json.dumps(data, indent=None, separators=(",", ":"))
    return atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
