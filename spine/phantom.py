"""Synthetic T2-weighted sagittal lumbar spine volumes with exact vertebral-body label maps.

The anatomy is built in millimetres in the display frame (y down = inferior, z = posterior,
x = lateral/right) from one random centre line with lordosis. Every structure is a signed
distance function (SDF) in that frame, so the label map (vertebral bodies, 1..N from the top)
comes from the very same geometry as the image. Slices are rendered at several sub-slice
positions and averaged (partial volume), then blurred, bias-field modulated, gamma-varied and
given Rician noise. The file gets a random voxel orientation (not always RAS) and a slightly
oblique affine.

CLI: spine-phantom --out DIR [--count 10] [--seed 0] [--size 256] [--label-sacrum]
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
from nibabel import orientations as nio
from scipy.spatial import cKDTree

from mrcnn.atomic import write_bytes_atomic
from spine import cli
from spine.errors import SpineInputError
from spine.folders import LABEL_MARK, label_map_name, levels_name, nifti_name, nifti_stem
from spine.volume import CANONICAL_AXCODES, save_nifti

logger = logging.getLogger(__name__)

# From the top of the chain to the tip of the sacrum (S2..S5 are fused, never labelled).
CHAIN = ["T7", "T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5",
         "S1", "S2", "S3", "S4", "S5"]  # fmt: skip
# Per level: body height, AP depth, lateral width, disc height below it (mm).
_DIMS = {"T": (20.0, 28.0, 34.0, 4.5), "TL": (23.0, 30.5, 39.0, 6.0), "L": (26.5, 34.0, 47.0, 9.5)}
_SACRUM = [(24.0, 34.0, 44.0), (18.0, 27.0, 36.0), (14.0, 21.0, 28.0), (11.0, 15.0, 20.0),
           (9.0, 11.0, 14.0)]  # fmt: skip
AXCODE_PAIRS = (("L", "R"), ("P", "A"), ("I", "S"))
SUBSLICES = 4  # sub-slice samples per slice thickness (partial volume)


def read_levels(label_path: str | Path) -> list[str] | None:
    """Level names of labels 1..N from NAME_levels.json beside NAME_vertebrae.nii.gz (as
    Phantom.save writes it), or None when there is none or it is not valid."""
    label_path = Path(label_path)
    stem = nifti_stem(label_path).removesuffix(LABEL_MARK)
    sidecar = label_path.with_name(levels_name(stem))
    if not sidecar.is_file():
        return None
    try:
        levels = json.loads(sidecar.read_text()).get("levels")
    except (json.JSONDecodeError, AttributeError):
        return None
    return [str(v) for v in levels] if isinstance(levels, list) else None


@dataclass
class Phantom:
    """A synthetic scan: image and label NIfTI (same geometry), level names of labels 1..N."""

    image: nib.Nifti1Image
    labels: nib.Nifti1Image
    levels: list[str]
    name: str = "phantom_000"
    meta: dict = field(default_factory=dict)

    def save(self, out_dir: str | Path) -> list[Path]:
        """Write NAME.nii.gz, NAME_vertebrae.nii.gz and NAME_levels.json (atomically)."""
        out = Path(out_dir)
        paths = [
            save_nifti(self.image, out / nifti_name(self.name)),
            save_nifti(self.labels, out / label_map_name(self.name)),
        ]
        text = json.dumps({"levels": self.levels, **self.meta}, indent=1)
        paths.append(write_bytes_atomic(out / levels_name(self.name), text))
        return paths


@dataclass
class _Body:
    """One vertebra (or sacral segment): centre (y, z) mm, axis angle, half sizes (mm)."""

    name: str
    centre: np.ndarray
    angle: float  # tangent angle from straight down, + toward posterior (radians)
    a: float  # half height (along the spine)
    b: float  # half depth (AP)
    w: float  # half width (lateral)
    concave: float
    marrow: float
    sacral: bool = False


# ----------------------------------------------------------------------------- geometry


def _dir(phi: float) -> np.ndarray:
    return np.array([np.cos(phi), np.sin(phi)])  # (dy, dz): down, posterior


def _build_chain(rng: np.random.Generator, fov: tuple[float, float]) -> tuple[list[_Body], list]:
    """Walk down the spine: bodies and discs with lordosis; returns bodies and disc specs."""
    scale = rng.uniform(0.85, 1.1)
    lordosis = rng.uniform(0.6, 1.4)
    phi, pos = 0.0, np.zeros(2)
    bodies: list[_Body] = []
    discs: list[tuple[np.ndarray, float, float, float, float]] = []
    for name in CHAIN:
        sacral = name.startswith("S")
        if sacral:
            h, d, wd = _SACRUM[int(name[1]) - 1]
            disc = 1.2 if name != "S5" else 0.0
            turn = np.radians(12.0) * lordosis
        else:
            key = "L" if name.startswith("L") else "TL" if name in ("T11", "T12") else "T"
            h, d, wd, disc = _DIMS[key]
            turn = np.radians(-3.0 if key == "T" else 0.0 if key == "TL" else 6.0) * lordosis
        h, d, wd = (v * scale * rng.uniform(0.94, 1.06) for v in (h, d, wd))
        disc *= scale * rng.uniform(0.8, 1.2)
        mid = phi + turn / 2
        centre = pos + _dir(mid) * h / 2
        bodies.append(
            _Body(
                name,
                centre,
                mid,
                h / 2,
                d / 2,
                wd / 2,
                rng.uniform(0.5, 1.8) * scale,
                rng.uniform(0.85, 1.15),
                sacral,
            )  # fmt: skip
        )
        pos = pos + _dir(mid) * h
        phi += turn
        if disc > 0:
            if name == "L5":
                phi += np.radians(rng.uniform(8, 16)) * lordosis  # lumbosacral angle
                disc *= 1.1
            dmid = phi
            health = rng.uniform(0.3, 0.7) if rng.random() < 0.2 else 1.0  # dark = degenerated
            discs.append(
                (pos + _dir(dmid) * disc / 2, dmid, disc / 2, d / 2, float(sacral), health)
            )
            pos = pos + _dir(dmid) * disc
    # Rotate so that T12 -> L5 runs at a random tilt, then place L5 inside the field of view.
    names = [b.name for b in bodies]
    chord = bodies[names.index("L5")].centre - bodies[names.index("T12")].centre
    rot = np.radians(rng.uniform(-4, 10)) - np.arctan2(chord[1], chord[0])
    c, s = np.cos(rot), np.sin(rot)
    mat = np.array([[c, -s], [s, c]])
    anchor = np.array([rng.uniform(0.62, 0.85) * fov[0], rng.uniform(0.40, 0.58) * fov[1]])
    l5 = bodies[names.index("L5")].centre
    for body in bodies:
        body.centre = mat @ (body.centre - l5) + anchor
        body.angle += rot
    discs = [(mat @ (d[0] - l5) + anchor, d[1] + rot, *d[2:]) for d in discs]
    return bodies, discs


def _curve_frame(bodies: list[_Body], yy: np.ndarray, zz: np.ndarray) -> tuple[np.ndarray, ...]:
    """Arc length s and signed normal distance n (+ posterior) of each pixel to the centre line."""
    pts = [bodies[0].centre - _dir(bodies[0].angle) * 400.0]
    pts += [b.centre for b in bodies]
    pts.append(bodies[-1].centre + _dir(bodies[-1].angle) * 400.0)
    dense, normals, arc, total = [], [], [], 0.0
    for p, q in zip(pts[:-1], pts[1:], strict=True):
        seg = q - p
        length = float(np.hypot(*seg))
        k = max(2, int(length / 0.5))
        t = np.linspace(0, 1, k, endpoint=False)[:, None]
        dense.append(p + t * seg)
        tang = seg / max(length, 1e-6)
        normals.append(np.repeat([[-tang[1], tang[0]]], k, axis=0))
        arc.append(total + t[:, 0] * length)
        total += length
    dense_a, normals_a, arc_a = np.concatenate(dense), np.concatenate(normals), np.concatenate(arc)
    grid = np.stack([yy.ravel(), zz.ravel()], axis=1)
    _, idx = cKDTree(dense_a).query(grid)
    rel = grid - dense_a[idx]
    # normal (-t_z, t_y): for a downward tangent it points to +z, i.e. posterior
    n = (rel * normals_a[idx]).sum(axis=1)
    return arc_a[idx].reshape(yy.shape) - 400.0, n.reshape(yy.shape)


def _round_box(
    u: np.ndarray, v: np.ndarray, a: np.ndarray | float, b: float, r: float
) -> np.ndarray:
    """SDF of a rounded rectangle |u| <= a, |v| <= b with corner radius r (mm)."""
    r = min(r, b * 0.9)
    qx = np.abs(u) - (a - r)
    qy = np.abs(v) - (b - r)
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0) - r


def _local(
    yy: np.ndarray, zz: np.ndarray, centre: np.ndarray, angle: float
) -> tuple[np.ndarray, ...]:
    """Pixel coordinates in a frame at centre: u along the spine (down), v posterior (mm)."""
    dy, dz = yy - centre[0], zz - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    return dy * c + dz * s, -dy * s + dz * c


def _body_sdf(body: _Body, u: np.ndarray, v: np.ndarray, x: float) -> np.ndarray | None:
    """SDF of a vertebral body's sagittal section at lateral offset x (None if outside)."""
    if abs(x) >= body.w:
        return None
    f = np.sqrt(1.0 - (x / body.w) ** 2)
    b = body.b * f**0.6  # kidney-shaped axial section: shallower laterally...
    vc = body.b - b  # ...with the posterior wall kept in place
    a = body.a * (0.88 + 0.12 * f)
    if body.sacral:  # trapezoid: taller anteriorly
        a = a * (1.0 - 0.12 * (v - vc) / max(b, 1e-3))
    a_eff = a - body.concave * np.clip(1.0 - ((v - vc) / b) ** 2, 0, 1)  # concave endplates
    return _round_box(u, v - vc, a_eff, b, 2.5)


# ----------------------------------------------------------------------------- rendering


def _tissues(rng: np.random.Generator, fat_suppressed: bool) -> dict[str, float]:
    """Tissue signal levels (arbitrary units, ~0..1) for T2 TSE or a fat-suppressed/water image."""
    base = {
        "fat": 0.14 if fat_suppressed else 0.78, "muscle": 0.22,
        "marrow": 0.5 if fat_suppressed else 0.42, "epidural": 0.2 if fat_suppressed else 0.7,
        "cortex": 0.07, "annulus": 0.3, "nucleus": 0.82, "csf": 1.0, "cord": 0.42,
        "ligament": 0.06, "bowel": 0.4, "vessel": 0.05, "skin": 0.45,
    }  # fmt: skip
    return {k: float(v * rng.uniform(0.85, 1.15)) for k, v in base.items()}


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Zero-mean unit-ish smooth random field [H, W] (bicubic upsampled coarse noise)."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


@dataclass
class _Scene:
    bodies: list[_Body]
    discs: list
    tis: dict
    yy: np.ndarray
    zz: np.ndarray
    s: np.ndarray
    n: np.ndarray
    frames: list  # per body (u, v)
    dframes: list  # per disc (u, v)
    tex: list  # smooth fields
    blobs: list  # bowel ellipsoids (y, z, x, ry, rz, rx, level)
    back: float  # distance centre line -> back skin (mm)
    front: float  # distance centre line -> anterior skin (mm, negative)
    canal: tuple[float, float, float]  # (depth, half width, conus arc length)
    x_aorta: float
    aorta_end: float  # arc length of the aortic bifurcation (mm)
    canal_end: float  # arc length where the sacral canal ends (mm)
    n_torso: np.ndarray  # signed distance to the T12-L5 axis (+ posterior, mm)


def _render_plane(sc: _Scene, x: float) -> tuple[np.ndarray, np.ndarray]:
    """Image [H, W] and body index map (0 none, i+1 body i) of the sagittal plane at x (mm)."""
    t, s, n = sc.tis, sc.s, sc.n
    t1, t2, t3 = sc.tex
    tex = t1 * np.cos(x / 17.0) + t2 * np.sin(x / 17.0)
    img = np.zeros_like(s)
    lateral = 1.0 - 0.15 * (x / 60.0) ** 2
    back = sc.back * lateral + 6.0 * t3
    front = sc.front * lateral + 10.0 * t3
    nt = sc.n_torso  # torso surfaces follow the overall spine axis, not the sacral curve
    torso = (nt < back) & (nt > front)
    img[torso] = t["bowel"] * (1 + 0.35 * tex[torso])
    post = torso & (n > 0)
    img[post] = t["muscle"] * (1 + 0.25 * tex[post] + 0.08 * np.sin(s[post] / 2.3 + 3 * t2[post]))
    fat_b = torso & (nt > back - 12.0 - 8.0 * t1)
    img[fat_b] = t["fat"] * (1 + 0.1 * tex[fat_b])
    fat_f = torso & (nt < front + 15.0 + 6.0 * t2)
    img[fat_f] = t["fat"] * (1 + 0.1 * tex[fat_f])
    skin = torso & ((nt > back - 1.5) | (nt < front + 1.5))
    img[skin] = t["skin"]
    # Bowel / abdominal contents: ellipsoids in front of the spine.
    anterior = torso & (n < -45.0) & ~fat_f
    for y0, z0, x0, ry, rz, rx, level in sc.blobs:
        if abs(x - x0) >= rx:
            continue
        k = np.sqrt(1 - ((x - x0) / rx) ** 2)
        inside = anterior & (((sc.yy - y0) / (ry * k)) ** 2 + ((sc.zz - z0) / (rz * k)) ** 2 < 1)
        img[inside] = level
    # Psoas laterally, aorta (flow void) left of the midline, prevertebral fat.
    pre = torso & (n < -18.0) & (n > -30.0 - 8.0 * t2)
    img[pre] = (t["fat"] * 0.6 + 0.4 * t["muscle"]) * (1 + 0.3 * tex[pre])
    if abs(x) > 18:
        img[torso & (n < -5) & (n > -45)] = t["muscle"] * 1.1
    if abs(x - sc.x_aorta) < 11:
        r = np.sqrt(max(11**2 - (x - sc.x_aorta) ** 2, 0))
        img[torso & (n < -22.0) & (n > -22.0 - 2 * r) & (s < sc.aorta_end)] = t["vessel"]
    # Spinal canal (thecal sac, cord / cauda equina) or, laterally, foramina with fat.
    depth, half_w, conus = sc.canal
    b_mean = float(np.mean([bd.b for bd in sc.bodies[:11]]))
    in_canal = torso & (n > b_mean + 1.0) & (n < b_mean + 1.0 + depth) & (s < sc.canal_end)
    if abs(x) < half_w:
        img[in_canal] = t["csf"]
        img[in_canal & (n > b_mean + depth - 2.0)] = t["epidural"]
        mid = b_mean + 1.0 + depth * 0.45
        cord_r = 4.5 * np.sqrt(max(1 - (x / 6.0) ** 2, 0)) if abs(x) < 6 else 0
        cord = in_canal & (np.abs(n - mid) < cord_r) & (s < conus)
        img[cord] = t["cord"]
        roots = in_canal & (s >= conus) & (np.abs(np.sin((n - mid) * 1.3 + x)) < 0.12)
        img[roots] = t["cord"]
    elif abs(x) < half_w + 10:
        img[in_canal] = t["epidural"] * (1 + 0.1 * tex[in_canal])
    # Posterior elements: lamina + spinous process (midline), articular pillars (laterally).
    for i, bd in enumerate(sc.bodies):
        u, v = sc.frames[i]
        if bd.sacral:
            if bd.name in ("S1", "S2", "S3") and abs(x) < 30:
                back_plate = _round_box(u, v - (bd.b + depth * 0.8), bd.a * 1.05, 4.0, 2.0)
                img[back_plate < 0] = t["marrow"] * 0.9
                img[(back_plate < 0) & (back_plate > -1.5)] = t["cortex"]
            continue
        base_v = bd.b + 1.0 + depth
        parts = []
        if abs(x) < 13:
            parts.append(_round_box(u - bd.a * 0.1, v - base_v - 3.0, bd.a * 0.55, 3.5, 3.4))
        if abs(x) < 4:
            c, s_ = np.cos(0.35), np.sin(0.35)
            uu, vv = u - bd.a * 0.35, v - base_v - 18.0
            parts.append(_round_box(uu * c - vv * s_, uu * s_ + vv * c, 6.5, 14.0, 6.0))
        if 12 <= abs(x) < 26:
            parts.append(
                _round_box(
                    u + bd.a * 0.45, v - (bd.b + depth * 0.5), bd.a * 0.35, depth * 0.55, 3.0
                )
            )
            parts.append(_round_box(u - bd.a * 0.55, v - base_v + 1.0, bd.a * 0.45, 6.0, 3.0))
        for sdf in parts:
            img[sdf < 0] = t["marrow"] * 0.7 * (1 + 0.15 * tex[sdf < 0])
            img[(sdf < 0) & (sdf > -1.5)] = t["cortex"]
    # Discs, then bodies on top (their concave endplates bite into the discs).
    for (_, _, hh, hd, sac, health), (u, v) in zip(sc.discs, sc.dframes, strict=True):
        width = 0.5 * float(np.mean([bd.w for bd in sc.bodies])) + hd * 0.5
        if abs(x) >= width * 1.02:
            continue
        f = np.sqrt(max(1.0 - (x / (width * 1.02)) ** 2, 0.0))
        dsdf = _round_box(u, v - hd * (1 - f**0.6), hh + 2.0, hd * f**0.6 + 1.0, hh + 1.5)
        img[dsdf < 0] = t["annulus"] if not sac else t["marrow"] * 0.6
        if not sac:
            nuc = (u / (hh * 1.2 + 0.5)) ** 2 + ((v - hd * 0.05) / (hd * 0.8 * f + 1e-3)) ** 2 < 1
            nuc &= dsdf < -0.8
            img[nuc] = t["nucleus"] * health * (1 + 0.08 * tex[nuc])
    index = np.zeros(s.shape, np.int16)
    for i, bd in enumerate(sc.bodies):
        u, v = sc.frames[i]
        sdf = _body_sdf(bd, u, v, x)
        if sdf is None:
            continue
        inside = sdf < 0
        img[inside] = t["marrow"] * bd.marrow * (1 + 0.12 * tex[inside] + 0.05 * t3[inside])
        vein = inside & (np.abs(u) < 2.5) & (np.abs(v - bd.b * 0.7) < 3.0) & (abs(x) < 5)
        img[vein] = t["nucleus"] * 0.8
        img[inside & (sdf > -1.4)] = t["cortex"]
        index[inside] = i + 1
    return img, index


# ----------------------------------------------------------------------------- public API


def make_phantom(
    seed: int,
    size: int | tuple[int, int] = 256,
    num_slices: int | None = None,
    fov_mm: float | None = None,
    slice_mm: float | None = None,
    orientation: str | None = None,
    fat_suppressed: bool | None = None,
    label_sacrum: bool = False,
    oblique_deg: float = 4.0,
    noise: float | None = None,
    name: str | None = None,
) -> Phantom:
    """A random but deterministic (per seed) synthetic sagittal lumbar T2 MR volume.

    size: in-plane (H, W) pixels; num_slices, fov_mm, slice_mm, orientation (axis codes such
    as "PIR"), fat_suppressed, noise (Rician sigma relative to tissue) are random if None.
    Labels: 1..N vertebral bodies whose centre lies in the field of view, top to bottom;
    S1 is drawn but labelled only with label_sacrum=True (the real data stop at L5).
    """
    rng = np.random.default_rng(seed)
    h, w = (size, size) if isinstance(size, int) else size
    fov = float(fov_mm or rng.uniform(190.0, 300.0))
    row_mm = fov / h
    col_mm = row_mm * rng.uniform(0.95, 1.05)
    slice_mm = float(slice_mm or rng.choice([3.0, 3.5, 4.0, 4.5, 5.0]))
    num_slices = int(num_slices or rng.integers(13, 21))
    fat_suppressed = bool(rng.random() < 0.35) if fat_suppressed is None else fat_suppressed
    noise = float(noise if noise is not None else rng.uniform(0.03, 0.08))

    bodies, discs = _build_chain(rng, (h * row_mm, w * col_mm))
    yy, zz = np.meshgrid(
        (np.arange(h) + 0.5) * row_mm, (np.arange(w) + 0.5) * col_mm, indexing="ij"
    )
    s, n = _curve_frame(bodies, yy, zz)
    conus = _arc_of(bodies, "L1") + rng.uniform(-8.0, 8.0)  # the cord ends near L1-L2
    cells = max(4, int(fov / 14))
    scene = _Scene(
        bodies=bodies, discs=discs, tis=_tissues(rng, fat_suppressed), yy=yy, zz=zz, s=s, n=n,
        frames=[_local(yy, zz, b.centre, b.angle) for b in bodies],
        dframes=[_local(yy, zz, d[0], d[1]) for d in discs],
        tex=[_smooth_field(rng, (h, w), cells) for _ in range(3)],
        blobs=_bowel(rng, fov, fat_suppressed),
        back=rng.uniform(70, 110), front=-rng.uniform(150, 230),
        canal=(rng.uniform(13, 18), rng.uniform(9, 12), conus), x_aorta=rng.uniform(-25, -8),
        aorta_end=_arc_of(bodies, "L4") - 10.0, canal_end=_arc_of(bodies, "S3"),
        n_torso=_axis_distance(bodies, yy, zz),
    )  # fmt: skip

    x0 = rng.uniform(-0.5, 0.5) * slice_mm
    xs = (np.arange(num_slices) - (num_slices - 1) / 2) * slice_mm + x0
    data = np.zeros((num_slices, h, w), np.float32)
    counts = np.zeros((len(bodies) + 1, num_slices, h, w), np.uint8)
    for k, xc in enumerate(xs):
        for j in range(SUBSLICES):
            xsub = xc + ((j + 0.5) / SUBSLICES - 0.5) * slice_mm
            plane, index = _render_plane(scene, xsub)
            data[k] += plane / SUBSLICES
            for i in np.unique(index[index > 0]):
                counts[i, k] += index == i
    owner = np.argmax(counts, axis=0)  # [S, H, W] body index + 1 (0: none)
    owner[counts.max(axis=0) * 2 < SUBSLICES] = 0  # a voxel is a body if >= half its slab is

    labelled = [
        i for i, b in enumerate(bodies)
        if (not b.sacral or (label_sacrum and b.name == "S1"))
        and 0 <= b.centre[0] < h * row_mm and 0 <= b.centre[1] < w * col_mm
        and (owner == i + 1).any()
    ]  # fmt: skip
    labels = np.zeros_like(owner, dtype=np.uint8)
    for new, i in enumerate(labelled, start=1):
        labels[owner == i + 1] = new
    levels = [bodies[i].name for i in labelled]

    data = _acquire(rng, data, (slice_mm, row_mm, col_mm), noise)
    codes = orientation or ("PIR" if rng.random() < 0.3 else _random_axcodes(rng))
    image, label_img = _to_nifti(data, labels, (slice_mm, row_mm, col_mm), codes, rng, oblique_deg)
    meta = {"seed": seed, "orientation": "".join(nio.aff2axcodes(image.affine)),
            "spacing_mm": [slice_mm, row_mm, col_mm], "fat_suppressed": fat_suppressed}  # fmt: skip
    return Phantom(image, label_img, levels, name or f"phantom_{seed:03d}", meta)


def _arc_of(bodies: list[_Body], name: str) -> float:
    """Approximate arc length of a body's lower end from the first body's centre (mm)."""
    total = 0.0
    for prev, cur in zip(bodies[:-1], bodies[1:], strict=True):
        total += float(np.hypot(*(cur.centre - prev.centre)))
        if cur.name == name:
            return total + cur.a
    return total


def _axis_distance(bodies: list[_Body], yy: np.ndarray, zz: np.ndarray) -> np.ndarray:
    """Signed distance (mm, + posterior) of each pixel to the straight T12 -> L5 axis."""
    names = [b.name for b in bodies]
    top, low = bodies[names.index("T12")].centre, bodies[names.index("L5")].centre
    tang = (low - top) / np.hypot(*(low - top))
    return (yy - top[0]) * -tang[1] + (zz - top[1]) * tang[0]


def _bowel(rng: np.random.Generator, fov: float, fat_suppressed: bool) -> list:
    """Random abdominal ellipsoids (gas dark, fluid bright, content grey)."""
    blobs = []
    for _ in range(int(rng.integers(25, 45))):
        kind = rng.random()
        level = (
            0.03
            if kind < 0.25
            else rng.uniform(0.75, 1.0)
            if kind < 0.45
            else rng.uniform(0.25, 0.6)
        )
        if fat_suppressed and kind >= 0.45:
            level *= 0.8
        centre = (rng.uniform(0, fov), rng.uniform(-0.2, 0.5) * fov, rng.uniform(-60, 60))
        radii = (rng.uniform(6, 25), rng.uniform(6, 25), rng.uniform(10, 40))
        blobs.append((*centre, *radii, float(level)))
    return blobs


def _acquire(
    rng: np.random.Generator, data: np.ndarray, spacing: tuple, noise: float
) -> np.ndarray:
    """Scanner effects on a clean [S, H, W] volume: blur, bias field, gamma, Rician noise."""
    s_n, h, w = data.shape
    sigma = 0.5 / min(spacing[1], spacing[2]) + 0.3
    data = np.stack([cv2.GaussianBlur(p, (0, 0), sigma) for p in data])
    # Smooth multiplicative bias: a low-order field in 3D plus the posterior surface coil.
    ss, rr, cc = np.meshgrid(
        np.linspace(-1, 1, s_n), np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij"
    )
    field = sum(rng.normal(0, 0.18) * np.cos(np.pi * (fa * rr + fb * cc) / 2 + rng.uniform(0, 6.3))
                for fa, fb in ((1, 0), (0, 1), (1, 1), (2, 1), (1, 2)))  # fmt: skip
    field = field + rng.uniform(0.1, 0.45) * cc + 0.1 * rng.normal() * ss**2
    data = data * np.exp(field).astype(np.float32)
    data = np.clip(data, 0, None) ** rng.uniform(0.8, 1.25)
    ref = float(np.percentile(data, 99))
    sigma_n = noise * ref
    n1 = rng.normal(0, sigma_n, data.shape)
    n2 = rng.normal(0, sigma_n, data.shape)
    data = np.sqrt((data + n1) ** 2 + n2**2)
    return (data / float(data.max()) * rng.uniform(700, 3000)).astype(np.float32)


def _random_axcodes(rng: np.random.Generator) -> str:
    """One of the 48 voxel axis orders/flips, as axis codes like 'LPS'."""
    order = rng.permutation(3)
    return "".join(AXCODE_PAIRS[i][int(rng.integers(2))] for i in order)


def _to_nifti(
    data: np.ndarray, labels: np.ndarray, spacing: tuple, codes: str,
    rng: np.random.Generator, oblique_deg: float,
) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:  # fmt: skip
    """Display-layout arrays -> image/label NIfTIs in voxel order `codes` (same affine)."""
    s_n, h, w = data.shape
    sl, row, col = spacing
    # Display voxel (s, r, c) -> RAS mm: s -> +x (right), r -> -z (inferior), c -> -y (posterior).
    canon = np.array([[sl, 0, 0, -sl * (s_n - 1) / 2],
                      [0, 0, -col, col * (w - 1) / 2 + 20.0],
                      [0, -row, 0, row * (h - 1) / 2 - 40.0],
                      [0, 0, 0, 1.0]])  # fmt: skip
    if oblique_deg > 0:
        angles = np.radians(rng.uniform(-oblique_deg, oblique_deg, 3))
        canon = _rotation(angles) @ canon
    ornt = nio.ornt_transform(nio.axcodes2ornt(CANONICAL_AXCODES), nio.axcodes2ornt(tuple(codes)))
    affine = canon @ nio.inv_ornt_aff(ornt, data.shape)
    out = np.round(nio.apply_orientation(data, ornt)).astype(np.int16)
    img = nib.Nifti1Image(np.ascontiguousarray(out), affine)
    img.header.set_xyzt_units("mm", "sec")
    lab = nib.Nifti1Image(
        np.ascontiguousarray(nio.apply_orientation(labels, ornt)).astype(np.uint8), affine
    )
    lab.header.set_xyzt_units("mm", "sec")
    lab.header.set_intent("label")
    for im in (img, lab):
        im.set_qform(affine, code=1)
        im.set_sform(affine, code=1)
    return img, lab


def _rotation(angles: np.ndarray) -> np.ndarray:
    """4x4 rotation about x, y, z by the given angles (radians)."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    out = np.eye(4)
    out[:3, :3] = rz @ ry @ rx
    return out


PROG = "spine-phantom"  # the console script (pyproject.toml [project.scripts])


def build_parser() -> argparse.ArgumentParser:
    """spine-phantom's options; numbers are checked as they are parsed (usage error, exit 2)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", required=True, type=Path,
        help="output folder (NAME.nii.gz, NAME_vertebrae.nii.gz, NAME_levels.json per phantom)",
    )  # fmt: skip
    parser.add_argument(
        "--count", type=cli.positive_int, default=10, help="number of phantoms (default 10)"
    )
    parser.add_argument(
        "--seed", type=cli.non_negative_int, default=0,
        help="seed of the first phantom; phantom k uses seed + k (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--size", type=cli.positive_int, default=256, help="in-plane size in pixels (default 256)"
    )
    parser.add_argument(
        "--label-sacrum", action="store_true",
        help="also label S1 (drawn always, labelled only with this flag)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI: write COUNT phantoms (NAME.nii.gz, NAME_vertebrae.nii.gz, NAME_levels.json).
    Exit 0 when written, 2 on a user error (`spine-phantom: error: ...`, one line)."""
    from tqdm import tqdm

    args = build_parser().parse_args(argv)
    try:
        cli.check_output_folder(args.out)
        seeds = range(args.seed, args.seed + args.count)
        for seed in tqdm(seeds, desc="phantoms", unit="vol", disable=args.no_progress):
            make_phantom(seed, size=args.size, label_sacrum=args.label_sacrum).save(args.out)
    except SpineInputError as exc:
        return cli.fail(PROG, exc)
    except OSError as exc:  # a full disk, a folder made read-only meanwhile
        return cli.fail(PROG, f"cannot write the phantoms to {args.out}: {exc.strerror or exc}")
    print(f"wrote {args.count} phantoms to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
