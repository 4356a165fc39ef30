"""Fine-tuning block (jax_aug/finetune, finetune_dm.py): trainables, batch, learning rates, checkpoint policy.

Paper Sec. 3.2: the standard SD objective, until the validation loss stagnates or rises, at most 40
epochs; learning rate scaled by sqrt of the batch-size ratio; checkpoints with the best train loss, the
best validation loss and after epochs 1, 2, 3. The methods' own configs (configs/methods/) say what
trains. Tiny runs the same code on a tiny random SD built into the workdir, in seconds on a CPU.
"""

import ml_collections


def get(scale: str) -> ml_collections.ConfigDict:
  tiny = scale == "tiny"
  config = ml_collections.ConfigDict()
  # The base model is the method config's `model` block (configs/base/diffusion.py), shared with sampling;
  # in bfloat16 the frozen weights are stored and all compute runs in bfloat16 while the trainable
  # master weights and the optimizer stay float32 (docs/finetune.md: memory at SD v1.4 size).
  # Set by configs/methods/<method>.py: conditioning (a kind: "tensor" | "pseudo_word"), clusters_per_class,
  # train_unet (jax_aug/finetune/trainables/).
  config.trainables = ml_collections.ConfigDict({"conditioning": "tensor", "clusters_per_class": 1, "train_unet": False})
  # jax.checkpoint_policies name for rematerializing each U-Net block in the backward pass ("" = off;
  # jax_aug/finetune/remat.py), e.g. "nothing_saveable" keeps only the blocks' inputs, or
  # "dots_with_no_batch_dims_saveable" also the weight matmuls' outputs, and recomputes the rest.
  config.gradient_checkpointing = ""
  # Where the trainable tree and its AdamW state live (jax_aug/sharding.py): "replicated" on every device,
  # or "fsdp", each large leaf split over the data axis (a 1/N share per device, the same parameters within
  # float rounding, identical on one device). configs/common.py picks "fsdp" for the methods that train the
  # U-Net: its float32 weights, gradients and moments are 12.8 GiB replicated, 0.8 GiB per chip on 16
  # (docs/plan.md). The frozen weights (bfloat16) stay replicated.
  config.parameter_sharding = "replicated"
  # Devices the run trains on: 0, every device of every host; N, the first N of a single-process run (the mini
  # world's U-Net fine-tuning runs faster on one CPU device than split over two: configs/mini.py).
  config.num_devices = 0
  config.seed = 0

  # Global batch over all devices (the paper does not state its batch). Paper scale: 8, which the memory
  # estimate of docs/finetune.md fits on one 80 GB accelerator even when the U-Net trains (about 4.5 GB
  # of bfloat16 activations per image + 16 GB of float32 weights / gradients / AdamW moments).
  config.batch_size = ml_collections.FieldReference(4 if tiny else 8)
  # Learning rates are given for base_batch_size and scaled by sqrt(batch_size / base_batch_size) (paper:
  # constant gradient variance). Base values at batch 1: Imagic's SD re-implementations (conditioning
  # 1e-3, U-Net 2e-6), textual inversion's 5e-3 for the pseudo-word rows; the paper grid-searched them.
  config.base_batch_size = ml_collections.FieldReference(1)
  config.base_learning_rate = ml_collections.ConfigDict()
  config.base_learning_rate.conditioning = ml_collections.FieldReference(5e-2 if tiny else 1e-3)
  config.base_learning_rate.pseudo_words = ml_collections.FieldReference(5e-2 if tiny else 5e-3)
  config.base_learning_rate.unet = ml_collections.FieldReference(1e-3 if tiny else 2e-6)
  scale_factor = (config.get_ref("batch_size") / config.get_ref("base_batch_size")) ** 0.5
  config.learning_rate = ml_collections.ConfigDict()
  for group in ("conditioning", "pseudo_words", "unet"):
    config.learning_rate[group] = config.base_learning_rate.get_ref(group) * scale_factor
  # The learning-rate grid search (paper Sec. 3.2, jax_aug/finetune/lr_search.py): one fine-tuning run per
  # factor, each multiplying every group's base learning rate; the lowest validation loss wins. Paper:
  # half-octave steps around the base rates (5 points per method); tiny: the fewest that make a choice.
  config.lr_search = ml_collections.ConfigDict()
  config.lr_search.factors = (0.5, 1.0) if tiny else tuple(2.0 ** (k / 2) for k in range(-2, 3))
  config.optimizer = ml_collections.ConfigDict(
    {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "max_grad_norm": 1.0}
  )

  config.policy = ml_collections.ConfigDict()
  config.policy.max_epochs = 3 if tiny else 40
  config.policy.keep_epochs = (1, 2, 3)
  config.policy.keep_best = True
  # Stop after `patience` epochs in a row whose validation loss is not below the best so far by more
  # than min_relative_improvement (jax_aug/finetune/checkpoint_policy.py).
  config.policy.patience = 2
  config.policy.min_relative_improvement = 1e-3
  # Resumable state every N steps inside an epoch (0: only at epoch ends).
  config.checkpoint_every_steps = 0 if tiny else 500
  # A jax.profiler trace of train steps [profile_first_step, + profile_steps) under <workdir>/tensorboard
  # (0: off). Steps count from 1 as in metrics.jsonl; step 1 compiles, so the default starts later.
  # (A method config's top-level profile_* fields are the sampling block's, not these.)
  config.profile_steps = 0
  config.profile_first_step = 10

  # FT cluster conditioning: k-means on Inception-v3 pool features (the paper's), or on a CLIP image tower's
  # embeddings ("clip", `clip_model`: the mini world's, whose world has no ImageNet-trained Inception).
  config.clusters = ml_collections.ConfigDict()
  config.clusters.features = "inception_v3"
  config.clusters.clip_model = ""
  # torchvision's inception_v3_google-0cc3c7bd.pth (or .safetensors / .npz of its state dict); empty
  # (tiny only): random init.
  config.clusters.inception_weights = "" if tiny else "weights/inception_v3_google-0cc3c7bd.pth"
  config.clusters.image_size = 75 if tiny else 299
  config.clusters.batch_size = 16 if tiny else 64
  config.clusters.seed = 0

  # Sampling from a fine-tuned model (sample.py with the same method config): the fine-tuning run's
  # workdir and which kept checkpoint ("best_val", "best_train", "epoch_<e>", or a checkpoint directory).
  config.workdir = ""
  config.checkpoint = "best_val"
  return config
