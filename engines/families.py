"""The distortion families: one catalogue of each family's dimension, signals, operator cause, alert and corpus distortions.

Every layer reads this list: the signal measurements score one dimension per family (engines/signals/, one module
per family, named in `measured_in`, with the curves below), the window statistics and the dimension head have one slot per family (engines/rater.py), the
monitor turns a low dimension into its family's cause (stream/ops/recommend.py) and the Prometheus rules into its
alert (stream/ops/alert_rules.py), and the synthetic corpus produces each family with the distortion kinds named here
(train/distortions.py). Adding a family is one `Family` entry below plus the raw measurement its curves read
(a module in engines/signals/); docs/signals.md says which other edits remain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Cause:
    """A probable cause of bad quality: the alert that carries it (in Prometheus and in webhook notices) and what to do."""

    name: str
    alertname: str
    severity: str
    summary: str
    action: str


# The causes a low dimension points to, in the monitor's priority order (stream/ops/recommend.MONITOR_CAUSES): when a
# stream shows several at once, the first raised is its recommendation.
STALLS = Cause("stalls", "FvqStalls", "warning", "stalls, freezes or dropped frames in the picture",
               "network or encoder overloaded: check uplink and encoder CPU")
COMPRESSION = Cause("compression", "FvqCompression", "warning", "compression artifacts or blur at a low bitrate",
                    "raise the bitrate (or use a slower encoder preset)")
SOURCE = Cause("source", "FvqPictureDegraded", "warning", "blur or artifacts although the bitrate is not low",
               "the picture is degraded before encoding: check camera focus and any upscaling or transcoding upstream")
CAMERA = Cause("camera", "FvqCameraOrLighting", "warning", "bad exposure, noise or colour",
               "camera or lighting: check exposure, lighting, gain and white balance")
FAMILY_CAUSES = (STALLS, COMPRESSION, SOURCE, CAMERA)

# Live faults read from the bitstream and the decoder, not from a dimension (stream/live/faults.py): each names what
# broke in the pipeline. While one is seen, the causes it explains are not raised beside it: a black picture is also
# dark, colourless and faceless; damaged packets also smear, block and freeze the picture and lose the face; a smaller
# rendition is also softer.
BLACK_PICTURE = Cause("black_picture", "FvqBlackPicture", "critical",
                      "black or blank picture: capture lost or the feed blanked",
                      "check the capture: camera or capture card connected and powered, the right input selected, "
                      "nothing muting the feed to black")
TRANSPORT_DAMAGE = Cause("transport_damage", "FvqTransportDamage", "warning",
                         "transport damage: the decoder reports errors (packet loss or a failing link)",
                         "check the link from the encoder: packet loss, a congested or failing network path; prefer a "
                         "transport that recovers losses (SRT, RTMP over a better path)")
RENDITION_DOWN = Cause("rendition_down", "FvqRenditionDownSwitch", "warning",
                       "rendition down-switch: the coded resolution dropped",
                       "the encoder or a transcoder sends a smaller rendition: check its adaptive bitrate ladder and the "
                       "uplink bandwidth that forced the switch")
FORMAT_CHANGE = Cause("format_change", "FvqFormatChange", "warning",
                      "format change: resolution, frame rate, pixel format or colour space changed or differs from "
                      "what the channel should carry",
                      "check the encoder's output settings against the channel's (the source's `expect`)")
FAULT_CAUSES = (BLACK_PICTURE, TRANSPORT_DAMAGE, RENDITION_DOWN, FORMAT_CHANGE)
_PICTURE_CAUSES = (STALLS.name, COMPRESSION.name, SOURCE.name, CAMERA.name, "framing", "low_quality")
EXPLAINS: dict[str, tuple[str, ...]] = {  # fault -> the causes it explains while it is seen
    BLACK_PICTURE.name: _PICTURE_CAUSES,
    TRANSPORT_DAMAGE.name: _PICTURE_CAUSES,
    RENDITION_DOWN.name: (COMPRESSION.name, SOURCE.name, "framing", "low_quality"),  # a small picture hides the face
    FORMAT_CHANGE.name: ("low_quality",),
}

# Where a family's raw measurements come from.
PICTURE = "picture"  # each sampled frame's RGB image, for the frame and for the main face's box
TIMING = "timing"  # every frame's luma thumbnail and timestamp (the same for both regions)


@dataclass(frozen=True)
class Family:
    """One distortion family and everything each layer needs to know about it."""

    name: str  # the family, and its dimension's name (0..100, higher is better) in every output, metric and head
    short: str  # four letters, for the terminal table
    what: str  # what a low score means, in an operator's words
    measured_from: str  # PICTURE or TIMING
    # raw measurement -> (curve "falling" | "rising", x50, steepness): the dimension is 100 times the product of
    # the curves' values (engines/signals.dimension_score), so any one bad factor pulls it down
    curves: Mapping[str, tuple[str, float, float]]
    cause: Cause  # what the monitor says when the dimension is low
    low_bitrate_cause: Cause | None  # ...instead, when the stream's bitrate is low (None: the same cause)
    corpus: tuple[str, ...]  # the corpus distortion kinds that produce it (train/distortions.py implements each)
    measured_in: str  # the module under engines/signals/ whose measurement gives the raw values its curves read

    def cause_at(self, low_bitrate: bool) -> Cause:
        """The cause a low score of this family points to, at a low bitrate or not."""
        return self.low_bitrate_cause if low_bitrate and self.low_bitrate_cause is not None else self.cause


# The order is the order of the dimensions everywhere (JSON, metrics, the learned dimension head's outputs, the
# window statistics' keys): append, never reorder, or trained bundles read the wrong slots.
FAMILIES: tuple[Family, ...] = (
    Family("blur", "blur", "a soft picture: focus, motion blur, upscaling", PICTURE,
           # x50 1.6 px at the analysed size (v3; 2.2 before): gblur sigma 6 on a 640x360 stream reads ~2.1 px
           # there and a viewer calls it blurred; clean live-encoded talking heads read 0.6-1.0 px
           {"edge_blur_px": ("falling", 1.6, 3.0)},
           SOURCE, COMPRESSION, ("gaussian", "defocus"), "engines.signals.blur_noise"),
    Family("noise", "nois", "sensor noise or grain", PICTURE,
           {"noise_sigma": ("falling", 7.0, 2.0), "grain_sigma": ("falling", 11.0, 2.0),
            # v3: grain that changes between pictures where nothing moved (the whole picture only): a live encoder
            # smooths strong grain spatially but not that; 0.7-0.9 levels clean, 2.4-2.6 grainy, 1.1-1.4 damaged
            "temporal_grain": ("falling", 1.8, 4.0)},
           CAMERA, None, ("gaussian", "sensor"), "engines.signals.blur_noise"),
    Family("color", "colr", "washed-out, oversaturated or cast colours", PICTURE,
           {
               # colourfulness at a typical clean contrast (engines/signals.colorfulness_at_contrast): a flat
               # picture's lost chroma is luminance's; desaturation towards grey lowers it
               "colorfulness_at_contrast": ("rising", 10.0, 2.0),
               # version 3 (engines/signals/colour_pipeline.py): a light's colour is a look, not damage; what no light
               # does is: chroma on the blacks beyond a light's or a grade's (offsets, tints), ~7 at most on clean
               # pictures of every look, 20 and more at a 15% offset
               "black_tint": ("falling", 13.0, 6.0),
               # a photographed face's skin hue outside human skin's under any light (swapped chroma planes or
               # channels: 70-130 degrees; a stage-lit face under a second gel: up to ~37)
               "skin_hue_off": ("falling", 55.0, 5.0),
               # oversaturation: a photographed face's skin saturation with the light divided out, beyond natural
               # skin's (0.56, a low-key face's 0.559 the highest clean); 2.5x saturation reads 0-0.26 beyond, 3.1x
               # 0.09-0.34 (benchmarks/origins.py)
               "skin_excess_lit": ("falling", 0.01, 3.0),
               # desaturation: a photographed face's skin chroma under its floor, 0.16 (0.159-0.35 at the least on
               # the clean looks of every origin, the desaturated grade's included; 80 % desaturated 0.065-0.125)
               "skin_chroma_short": ("falling", 0.02, 3.0),
               # limited range shown as full: the luma inside 16-235, its blacks and whites there (a crushed range
               # is not read here: an exposure gain or noise clips both ends as much)
               "range_washed": ("falling", 0.5, 4.0),
               # white balance beyond any light: the off-locus light every part of the picture agrees on, beyond
               # 0.02 (clean looks, stage gels included: 0; a 30 % green-gain cut 0-0.13 beyond, 40 % 0.065-0.21)
               "wb_off_locus": ("falling", 0.02, 2.0),
           },
           CAMERA, None, ("desaturate", "cast", "saturate", "tint"), "engines.signals.colour"),
    Family("artifact", "artf", "compression blocks and a starved encoder", PICTURE,
           {
               "blockiness": ("falling", 0.3, 2.5),
               # H.264/HEVC quantiser from the bitstream (0-51): ~0.99 at QP 21, 0.8 at 30, 0.5 at 36, 0.14 at 45.
               # Deblocking hides the block grid of a starved encoder; its quantiser does not.
               "qp": ("falling", 36.0, 8.0),
           },
           SOURCE, COMPRESSION, ("crf", "bitrate"), "engines.signals.blockiness"),
    Family("luminance", "lumi", "exposure, clipping, contrast", PICTURE,
           {
               "exposure_stops": ("falling", 1.0, 2.0),  # |log2(mean luma / MID_GREY)|
               "clipped_share": ("falling", 0.25, 2.0),  # dark_share + bright_share
               "contrast": ("rising", 14.0, 2.0),  # std of luma
           },
           CAMERA, None, ("under", "over", "contrast"), "engines.signals.luminance"),
    Family("temporal", "temp", "freezes, stalls or dropped frames", TIMING,
           {
               "frozen_share": ("falling", 0.15, 1.5),
               "longest_freeze_s": ("falling", 0.6, 1.5),
               "stall_share": ("falling", 0.10, 1.5),
               "drop_share": ("falling", 0.15, 1.5),
               "duplicate_share": ("falling", 0.4, 2.0),
               "stutter_cv": ("falling", 0.5, 2.0),
               "flicker": ("falling", 6.0, 2.0),
               "judder": ("falling", 0.8, 2.0),
           },
           STALLS, None, ("freeze", "stall"), "engines.signals.temporal"),
)
BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}
DIMENSIONS: tuple[str, ...] = tuple(f.name for f in FAMILIES)  # one 0..100 dimension per family, in this order

# Families whose dimension bounds the published score. Until 2026-12-06 the bundle's signal forest read only the
# signals of the version its model was trained with (1), whose colour measurement took a warm or cool light for
# damage; on the corpus with looks, where a light is clean, it learnt to give that measurement little weight and
# never saw the published colour (version 3: pipeline faults, not lights), so a face oversaturated or cast beyond
# any light, its colour dimension at 0-1, still scored 76-83 (pseudo-MOS 42-52). The forest now also reads the
# published dimensions (engines.rater.PRIOR_WINDOW_KEYS); the bound stays as the guarantee that a broken colour
# pipeline costs the score whatever a forest learnt: a window scores at most halfway between the colour dimension
# (as the causes read it: the face's where there is one) and 100: colour 0 holds it to 50, colour 60 to 80; a clean
# look's colour (73 and up on every origin) never reaches its score. Colour only: a bound on noise would also let a
# false grain alarm pull a clean stream's score down.
SCORE_BOUNDED_BY: tuple[str, ...] = ("color",)


def score_ceiling(dimensions: Mapping[str, Mapping[str, float]]) -> float:
    """The highest score a window with these dimension scores ({"frame": {...}, "face": {...}}) may publish:
    halfway between each SCORE_BOUNDED_BY dimension and 100, the lowest of them (100 when none is measured)."""
    region = dimensions.get("face") or dimensions.get("frame") or {}
    values = [float(region[name]) for name in SCORE_BOUNDED_BY if name in region and region[name] >= 0]
    return min([100.0] + [(100.0 + v) / 2.0 for v in values])


def family(name: str) -> Family:
    """The family of that name; an unknown name raises, listing the known ones."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown distortion family {name!r}; families: {', '.join(DIMENSIONS)}") from None


def families_causing(cause: Cause) -> tuple[Family, ...]:
    """The families whose low score points to `cause` (at some bitrate)."""
    return tuple(f for f in FAMILIES if cause in (f.cause, f.low_bitrate_cause))


def _check() -> None:
    if len(BY_NAME) != len(FAMILIES):
        raise ValueError(f"distortion families: a name is listed twice in {DIMENSIONS}")
    for f in FAMILIES:
        if f.measured_from not in (PICTURE, TIMING):
            raise ValueError(f"family {f.name}: measured_from must be {PICTURE!r} or {TIMING!r}")
        for c in (f.cause, f.low_bitrate_cause):
            if c is not None and c not in FAMILY_CAUSES:
                raise ValueError(f"family {f.name}: cause {c.name!r} is not in FAMILY_CAUSES")


_check()
