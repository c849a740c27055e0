"""Simulated vertebral deformities: a compression fracture of one body and a spondylolisthesis
(a body, and the spine above it, slipped forward over the body below), as smooth warps that
move an image and its instance masks together, so the labels stay exact.

Healthy research scans teach a model rectangles in a gentle curve; clinical scans have
wedge-shaped, biconcave and crushed bodies and slipped levels. These warps make such shapes
from any labelled slice, for training (`SpineAugmenter(p_fracture=..., p_listhesis=...)`) and
for measuring a model on deformed copies of held-out slices (`spine-deform`).

Geometry (pixels, (y, x), the display layout: cranial at the top, anterior on the left): the
spine's local axis u at a body points from the body above to the body below (through the
neighbours' centroids); v is perpendicular to it, pointing anterior. A point p has
coordinates s = (p - c) . u along the spine and t = (p - c) . v across it, about a centre c.
Each deformity is a forward displacement field d(p) (where the tissue at p goes); cv2.remap
needs the inverse, found by fixed-point iteration p = p' - d(p) (d is smooth and its
derivative along its own direction stays below 1, so the iteration contracts).

Masks: bool [H, W, N]. Bodies are told from Matterport crowd/ignore regions by shape: an
ignore region (spine.dataset.unlabelled_regions) fills its bounding box exactly, a body never
does; both are moved by the same warp.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

# A displacement field: (ys, xs) float32 [H, W] pixel coordinates -> (dy, dx) [H, W].
Displacement = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

FRACTURE_KINDS = ("wedge", "biconcave", "crush")
MIN_BODY_PIXELS = 50  # smaller pieces (a body's lateral tip) are not deformed


@dataclass(frozen=True)
class Frame:
    """A local spine frame: centre c (y, x), u along the spine (inferior), v anterior."""

    centre: np.ndarray  # [2] (y, x)
    u: np.ndarray  # [2] unit, pointing inferior
    v: np.ndarray  # [2] unit, pointing anterior (towards -x in the display layout)

    def coords(self, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(s, t) of pixel coordinates (ys, xs) in this frame."""
        dy, dx = ys - self.centre[0], xs - self.centre[1]
        return dy * self.u[0] + dx * self.u[1], dy * self.v[0] + dx * self.v[1]


def body_indices(masks: np.ndarray) -> list[int]:
    """Indices of the masks that are bodies (not ignore boxes, not tiny pieces), ordered from
    the top of the image to the bottom by centroid row."""
    found = []
    for k in range(masks.shape[-1]):
        ys, xs = np.nonzero(masks[:, :, k])
        if ys.size < MIN_BODY_PIXELS:
            continue
        box_area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        if ys.size == box_area:  # an exact box: an ignore region, not a body
            continue
        found.append((float(ys.mean()), k))
    return [k for _, k in sorted(found)]


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([ys.mean(), xs.mean()])


def _frame(masks: np.ndarray, order: list[int], i: int, centre: np.ndarray) -> Frame:
    """The frame at body order[i]: u through its neighbours' centroids (straight down when it
    has none), v = u turned a quarter towards anterior (-x)."""
    above = _centroid(masks[:, :, order[i - 1]]) if i > 0 else None
    below = _centroid(masks[:, :, order[i + 1]]) if i + 1 < len(order) else None
    here = _centroid(masks[:, :, order[i]])
    if above is not None and below is not None:
        axis = below - above
    elif below is not None:
        axis = below - here
    elif above is not None:
        axis = here - above
    else:
        axis = np.array([1.0, 0.0])
    u = axis / max(float(np.linalg.norm(axis)), 1e-6)
    if u[0] < 0:  # a neighbour ordered by row always lies lower, but keep u inferior anyway
        u = -u
    v = np.array([u[1], -u[0]])  # the quarter turn with a negative x component when u ~ down
    if v[1] > 0:
        v = -v
    return Frame(centre=np.asarray(centre, float), u=u, v=v)


def _extent(mask: np.ndarray, frame: Frame) -> tuple[float, float, float, float]:
    """(s_min, s_max, t_min, t_max) of a mask's pixels in a frame (pixel centres)."""
    ys, xs = np.nonzero(mask)
    s, t = frame.coords(ys.astype(float), xs.astype(float))
    return float(s.min()), float(s.max()), float(t.min()), float(t.max())


def _window(t: np.ndarray, t_min: float, t_max: float, width: float) -> np.ndarray:
    """1 over [t_min, t_max], falling off as a Gaussian of the given width outside: confines a
    deformity to the spinal column, so the abdomen and back muscles move little."""
    outside = np.maximum(t_min - t, 0.0) + np.maximum(t - t_max, 0.0)
    return np.exp(-((outside / width) ** 2))


def height_loss(kind: str, t: np.ndarray, t_min: float, t_max: float, grade: float) -> np.ndarray:
    """Fraction of a body's height lost across its depth (t from posterior t_min to anterior
    t_max): wedge loses most in front (grade at the anterior wall, 0 at the posterior wall),
    biconcave in the middle (grade at mid-depth, 0 at both walls), crush everywhere (grade).
    Outside [t_min, t_max] the loss of the nearer wall continues (the warp's window fades it)."""
    r = np.clip((t - t_min) / max(t_max - t_min, 1e-6), 0.0, 1.0)  # 0 posterior .. 1 anterior
    if kind == "wedge":
        return grade * r
    if kind == "biconcave":
        return grade * 4.0 * r * (1.0 - r)
    if kind == "crush":
        return np.full_like(r, grade)
    raise ValueError(f"unknown fracture kind {kind!r}: use one of {FRACTURE_KINDS}")


def fracture_displacement(
    masks: np.ndarray, body: int, kind: str, grade: float, shape: tuple[int, int]
) -> Displacement:
    """Forward displacement of a compression fracture of masks[..., body].

    The body's inferior end plate stays; its superior end plate sinks by the lost height
    D(t) = profile(t) x height (height_loss), and the spine above follows it down. Above the
    body the drop splits into a rigid part D_min = min D (the whole column above moves by it,
    tapering linearly to 0 at the top of the image, so nothing leaves the field of view: the
    column above is stretched along the spine by D_min / its length, a mild aspect change) and
    the rest, D(t) - D_min, which fades out across the disc above over a length L (the disc
    fills a dented end plate; the bodies above keep their shape):
      body  (s0 <= s <= s1): d = D (s1 - s) / (s1 - s0)          (shrinks towards s1),
      above (s < s0):         d = D_min (s - s_top) / (s0 - s_top)
                                  + (D - D_min) max(0, 1 - (s0 - s) / L),
      below (s > s1):         d = 0,
    along u, times a window across the column. L is at least twice the uneven part's size, so
    d's derivative along u stays below 1 (no folding; the inverse iteration converges).
    """
    order = body_indices(masks)
    i = order.index(body)
    frame = _frame(masks, order, i, _centroid(masks[:, :, body]))
    s0, s1, t_min, t_max = _extent(masks[:, :, body], frame)
    height = max(s1 - s0, 1.0)
    h, w = shape
    corners_s, _ = frame.coords(np.array([0.0, 0.0, h - 1.0, h - 1.0]),
                                np.array([0.0, w - 1.0, 0.0, w - 1.0]))  # fmt: skip
    s_top = min(float(corners_s.min()), s0 - 1.0)
    depth = max(t_max - t_min, 1.0)
    profile = height_loss(kind, np.linspace(t_min, t_max, 33), t_min, t_max, grade)
    rigid = float(profile.min()) * height  # D_min
    uneven = (float(profile.max()) * height) - rigid  # max of D - D_min
    disc = 0.3 * height  # the gap to the body above, where there is one
    if i > 0:
        disc = max(s0 - _extent(masks[:, :, order[i - 1]], frame)[1], 1.0)
    fade = max(disc, 2.0 * uneven, 1.0)  # L

    def displacement(ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s, t = frame.coords(ys, xs)
        window = _window(t, t_min, t_max, 0.75 * depth)
        drop = height_loss(kind, t, t_min, t_max, grade) * height  # D(t)
        taper = (s - s_top) / (s0 - s_top)  # 0 at the image top .. 1 at the superior end plate
        above = rigid * taper + (drop - rigid) * np.clip(1.0 - (s0 - s) / fade, 0.0, 1.0)
        d = np.where(s > s1, 0.0, np.where(s >= s0, drop * (s1 - s) / height, above))
        d = (d * window).astype(np.float32)
        return d * np.float32(frame.u[0]), d * np.float32(frame.u[1])

    return displacement


def listhesis_displacement(masks: np.ndarray, upper: int, grade: float) -> Displacement:
    """Forward displacement of a spondylolisthesis: masks[..., upper] and the spine above it
    slide anterior by grade x the depth of the body below (Meyerding grade 1 is up to 0.25).

    The frame sits at the disc between the two bodies (halfway between the upper body's
    lowest and the lower body's highest point along u). The slip is full above the disc,
    none below, and shears the disc in between (a smoothstep over the disc's height plus 2 px
    each side), along v, times a window across the column twice the body depth wide (wider
    than the slip, so the inverse iteration contracts). It moves along v, not out of the field
    of view, so unlike a fracture it needs no taper (nor the image's shape).
    """
    order = body_indices(masks)
    i = order.index(upper)
    if i + 1 >= len(order):
        raise ValueError("a listhesis needs a body below the slipping one")
    lower = order[i + 1]
    start = _frame(masks, order, i, _centroid(masks[:, :, upper]))
    _, upper_bottom, _, _ = _extent(masks[:, :, upper], start)
    lower_top, _, _, _ = _extent(masks[:, :, lower], start)
    centre = start.centre + start.u * (upper_bottom + lower_top) / 2.0
    frame = Frame(centre=centre, u=start.u, v=start.v)
    _, _, l_t0, l_t1 = _extent(masks[:, :, lower], frame)  # the lower body's depth
    half_gap = max((lower_top - upper_bottom) / 2.0, 0.0) + 2.0
    slip = grade * max(l_t1 - l_t0, 1.0)
    depth = max(l_t1 - l_t0, 1.0)

    def displacement(ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s, t = frame.coords(ys, xs)
        r = np.clip((half_gap - s) / (2.0 * half_gap), 0.0, 1.0)  # 1 above .. 0 below
        ramp = r * r * (3.0 - 2.0 * r)  # smoothstep
        d = (slip * ramp * _window(t, l_t0, l_t1, 2.0 * depth)).astype(np.float32)
        return d * np.float32(frame.v[0]), d * np.float32(frame.v[1])

    return displacement


def inverse_maps(shape: tuple[int, int], displacement: Displacement,
                 iterations: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap's (map_x, map_y) float32 [H, W] for a forward displacement field.

    remap samples the source at map(p') for each output pixel p', so the inverse of
    p -> p + d(p) is needed: p = p' - d(p), iterated from p = p'.
    """
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    src_y, src_x = ys.copy(), xs.copy()
    for _ in range(iterations):
        dy, dx = displacement(src_y, src_x)
        src_y, src_x = ys - dy, xs - dx
    return src_x, src_y


def warp_label_map(labels: np.ndarray, maps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """A label map (uint8 or uint16 [H, W], any values) moved by inverse_maps (nearest)."""
    return cv2.remap(labels, maps[0], maps[1], cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # fmt: skip


def warp_image(image: np.ndarray, maps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """An image [H, W] or [H, W, C] moved by inverse_maps (bilinear; edges repeat)."""
    out = cv2.remap(image, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(image.shape)


def apply_displacement(
    image: np.ndarray, masks: np.ndarray, displacement: Displacement
) -> tuple[np.ndarray, np.ndarray]:
    """Warp image [H, W, C] (bilinear) and masks bool [H, W, N] (nearest) by a forward
    displacement field; same shapes and dtypes out."""
    maps = inverse_maps(image.shape[:2], displacement)
    warped = np.zeros_like(masks, dtype=bool)
    for start in range(0, masks.shape[-1], 256):  # cv2 channel limit
        part = np.ascontiguousarray(masks[..., start : start + 256].astype(np.uint8))
        warped[..., start : start + 256] = warp_label_map(part, maps).reshape(
            *image.shape[:2], -1) > 0
    return warp_image(image, maps), warped


@dataclass(frozen=True)
class Deformity:
    """One simulated deformity: kind ("wedge", "biconcave", "crush" or "listhesis"), grade
    (height lost, or slip as a fraction of the lower body's depth) and the mask index of the
    fractured or slipped body."""

    kind: str
    grade: float
    body: int

    def displacement(self, masks: np.ndarray, shape: tuple[int, int]) -> Displacement:
        if self.kind == "listhesis":
            return listhesis_displacement(masks, self.body, self.grade)
        return fracture_displacement(masks, self.body, self.kind, self.grade, shape)


def random_fracture(masks: np.ndarray, rng: np.random.Generator) -> Deformity | None:
    """A compression fracture of one random body: kind wedge, biconcave or crush, grade
    0.2-0.5 of the height (Genant grades 1-3); None when the slice has no body."""
    order = body_indices(masks)
    if not order:
        return None
    body = order[int(rng.integers(len(order)))]
    kind = FRACTURE_KINDS[int(rng.integers(len(FRACTURE_KINDS)))]
    return Deformity(kind=kind, grade=float(rng.uniform(0.2, 0.5)), body=body)


def random_listhesis(masks: np.ndarray, rng: np.random.Generator) -> Deformity | None:
    """A spondylolisthesis at a random pair of adjacent bodies (centroids closer than 1.6
    median spacings, so no missing body lies between them), grade 0.1-0.4 of the lower body's
    depth (Meyerding 1-2); None when no adjacent pair is in view."""
    order = body_indices(masks)
    if len(order) < 2:
        return None
    centres = np.array([_centroid(masks[:, :, k]) for k in order])
    gaps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    pairs = np.flatnonzero(gaps < 1.6 * np.median(gaps))
    if pairs.size == 0:
        return None
    upper = order[int(pairs[int(rng.integers(pairs.size))])]
    return Deformity(kind="listhesis", grade=float(rng.uniform(0.1, 0.4)), body=upper)


def deform(
    image: np.ndarray, masks: np.ndarray, deformity: Deformity | None
) -> tuple[np.ndarray, np.ndarray]:
    """image [H, W, C] and masks bool [H, W, N] with the deformity applied (unchanged for None)."""
    if deformity is None:
        return image, masks
    return apply_displacement(image, masks, deformity.displacement(masks, image.shape[:2]))
