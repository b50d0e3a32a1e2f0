r"""A synthetic multi-person video with known identities, in the MOTChallenge sequence layout.

  python -m data_prep.synthetic_video --out DIR [--num_people 6 --num_cameras 2 --num_frames 200
      --height 240 --width 320 --seed 0]

writes, per camera,

  DIR/cam<c>/img1/000001.jpg ...   the frames
  DIR/cam<c>/gt/gt.txt             ground truth: frame,id,x,y,w,h,1,1,1 (MOT's 1-based boxes; the id
                                   is the person's, the same in every camera)
  DIR/cam<c>/seqinfo.ini           MOTChallenge's sequence description
  DIR/cam<c>/tracks.txt            broken tracks, as a tracker that loses people would write them:
                                   each ground-truth track cut into up to three fragments with
                                   gaps of up to 5 frames, each fragment its own id (distinct over
                                   all cameras); the input `python -m vreid_jax.deploy.relink` repairs
  DIR/truth.json                   per person: the identity code and traits (`data_prep.render`);
                                   per camera: the person of each fragment id of tracks.txt

People are drawn with the synthetic datasets' renderer (`render.render_person`: shared palette,
patterns, build, bag, gait) and walk across the camera's scene from one side to the other at their
own speed and time; they may cross one another (the later one is drawn in front). The output is a
pure function of the arguments and is written to a temporary folder renamed into place when done.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np
from absl import app, flags
from PIL import Image

from data_prep import quiet_tensorflow_logs, render
from data_prep.index import DataPrepError

# The key colour a person is rendered on, then cut out with (no palette colour is magenta).
_KEY = np.array([1.0, 0.0, 1.0], np.float32)


def _person_frames(rng, ident: render.Identity, length: int, height: int, width: int):
    """(uint8 [T, h, w, 3] pixels, bool [T, h, w] person mask) of one walk, drawn without camera
    effects on the key colour."""
    camera = render.Camera(
        background=np.broadcast_to(_KEY, (height, width, 3)).astype(np.float32),
        gain=np.ones(3, np.float32),
        blur=0,
        scale=0.92,
        noise=np.zeros((1, height, width, 3), np.int16),
    )
    frames = render.render_person(rng, ident, camera, length, difficulty=0.0)
    mask = ~np.all(frames == np.array([255, 0, 255], np.uint8), axis=-1)
    return frames, mask


def _walk(rng, num_frames: int, width: int, box_w: int, min_len: int):
    """(first frame index, x of the box's left edge per frame) of one crossing of the scene."""
    speed = rng.uniform(2.0, 4.0)
    length = int(np.ceil((width + box_w) / speed))
    start = int(rng.integers(-length // 3, max(1, num_frames - min_len)))
    xs = np.arange(length) * speed - box_w
    if rng.random() < 0.5:
        xs = width - box_w - xs  # right to left
    return start, xs


def generate(
    out_dir: str,
    seed: int = 0,
    *,
    num_people: int = 6,
    num_cameras: int = 2,
    num_frames: int = 200,
    height: int = 240,
    width: int = 320,
    person_height: int = 96,
    difficulty: float = 0.5,
) -> dict:
    """Writes the video (module docstring) and returns `{'seed', 'spec', 'people', 'cameras'}`:
    `people` as in truth.json, `cameras` the camera folder names."""
    if num_people < 1 or num_cameras < 1 or num_frames < 10:
        raise DataPrepError("Need num_people >= 1, num_cameras >= 1 and num_frames >= 10.")
    if not 32 <= person_height <= height or width < person_height // 2:
        raise DataPrepError(
            f"person_height {person_height} must be in [32, height={height}] and at most "
            f"2 x width={width}."
        )
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise DataPrepError(f"{out_dir!r} is not empty; the video is only written to a new folder")
    rng = np.random.default_rng(seed)
    codes = rng.permutation(int(np.prod(render.TRAIT_SIZES)))[:num_people]
    people = [
        {"id": i + 1, "code": int(c), "traits": dataclasses.asdict(render.identity_from_code(c))}
        for i, c in enumerate(codes)
    ]
    cameras = render.make_cameras(rng, num_cameras, height, width, difficulty)
    box_h, box_w = person_height, person_height // 2
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    names = [f"cam{c + 1}" for c in range(num_cameras)]
    # Fragments are drawn from their own stream, so the video does not depend on them.
    cut_rng, fragments = np.random.default_rng([seed, 1]), {}
    try:
        for camera, name in zip(cameras, names, strict=True):
            folder = os.path.join(tmp, name)
            rows = _write_camera(rng, folder, camera, people, num_frames, (box_h, box_w))
            first_id = 1 + sum(len(f) for f in fragments.values())
            fragments[name] = _write_fragments(cut_rng, folder, rows, first_id)
        spec = {
            "num_people": num_people,
            "num_cameras": num_cameras,
            "num_frames": num_frames,
            "height": height,
            "width": width,
            "person_height": person_height,
            "difficulty": difficulty,
        }
        truth = {
            "seed": seed,
            "spec": spec,
            "people": people,
            "cameras": names,
            "fragments": fragments,
        }
        with open(os.path.join(tmp, "truth.json"), "w") as f:
            json.dump(truth, f, indent=1)
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return truth


def _write_camera(rng, folder, camera: render.Camera, people, num_frames, box):
    box_h, box_w = box
    height, width = camera.background.shape[:2]
    canvas = np.broadcast_to(camera.background, (num_frames, height, width, 3)).copy()
    rows = []
    top = height - box_h - int(rng.integers(2, max(3, height // 12)))  # feet on the floor band
    for person in people:
        ident = render.Identity(**person["traits"])
        start, xs = _walk(rng, num_frames, width, box_w, min_len=20)
        frames, mask = _person_frames(rng, ident, len(xs), box_h, box_w)
        y = min(max(0, top + int(rng.integers(-4, 5))), height - box_h)
        for t, x in enumerate(xs):
            f = start + t
            x0 = int(round(x))
            lo, hi = max(0, x0), min(width, x0 + box_w)
            if not 0 <= f < num_frames or hi - lo < box_w // 3:
                continue  # Outside the video, or too little of the person inside the picture.
            region = mask[t, :, lo - x0 : hi - x0]
            pixels = frames[t, :, lo - x0 : hi - x0].astype(np.float32) / 255
            view = canvas[f, y : y + box_h, lo:hi]
            view[region] = pixels[region]
            # MOT boxes: 1-based top-left, the visible part of the person's box.
            rows.append((f + 1, person["id"], lo + 1, y + 1, hi - lo, box_h))
    frames = (np.clip(canvas * camera.gain, 0, 1) * 255 + 0.5).astype(np.uint8)
    noise = camera.noise[rng.integers(0, len(camera.noise), num_frames)]
    frames = np.clip(frames.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    os.makedirs(os.path.join(folder, "img1"))
    os.makedirs(os.path.join(folder, "gt"))
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(os.path.join(folder, "img1", f"{i:06d}.jpg"), quality=90)
    rows.sort()
    with open(os.path.join(folder, "gt", "gt.txt"), "w") as f:
        f.writelines(f"{fr},{pid},{x},{y},{w},{h},1,1,1\n" for fr, pid, x, y, w, h in rows)
    with open(os.path.join(folder, "seqinfo.ini"), "w") as f:
        f.write(
            f"[Sequence]\nname={os.path.basename(folder)}\nimDir=img1\nframeRate=25\n"
            f"seqLength={num_frames}\nimWidth={width}\nimHeight={height}\nimExt=.jpg\n"
        )
    return rows


def _write_fragments(rng, folder, rows, first_id) -> dict[str, int]:
    """Writes tracks.txt (module docstring) from the ground-truth rows; returns {fragment id (as a
    string, for JSON): person id}."""
    out, owner, next_id = [], {}, first_id
    for pid in sorted({r[1] for r in rows}):
        mine = [r for r in rows if r[1] == pid]
        num_cuts = 2 if len(mine) >= 40 else 1 if len(mine) >= 20 else 0
        cuts = sorted(rng.choice(np.arange(8, len(mine) - 8), num_cuts, replace=False).tolist())
        for start, end in zip([0, *cuts], [*cuts, len(mine)], strict=True):
            gap = int(rng.integers(0, 6)) if start else 0
            piece = mine[start + gap : end]
            if piece:  # A short piece may vanish in its gap.
                out += [(r[0], next_id, *r[2:]) for r in piece]
                owner[str(next_id)] = pid
                next_id += 1
    out.sort()
    with open(os.path.join(folder, "tracks.txt"), "w") as f:
        f.writelines(f"{fr},{tid},{x},{y},{w},{h},1,-1,-1,-1\n" for fr, tid, x, y, w, h in out)
    return owner


FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("out", None, "Folder to create.")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_integer("num_people", 6, "People (identities) in the video.")
    flags.DEFINE_integer("num_cameras", 2, "Cameras (one sequence folder each).")
    flags.DEFINE_integer("num_frames", 200, "Frames per camera.")
    flags.DEFINE_integer("height", 240, "Frame height.")
    flags.DEFINE_integer("width", 320, "Frame width.")
    flags.DEFINE_integer("person_height", 96, "Person box height in pixels.")
    flags.DEFINE_float("difficulty", 0.5, "Scale of the camera nuisances (0 = clean).")
    flags.mark_flags_as_required(["out"])


def main(argv):
    del argv
    quiet_tensorflow_logs()
    try:
        truth = generate(
            FLAGS.out,
            FLAGS.seed,
            num_people=FLAGS.num_people,
            num_cameras=FLAGS.num_cameras,
            num_frames=FLAGS.num_frames,
            height=FLAGS.height,
            width=FLAGS.width,
            person_height=FLAGS.person_height,
            difficulty=FLAGS.difficulty,
        )
    except DataPrepError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"{FLAGS.out}: {len(truth['people'])} people in {', '.join(truth['cameras'])}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
