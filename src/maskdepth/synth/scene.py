"""Background scenes for the synthetic dataset: rooms, halls, streets and yards, ray cast.

A scene is drawn once from a random generator (its layout, materials and lights, all in metres
and independent of the image size) and then rendered at any size with a pinhole camera by
vectorised numpy ray casting against planes, boxes, vertical cylinders and spheres. The depth
of a pixel is the z-distance of its surface point along the optical axis (what a billboard at
that distance shares over its whole area), exact to the 2x2 supersampling.

World frame: x right, y up, z forward; the floor is y = 0.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

FAR_M = 20.0
"""Depth 1.0 means this distance or farther (the sky); the scenes are laid out to span it."""

_SS = 2  # supersampling per axis: anti-aliased edges and depth that blends like a real sensor's
_EPS = 1e-4


# ----------------------------------------------------------------------------------- noise


def _value_noise(grid: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smooth noise in [-1, 1] at (u, v) measured in grid cells; the grid tiles periodically."""
    g = grid.shape[0]
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    i0, j0 = iu.astype(np.int64) % g, iv.astype(np.int64) % g
    i1, j1 = (i0 + 1) % g, (j0 + 1) % g
    top = grid[j0, i0] * (1 - fu) + grid[j0, i1] * fu
    bottom = grid[j1, i0] * (1 - fu) + grid[j1, i1] * fu
    return top * (1 - fv) + bottom * fv


def _fbm(grid: np.ndarray, u: np.ndarray, v: np.ndarray, octaves: int = 3) -> np.ndarray:
    out = np.zeros_like(u)
    amp, norm = 1.0, 0.0
    for k in range(octaves):
        out += amp * _value_noise(grid, u * 2**k + 17.3 * k, v * 2**k + 5.1 * k)
        norm += amp
        amp *= 0.5
    return out / norm


def _cell_hash(grid: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """A per-cell random value in [-1, 1] (tile or plank tint) from integer cell indices."""
    g = grid.shape[0]
    return grid[(j.astype(np.int64) * 7 + 3) % g, (i.astype(np.int64) * 13 + j.astype(np.int64)) % g]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


# ------------------------------------------------------------------------------- materials


@dataclass
class Material:
    """A procedural surface texture; `albedo(uv, pos)` gives RGB in [0, 1] for surface coords in metres."""

    kind: str
    color: np.ndarray
    color2: np.ndarray
    period: float
    grid: np.ndarray
    variation: float = 0.08
    extra: dict = field(default_factory=dict)

    def albedo(self, uv: np.ndarray, pos: np.ndarray) -> np.ndarray:
        u, v = uv[:, 0], uv[:, 1]
        p = self.period
        noise = _fbm(self.grid, u * 1.7, v * 1.7)
        base = self.color[None, :]
        if self.kind == "plain":
            out = base * (1 + self.variation * noise)[:, None]
        elif self.kind == "tiles":
            cu, cv = np.floor(u / p), np.floor(v / p)
            fu, fv = u / p - cu, v / p - cv
            grout = (np.minimum(fu, 1 - fu) < 0.04) | (np.minimum(fv, 1 - fv) < 0.04)
            tint = 1 + self.variation * _cell_hash(self.grid, cu, cv) + 0.04 * noise
            out = np.where(grout[:, None], self.color2[None, :], base * tint[:, None])
        elif self.kind == "planks":
            row = np.floor(v / p)
            shift = (_cell_hash(self.grid, row, row * 3) + 1) * 2.0
            col = np.floor((u + shift) / (p * 6))
            seam = (np.minimum(v / p - row, 1 - v / p + row) < 0.05) | (
                np.abs((u + shift) / (p * 6) - col) < 0.008
            )
            grain = np.sin(u * 9.0 + 3.0 * _fbm(self.grid, u * 0.6, v * 4.0)) * 0.06
            tint = 1 + self.variation * _cell_hash(self.grid, col, row) + grain
            out = np.where(seam[:, None], base * 0.55, base * tint[:, None])
        elif self.kind == "bricks":
            bh, bw = p, p * 2.2
            row = np.floor(v / bh)
            uu = u / bw + 0.5 * (row % 2)
            col = np.floor(uu)
            mortar = (v / bh - row < 0.12) | (uu - col < 0.05)
            tint = 1 + self.variation * _cell_hash(self.grid, col, row) + 0.05 * noise
            out = np.where(mortar[:, None], self.color2[None, :], base * tint[:, None])
        elif self.kind == "stripes":
            on = (u / p) % 1.0 < self.extra.get("duty", 0.5)
            out = np.where(on[:, None], base, self.color2[None, :]) * (1 + 0.04 * noise)[:, None]
        elif self.kind == "checker":
            on = (np.floor(u / p) + np.floor(v / p)) % 2 == 0
            out = np.where(on[:, None], base, self.color2[None, :]) * (1 + 0.05 * noise)[:, None]
        elif self.kind == "facade":
            # Windows on a grid of storeys; u runs along the face, v up from the ground.
            storey, bay = self.extra["storey"], self.extra["bay"]
            fu, fv = (u / bay) % 1.0, (v / storey) % 1.0
            window = (np.abs(fu - 0.5) < self.extra["win_w"] / 2) & (fv > 0.3) & (fv < 0.85)
            window &= v > self.extra.get("ground", 0.0)
            lit = _cell_hash(self.grid, np.floor(u / bay), np.floor(v / storey)) > 0.55
            glass = np.where(lit[:, None], self.extra["lit"][None, :], self.color2[None, :])
            wall = base * (1 + self.variation * noise)[:, None]
            out = np.where(window[:, None], glass * (1 + 0.1 * noise)[:, None], wall)
        elif self.kind == "road":
            # Asphalt with a dashed centre line at x = extra["centre"]; uv are world (x, z).
            out = base * (1 + self.variation * noise)[:, None]
            line = (np.abs(u - self.extra["centre"]) < 0.07) & ((v % 6.0) < 3.0)
            out = np.where(line[:, None], self.color2[None, :], out)
        else:  # pragma: no cover - kinds are fixed in this module
            raise ValueError(self.kind)
        return np.clip(out, 0.0, 1.0)


def _random_material(rng: np.random.Generator, kind: str, role: str) -> Material:
    """A material of `kind` with colours that suit its role (floor, wall, ground, ...)."""
    grid = rng.uniform(-1, 1, size=(32, 32)).astype(np.float32)
    hue = rng.uniform(0, 1)
    if role == "floor":
        if kind == "planks":
            color = _hsv(rng.uniform(0.05, 0.11), rng.uniform(0.35, 0.7), rng.uniform(0.35, 0.8))
        else:
            color = _hsv(hue, rng.uniform(0.0, 0.35), rng.uniform(0.35, 0.9))
    elif role in ("wall", "facade"):
        color = _hsv(hue, rng.uniform(0.05, 0.45), rng.uniform(0.5, 0.95))
    elif role == "ground":
        color = _hsv(rng.uniform(0.0, 0.12), rng.uniform(0.0, 0.15), rng.uniform(0.25, 0.5))
    elif role == "grass":
        color = _hsv(rng.uniform(0.2, 0.33), rng.uniform(0.4, 0.75), rng.uniform(0.3, 0.6))
    else:  # objects: any colour
        color = _hsv(hue, rng.uniform(0.1, 0.8), rng.uniform(0.25, 0.9))
    color2 = np.clip(color * rng.uniform(0.45, 0.8) + rng.uniform(-0.05, 0.1), 0, 1).astype(np.float32)
    extra: dict = {}
    period = {"tiles": rng.uniform(0.3, 0.8), "planks": rng.uniform(0.12, 0.25),
              "bricks": rng.uniform(0.07, 0.12), "stripes": rng.uniform(0.08, 0.4),
              "checker": rng.uniform(0.3, 0.6)}.get(kind, 1.0)
    if kind == "tiles":
        color2 = np.clip(color * 0.6 + 0.15, 0, 1).astype(np.float32)
    if kind == "bricks" and role != "floor":
        color = _hsv(rng.uniform(0.0, 0.08), rng.uniform(0.4, 0.7), rng.uniform(0.4, 0.75))
        color2 = _hsv(0.1, 0.1, rng.uniform(0.6, 0.85))
    if kind == "stripes":
        extra["duty"] = rng.uniform(0.3, 0.7)
        color2 = np.clip(color * rng.uniform(0.75, 0.92), 0, 1).astype(np.float32)
    if kind == "facade":
        extra = {"storey": rng.uniform(2.8, 3.6), "bay": rng.uniform(2.0, 3.5),
                 "win_w": rng.uniform(0.3, 0.6), "ground": rng.uniform(0.0, 3.5),
                 "lit": _hsv(rng.uniform(0.1, 0.15), 0.4, 0.95)}
        color2 = _hsv(rng.uniform(0.55, 0.65), rng.uniform(0.1, 0.4), rng.uniform(0.15, 0.4))
    if kind == "road":
        extra["centre"] = 0.0
        color2 = _hsv(0.14, 0.8, 0.9) if rng.uniform() < 0.4 else _hsv(0.0, 0.0, 0.9)  # yellow or white
    return Material(kind, color.astype(np.float32), color2.astype(np.float32), float(period), grid,
                    float(rng.uniform(0.05, 0.15)), extra)


# ------------------------------------------------------------------------------ primitives


@dataclass
class _Prim:
    """A solid: `shape` in {plane, box, cylinder, sphere}; `top` is the material of upward faces."""

    shape: str
    mat: Material
    top: Material | None = None
    center: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    half: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))  # box half sizes
    yaw: float = 0.0  # box rotation about y
    normal: np.ndarray = field(default_factory=lambda: np.array([0, 1, 0], np.float32))  # plane
    radius: float = 0.0
    height: float = 0.0  # cylinder: from center[1] up to center[1] + height
    casts_shadow: bool = True

    def intersect(self, o: np.ndarray, d: np.ndarray):
        """Hits of rays o + t d (o [1,3] or [N,3], d [N,3]) on this solid.

        Returns (idx [M], t [M], normal [M,3], uv [M,2]): the rays that pass near the solid
        (all of them for a plane), their hit distance (inf for a miss), unit normal and surface
        coordinates in metres.
        """
        hit = getattr(self, "_hit_" + self.shape)
        if self.shape == "plane":
            return (np.arange(len(d)), *hit(o, d))
        # Bounding-sphere cull: only rays passing within `reach` of the centre can hit.
        centre, reach = self._bounds()
        oc = centre[None, :] - o
        b = np.einsum("ij,ij->i", d, oc) if len(o) > 1 else d @ oc[0]
        dd = np.einsum("ij,ij->i", d, d)
        occ = np.einsum("ij,ij->i", oc, oc) if len(o) > 1 else np.full(len(d), oc[0] @ oc[0], np.float32)
        near = (occ - b * b / dd <= reach * reach) & ((b > 0) | (occ <= reach * reach))
        idx = np.flatnonzero(near)
        if len(idx) == 0:
            return idx, np.zeros(0, np.float32), np.zeros((0, 3), np.float32), np.zeros((0, 2), np.float32)
        return (idx, *hit(o if len(o) == 1 else o[idx], d[idx]))

    def _bounds(self) -> tuple[np.ndarray, float]:
        if self.shape == "box":
            return self.center, float(np.linalg.norm(self.half)) + 1e-3
        if self.shape == "cylinder":
            c = self.center + np.array([0, self.height / 2, 0], np.float32)
            return c, float(np.hypot(self.radius, self.height / 2)) + 1e-3
        return self.center, self.radius + 1e-3

    def _hit_plane(self, o, d):
        n = self.normal
        denom = d @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((self.center - o) @ n) / denom
        t = np.where((np.abs(denom) > 1e-9) & (t > _EPS), t, np.inf)
        p = o + t[:, None] * d
        # Surface coordinates: the two world axes in the plane (floor: x, z; walls: along, y).
        if abs(n[1]) > 0.5:
            uv = p[:, [0, 2]]
        elif abs(n[0]) > 0.5:
            uv = p[:, [2, 1]]
        else:
            uv = p[:, [0, 1]]
        # Face the viewer: a wall seen from either side is lit on the side we see.
        normal = np.where((denom > 0)[:, None], -n, n)
        return t, normal, np.nan_to_num(uv, posinf=0.0, neginf=0.0)

    def _rot(self):
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32)  # local -> world

    def _hit_box(self, o, d):
        r = self._rot()
        lo = (o - self.center) @ r  # world -> local is r^T, applied on rows as x @ r
        ld = d @ r
        ld = np.where(np.abs(ld) < 1e-9, 1e-9, ld)
        inv = 1.0 / ld
        t1 = (-self.half - lo) * inv
        t2 = (self.half - lo) * inv
        tn, tf = np.minimum(t1, t2), np.maximum(t1, t2)
        axis = np.argmax(tn, axis=1)
        tnear = np.max(tn, axis=1)
        tfar = np.min(tf, axis=1)
        hit = (tnear <= tfar) & (tnear > _EPS)
        t = np.where(hit, tnear, np.inf)
        rows = np.arange(len(ld))
        nl = np.zeros_like(ld)
        nl[rows, axis] = -np.sign(ld[rows, axis])
        p = lo + np.where(hit, tnear, 0.0)[:, None] * ld + self.half
        uv = np.where((axis == 0)[:, None], p[:, [2, 1]], np.where((axis == 1)[:, None], p[:, [0, 2]], p[:, [0, 1]]))
        return t, nl @ r.T, uv

    def _hit_cylinder(self, o, d):
        cx, y0, cz = self.center
        ox, oz = o[..., 0] - cx, o[..., 2] - cz
        dx, dz = d[:, 0], d[:, 2]
        a = np.maximum(dx * dx + dz * dz, 1e-12)
        b = 2 * (ox * dx + oz * dz)
        c = ox * ox + oz * oz - self.radius**2
        disc = b * b - 4 * a * c
        sq = np.sqrt(np.maximum(disc, 0))
        t = (-b - sq) / (2 * a)
        y = o[..., 1] + t * d[:, 1]
        side = (disc > 0) & (t > _EPS) & (y >= y0) & (y <= y0 + self.height)
        t_side = np.where(side, t, np.inf)
        # Top cap.
        with np.errstate(divide="ignore", invalid="ignore"):
            tc = (y0 + self.height - o[..., 1]) / d[:, 1]
        px, pz = ox + tc * dx, oz + tc * dz
        cap = (tc > _EPS) & (px * px + pz * pz <= self.radius**2) & (d[:, 1] < 0)
        t_cap = np.where(cap, tc, np.inf)
        use_cap = t_cap < t_side
        t = np.minimum(t_side, t_cap)
        hx, hz = ox + np.where(np.isfinite(t), t, 0) * dx, oz + np.where(np.isfinite(t), t, 0) * dz
        n_side = np.stack([hx, np.zeros_like(hx), hz], axis=1) / self.radius
        n = np.where(use_cap[:, None], np.array([0, 1, 0], np.float32), n_side)
        ang = np.arctan2(hz, hx) * self.radius
        uv = np.where(use_cap[:, None], np.stack([hx, hz], 1), np.stack([ang, np.nan_to_num(y - y0)], 1))
        return t, n, uv

    def _hit_sphere(self, o, d):
        oc = o - self.center
        a = np.sum(d * d, axis=1)
        b = 2 * np.sum(oc * d, axis=1)
        c = np.sum(oc * oc, axis=-1) - self.radius**2
        disc = b * b - 4 * a * c
        t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
        hit = (disc > 0) & (t > _EPS)
        t = np.where(hit, t, np.inf)
        p = oc + np.where(hit, t, 0)[:, None] * d
        n = p / self.radius
        uv = np.stack([np.arctan2(n[:, 2], n[:, 0]) * self.radius, p[:, 1]], 1)
        return t, n, uv


# ------------------------------------------------------------------------------- the scene


@dataclass
class SceneSpec:
    """Everything about a background except its resolution."""

    kind: str
    prims: list[_Prim]
    cam_pos: np.ndarray
    yaw: float
    pitch: float
    hfov: float
    light_pos: np.ndarray | None  # point light (rooms), or None
    sun_dir: np.ndarray | None  # unit vector towards the sun (outdoors), or None
    light_color: np.ndarray
    ambient: float
    sky: tuple[np.ndarray, np.ndarray] | None  # (horizon, zenith) colours
    haze: float  # outdoor aerial perspective per metre
    sky_grid: np.ndarray


@dataclass
class Scene:
    """A rendered background: image, depth and where objects may stand."""

    rgb: np.ndarray  # float32 [S,S,3] in [0,1]
    depth_m: np.ndarray  # float32 [S,S] z-distance in metres (FAR_M for the sky)
    floor: np.ndarray  # bool [S,S] pixels that show the floor (or ground) only
    focal: float  # focal length in pixels
    light: np.ndarray  # float32 [3] tint for objects pasted into the scene
    kind: str


def _box(mat, x, z, w, h, dep, yaw=0.0, y0=0.0, top=None) -> _Prim:
    return _Prim("box", mat, top=top, center=np.array([x, y0 + h / 2, z], np.float32),
                 half=np.array([w / 2, h / 2, dep / 2], np.float32), yaw=float(yaw))


def _plane(mat, point, normal) -> _Prim:
    return _Prim("plane", mat, center=np.asarray(point, np.float32), normal=np.asarray(normal, np.float32),
                 casts_shadow=False)


def _furniture(rng, x_range, z_range, n, max_h, prims, avoid_x=None) -> None:
    """Boxes, cylinders and spheres standing on the floor inside the given area."""
    kinds = ["plain", "plain", "planks", "checker", "stripes"]
    for _ in range(n):
        mat = _random_material(rng, str(rng.choice(kinds)), "object")
        x = rng.uniform(*x_range)
        z = rng.uniform(*z_range)
        if avoid_x is not None and abs(x - avoid_x) < 0.8 and z < z_range[0] + 3:
            x += np.sign(x - avoid_x + 1e-3) * 1.2  # keep the view down the middle open
        shape = rng.choice(["box", "box", "box", "cylinder", "sphere", "table"], p=[0.3, 0.2, 0.15, 0.15, 0.1, 0.1])
        if shape == "box":
            w, h, dep = rng.uniform(0.4, 2.0), rng.uniform(0.3, max_h), rng.uniform(0.4, 1.5)
            prims.append(_box(mat, x, z, w, h, dep, yaw=rng.uniform(-0.7, 0.7)))
        elif shape == "cylinder":
            r = rng.uniform(0.15, 0.5)
            prims.append(_Prim("cylinder", mat, center=np.array([x, 0, z], np.float32), radius=r,
                               height=rng.uniform(0.4, max_h)))
        elif shape == "sphere":
            r = rng.uniform(0.2, 0.6)
            prims.append(_Prim("sphere", mat, center=np.array([x, r, z], np.float32), radius=r))
        else:  # a table: a top and four legs
            w, dep, h = rng.uniform(0.8, 1.8), rng.uniform(0.6, 1.0), rng.uniform(0.7, 0.8)
            yaw = rng.uniform(-0.5, 0.5)
            prims.append(_box(mat, x, z, w, 0.05, dep, yaw=yaw, y0=h - 0.05))
            c, s = np.cos(yaw), np.sin(yaw)
            for sx in (-1, 1):
                for sz in (-1, 1):
                    lx, lz = sx * (w / 2 - 0.06), sz * (dep / 2 - 0.06)
                    prims.append(_box(mat, x + c * lx + s * lz, z - s * lx + c * lz, 0.06, h - 0.05, 0.06, yaw=yaw))


def _room(rng: np.random.Generator, hall: bool) -> SceneSpec:
    if hall:
        width, depth, height = rng.uniform(10, 24), rng.uniform(14, 30), rng.uniform(4, 9)
    else:
        width, depth, height = rng.uniform(4, 10), rng.uniform(5, 14), rng.uniform(2.5, 3.6)
    floor_mat = _random_material(rng, str(rng.choice(["tiles", "planks", "plain", "checker"])), "floor")
    wall_kinds = ["plain", "plain", "stripes", "bricks", "tiles"]
    walls = [_random_material(rng, str(rng.choice(wall_kinds)), "wall")]
    walls.append(walls[0] if rng.uniform() < 0.6 else _random_material(rng, str(rng.choice(wall_kinds)), "wall"))
    ceil_mat = _random_material(rng, "plain", "wall")
    ceil_mat.color = np.clip(ceil_mat.color * 0.3 + 0.65, 0, 1).astype(np.float32)
    x0 = -rng.uniform(0.3, 0.7) * width
    x1 = x0 + width
    prims = [
        _plane(floor_mat, (0, 0, 0), (0, 1, 0)),
        _plane(ceil_mat, (0, height, 0), (0, -1, 0)),
        _plane(walls[1], (x0, 0, 0), (1, 0, 0)),
        _plane(walls[1], (x1, 0, 0), (-1, 0, 0)),
        _plane(walls[0], (0, 0, depth), (0, 0, -1)),
        _plane(walls[0], (0, 0, -0.5), (0, 0, 1)),
    ]
    # Skirting, a door and windows as thin boxes on the walls.
    trim = _random_material(rng, "plain", "object")
    prims.append(_box(trim, (x0 + x1) / 2, depth - 0.01, width, 0.1, 0.04))
    for _ in range(rng.integers(1, 4)):
        on_back = rng.uniform() < 0.5
        is_door = rng.uniform() < 0.4
        w = rng.uniform(0.8, 1.0) if is_door else rng.uniform(0.8, 2.2)
        h = rng.uniform(1.9, 2.2) if is_door else rng.uniform(0.8, 1.5)
        y0 = 0.0 if is_door else rng.uniform(0.8, max(0.9, height - h - 0.3))
        mat = _random_material(rng, "planks" if is_door else "plain", "object")
        if not is_door:
            mat.color = _hsv(rng.uniform(0.5, 0.62), rng.uniform(0.1, 0.4), rng.uniform(0.8, 1.0))
            mat.variation = 0.15
        if on_back:
            lo, hi = x0 + w, x1 - w
            if hi < lo:  # a room narrower than two window widths: centre it (these draws used to
                lo = hi = (x0 + x1) / 2  # fail; every archive that could be made stays byte-identical)
            prims.append(_box(mat, rng.uniform(lo, hi), depth - 0.02, w, h, 0.05, y0=y0))
        else:
            side = x0 + 0.02 if rng.uniform() < 0.5 else x1 - 0.02
            prims.append(_box(mat, side, rng.uniform(2.0, depth - 1.0), 0.05, h, w, y0=y0))
    n = rng.integers(2, 7) if not hall else rng.integers(4, 10)
    _furniture(rng, (x0 + 0.6, x1 - 0.6), (2.0, depth - 0.6), n, 2.2 if not hall else 3.0, prims, avoid_x=0.0)
    if hall and rng.uniform() < 0.7:  # a row of columns each side
        col_mat = _random_material(rng, "plain", "wall")
        spacing = rng.uniform(3.5, 6.0)
        for z in np.arange(rng.uniform(3, 6), depth - 1, spacing):
            for x in (x0 + rng.uniform(1.5, 3), x1 - rng.uniform(1.5, 3)):
                prims.append(_Prim("cylinder", col_mat, center=np.array([x, 0, z], np.float32),
                                   radius=rng.uniform(0.25, 0.45), height=height))
    cam_h = rng.uniform(0.8, 1.7)
    light = np.array([rng.uniform(x0 + 1, x1 - 1), height - 0.2, rng.uniform(1.5, depth * 0.7)], np.float32)
    return SceneSpec(
        kind="hall" if hall else "room", prims=prims,
        cam_pos=np.array([rng.uniform(-0.3, 0.3), cam_h, rng.uniform(-0.3, 0.2)], np.float32),
        yaw=float(rng.uniform(-0.25, 0.25)), pitch=float(rng.uniform(0.18, 0.5)),
        hfov=float(rng.uniform(np.radians(48), np.radians(70))), light_pos=light, sun_dir=None,
        light_color=_hsv(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.3), 1.0),
        ambient=float(rng.uniform(0.3, 0.5)), sky=None, haze=0.0,
        sky_grid=rng.uniform(-1, 1, size=(32, 32)).astype(np.float32),
    )


def _outdoor(rng: np.random.Generator, street: bool) -> SceneSpec:
    prims: list[_Prim] = []
    ground = _random_material(rng, "road" if street else str(rng.choice(["plain", "tiles", "checker"])),
                              "ground" if street or rng.uniform() < 0.5 else "grass")
    prims.append(_plane(ground, (0, 0, 0), (0, 1, 0)))
    half_road = rng.uniform(3.0, 6.0) if street else rng.uniform(6.0, 14.0)
    walk = rng.uniform(1.5, 3.5)
    if street:
        pave = _random_material(rng, "tiles", "floor")
        kerb_h = rng.uniform(0.1, 0.18)
        for sx in (-1, 1):
            prims.append(_box(pave, sx * (half_road + walk / 2), 40.0, walk, kerb_h, 80.0))
    # Buildings along both sides (streets) or scattered at the back (yards).
    for sx in (-1, 1):
        z = rng.uniform(-5, 2)
        while z < (45 if street else 30):
            length = rng.uniform(6, 18)
            h = rng.uniform(5, 25)
            setback = rng.uniform(0, 1.5)
            facade = _random_material(rng, str(rng.choice(["facade", "facade", "bricks"])), "facade")
            if facade.kind == "bricks":
                facade.extra = {}
            roof = _random_material(rng, "plain", "ground")
            x_face = sx * (half_road + (walk if street else 0) + setback)
            if street or rng.uniform() < 0.35:
                dep = rng.uniform(8, 15)
                prims.append(_box(facade, x_face + sx * dep / 2, z + length / 2, dep, h, length, top=roof))
            z += length + (rng.uniform(0, 4) if rng.uniform() < 0.3 else 0.0)
    if not street or rng.uniform() < 0.6:  # a building across the far end
        facade = _random_material(rng, "facade", "facade")
        far = rng.uniform(12, 32) if not street else rng.uniform(18, 40)
        prims.append(_box(facade, rng.uniform(-5, 5), far + 5, rng.uniform(15, 40), rng.uniform(6, 20), 10.0))
    # Street furniture: lamps, trees, bollards, parked cars (boxes), benches.
    metal = _random_material(rng, "plain", "object")
    metal.color = _hsv(0, 0, rng.uniform(0.15, 0.4))
    bark = _random_material(rng, "plain", "object")
    bark.color = _hsv(0.07, 0.5, 0.3)
    leaves = _random_material(rng, "plain", "grass")
    leaves.variation = 0.35
    spacing = rng.uniform(6, 12)
    for sx in (-1, 1):
        x = sx * (half_road + rng.uniform(0.4, 1.0))
        for z in np.arange(rng.uniform(2, 8), 40, spacing):
            if rng.uniform() < 0.5:
                prims.append(_Prim("cylinder", metal, center=np.array([x, 0, z], np.float32), radius=0.07,
                                   height=rng.uniform(3.5, 5.0)))
            elif rng.uniform() < 0.7:
                trunk_h = rng.uniform(1.8, 3.0)
                prims.append(_Prim("cylinder", bark, center=np.array([x, 0, z], np.float32), radius=0.12,
                                   height=trunk_h))
                r = rng.uniform(1.0, 1.8)
                prims.append(_Prim("sphere", leaves, center=np.array([x, trunk_h + r * 0.7, z], np.float32), radius=r))
    n_cars = rng.integers(0, 5) if street else 0
    for _ in range(n_cars):
        sx = rng.choice([-1, 1])
        mat = _random_material(rng, "plain", "object")
        z = rng.uniform(6, 40)
        prims.append(_box(mat, sx * (half_road - 1.1), z, 1.8, 0.9, 4.2, y0=0.25))
        prims.append(_box(mat, sx * (half_road - 1.1), z + 0.2, 1.6, 0.6, 2.2, y0=1.15))
    if not street:
        _furniture(rng, (-half_road + 1, half_road - 1), (4.0, 25.0), rng.integers(2, 8), 2.5, prims, avoid_x=0.0)
    sun_el = rng.uniform(np.radians(20), np.radians(65))
    sun_az = rng.uniform(-2.5, 2.5)
    sun = np.array([np.cos(sun_el) * np.sin(sun_az), np.sin(sun_el), np.cos(sun_el) * np.cos(sun_az)], np.float32)
    overcast = rng.uniform() < 0.3
    horizon = _hsv(rng.uniform(0.55, 0.62), rng.uniform(0.05, 0.25), rng.uniform(0.8, 0.95))
    zenith = _hsv(rng.uniform(0.56, 0.64), 0.1 if overcast else rng.uniform(0.35, 0.7), rng.uniform(0.6, 0.9))
    return SceneSpec(
        kind="street" if street else "yard", prims=prims,
        cam_pos=np.array([rng.uniform(-half_road * 0.6, half_road * 0.6), rng.uniform(1.0, 1.8), 0.0], np.float32),
        yaw=float(rng.uniform(-0.2, 0.2)), pitch=float(rng.uniform(0.12, 0.42)),
        hfov=float(rng.uniform(np.radians(48), np.radians(70))), light_pos=None, sun_dir=sun,
        light_color=_hsv(rng.uniform(0.08, 0.13), rng.uniform(0.0, 0.25), 1.0),
        ambient=float(0.75 if overcast else rng.uniform(0.35, 0.5)), sky=(horizon, zenith),
        haze=float(rng.uniform(0.005, 0.02)), sky_grid=rng.uniform(-1, 1, size=(32, 32)).astype(np.float32),
    )


def random_scene(rng: np.random.Generator) -> SceneSpec:
    """Draw a scene layout: a room, a hall, a street or a yard."""
    kind = rng.choice(["room", "hall", "street", "yard"], p=[0.3, 0.2, 0.3, 0.2])
    if kind in ("room", "hall"):
        return _room(rng, hall=kind == "hall")
    return _outdoor(rng, street=kind == "street")


def _camera_rays(spec: SceneSpec, n: int) -> tuple[np.ndarray, float]:
    """World directions [n*n, 3] scaled so that their camera-z component is 1, and the focal (px)."""
    focal = (n / 2) / np.tan(spec.hfov / 2)
    c = (np.arange(n, dtype=np.float32) + 0.5 - n / 2) / focal
    xs, ys = np.meshgrid(c, -c)  # row 0 is the top of the image: +y
    d = np.stack([xs, ys, np.ones_like(xs)], axis=-1).reshape(-1, 3)
    cp, sp = np.cos(spec.pitch), np.sin(spec.pitch)
    pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]], np.float32)  # looks down by `pitch`
    cy, sy = np.cos(spec.yaw), np.sin(spec.yaw)
    yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], np.float32)
    return (d @ pitch.T @ yaw.T).astype(np.float32), focal


def _trace(prims: list[_Prim], o: np.ndarray, d: np.ndarray):
    n = len(d)
    best_t = np.full(n, np.inf, np.float32)
    best_id = np.full(n, -1, np.int32)
    best_n = np.zeros((n, 3), np.float32)
    best_uv = np.zeros((n, 2), np.float32)
    for i, prim in enumerate(prims):
        idx, t, nrm, uv = prim.intersect(o, d)
        closer = t < best_t[idx]
        j = idx[closer]
        best_t[j] = t[closer]
        best_id[j] = i
        best_n[j] = nrm[closer]
        best_uv[j] = uv[closer]
    return best_t, best_id, best_n, best_uv


def _shadowed(prims: list[_Prim], p: np.ndarray, to_light: np.ndarray, t_max: np.ndarray) -> np.ndarray:
    blocked = np.zeros(len(p), bool)
    for prim in prims:
        if not prim.casts_shadow:
            continue
        idx, t, _, _ = prim.intersect(p, to_light)
        blocked[idx] |= t < t_max[idx]
    return blocked


def render_scene(spec: SceneSpec, size: int) -> Scene:
    """Ray cast `spec` at `size` x `size` pixels (2x2 supersampled)."""
    n = size * _SS
    d, focal = _camera_rays(spec, n)
    o = spec.cam_pos[None, :]
    t, pid, nrm, uv = _trace(spec.prims, o, d)
    hit = np.isfinite(t)
    p = o + np.where(hit, t, 0)[:, None] * d
    rgb = np.zeros((len(d), 3), np.float32)

    idx = np.flatnonzero(hit)
    ph, nh = p[idx], nrm[idx]
    albedo = np.zeros((len(idx), 3), np.float32)
    pid_h = pid[idx]
    for i, prim in enumerate(spec.prims):
        sel = pid_h == i
        if not sel.any():
            continue
        a = prim.mat.albedo(uv[idx][sel], ph[sel])
        up = nh[sel, 1] > 0.9
        if prim.top is not None and up.any():  # roofs differ from facades
            a[up] = prim.top.albedo(uv[idx][sel][up], ph[sel][up])
        albedo[sel] = a

    # Direct light with hard shadows, an ambient term, soft falloff for lamps.
    origin = ph + nh * 1e-3
    if spec.light_pos is not None:
        to_light = spec.light_pos[None, :] - origin
        dist = np.linalg.norm(to_light, axis=1)
        lam = np.maximum(np.sum(nh * to_light, axis=1) / np.maximum(dist, 1e-6), 0)
        blocked = _shadowed(spec.prims, origin, to_light, np.ones(len(idx), np.float32) * 0.999)
        direct = lam * (~blocked) * 2.2 / (1 + 0.05 * dist**2)
    else:
        sun = spec.sun_dir
        lam = np.maximum(nh @ sun, 0)
        blocked = _shadowed(spec.prims, origin, np.broadcast_to(sun, origin.shape), np.full(len(idx), np.inf))
        direct = lam * (~blocked) * 1.0
    # Darken towards corners and the far end a little: cheap ambient occlusion by height.
    ao = 0.75 + 0.25 * np.clip(ph[:, 1] / 0.6, 0, 1) * (nh[:, 1] < 0.5) + 0.25 * (nh[:, 1] >= 0.5)
    light = spec.ambient * ao + (1 - spec.ambient) * direct
    shade = albedo * (light[:, None] * spec.light_color[None, :])
    if spec.haze > 0:
        fog = 1 - np.exp(-spec.haze * t[idx])
        shade = shade * (1 - fog[:, None]) + spec.sky[0][None, :] * fog[:, None]
    rgb[idx] = shade

    if spec.sky is not None:
        miss = np.flatnonzero(~hit)
        dm = d[miss] / np.linalg.norm(d[miss], axis=1, keepdims=True)
        el = np.clip(dm[:, 1], 0, 1) ** 0.6
        horizon, zenith = spec.sky
        sky = horizon[None, :] * (1 - el[:, None]) + zenith[None, :] * el[:, None]
        cloud = np.clip(_fbm(spec.sky_grid, dm[:, 0] / (dm[:, 1] + 0.1) * 2, dm[:, 2] / (dm[:, 1] + 0.1) * 2), 0, 1)
        rgb[miss] = sky * (1 - 0.6 * cloud[:, None]) + 0.95 * 0.6 * cloud[:, None]

    depth = np.where(hit, t, FAR_M).astype(np.float32)  # t is the camera z-distance (rays have z = 1)
    depth = np.minimum(depth, FAR_M)
    on_floor = hit & (nrm[:, 1] > 0.9) & (p[:, 1] < 0.3)

    def down(a):  # [n*n, ...] -> [size, size, ...] by averaging _SS x _SS blocks
        a = a.reshape(size, _SS, size, _SS, *a.shape[1:])
        return a.mean(axis=(1, 3))

    # Roll highlights off softly instead of clipping them flat (a lamp close to a pale floor).
    knee = 0.8
    rgb = np.where(rgb > knee, knee + (1 - knee) * np.tanh((rgb - knee) / (1 - knee)), rgb)
    rgb_img = np.clip(down(rgb), 0, 1).astype(np.float32)
    floor = down(on_floor.astype(np.float32)) >= 1.0
    return Scene(
        rgb=rgb_img,
        depth_m=down(depth).astype(np.float32),
        floor=floor,
        focal=float(focal / _SS),
        light=np.clip(spec.light_color * (spec.ambient + (1 - spec.ambient) * 0.8), 0.4, 1.1).astype(np.float32),
        kind=spec.kind,
    )
