"""The report's protocol section: every setting the run used, each marked as given by the paper or as ours.

Pure: reads a study config, returns rows {"setting", "value", "source"}; `source` is where the paper gives
the setting (section), or NOT_GIVEN when the paper does not state it and the value is our choice.
"""

from __future__ import annotations

NOT_GIVEN = "not given in the paper, our choice"


def _first(config, kind_names: tuple[str, ...], field: str):
  """A field of the first selected method config that has it (the methods share their area blocks)."""
  for name in kind_names:
    block = config.method_configs.get(name)
    if block is not None:
      value = block
      for part in field.split("."):
        value = value[part]
      return value
  return None


def _imagic(config) -> str:
  policy = _first(config, ("imagic",), "finetune.policy")
  kept = tuple(e for e in policy.keep_epochs if e <= policy.max_epochs)
  return f"{policy.max_epochs} / epochs {kept}" + (", best train, best validation" if policy.keep_best else "")


def protocol_rows(config) -> list[dict]:
  c, sampling = config.classifier, ("simple_prompt", "clip_prompts")
  tuned = ("ft_conditioning", "imagic", "textual_inversion")
  rows = [
    (
      "scale of this run",
      f"{config.scale}, in the mini world (trained models, docs/mini_world.md)" if "mini_world" in config else config.scale,
      "tiny: the same code with tiny numbers" if config.scale == "tiny" else "the paper's protocol",
    ),
    ("resampled augmentation sets per method (one classifier each)", config.n_resamples, "Sec. 3: 5"),
    (
      "10% subset per class / validation split",
      f"ceil({config.data.subset_fraction} x n_c), disjoint validation of the same size",
      "Sec. 3",
    ),
    ("classifier", f"ResNet stages {tuple(c.model.stage_sizes)}, {c.input.image_size} px", "Sec. 3: ResNet-50"),
    ("classifier batch / learning rate", f"{c.global_batch_size} / {c.optimizer.learning_rate}", "Sec. 3: 256 / 0.1"),
    (
      "classifier lr / 10 after, stop after, at most (epochs)",
      f"{c.schedule.lr_patience} / {c.schedule.stop_patience} / {c.schedule.max_epochs}",
      "Sec. 3: 10 / 20 / 270",
    ),
    (
      "classifier momentum / weight decay",
      f"{c.optimizer.get('momentum')} / {c.optimizer.get('weight_decay')}",
      NOT_GIVEN + " (PyTorch reference recipe)",
    ),
    (
      "diffusion model, resolution",
      f"{_first(config, sampling, 'model.path') or 'tiny random-init SD'},"
      f" {_first(config, sampling, 'resolution') or 'native'} px",
      "Sec. 3.2: SD v1.4, 512 px",
    ),
    ("images per class per DM method", _first(config, sampling, "images_per_class"), "Sec. 3: 390"),
    (
      "sampler: scheduler / steps / guidance",
      f"{_first(config, sampling, 'scheduler')} /"
      f" {_first(config, sampling, 'num_inference_steps')} / {_first(config, sampling, 'guidance_scale')}",
      NOT_GIVEN,
    ),
    ("safety checker replaces flagged images", _first(config, sampling, "safety_checker"), "Sec. 3.2"),
    (
      "class name n of the prompts",
      _first(config, sampling, "prompt_lemmas") + " lemmas joined by ', '",
      "Sec. 3.2 (all lemmas; first lemma only is an ablation)",
    ),
    (
      "Boomerang strength grid (chosen by validation top-1)",
      _first(config, ("boomerang",), "boomerang_strength_grid"),
      NOT_GIVEN,
    ),
    ("fine-tuning: at most epochs", _first(config, tuned, "finetune.policy.max_epochs"), "Sec. 3.2: 40"),
    (
      "fine-tuning: stop after epochs without validation improvement",
      _first(config, tuned, "finetune.policy.patience"),
      NOT_GIVEN + " (paper: 'stagnated or increased')",
    ),
    (
      "fine-tuning: kept checkpoints",
      f"best train, best validation, epochs {tuple(_first(config, tuned, 'finetune.policy.keep_epochs'))}",
      "Sec. 3.2",
    ),
    ("Imagic: epochs trained / kept checkpoints", _imagic(config), "Sec. 3.2: the first 8 epochs"),
    (
      "fine-tuning: batch / base batch (lr x sqrt(ratio))",
      f"{_first(config, tuned, 'finetune.batch_size')} / {_first(config, tuned, 'finetune.base_batch_size')}",
      "Sec. 3.2: sqrt scaling; batch " + NOT_GIVEN,
    ),
    (
      "fine-tuning: base learning rates (conditioning / pseudo-words / U-Net)",
      " / ".join(
        str(_first(config, tuned, f"finetune.base_learning_rate.{g}")) for g in ("conditioning", "pseudo_words", "unet")
      ),
      NOT_GIVEN + " (published works' values)",
    ),
    (
      "fine-tuning: learning-rate grid (factors), winner by validation loss",
      tuple(_first(config, tuned, "finetune.lr_search.factors")),
      "Sec. 3.2: grid search; grid and criterion " + NOT_GIVEN,
    ),
    (
      "fine-tuning: AdamW betas / eps / weight decay / clip",
      "{b1} / {b2} / {eps} / {weight_decay} / {max_grad_norm}".format(
        **_first(config, tuned, "finetune.optimizer").to_dict()
      ),
      NOT_GIVEN,
    ),
    (
      "FT cluster conditioning: k",
      _first(config, ("ft_cluster_conditioning",), "finetune.trainables.clusters_per_class"),
      "Sec. 4.4: k = 5",
    ),
    ("checkpoint / strength selection: resampled set", config.selection.resample, NOT_GIVEN),
    (
      "retrieval: images per class, k schedule",
      f"{_first(config, ('retrieval',), 'images_per_class')},"
      f" {_first(config, ('retrieval',), 'k_factor')} x .. {_first(config, ('retrieval',), 'max_multiple')} x",
      "Sec. 3.2",
    ),
    ("retrieval: minimum aesthetic score", _first(config, ("retrieval",), "filters.min_aesthetic"), "Sec. 3.2"),
    ("ablations run", config.ablations or "none", "Sec. 3.2, 4.4"),
  ]
  return [{"setting": s, "value": str(v), "source": src} for s, v, src in rows]
