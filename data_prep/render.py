"""Renders small synthetic pedestrian videos with numpy, for the synthetic datasets.

Identity must not be readable from raw colour alone, or an untrained network would already match
people well and training would not matter. So identities share a small palette and differ only by
combinations of traits (top and bottom colours, a top pattern with an accent colour, hair colour,
build, a bag, stride frequency), while every camera changes the picture strongly (its own
background, colour cast, brightness and blur) and every tracklet has its own position and scale
jitter, walking phase and occasional occlusions. `difficulty` scales all the nuisances at once.

All drawing is vectorised over the frames of a tracklet: masks are [T, H, W] arrays.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.ndimage

# A small shared palette (RGB in [0, 1]): many identities wear each colour.
PALETTE = np.array(
    [
        [0.85, 0.15, 0.15],  # red
        [0.15, 0.35, 0.85],  # blue
        [0.15, 0.65, 0.25],  # green
        [0.92, 0.85, 0.20],  # yellow
        [0.92, 0.92, 0.92],  # white
        [0.12, 0.12, 0.12],  # black
        [0.55, 0.55, 0.58],  # grey
        [0.55, 0.30, 0.15],  # brown
    ],
    np.float32,
)
HAIR = np.array([[0.08, 0.06, 0.05], [0.45, 0.30, 0.15], [0.85, 0.75, 0.45]], np.float32)
SKIN = np.array([0.85, 0.68, 0.55], np.float32)
PATTERNS = ("solid", "hstripes", "vstripes", "checker")
BUILDS = (0.8, 1.0, 1.25)  # width scale of the body
BAGS = ("none", "left", "right")
STRIDES = (0.06, 0.09, 0.13)  # gait cycles per frame: a temporal identity trait


@dataclasses.dataclass(frozen=True)
class Identity:
    """The appearance traits of one person (indices into the tables above)."""

    top: int
    bottom: int
    pattern: int
    accent: int
    hair: int
    build: int
    bag: int
    stride: int


@dataclasses.dataclass(frozen=True)
class Camera:
    """One camera's view: background picture, colour cast, brightness, blur and typical scale."""

    background: np.ndarray  # [H, W, 3] float32 in [0, 1], before the camera's colour gain
    gain: np.ndarray  # [3] per-channel colour cast times brightness
    blur: int  # box-blur radius in pixels
    scale: float  # person height / frame height
    noise: np.ndarray  # [N, H, W, 3] int16 bank of sensor-noise frames

    @property
    def picture(self) -> np.ndarray:
        """The empty scene as this camera records it (uint8 [H, W, 3])."""
        return _to_uint8(self.background * self.gain)


# How many values each trait of `Identity` takes, in field order.
TRAIT_SIZES = (
    len(PALETTE),
    len(PALETTE),
    len(PATTERNS),
    len(PALETTE),
    len(HAIR),
    len(BUILDS),
    len(BAGS),
    len(STRIDES),
)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def identity_from_code(code: int) -> Identity:
    """The identity numbered `code` in 0..prod(TRAIT_SIZES)-1 (distinct codes look different)."""
    return Identity(*(int(v) for v in np.unravel_index(code, TRAIT_SIZES)))


def _smooth_field(rng, h, w, cells, channels=3) -> np.ndarray:
    """A smooth random picture: a coarse random grid bilinearly upsampled to [h, w, channels]."""
    grid = rng.random((cells[0] + 1, cells[1] + 1, channels), dtype=np.float32)
    ys = np.linspace(0, cells[0], h, dtype=np.float32)
    xs = np.linspace(0, cells[1], w, dtype=np.float32)
    y0 = np.minimum(ys.astype(int), cells[0] - 1)
    x0 = np.minimum(xs.astype(int), cells[1] - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    g = lambda dy, dx: grid[y0[:, None] + dy, x0[None, :] + dx]
    return (
        g(0, 0) * (1 - fy) * (1 - fx)
        + g(0, 1) * (1 - fy) * fx
        + g(1, 0) * fy * (1 - fx)
        + g(1, 1) * fy * fx
    )


def make_cameras(
    rng: np.random.Generator, n: int, h: int, w: int, difficulty: float
) -> list[Camera]:
    """Draws `n` cameras, each with its own scene and imaging nuisances scaled by `difficulty`."""
    cameras = []
    sigma = 255 * (0.02 + 0.02 * difficulty)
    for _ in range(n):
        background = 0.25 + 0.6 * _smooth_field(rng, h, w, (3, 2))
        floor = h - int(h * rng.uniform(0.15, 0.3))  # a floor band with its own colour
        background[floor:] = 0.5 * background[floor:] + 0.5 * rng.random(3, dtype=np.float32)
        cameras.append(
            Camera(
                background=background.astype(np.float32),
                gain=(
                    (1 + difficulty * rng.uniform(-0.35, 0.35, 3))
                    * (1 + difficulty * rng.uniform(-0.3, 0.2))
                ).astype(np.float32),
                blur=int(rng.integers(0, 1 + round(2 * difficulty))),
                scale=float(rng.uniform(0.75, 0.92)),
                noise=(rng.standard_normal((16, h, w, 3)) * sigma).astype(np.int16),
            )
        )
    return cameras


def _finish(frames: np.ndarray, camera: Camera, rng) -> np.ndarray:
    """Applies the camera's blur and sensor noise to composed uint8 frames [T, H, W, 3]."""
    if camera.blur:
        size = 2 * camera.blur + 1
        frames = scipy.ndimage.uniform_filter(frames, size=(1, size, size, 1), mode="nearest")
    # Noise frames are drawn from the camera's bank: fresh Gaussian noise per frame costs more than
    # all the drawing, and a few dozen noise frames per camera look the same to a network.
    noise = camera.noise[rng.integers(0, len(camera.noise), len(frames))]
    return np.clip(frames.astype(np.int16) + noise, 0, 255).astype(np.uint8)


class _Layers:
    """Paints flat colours as integer labels, then composes all frames with one table lookup.

    Painting a [T, H, W] boolean mask into a uint8 label map is far cheaper than writing RGB floats,
    and the camera's colour cast is applied once to the colour table instead of to every pixel.
    """

    def __init__(self, shape):
        self.label = np.zeros(shape, np.uint8)
        self.colours = [np.zeros(3, np.float32)]  # label 0 = the camera's background

    def paint(self, mask: np.ndarray, colour) -> None:
        self.colours.append(np.asarray(colour, np.float32))
        self.label[np.broadcast_to(mask, self.label.shape)] = len(self.colours) - 1

    def compose(self, camera: Camera) -> np.ndarray:
        """Returns uint8 [T, H, W, 3] frames in the camera's colours."""
        table = _to_uint8(np.stack(self.colours) * camera.gain)
        frames = np.empty(self.label.shape + (3,), np.uint8)
        frames[:] = camera.picture
        painted = self.label != 0  # Only these pixels are looked up (a person is a fifth of them).
        frames[painted] = table[self.label[painted]]
        return frames


def _accent_mask(ident: Identity, yy, xx, top_y, cx, unit):
    """Where the top shows its accent colour (broadcastable to [T, H, W]), by pattern."""
    period = max(unit * 0.06, 1.5)
    rows = np.floor((yy - top_y) / period).astype(np.int32) % 2 == 1  # [T, H, 1]
    cols = np.floor((xx - cx) / period).astype(np.int32) % 2 == 1  # [T, 1, W]
    pattern = PATTERNS[ident.pattern]
    return {"solid": np.False_, "hstripes": rows, "vstripes": cols, "checker": rows ^ cols}[pattern]


def render_person(
    rng, ident: Identity, camera: Camera, length: int, difficulty: float
) -> np.ndarray:
    """Renders one tracklet of `ident` seen by `camera`: uint8 [length, H, W, 3]."""
    h, w = camera.background.shape[:2]
    t = np.arange(length, dtype=np.float32)[:, None, None]
    # Tracklet nuisances: scale, position, slow drift, walking phase.
    unit = h * camera.scale * (1 + difficulty * rng.uniform(-0.12, 0.08))  # person height (px)
    cx = w / 2 + difficulty * rng.uniform(-0.12, 0.12) * w + rng.uniform(-0.3, 0.3) * t * difficulty
    stride = STRIDES[ident.stride] * rng.uniform(0.9, 1.1)
    swing = 0.11 * unit * np.sin(2 * np.pi * stride * t + rng.uniform(0, 2 * np.pi))
    bob = 0.015 * unit * np.abs(np.sin(2 * np.pi * stride * t))
    top = (h - unit) / 2 + difficulty * rng.uniform(-0.06, 0.06) * h - bob
    yy = np.arange(h, dtype=np.float32)[None, :, None]
    xx = np.arange(w, dtype=np.float32)[None, None, :]
    build = BUILDS[ident.build]
    layers = _Layers((length, h, w))
    hip, foot = top + 0.52 * unit, top + unit
    along = np.clip((yy - hip) / (foot - hip), 0, 1)
    for side in (-1, 1):
        leg_x = cx + side * 0.045 * unit * build + side * along * swing
        leg = (yy >= hip) & (yy <= foot) & (np.abs(xx - leg_x) <= 0.05 * unit * build)
        layers.paint(leg, PALETTE[ident.bottom])
        layers.paint(leg & (yy >= foot - 0.05 * unit), PALETTE[5] * 0.5)  # shoes
    torso_top = top + 0.16 * unit
    torso = (yy >= torso_top) & (yy < hip + 0.02 * unit) & (np.abs(xx - cx) <= 0.13 * unit * build)
    layers.paint(torso, PALETTE[ident.top])
    layers.paint(torso & _accent_mask(ident, yy, xx, torso_top, cx, unit), PALETTE[ident.accent])
    head_y, radius = top + 0.08 * unit, 0.075 * unit
    head = (yy - head_y) ** 2 + (xx - cx) ** 2 <= radius**2
    layers.paint(head, SKIN)
    layers.paint(head & (yy < head_y - 0.2 * radius), HAIR[ident.hair])
    if BAGS[ident.bag] != "none":
        bag_x = cx + (-1 if BAGS[ident.bag] == "left" else 1) * 0.17 * unit * build
        bag = (
            (np.abs(xx - bag_x) <= 0.05 * unit)
            & (yy >= hip - 0.12 * unit)
            & (yy <= hip + 0.06 * unit)
        )
        layers.paint(bag, PALETTE[7] * 0.6)
    frames = layers.compose(camera)
    _occlude(rng, frames, camera, difficulty)
    return _finish(frames, camera, rng)


def _occlude(rng, frames: np.ndarray, camera: Camera, difficulty: float) -> None:
    """Sometimes hides part of the person behind a dark bar of scene for a run of frames."""
    length, h, w = frames.shape[:3]
    if rng.random() >= 0.3 * difficulty or length < 2:
        return
    start = int(rng.integers(0, length))
    stop = min(length, start + int(rng.integers(1, max(2, length // 3))))
    if rng.random() < 0.5:  # a pole in front of the person
        x0, x1 = (x := int(rng.integers(0, w - w // 4))), x + w // 4
        frames[start:stop, :, x0:x1] = camera.picture[:, x0:x1] // 2
    else:  # the lower body behind something
        y0 = int(h * rng.uniform(0.55, 0.8))
        frames[start:stop, y0:] = camera.picture[y0:] // 2


def render_clutter(
    rng, camera: Camera, length: int, difficulty: float, *, junk: bool
) -> np.ndarray:
    """Renders a non-person tracklet: a distractor (scene clutter) or junk (a bad crop).

    Distractors (MARS pid 0) are false-alarm detections: the scene with a moving blob. Junk
    (pid -1) are badly cropped boxes: a strongly shifted, partly dark view of the scene.
    """
    h, w = camera.background.shape[:2]
    t = np.arange(length, dtype=np.float32)[:, None, None]
    yy = np.arange(h, dtype=np.float32)[None, :, None]
    xx = np.arange(w, dtype=np.float32)[None, None, :]
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w + rng.uniform(-0.5, 0.5) * t
    layers = _Layers((length, h, w))
    blob = ((yy - cy) / (0.25 * h)) ** 2 + ((xx - cx) / (0.35 * w)) ** 2 <= 1
    layers.paint(blob, PALETTE[rng.integers(len(PALETTE))])
    frames = layers.compose(camera)
    if junk:
        shift = int(rng.integers(h // 4, h // 2))
        frames = np.roll(frames, shift, axis=1)
        frames[:, :shift] //= 3
    return _finish(frames, camera, rng)
