"""Class metadata (checked against tfds' and torchvision's own ImageNet tables) and prompt strategies."""

import collections
from importlib import resources

import pytest

from jax_aug.data import prompts
from jax_aug.data.imagenet_classes import class_by_wnid, load_classes, places365_categories


def test_classes_follow_the_standard_ilsvrc2012_order():
  classes = load_classes()
  assert len(classes) == 1000
  wnids = [c.wnid for c in classes]
  assert len(set(wnids)) == 1000
  assert [c.index for c in classes] == list(range(1000))
  # tfds' imagenet2012 label table is an independent copy of the standard order.
  tfds_labels = resources.files("tensorflow_datasets").joinpath("datasets/imagenet2012/labels.txt")
  assert wnids == tfds_labels.read_text().split()


def test_first_lemmas_match_torchvision_category_names():
  from torchvision.models import ResNet50_Weights  # pylint: disable=g-import-not-at-top

  categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
  mismatches = {c.index: (c.lemmas, categories[c.index]) for c in load_classes() if c.lemmas[0] != categories[c.index]}
  # torchvision renamed exactly two duplicate names to tell them apart.
  assert mismatches == {134: (("crane",), "crane bird"), 639: (("maillot", "tank suit"), "maillot tank suit")}


def test_tiger_shark_and_every_class_has_definition_and_hypernyms():
  shark = class_by_wnid("n01491361")
  assert shark.lemmas == ("tiger shark", "Galeocerdo cuvieri")
  assert shark.name == "tiger shark, Galeocerdo cuvieri"
  assert shark.definition == "large dangerous warm-water shark with striped or spotted body"
  assert shark.hypernyms[:2] == ("requiem shark", "shark") and shark.hypernyms[-1] == "entity"
  for c in load_classes():
    assert c.definition.strip() and c.hypernyms and c.hypernyms[-1] == "entity", c.wnid
  with pytest.raises(KeyError, match="n99999999"):
    class_by_wnid("n99999999")


def test_places365():
  scenes = places365_categories()
  assert len(scenes) == 365 and len(set(scenes)) == 365
  assert scenes[0] == "airfield" and "hockey arena" in scenes and "outdoor apartment building" in scenes


DESKTOP = class_by_wnid("n03180011")
SHARK = class_by_wnid("n01491361")
MAILBAG = class_by_wnid("n03709823")


def test_simple_prompts_exact_strings():
  assert prompts.build_prompt("simple", SHARK, 0, 0) == "A photo of tiger shark, Galeocerdo cuvieri."
  assert prompts.build_prompt("simple", DESKTOP, 5, 1) == "A photo of desktop computer."
  assert prompts.build_prompt("simple_no_ws", DESKTOP, 0, 0) == "A photo of desktopcomputer."
  assert prompts.build_prompt("simple_no_ws", SHARK, 0, 0) == "A photo of tigershark,Galeocerdocuvieri."
  # The ablation "only the first lemma" (paper Sec. 3.2), whose string is the paper's own example.
  assert prompts.build_prompt("simple", SHARK, 0, 0, lemmas="first") == "A photo of tiger shark."
  assert prompts.build_prompt("simple", MAILBAG, 0, 0, lemmas="first") == "A photo of mailbag."
  assert prompts.build_prompt("simple_no_ws", SHARK, 0, 0, lemmas="first") == "A photo of tigershark."
  with pytest.raises(ValueError, match="unknown lemma choice 'last' for n01491361"):
    prompts.build_prompt("simple", SHARK, 0, 0, lemmas="last")


# w(n) by hand from the paper's rule (Sec. 3.1: n = the lemmas joined by ", ", w strips white space).
W_OF_N = {"n01491361": "tigershark,Galeocerdocuvieri", "n03180011": "desktopcomputer", "n03709823": "mailbag,postbag"}


def test_clip_prompts_fill_the_templates_with_w_of_n():
  # The four templates of the Figure 5 caption, at image indices where the seeded draw picks them.
  assert prompts.build_prompt("clip_templates", SHARK, 78, 0) == "a photo of many tigershark,Galeocerdocuvieri."
  assert prompts.build_prompt("clip_templates", SHARK, 17, 0) == (
    "a black and white photo of the tigershark,Galeocerdocuvieri."
  )
  assert prompts.build_prompt("clip_templates", DESKTOP, 73, 0) == "a bad photo of a desktopcomputer."
  assert prompts.build_prompt("clip_templates", DESKTOP, 272, 0) == "a cartoon desktopcomputer."
  assert prompts.build_prompt("clip_templates", MAILBAG, 1, 0) == "a photo of many mailbag,postbag."
  assert prompts.build_prompt("clip_templates", MAILBAG, 67, 0) == "a black and white photo of the mailbag,postbag."
  for cls in (SHARK, DESKTOP, MAILBAG):
    expected = {t.format(W_OF_N[cls.wnid]) for t in prompts.CLIP_IMAGENET_TEMPLATES}
    assert {prompts.build_prompt("clip_templates", cls, i, 0) for i in range(390)} <= expected
  assert prompts.build_prompt("clip_templates", SHARK, 78, 0, lemmas="first") == "a photo of many tigershark."


def test_clip_templates_80_drawn_with_replacement_and_seeded():
  assert len(prompts.CLIP_IMAGENET_TEMPLATES) == 80 == len(set(prompts.CLIP_IMAGENET_TEMPLATES))
  assert prompts.CLIP_IMAGENET_TEMPLATES[0] == "a bad photo of a {}."
  assert prompts.CLIP_IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."
  expected = {t.format("desktopcomputer") for t in prompts.CLIP_IMAGENET_TEMPLATES}
  drawn = [prompts.build_prompt("clip_templates", DESKTOP, i, seed=0) for i in range(390)]
  assert set(drawn) <= expected
  assert len(set(drawn)) > 60  # 390 draws from 80 cover most templates
  # With replacement: 80 draws do not cycle through the 80 templates (they would without replacement).
  assert len(set(drawn[:80])) < 80
  # Any single prompt regenerates alone, from (seed, class, index) only.
  assert prompts.build_prompt("clip_templates", DESKTOP, 123, seed=0) == drawn[123]
  assert [prompts.build_prompt("clip_templates", DESKTOP, i, seed=1) for i in range(390)] != drawn


def test_sariyildiz_categories_equal_counts_and_exact_strings():
  n = 390
  drawn = [prompts.build_prompt("sariyildiz", SHARK, i, seed=0) for i in range(n)]
  counts = collections.Counter(prompts.sariyildiz_category(i) for i in range(n))
  assert sorted(counts) == list(range(6)) and set(counts.values()) == {65}
  name, hypernym = "tiger shark, Galeocerdo cuvieri", "requiem shark"
  assert drawn[0] == name
  assert drawn[1] == f"{name}, {hypernym}"
  assert drawn[2] == f"multiple {name}, {hypernym}"
  assert drawn[3] == f"multiple different {name}, {hypernym}"
  assert drawn[4] == f"{name}, large dangerous warm-water shark with striped or spotted body"
  prefix = f"{name}, {hypernym} inside "
  backgrounds = [p[len(prefix) :] for p in drawn[5::6]]
  assert all(p.startswith(prefix) for p in drawn[5::6])
  assert set(backgrounds) <= set(places365_categories()) and len(set(backgrounds)) > 40
  assert prompts.build_prompt("sariyildiz", SHARK, 299, seed=0) == drawn[299]


def test_textual_inversion_templates_with_placeholder():
  assert len(prompts.TEXTUAL_INVERSION_TEMPLATES) == 27
  expected = {t.format("<n01491361>") for t in prompts.TEXTUAL_INVERSION_TEMPLATES}
  drawn = {prompts.build_prompt("textual_inversion", SHARK, i, 3, placeholder="<n01491361>") for i in range(200)}
  assert drawn <= expected and "a photo of a <n01491361>" in expected and len(drawn) > 20
  with pytest.raises(ValueError, match="placeholder"):
    prompts.build_prompt("textual_inversion", SHARK, 0, 0)


def test_bad_strategy_and_arguments():
  with pytest.raises(ValueError, match="unknown prompt strategy 'clip'"):
    prompts.build_prompt("clip", SHARK, 0, 0)
  with pytest.raises(ValueError, match="only used by strategies that take one, not by 'simple'"):
    prompts.build_prompt("simple", SHARK, 0, 0, placeholder="<x>")
  with pytest.raises(ValueError, match="image index"):
    prompts.build_prompt("clip_templates", SHARK, -1, 0)
