"""Foreground objects for the synthetic dataset: textured silhouettes with soft alpha.

An object is drawn once from a random generator as a list of coloured parts (ellipses, polygons,
capsules) in units of its own height (y = 0 at the top, 1 at the feet; x = 0 at its centre line),
then rasterised at any pixel height: 3x supersampled, textured per part, shaded from a relief
map (a blurred silhouette, which also gives the slight depth bulge of the pasted billboard), and
box-downsampled so that edges are soft.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

_SS = 3  # supersampling per axis for the silhouette

KINDS = ("person", "child", "animal", "bird", "chair", "table", "lamp", "plant", "car", "bicycle",
         "vase", "robot", "cone", "suitcase", "sofa", "cabinet")
_KIND_P = np.array([0.2, 0.05, 0.13, 0.04, 0.05, 0.04, 0.04, 0.07, 0.07, 0.04, 0.05, 0.05, 0.03, 0.04, 0.05, 0.05])


@dataclass
class Part:
    """One filled shape: polygon points [k, 2] in height units, colour, texture."""

    points: np.ndarray
    color: np.ndarray  # float32 [3]
    pattern: str = "plain"  # plain | stripes | checker | spots | noise
    period: float = 0.05
    angle: float = 0.0


@dataclass
class ObjectSpec:
    """An object independent of resolution."""

    kind: str
    parts: list[Part]
    height_m: float  # real height of the whole silhouette (feet to top)
    thickness_m: float  # how much nearer than its feet the bulgiest point is
    width: float  # silhouette width in height units (for the canvas)
    seed_grid: np.ndarray


@dataclass
class Sprite:
    """A rasterised object."""

    rgba: np.ndarray  # uint8 [h,w,4] premultiplied RGB (PIL mode "RGBa") and alpha
    relief: np.ndarray  # uint8 [h,w] 0 at the rim .. 255 at the bulgiest point
    foot_x: float  # foot point column (the centre of the bottom rows), in pixels
    fill: float  # alpha area / h^2: coverage of the image if h equals the image side
    height_m: float
    thickness_m: float
    kind: str


# ---------------------------------------------------------------------------------- shapes


def _ellipse(cx, cy, rx, ry, angle=0.0, n=40) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(a), ry * np.sin(a)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def _capsule(p0, p1, r0, r1=None, n=12) -> np.ndarray:
    """A limb: a tapered rod with round ends from p0 (radius r0) to p1 (radius r1)."""
    r1 = r0 if r1 is None else r1
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    ang = np.arctan2(d[1], d[0])
    a0 = np.linspace(ang + np.pi / 2, ang + 3 * np.pi / 2, n)
    a1 = np.linspace(ang - np.pi / 2, ang + np.pi / 2, n)
    return np.concatenate([p0 + r0 * np.stack([np.cos(a0), np.sin(a0)], 1),
                           p1 + r1 * np.stack([np.cos(a1), np.sin(a1)], 1)])


def _rect(x0, y0, x1, y1, round_=0.0) -> np.ndarray:
    if round_ <= 0:
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
    r = min(round_, (x1 - x0) / 2, (y1 - y0) / 2)
    pts = []
    for cx, cy, a in ((x1 - r, y0 + r, -np.pi / 2), (x1 - r, y1 - r, 0), (x0 + r, y1 - r, np.pi / 2),
                      (x0 + r, y0 + r, np.pi)):
        t = np.linspace(a, a + np.pi / 2, 6)
        pts.append(np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1))
    return np.concatenate(pts)


def _ring(cx, cy, r, w, n=48) -> list[np.ndarray]:
    """A ring as a band of quads (PIL fills polygons, so a hole needs pieces)."""
    a = np.linspace(0, 2 * np.pi, n + 1)
    out = []
    for k in range(n):
        t0, t1 = a[k], a[k + 1]
        out.append(np.array([[cx + r * np.cos(t0), cy + r * np.sin(t0)], [cx + r * np.cos(t1), cy + r * np.sin(t1)],
                             [cx + (r - w) * np.cos(t1), cy + (r - w) * np.sin(t1)],
                             [cx + (r - w) * np.cos(t0), cy + (r - w) * np.sin(t0)]]))
    return out


def _color(rng, h=None, s=(0.2, 0.9), v=(0.2, 0.95)) -> np.ndarray:
    hue = rng.uniform(0, 1) if h is None else rng.uniform(*h)
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(*s), rng.uniform(*v)), np.float32)


def _skin(rng) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(0.04, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.3, 0.95)),
                    np.float32)


def _pattern(rng, choices=("plain", "plain", "stripes", "checker", "spots", "noise")) -> tuple[str, float, float]:
    return str(rng.choice(choices)), float(rng.uniform(0.02, 0.07)), float(rng.uniform(-0.8, 0.8))


# ---------------------------------------------------------------------------------- kinds


def _person(rng, child: bool) -> tuple[list[Part], float, float]:
    parts: list[Part] = []
    head_r = rng.uniform(0.075, 0.09) if child else rng.uniform(0.058, 0.068)
    shoulder = rng.uniform(0.10, 0.14)
    hip = shoulder * rng.uniform(0.7, 0.95)
    neck_y = 2 * head_r + 0.01
    waist_y = rng.uniform(0.47, 0.52) if not child else 0.52
    skin, hair = _skin(rng), _color(rng, (0.02, 0.12), (0.2, 0.8), (0.05, 0.6))
    shirt, pants = _color(rng), _color(rng, s=(0.1, 0.7), v=(0.1, 0.7))
    shoe = _color(rng, v=(0.05, 0.4))
    pat = _pattern(rng)
    stride = rng.uniform(-0.12, 0.12)
    leg_r = hip * 0.42
    for side, sgn in ((-1, 1), (1, -1)):
        foot = (side * hip * 0.45 + sgn * stride * 0.5, 0.985)
        knee = (side * hip * 0.45 + sgn * stride * 0.25, 0.76)
        top = (side * hip * 0.45, waist_y + 0.02)
        parts.append(Part(_capsule(top, knee, leg_r, leg_r * 0.85), pants))
        parts.append(Part(_capsule(knee, foot, leg_r * 0.85, leg_r * 0.6), pants))
        parts.append(Part(_ellipse(foot[0] + side * 0.02, 0.985, leg_r * 1.3, 0.014), shoe))
    if rng.uniform() < 0.3:  # a dress or coat over the legs
        hem = rng.uniform(0.65, 0.88)
        w = hip * rng.uniform(1.2, 1.7)
        parts.append(Part(np.array([[-shoulder * 0.8, neck_y + 0.05], [shoulder * 0.8, neck_y + 0.05], [w, hem],
                                    [-w, hem]]), shirt, *pat))
    torso = np.array([[-shoulder, neck_y + 0.03], [shoulder, neck_y + 0.03], [shoulder * 0.95, neck_y + 0.08],
                      [hip * 1.05, waist_y + 0.04], [-hip * 1.05, waist_y + 0.04], [-shoulder * 0.95, neck_y + 0.08]])
    parts.append(Part(torso, shirt, *pat))
    parts.append(Part(_capsule((0, neck_y - 0.02), (0, neck_y + 0.04), head_r * 0.45), skin))
    arm_r = shoulder * 0.22
    for side in (-1, 1):
        sh = (side * shoulder * 0.92, neck_y + 0.06)
        a1 = rng.uniform(-0.3, 0.6) if rng.uniform() < 0.8 else rng.uniform(1.5, 2.8)  # hanging or raised
        a2 = a1 + rng.uniform(0.0, 1.2)
        up = 0.17 if not child else 0.14
        el = (sh[0] + side * np.sin(a1) * up, sh[1] + np.cos(a1) * up)
        hand = (el[0] + side * np.sin(a2) * up, el[1] + np.cos(a2) * up)
        parts.append(Part(_capsule(sh, el, arm_r, arm_r * 0.85), shirt, *pat))
        parts.append(Part(_capsule(el, hand, arm_r * 0.85, arm_r * 0.7), skin))
        if side == 1 and rng.uniform() < 0.25:  # a bag in the hand
            bag = _color(rng)
            parts.append(Part(_rect(hand[0] - 0.05, hand[1], hand[0] + 0.05, hand[1] + 0.12, 0.01), bag))
    parts.append(Part(_ellipse(0, head_r + 0.005, head_r * 0.85, head_r), skin))
    hair_style = rng.integers(0, 4)
    if hair_style == 1:  # short hair cap
        parts.append(Part(_ellipse(0, head_r * 0.7, head_r * 0.92, head_r * 0.75), hair))
    elif hair_style == 2:  # long hair behind the shoulders
        parts.insert(0, Part(_rect(-head_r * 1.05, head_r * 0.6, head_r * 1.05, neck_y + 0.12, 0.03), hair))
        parts.append(Part(_ellipse(0, head_r * 0.7, head_r * 0.95, head_r * 0.75), hair))
    elif hair_style == 3:  # a hat
        hat = _color(rng)
        parts.append(Part(_rect(-head_r * 1.3, head_r * 0.45, head_r * 1.3, head_r * 0.62), hat))
        parts.append(Part(_rect(-head_r * 0.8, 0.0, head_r * 0.8, head_r * 0.55, 0.01), hat))
    height = rng.uniform(0.9, 1.35) if child else rng.uniform(1.5, 1.95)
    return parts, height, 0.25


def _animal(rng) -> tuple[list[Part], float, float]:
    parts: list[Part] = []
    body_l = rng.uniform(0.45, 0.8)  # half length of the body in height units
    body_h = rng.uniform(0.16, 0.26)
    body_y = rng.uniform(0.38, 0.5)
    coat = _color(rng, (0.0, 0.14), (0.1, 0.8), (0.15, 0.9))
    pat = _pattern(rng, ("plain", "plain", "spots", "stripes", "noise"))
    leg_r = body_h * rng.uniform(0.18, 0.3)
    for x in (-body_l * 0.7, -body_l * 0.55, body_l * 0.55, body_l * 0.7):
        lean = rng.uniform(-0.08, 0.08)
        parts.append(Part(_capsule((x, body_y), (x + lean, 0.985), leg_r, leg_r * 0.75), coat * 0.85))
    parts.append(Part(_ellipse(0, body_y, body_l, body_h), coat, *pat))
    neck_top = (body_l * rng.uniform(0.95, 1.2), body_y - rng.uniform(0.15, 0.35))
    parts.append(Part(_capsule((body_l * 0.75, body_y - body_h * 0.3), neck_top, body_h * 0.45, body_h * 0.35),
                      coat, *pat))
    head_r = body_h * rng.uniform(0.5, 0.75)
    hx, hy = neck_top[0] + head_r * 0.4, neck_top[1]
    parts.append(Part(_ellipse(hx, hy, head_r * 1.1, head_r * 0.85, rng.uniform(-0.3, 0.3)), coat))
    parts.append(Part(_ellipse(hx + head_r * 0.9, hy + head_r * 0.35, head_r * 0.6, head_r * 0.42), coat * 0.8))
    ear = rng.uniform(0.5, 1.3) * head_r
    parts.append(Part(np.array([[hx - head_r * 0.5, hy - head_r * 0.5], [hx - head_r * 0.1, hy - head_r * 0.6],
                                [hx - head_r * 0.45, hy - head_r * 0.6 - ear]]), coat * 0.7))
    parts.append(Part(_ellipse(hx + head_r * 0.35, hy - head_r * 0.15, head_r * 0.12, head_r * 0.12), coat * 0.15))
    tail_end = (-body_l * rng.uniform(1.1, 1.5), body_y + rng.uniform(-0.3, 0.3))
    parts.append(Part(_capsule((-body_l * 0.9, body_y - body_h * 0.3), tail_end, body_h * 0.12, body_h * 0.06),
                      coat * 0.9))
    return parts, rng.uniform(0.35, 1.7), 0.3


def _bird(rng) -> tuple[list[Part], float, float]:
    body = _color(rng)
    belly = np.clip(body * 0.4 + 0.55, 0, 1)
    leg_top = rng.uniform(0.55, 0.85)
    parts = [Part(_capsule((-0.05, leg_top - 0.05), (-0.05, 0.985), 0.012), _color(rng, (0.05, 0.12))),
             Part(_capsule((0.05, leg_top - 0.05), (0.05, 0.985), 0.012), _color(rng, (0.05, 0.12)))]
    by = leg_top * 0.6
    parts.append(Part(_ellipse(0, by, 0.22, leg_top * 0.42, rng.uniform(-0.4, 0.1)), body, "noise", 0.03))
    parts.append(Part(_ellipse(0.05, by + 0.05, 0.13, leg_top * 0.3), belly))
    hy = by - leg_top * 0.45
    parts.append(Part(_ellipse(0.1, hy, 0.09, 0.09), body))
    parts.append(Part(np.array([[0.17, hy - 0.02], [0.32, hy + 0.01], [0.17, hy + 0.03]]), _color(rng, (0.07, 0.14),
                                                                                                    (0.7, 1), (0.7, 1))))
    parts.append(Part(_ellipse(0.13, hy - 0.02, 0.015, 0.015), np.zeros(3, np.float32)))
    parts.append(Part(np.array([[-0.2, by], [-0.38, by + 0.12], [-0.15, by + 0.15]]), body * 0.7))
    return parts, rng.uniform(0.3, 1.3), 0.2


def _chair(rng) -> tuple[list[Part], float, float]:
    c = _color(rng)
    pat = _pattern(rng, ("plain", "noise", "stripes"))
    seat_y = rng.uniform(0.5, 0.58)
    w = rng.uniform(0.22, 0.3)
    parts = [Part(_rect(-w, seat_y, w, seat_y + 0.06, 0.01), c, *pat)]
    back = rng.uniform(0.0, 0.08)
    parts.append(Part(np.array([[-w + back, 0], [-w + back + 0.07, 0], [-w + 0.07, seat_y], [-w, seat_y]]), c * 0.85))
    if rng.uniform() < 0.5:
        parts.append(Part(_rect(-w + back, 0.02, w * 0.6, 0.25, 0.02), c, *pat))
    for x in (-w + 0.02, w - 0.06, -w * 0.4, w * 0.5):
        parts.append(Part(_rect(x, seat_y + 0.05, x + 0.04, 0.99), c * 0.7))
    return parts, rng.uniform(0.8, 1.05), 0.15


def _table(rng) -> tuple[list[Part], float, float]:
    c = _color(rng, (0.04, 0.12), (0.3, 0.7), (0.25, 0.8))
    w = rng.uniform(0.6, 1.1)
    parts = [Part(_rect(-w, 0.0, w, 0.08, 0.01), c, "noise", 0.05)]
    if rng.uniform() < 0.4:  # a tablecloth
        cloth = _color(rng)
        parts.append(Part(np.array([[-w - 0.03, 0.0], [w + 0.03, 0.0], [w + 0.05, 0.4], [-w - 0.05, 0.4]]), cloth,
                          *_pattern(rng)))
    for x in (-w + 0.04, w - 0.12, -w * 0.5, w * 0.45):
        parts.append(Part(_rect(x, 0.06, x + 0.07, 0.99), c * 0.75))
    return parts, rng.uniform(0.7, 0.85), 0.3


def _lamp(rng) -> tuple[list[Part], float, float]:
    metal, shade = _color(rng, v=(0.1, 0.6)), _color(rng, s=(0.1, 0.5), v=(0.6, 1.0))
    top_w, bot_w, sh = rng.uniform(0.06, 0.1), rng.uniform(0.12, 0.2), rng.uniform(0.15, 0.25)
    parts = [Part(_ellipse(0, 0.975, 0.1, 0.022), metal), Part(_rect(-0.012, sh * 0.5, 0.012, 0.98), metal),
             Part(np.array([[-top_w, 0], [top_w, 0], [bot_w, sh], [-bot_w, sh]]), shade, *_pattern(rng))]
    return parts, rng.uniform(1.3, 1.9), 0.15


def _plant(rng) -> tuple[list[Part], float, float]:
    pot = _color(rng, (0.0, 0.1), (0.3, 0.8), (0.3, 0.8))
    pot_h = rng.uniform(0.2, 0.35)
    pw = rng.uniform(0.12, 0.2)
    parts = []
    green = _color(rng, (0.2, 0.4), (0.4, 0.9), (0.2, 0.7))
    for _ in range(rng.integers(7, 16)):
        ang = rng.uniform(-1.2, 1.2)
        length = rng.uniform(0.25, 0.6) * (1 - pot_h)
        bx, by = rng.uniform(-0.03, 0.03), 1 - pot_h
        cx, cy = bx + np.sin(ang) * length, by - np.cos(ang) * length
        parts.append(Part(_ellipse((bx + cx) / 2, (by + cy) / 2, length / 2, rng.uniform(0.025, 0.07), ang + np.pi / 2),
                          green * rng.uniform(0.7, 1.2), "noise", 0.03))
    parts.append(Part(np.array([[-pw, 1 - pot_h], [pw, 1 - pot_h], [pw * 0.75, 0.99], [-pw * 0.75, 0.99]]), pot,
                      *_pattern(rng, ("plain", "stripes"))))
    return parts, rng.uniform(0.5, 1.6), 0.3


def _car(rng) -> tuple[list[Part], float, float]:
    body = _color(rng, s=(0.3, 0.9), v=(0.3, 0.95))
    glass = np.array([0.15, 0.2, 0.28], np.float32)
    length = rng.uniform(1.1, 1.4)
    hood = rng.uniform(0.2, 0.35)
    parts = [Part(_rect(-length, 0.38, length, 0.85, 0.08), body),
             Part(np.array([[-length * 0.6, 0.4], [-length * 0.45, 0.02], [length * 0.3, 0.02],
                            [length * 0.3 + hood, 0.4]]), body),
             Part(np.array([[-length * 0.52, 0.38], [-length * 0.4, 0.08], [-0.03, 0.08], [-0.03, 0.38]]), glass),
             Part(np.array([[0.03, 0.38], [0.03, 0.08], [length * 0.27, 0.08], [length * 0.27 + hood * 0.8, 0.38]]),
                  glass),
             Part(_rect(length - 0.1, 0.45, length, 0.55, 0.02), np.array([1, 0.95, 0.7], np.float32))]
    for x in (-length * 0.62, length * 0.62):
        parts.append(Part(_ellipse(x, 0.82, 0.17, 0.17), np.array([0.06, 0.06, 0.06], np.float32)))
        parts.append(Part(_ellipse(x, 0.82, 0.08, 0.08), np.array([0.6, 0.6, 0.62], np.float32)))
    return parts, rng.uniform(1.35, 1.7), 0.6


def _bicycle(rng) -> tuple[list[Part], float, float]:
    frame, tyre = _color(rng, s=(0.5, 1), v=(0.3, 0.9)), np.array([0.05, 0.05, 0.05], np.float32)
    r = rng.uniform(0.3, 0.36)
    wx = rng.uniform(0.5, 0.58)
    parts = [Part(p, tyre) for cx in (-wx, wx) for p in _ring(cx, 1 - r, r, 0.035)]
    pts = {"back": (-wx, 1 - r), "front": (wx, 1 - r), "crank": (-0.05, 1 - r + 0.02),
           "seat": (-0.2, 1 - r - 0.42), "head": (wx - 0.1, 1 - r - 0.45)}
    for a, b in (("back", "crank"), ("back", "seat"), ("crank", "seat"), ("crank", "head"), ("seat", "head"),
                 ("head", "front")):
        parts.append(Part(_capsule(pts[a], pts[b], 0.016), frame))
    parts.append(Part(_rect(-0.3, 1 - r - 0.47, -0.1, 1 - r - 0.42, 0.02), tyre))
    parts.append(Part(_capsule((wx - 0.15, 1 - r - 0.55), (wx - 0.02, 1 - r - 0.5), 0.016), tyre))
    return parts, rng.uniform(0.95, 1.1), 0.1


def _vase(rng) -> tuple[list[Part], float, float]:
    ys = np.linspace(0, 1, 9)
    base_w = rng.uniform(0.12, 0.3)
    wiggle = rng.uniform(0.3, 1.4, size=9) * base_w
    wiggle[0] = rng.uniform(0.3, 0.8) * base_w
    wiggle[-1] = base_w * rng.uniform(0.6, 1.0)
    # Smooth profile by interpolation.
    yy = np.linspace(0, 0.99, 40)
    w = np.interp(yy, ys * 0.99, wiggle)
    pts = np.concatenate([np.stack([w, yy], 1), np.stack([-w[::-1], yy[::-1]], 1)])
    return [Part(pts, _color(rng), *_pattern(rng))], rng.uniform(0.3, 1.4), 0.3


def _robot(rng) -> tuple[list[Part], float, float]:
    c, c2 = _color(rng, s=(0.0, 0.5)), _color(rng)
    snowman = rng.uniform() < 0.5
    if snowman:
        r1, r2, r3 = rng.uniform(0.2, 0.26), rng.uniform(0.14, 0.18), rng.uniform(0.09, 0.12)
        y1 = 1 - r1
        y2 = y1 - r1 - r2 * 0.8
        y3 = y2 - r2 - r3 * 0.8
        parts = [Part(_ellipse(0, y1, r1, r1), c), Part(_ellipse(0, y2, r2, r2), c), Part(_ellipse(0, y3, r3, r3), c),
                 Part(_rect(-r3, y3 - r3 - 0.12, r3, y3 - r3 * 0.6), c2)]
        scale = 1.0 / (1 - (y3 - r3 - 0.12))
        for p in parts:
            p.points = np.stack([p.points[:, 0] * scale, 1 - (1 - p.points[:, 1]) * scale], 1)
        return parts, rng.uniform(0.8, 1.7), 0.3
    parts = [Part(_rect(-0.2, 0.25, 0.2, 0.65, 0.03), c, "checker", 0.06),
             Part(_rect(-0.13, 0.03, 0.13, 0.22, 0.03), c),
             Part(_rect(-0.08, 0.1, -0.03, 0.14), c2), Part(_rect(0.03, 0.1, 0.08, 0.14), c2),
             Part(_capsule((-0.1, 0.65), (-0.1, 0.985), 0.045), c * 0.8),
             Part(_capsule((0.1, 0.65), (0.1, 0.985), 0.045), c * 0.8),
             Part(_capsule((-0.22, 0.3), (-0.3, 0.6), 0.035), c * 0.8),
             Part(_capsule((0.22, 0.3), (0.3, 0.6), 0.035), c * 0.8),
             Part(_capsule((0, 0.03), (0, -0.0), 0.01), c2)]
    return parts, rng.uniform(0.8, 1.8), 0.3


def _cone(rng) -> tuple[list[Part], float, float]:
    if rng.uniform() < 0.5:  # traffic cone
        orange, white = np.array([0.95, 0.4, 0.05], np.float32), np.array([0.95, 0.95, 0.95], np.float32)
        return [Part(np.array([[-0.04, 0], [0.04, 0], [0.2, 0.93], [-0.2, 0.93]]), orange),
                Part(np.array([[-0.1, 0.45], [0.1, 0.45], [0.12, 0.58], [-0.12, 0.58]]), white),
                Part(_rect(-0.3, 0.92, 0.3, 0.99), orange * 0.8)], rng.uniform(0.45, 0.8), 0.1
    c = _color(rng)  # hydrant / bollard
    return [Part(_rect(-0.2, 0.15, 0.2, 0.95, 0.05), c), Part(_ellipse(0, 0.15, 0.2, 0.13), c * 0.85),
            Part(_rect(-0.3, 0.35, 0.3, 0.45, 0.02), c * 0.7), Part(_rect(-0.26, 0.93, 0.26, 0.99), c * 0.6)], \
        rng.uniform(0.5, 1.0), 0.15


def _suitcase(rng) -> tuple[list[Part], float, float]:
    c = _color(rng)
    w = rng.uniform(0.3, 0.45)
    parts = [Part(_rect(-w, 0.15, w, 0.95, 0.05), c, *_pattern(rng, ("plain", "stripes", "checker"))),
             Part(_rect(-0.12, 0.0, 0.12, 0.04), c * 0.5), Part(_rect(-0.12, 0.0, -0.09, 0.16), c * 0.5),
             Part(_rect(0.09, 0.0, 0.12, 0.16), c * 0.5)]
    for x in (-w + 0.07, w - 0.07):
        parts.append(Part(_ellipse(x, 0.96, 0.035, 0.035), np.array([0.1, 0.1, 0.1], np.float32)))
    if rng.uniform() < 0.5:  # a box stack instead
        parts = [Part(_rect(-w, 0.45, w, 0.99), c, "noise", 0.05),
                 Part(_rect(-w * 0.8, 0.0, w * 0.7, 0.46), c * 0.85, "noise", 0.05)]
    return parts, rng.uniform(0.5, 1.1), 0.4


def _sofa(rng) -> tuple[list[Part], float, float]:
    c = _color(rng, s=(0.1, 0.7), v=(0.2, 0.8))
    pat = _pattern(rng, ("plain", "plain", "noise", "stripes", "checker"))
    w = rng.uniform(0.9, 1.6)
    arm = rng.uniform(0.12, 0.2)
    parts = [Part(_rect(-w + arm * 0.5, 0.0, w - arm * 0.5, 0.55, 0.06), c * 0.85, *pat),
             Part(_rect(-w + arm, 0.45, w - arm, 0.75, 0.04), c, *pat),
             Part(_rect(-w, 0.28, -w + arm, 0.9, 0.05), c * 0.9, *pat),
             Part(_rect(w - arm, 0.28, w, 0.9, 0.05), c * 0.9, *pat)]
    n_cush = int(rng.integers(1, 4))
    for i in range(n_cush):
        x0 = -w + arm + i * (2 * (w - arm) / n_cush)
        parts.append(Part(_rect(x0 + 0.01, 0.45, x0 + 2 * (w - arm) / n_cush - 0.01, 0.6, 0.03), c * 1.05, *pat))
    leg = _color(rng, (0.05, 0.1), v=(0.1, 0.4))
    for x in (-w + 0.05, w - 0.12):
        parts.append(Part(_rect(x, 0.88, x + 0.07, 0.99), leg))
    return parts, rng.uniform(0.75, 1.0), 0.5


def _cabinet(rng) -> tuple[list[Part], float, float]:
    c = _color(rng, s=(0.0, 0.6), v=(0.3, 0.95))
    w = rng.uniform(0.22, 0.45)
    style = rng.integers(0, 3)
    parts = [Part(_rect(-w, 0.0, w, 0.99, 0.01), c, *_pattern(rng, ("plain", "plain", "noise")))]
    if style == 0:  # wardrobe: two doors and handles
        parts += [Part(_rect(-w + 0.02, 0.02, -0.005, 0.95), c * 0.92), Part(_rect(0.005, 0.02, w - 0.02, 0.95), c * 0.92),
                  Part(_rect(-0.04, 0.45, -0.025, 0.55), c * 0.4), Part(_rect(0.025, 0.45, 0.04, 0.55), c * 0.4)]
    elif style == 1:  # fridge: freezer on top
        parts += [Part(_rect(-w + 0.02, 0.02, w - 0.02, 0.33, 0.01), c * 0.95),
                  Part(_rect(-w + 0.02, 0.35, w - 0.02, 0.97, 0.01), c * 0.95),
                  Part(_rect(w - 0.08, 0.1, w - 0.06, 0.28), c * 0.45), Part(_rect(w - 0.08, 0.4, w - 0.06, 0.6), c * 0.45)]
    else:  # shelf with books
        for y in np.linspace(0.05, 0.8, 4):
            parts.append(Part(_rect(-w + 0.03, y, w - 0.03, y + 0.17), c * 0.35))
            x = -w + 0.04
            while x < w - 0.08:
                bw = rng.uniform(0.025, 0.06)
                bh = rng.uniform(0.1, 0.16)
                parts.append(Part(_rect(x, y + 0.17 - bh, x + bw, y + 0.17), _color(rng)))
                x += bw + 0.005
    return parts, rng.uniform(1.2, 2.1), 0.5


_MAKERS = {"person": lambda r: _person(r, False), "child": lambda r: _person(r, True), "animal": _animal,
           "bird": _bird, "chair": _chair, "table": _table, "lamp": _lamp, "plant": _plant, "car": _car,
           "bicycle": _bicycle, "vase": _vase, "robot": _robot, "cone": _cone, "suitcase": _suitcase,
           "sofa": _sofa, "cabinet": _cabinet}


def random_object(rng: np.random.Generator) -> ObjectSpec:
    """Draw an object: kind, parts, colours and real size."""
    kind = str(rng.choice(KINDS, p=_KIND_P / _KIND_P.sum()))
    parts, height_m, thick = _MAKERS[kind](rng)
    allp = np.concatenate([p.points for p in parts])
    # Normalise so that the silhouette spans y in [0, 1] and is centred on x = 0.
    y0, y1 = allp[:, 1].min(), allp[:, 1].max()
    x0, x1 = allp[:, 0].min(), allp[:, 0].max()
    s = 1.0 / (y1 - y0)
    for p in parts:
        p.points = np.stack([(p.points[:, 0] - (x0 + x1) / 2) * s, (p.points[:, 1] - y0) * s], 1)
        p.period *= s
    width = (x1 - x0) * s
    return ObjectSpec(kind, parts, float(height_m), float(thick * min(height_m, width * height_m)), float(width),
                      rng.uniform(-1, 1, size=(16, 16)).astype(np.float32))


def _texture(part: Part, xs: np.ndarray, ys: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Per-pixel multiplier [k] for the pixels of one part (coordinates in height units)."""
    c, s = np.cos(part.angle), np.sin(part.angle)
    u = (c * xs + s * ys) / part.period
    v = (-s * xs + c * ys) / part.period
    g = grid.shape[0]
    if part.pattern == "stripes":
        return np.where(np.floor(u) % 2 == 0, 1.0, 0.65)
    if part.pattern == "checker":
        return np.where((np.floor(u) + np.floor(v)) % 2 == 0, 1.0, 0.6)
    if part.pattern == "spots":
        cell_u, cell_v = np.floor(u / 2), np.floor(v / 2)
        jitter = grid[cell_v.astype(np.int64) % g, cell_u.astype(np.int64) % g]
        du, dv = u / 2 - cell_u - 0.5 - 0.2 * jitter, v / 2 - cell_v - 0.5
        return np.where(du * du + dv * dv < 0.09 + 0.04 * jitter, 0.45, 1.0)
    if part.pattern == "noise":
        iu, iv = np.floor(u).astype(np.int64) % g, np.floor(v).astype(np.int64) % g
        return 1.0 + 0.15 * grid[iv, iu]
    return np.ones_like(xs)


def rasterize(spec: ObjectSpec, height_px: int) -> Sprite:
    """Draw `spec` `height_px` pixels tall: premultiplied RGBA with soft edges, and its relief."""
    hs = height_px * _SS
    pad = 2 * _SS
    ws = int(np.ceil(spec.width * hs)) + 2 * pad
    hc = hs + 2 * pad
    ids = Image.new("L", (ws, hc), 0)
    draw = ImageDraw.Draw(ids)
    for k, part in enumerate(spec.parts, start=1):
        pts = part.points * hs + np.array([ws / 2, pad])
        draw.polygon([tuple(p) for p in pts], fill=k)
    id_arr = np.asarray(ids)
    inside = id_arr > 0
    yy, xx = np.nonzero(inside)
    rgb = np.zeros((hc, ws, 3), np.float32)
    xs, ys = (xx - ws / 2) / hs, (yy - pad) / hs
    pid = id_arr[yy, xx]
    for k, part in enumerate(spec.parts, start=1):
        sel = pid == k
        if sel.any():
            tex = _texture(part, xs[sel], ys[sel], spec.seed_grid)
            rgb[yy[sel], xx[sel]] = part.color[None, :] * tex[:, None]
    # Relief: a blurred silhouette, 1 in the thick middle, falling to 0 at the rim.
    alpha_img = Image.fromarray((inside * 255).astype(np.uint8))
    relief = np.asarray(alpha_img.filter(ImageFilter.GaussianBlur(max(1.0, 0.06 * hs))), np.float32) / 255.0
    relief = np.where(inside, relief, 0.0)
    # Shade as if lit from the upper left, using the relief as a height field.
    gy, gx = np.gradient(relief * (0.15 * hs))
    norm = np.sqrt(gx * gx + gy * gy + 1)
    lam = np.clip((-gx * -0.5 + -gy * -0.6 + 0.63) / norm, 0, 1)
    shade = 0.55 + 0.6 * lam
    # Dark outlines where parts meet, so limbs in front of the body read as separate.
    edge = np.zeros_like(inside)
    edge[:, 1:] |= id_arr[:, 1:] != id_arr[:, :-1]
    edge[1:, :] |= id_arr[1:, :] != id_arr[:-1, :]
    shade = np.where(edge & inside, shade * 0.75, shade)
    rgb = np.clip(rgb * shade[..., None], 0, 1)

    # Box-downsample premultiplied colour and alpha: anti-aliased, soft edges.
    h, w = hc // _SS, ws // _SS
    a = inside[: h * _SS, : w * _SS].astype(np.float32)
    prem = rgb[: h * _SS, : w * _SS] * a[..., None]
    down = lambda x: x.reshape(h, _SS, w, _SS, *x.shape[2:]).mean(axis=(1, 3))  # noqa: E731
    alpha = down(a)
    prem = down(prem)
    rel = down(relief[: h * _SS, : w * _SS])
    rel = rel / max(float(rel.max()), 1e-6)
    # Crop to the silhouette.
    rows, cols = np.nonzero(alpha > 0.01)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    alpha, prem, rel = alpha[r0:r1, c0:c1], prem[r0:r1, c0:c1], rel[r0:r1, c0:c1]
    bottom = alpha[-max(1, (r1 - r0) // 20):]
    weights = bottom.sum(axis=0)
    foot_x = float((weights * np.arange(len(weights))).sum() / max(weights.sum(), 1e-6)) + 0.5
    rgba = np.concatenate([prem, alpha[..., None]], axis=2)
    return Sprite(
        rgba=np.round(rgba * 255).astype(np.uint8), relief=np.round(rel * 255).astype(np.uint8), foot_x=foot_x,
        fill=float(alpha.sum()) / float(alpha.shape[0] ** 2), height_m=spec.height_m,
        thickness_m=spec.thickness_m, kind=spec.kind,
    )
