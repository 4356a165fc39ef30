"""Classifier block: the downstream ResNet-50 and the paper's training recipe (Burg et al. 2023, Sec. 4).

`train_and_evaluate(config, workdir)` (jax_aug/classifier/train.py) takes this block with the run fields
filled in (train_manifests, validation_manifest, test_manifest, wnids; see configs/methods/baseline_10pct.py):

  python train_classifier.py --config=configs/methods/baseline_10pct.py:tiny --workdir=runs/baseline_10pct

Paper scale: ResNet-50 at 224 px, global batch 256, SGD lr 0.1, momentum 0.9, weight decay 1e-4, lr / 10
after 10 epochs without validation improvement, stop after 20 such epochs or 270 epochs. Tiny: the same
code with a 2-stage, 8-filter ResNet at 32 px and a few epochs (seconds on a CPU).
"""

import ml_collections


def get(scale: str) -> ml_collections.ConfigDict:
  tiny = scale == "tiny"
  config = ml_collections.ConfigDict()

  config.model = ml_collections.ConfigDict()
  # torchvision resnet50: 4 stages of (3, 4, 6, 3) bottlenecks, 64 stem filters. Tiny: the same module.
  config.model.stage_sizes = (1, 1) if tiny else (3, 4, 6, 3)
  config.model.num_filters = 8 if tiny else 64
  # Compute precision; parameters stay float32. "bfloat16" on GPU/TPU.
  config.model.dtype = "float32"
  # BatchNorm statistics over the "global" batch (synchronised across devices; results independent of the
  # device count) or "per_device" (each device's shard alone, as the paper's 8-GPU DDP without SyncBN).
  config.model.batch_norm = "global"

  # Parameters, batch statistics and SGD momentum "replicated" on every device, or "fsdp": split over the
  # data axis (jax_aug/sharding.py), for models whose state does not fit one device. Same results.
  config.parameter_sharding = "replicated"
  # Devices the run trains on: 0, every device of every host; N, the first N of a single-process run (the mini
  # world's tiny ResNet trains faster on one CPU device than split over two: configs/mini.py).
  config.num_devices = 0

  config.global_batch_size = 16 if tiny else 256
  config.eval_batch_size = 32 if tiny else 256

  config.optimizer = ml_collections.ConfigDict()
  # The paper states batch 256 and lr 0.1; written as a formula so other batch sizes scale linearly.
  config.optimizer.learning_rate = 0.1 / 256 * config.global_batch_size
  # Not stated in the paper: torchvision's ImageNet reference recipe.
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = False
  config.optimizer.weight_decay = 1e-4
  # "all": every parameter incl. BN and biases (torch.optim.SGD's weight_decay); "kernels": conv/fc only.
  config.optimizer.weight_decay_applies_to = "all"

  config.schedule = ml_collections.ConfigDict()
  config.schedule.lr_patience = 3 if tiny else 10
  config.schedule.lr_factor = 0.1
  config.schedule.stop_patience = 6 if tiny else 20
  config.schedule.max_epochs = 8 if tiny else 270
  config.schedule.min_delta = 0.0

  # Input pipeline (jax_aug.data.pipeline): RandomResizedCrop + flip for training, resize + centre crop
  # for evaluation, as torchvision's ImageNet recipe.
  config.input = ml_collections.ConfigDict()
  config.input.image_size = 32 if tiny else 224
  config.input.crop_scale = (0.08, 1.0)
  config.input.crop_ratio = (3 / 4, 4 / 3)
  config.input.eval_crop_fraction = 0.875
  # Colour augmentation after the crop (jax_aug.data.pipeline.Photometric: torchvision's ColorJitter strengths
  # (brightness, contrast, saturation, hue) applied with probability color_jitter_p, then RandomGrayscale).
  # Off, as in the paper's recipe; the mini world's recognizer turns it on (jax_aug.mini_world.recognition).
  config.input.color_jitter = (0.0, 0.0, 0.0, 0.0)
  config.input.color_jitter_p = 1.0
  config.input.grayscale_p = 0.0
  config.input.num_workers = 0 if tiny else 16
  # Only for records with tfds:// paths.
  config.input.tfds_data_dir = ""
  config.input.tfds_name = "imagenet2012"
  # A decode-once cache (jax_aug.data.cache.write_cache of the training, validation and test records) to
  # read pixels from instead of the JPEGs. Off (""): a cache with a stored side smaller than the images
  # changes the pixels the crops see (docs/data.md).
  config.input.cache_dir = ""
  # Decoded images kept in the process's memory up to this many MiB (jax_aug.data.cache.MemoryCachedReader),
  # for in-process loading (num_workers 0): every epoch and every classifier of a study decodes an image once.
  # Off (0) at paper scale, where 16 worker processes load and ImageNet's decoded subset is ~7 GiB.
  config.input.memory_cache_mb = 0

  # Run fields, filled per run (by the method config or the study runner).
  # Record manifests (JSON lines of {"wnid", "path", ...}) trained on together: the subset, plus one
  # resampled augmentation set for augmented methods.
  config.train_manifests = ()
  config.validation_manifest = ""  # plateau schedule, early stopping, best checkpoint
  config.test_manifest = ""  # scored once with the best checkpoint (official ILSVRC2012 val)
  # The study's class list (after exclusions), in label order; labels are positions in it.
  config.wnids = ()
  config.resample_index = -1  # which resampled augmentation set (-1: none, a baseline)
  config.seed = 0  # parameter init and input order / augmentation
  config.log_every_steps = 10  # per-step metrics (TensorBoard, NaN/inf guard) are read from the device this often
  # Resumable checkpoints (latest, and the best so far, held in memory until then) after every N-th epoch and the
  # last: a preempted run redoes at most N-1 epochs, to the same results. 1 at paper scale (an epoch is long);
  # more where an epoch takes less than a checkpoint's save (the mini world's tiny classifier).
  config.checkpoint_every_epochs = 1
  # A jax.profiler trace of train steps [profile_first_step, + profile_steps) under <workdir>/tensorboard
  # (jax_aug.metrics.StepProfiler); 0 steps: off. After the first step, which compiles.
  config.profile_steps = 0
  config.profile_first_step = 10
  return config
