"""configs/paper.py against the protocol (../shared/PROTOCOL.md), checked through the code that consumes
each number where there is such code; configs/tiny.py is the same study with tiny numbers."""

import math
import re
from pathlib import Path

import pytest

from jax_aug.data import subsets
from jax_aug.finetune import checkpoint_policy
from jax_aug.retrieval import filters
from jax_aug.retrieval.gradual_k import k_schedule
from jax_aug.study import methods as methods_lib
from jax_aug.study.config_files import load_module

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SD14 = "CompVis/stable-diffusion-v1-4"
SAMPLING_METHODS = ("boomerang", "simple_prompt_no_ws", "simple_prompt", "sariyildiz_prompts", "clip_prompts")
FINETUNE_METHODS = ("ft_conditioning", "ft_cluster_conditioning", "imagic", "textual_inversion", "pseudo_word_dm")


@pytest.fixture(scope="module")
def paper():
  return load_module(CONFIGS / "paper.py").get_config()


@pytest.fixture(scope="module")
def tiny():
  return load_module(CONFIGS / "tiny.py").get_config()


def test_paper_resamples_and_subset_sizes(paper):
  assert paper.scale == "paper" and paper.n_resamples == 5 and paper.methods == "all"
  assert paper.report.tiny_random_init_models is False
  # ceil(10%) per class on ILSVRC2012's class sizes 732..1300 (74..130 per class), with a disjoint
  # validation split of the same size and a 20% subset.
  counts = {f"n{1000000 + i:08d}": n for i, n in enumerate((732, 1300, 1299, 1001, 861))}
  records = [{"wnid": w, "path": f"{w}/{j}.JPEG"} for w, n in counts.items() for j in range(n)]
  splits = subsets.make_splits(
    records,
    seed=paper.data.split_seed,
    subset_fraction=paper.data.subset_fraction,
    upper_bound_fraction=paper.data.upper_bound_fraction,
  )
  sizes = subsets.per_class_counts(splits["subset"])
  assert sizes == {w: math.ceil(n / 10) for w, n in counts.items()}
  assert sizes["n01000000"] == 74 and sizes["n01000001"] == 130
  assert subsets.per_class_counts(splits["validation"]) == sizes
  assert subsets.per_class_counts(splits["subset_20"]) == {w: math.ceil(n / 5) for w, n in counts.items()}


def test_paper_classifier_recipe(paper):
  c = paper.classifier
  assert c.model.stage_sizes == (3, 4, 6, 3) and c.model.num_filters == 64  # ResNet-50
  assert c.input.image_size == 224
  assert c.global_batch_size == 256
  assert c.optimizer.learning_rate == pytest.approx(0.1)
  assert c.schedule.lr_factor == pytest.approx(0.1)
  assert c.schedule.lr_patience == 10 and c.schedule.stop_patience == 20 and c.schedule.max_epochs == 270


@pytest.mark.parametrize("method", FINETUNE_METHODS)
def test_paper_finetuning_epochs_and_checkpoint_sets(paper, method):
  c = paper.method_configs[method]
  assert c.model.path == SD14 and c.resolution == 512 and c.images_per_class == 390
  p = c.finetune.policy
  # The epochs the trainer's loop runs (should_stop after each), then the checkpoints the policy keeps.
  # Validation loss falls until epoch 20, then rises; Imagic's still falls at 40 (paper Sec. 3.2) and also
  # when it rises from epoch 2 on, Imagic trains exactly 8 epochs.
  for val_curve in ((lambda e: 1.0 + abs(e - 20)), (lambda e: 1.0 + abs(e - 1))):
    history = []
    for e in range(1, 100):
      history.append(checkpoint_policy.EpochLosses(e, 1.0 / e, val_curve(e)))
      if checkpoint_policy.should_stop(
        [h.val_loss for h in history],
        patience=p.patience,
        max_epochs=p.max_epochs,
        min_relative_improvement=p.min_relative_improvement,
      ):
        break
    kept = checkpoint_policy.checkpoints_to_keep(history, p.keep_epochs, p.keep_best)
    if method == "imagic":
      # Exactly the first 8 epochs, no best-train / best-validation checkpoint beyond them.
      assert len(history) == 8 and kept == {f"epoch_{e}": e for e in range(1, 9)}
    elif val_curve(2) > val_curve(1):
      assert len(history) == 1 + p.patience and kept == {
        "best_train": 3,
        "best_val": 1,
        "epoch_1": 1,
        "epoch_2": 2,
        "epoch_3": 3,
      }
    else:
      assert p.max_epochs == 40 and len(history) == 20 + p.patience
      assert kept == {"best_train": 22, "best_val": 20, **{f"epoch_{e}": e for e in range(1, 4)}}


@pytest.mark.parametrize("method", SAMPLING_METHODS)
def test_paper_sampling_is_sd14_at_512px_390_per_class(paper, method):
  c = paper.method_configs[method]
  assert c.method.name == method and c.method.kind == ("boomerang" if method == "boomerang" else "prompt")
  assert c.model.path == SD14
  assert c.images_per_class == 390
  assert c.resolution == 512 and c.num_inference_steps == 50 and c.scheduler == "pndm"
  assert c.guidance_scale == pytest.approx(7.5)
  assert c.safety_checker is True
  assert (c.boomerang_strength > 0) == (method == "boomerang")


def test_paper_retrieval_k_schedule_and_filters(paper):
  c = paper.method_configs.retrieval
  assert c.images_per_class == 130
  assert c.clip.model == "openai/clip-vit-large-patch14"  # SD v1.4's text tower
  ks = k_schedule(c.images_per_class, c.k_factor, c.max_multiple)
  assert ks[0] == round(1.4 * 130) == 182 and ks[-1] == round(6 * 1.4 * 130) == 1092
  assert ks == sorted(ks) and len(ks) == 6
  # Aesthetic >= 5 is kept, below 5 dropped.
  assert filters.aesthetic_reasons([4.99, 5.0, 6.5], c.filters.min_aesthetic) == [
    filters.aesthetic_reasons([4.99], c.filters.min_aesthetic)[0],
    None,
    None,
  ]
  assert filters.aesthetic_reasons([4.99], c.filters.min_aesthetic)[0] is not None
  assert c.index.deduplicate and c.index.dedup_threshold == pytest.approx(0.94)
  assert c.filters.safety_checker == SD14


def test_every_method_has_a_config_block_and_tiny_mirrors_paper(paper, tiny):
  # Every row of the paper's Table 1 is a method config file, with the kind its stages follow.
  assert [m.name for m in methods_lib.select(paper, "all")] == list(methods_lib.TABLE1_NAMES)
  assert {m.name: m.kind for m in methods_lib.select(paper, "all")} == {
    "baseline_10pct": "baseline",
    "baseline_20pct": "baseline",
    "retrieval": "retrieval",
    "boomerang": "boomerang",
    **{m: "prompt" for m in SAMPLING_METHODS if m != "boomerang"},
    **{m: "finetuned" for m in FINETUNE_METHODS},
  }
  for name in methods_lib.TABLE1_NAMES:
    assert paper.method_configs[name].method.name == name and name in tiny.method_configs
  assert tiny.scale == "tiny" and tiny.report.tiny_random_init_models is True
  assert 2 <= tiny.n_resamples < paper.n_resamples
  # Same structure at both scales: tiny changes numbers, not the code path.
  assert sorted(tiny.to_dict()) == sorted(paper.to_dict())
  assert sorted(tiny.method_configs.to_dict()) == sorted(paper.method_configs.to_dict())


def test_method_selection_names_unknown_methods(tiny):
  assert [m.name for m in methods_lib.select(tiny, "retrieval,baseline_10pct")] == ["baseline_10pct", "retrieval"]
  assert len(methods_lib.select(tiny, "all")) == len(methods_lib.TABLE1)
  with pytest.raises(ValueError, match=r"unknown method\(s\) \['simple'\]"):
    methods_lib.select(tiny, "simple,retrieval")


def test_paper_prompts_use_all_lemmas_and_clip_prompts_fill_in_w_of_n(paper):
  from jax_aug.diffusion import methods as sampling_methods

  shark = "n01491361"  # lemmas: tiger shark, Galeocerdo cuvieri
  for name, first in (
    ("simple_prompt", "A photo of tiger shark, Galeocerdo cuvieri."),
    ("simple_prompt_no_ws", "A photo of tigershark,Galeocerdocuvieri."),
  ):
    c = paper.method_configs[name]
    requests = sampling_methods.build_requests(
      c.method.kind,
      wnids=[shark],
      images_per_class=2,
      seed=c.seed,
      prompt_strategy=c.method.prompt_strategy,
      lemmas=c.prompt_lemmas,
    )
    assert [r.prompt for r in requests] == [first, first]
  c = paper.method_configs.clip_prompts
  requests = sampling_methods.build_requests(
    c.method.kind,
    wnids=[shark],
    images_per_class=100,
    seed=c.seed,
    prompt_strategy=c.method.prompt_strategy,
    lemmas=c.prompt_lemmas,
  )
  assert all(
    r.prompt.endswith("tigershark,Galeocerdocuvieri.") or "tigershark,Galeocerdocuvieri " in r.prompt for r in requests
  )


def test_paper_lr_grid_search_stages_per_finetuned_method(paper, tmp_path):
  from jax_aug.study import runner

  stages = {s.name: s for s in runner.plan(paper, tmp_path)}
  for method in FINETUNE_METHODS:
    block = paper.method_configs[method].finetune
    factors = tuple(block.lr_search.factors)
    # A fine grid (half-octave steps) around the base rates, at least 5 points per method.
    assert len(factors) >= 5 and 1.0 in factors and list(factors) == sorted(factors)
    assert all(b / a == pytest.approx(2**0.5) for a, b in zip(factors, factors[1:]))
    for index, factor in enumerate(factors):
      run = stages[f"finetune/{method}/lr{index}"].config["finetune"]
      for group in ("conditioning", "pseudo_words", "unet"):
        # The rate the trainer reads: base x factor x sqrt(8 / 1) (paper: square-root batch scaling).
        assert run.learning_rate[group] == pytest.approx(block.base_learning_rate[group] * factor * 8**0.5)
    assert f"finetune/{method}/lr{len(factors)}" not in stages
    assert stages[f"lr_search/{method}"].upstream == tuple(f"finetune/{method}/lr{i}" for i in range(len(factors)))
    assert f"lr_search/{method}" in stages[f"select/{method}"].upstream


def test_paper_boomerang_strength_grid_is_chosen_on_validation(paper, tmp_path):
  from jax_aug.diffusion import boomerang
  from jax_aug.study import runner

  c = paper.method_configs.boomerang
  assert tuple(c.boomerang_strength_grid) == (0.1, 0.2, 0.3, 0.5)
  # Each strength re-runs a part of the 50-step schedule (start_step refuses one that re-runs none).
  assert [c.num_inference_steps - boomerang.start_step(c.num_inference_steps, s) for s in c.boomerang_strength_grid] == [
    5,
    10,
    15,
    25,
  ]
  names = [s.name for s in runner.plan(paper, tmp_path)]
  assert "select/boomerang" in names and "augment/boomerang" not in names


def test_ablations_are_ready_and_off_by_default(paper, tiny):
  assert paper.ablations == "" and tiny.ablations == ""
  k = {n: paper.method_configs[f"ft_cluster_conditioning_k{n}"].finetune.trainables.clusters_per_class for n in (1, 10, 15)}
  assert k == {1: 1, 10: 10, 15: 15}
  assert paper.method_configs.ft_cluster_conditioning.finetune.trainables.clusters_per_class == 5
  assert paper.method_configs.simple_prompt_first_lemma.prompt_lemmas == "first"
  assert paper.method_configs.simple_prompt_first_lemma.method.name == "simple_prompt"
  # Everything else is the varied method's config.
  base = paper.method_configs.ft_cluster_conditioning.to_dict()
  ablation = paper.method_configs.ft_cluster_conditioning_k10.to_dict()
  ablation["finetune"]["trainables"]["clusters_per_class"] = 5
  assert ablation == base


def test_paper_figure5_classes_include_crane(paper):
  from jax_aug.data.imagenet_classes import class_by_wnid

  names = [class_by_wnid(w).name for w in paper.report.figure5_classes.split(",")]
  assert names[:5] == [
    "tiger shark, Galeocerdo cuvieri",
    "papillon",
    "desktop computer",
    "motor scooter, scooter",
    "mailbag, postbag",
  ]
  assert names[5:] == ["crane", "crane"] and paper.report.figure5_max_classes == 7


def test_every_method_config_is_one_call_of_the_shared_helper():
  from jax_aug.study.config_files import method_config

  for path in sorted((CONFIGS / "methods").glob("*.py")):
    assert re.search(r"common\.method_config\(\s*__file__,\s*arg,", path.read_text()), path
    for scale in ("tiny", "paper"):
      assert method_config(CONFIGS, path.stem, scale).method.name == path.stem


def test_config_argument_overrides_are_typed_by_the_field_and_unknown_keys_refused():
  from jax_aug.study.config_files import method_config

  base = method_config(CONFIGS, "clip_prompts", "paper")
  c = method_config(
    CONFIGS,
    "clip_prompts",
    "paper,images_per_class=50,guidance_scale=3,safety_checker=false,model.path=/weights/sd14,prompt_lemmas=first",
  )
  assert c.images_per_class == 50 and type(c.images_per_class) is int
  assert c.guidance_scale == 3.0 and type(c.guidance_scale) is float
  assert c.safety_checker is False and c.model.path == "/weights/sd14" and c.prompt_lemmas == "first"
  # Nothing else changes.
  changed = {k for k in base if base[k] != c[k]}
  assert changed == {"images_per_class", "guidance_scale", "safety_checker", "model", "prompt_lemmas"}
  # Sequences (commas inside brackets stay in the value), nested blocks.
  b = method_config(CONFIGS, "boomerang", "tiny,boomerang_strength_grid=(0.25, 0.5, 0.75),data.split_seed=3")
  assert b.boomerang_strength_grid == (0.25, 0.5, 0.75) and b.data.split_seed == 3
  i = method_config(CONFIGS, "imagic", "paper,finetune.policy.max_epochs=40,finetune.trainables.train_unet=false")
  assert i.finetune.policy.max_epochs == 40 and i.finetune.trainables.train_unet is False
  with pytest.raises(ValueError, match=r"'images_per_clas' is not a field of the config; valid keys: \[.*'images_per_cl"):
    method_config(CONFIGS, "clip_prompts", "paper,images_per_clas=50")
  with pytest.raises(ValueError, match=r"'max_epoch' is not a field of finetune.policy; valid keys: \[.*'max_epochs'"):
    method_config(CONFIGS, "imagic", "paper,finetune.policy.max_epoch=40")
  with pytest.raises(ValueError, match=r"images_per_class='many': not a int"):
    method_config(CONFIGS, "clip_prompts", "paper,images_per_class=many")
  with pytest.raises(ValueError, match=r"'images_per_class' is not key=value"):
    method_config(CONFIGS, "clip_prompts", "paper,images_per_class")
  with pytest.raises(ValueError, match=r"unknown scale 'huge'"):
    method_config(CONFIGS, "clip_prompts", "huge,images_per_class=1")
