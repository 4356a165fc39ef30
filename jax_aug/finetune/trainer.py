"""THE fine-tuning loop shared by the five personalization methods (methods.py says what differs).

finetune(config, workdir):
  1. loads SD (or builds the tiny random one), the study's subset / validation splits, and for FT cluster
     conditioning the k-means clusters of each class (clusters.py);
  2. trains the method's trainable tree with the latent-diffusion objective, data-parallel over all
     devices (jit + NamedSharding from jax_aug.sharding; parameters replicated, batches split);
  3. after each epoch: validation loss, checkpoint policy (best train, best val, fixed epochs), stopping
     rule; `metrics.jsonl` gets one line per step and per epoch;
  4. resumes from `progress.json` + the state checkpoint it names, repeating exactly the same batches and
     noise (both are functions of (seed, epoch, example index)).

Workdir layout: finetune.json (what the checkpoints mean), clusters.json, metrics.jsonl, progress.json,
checkpoints/state_<step>/ (trainable + optimizer, for resuming), checkpoints/epoch_<e>/ (trainable only,
the checkpoints the policy keeps; `kept_checkpoints` lists them by role).
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from tqdm import tqdm

from jax_aug import sharding
from jax_aug.data import subsets
from jax_aug.data.imagenet_classes import class_by_wnid
from jax_aug.data.sources import ImageReader
from jax_aug.finetune import checkpoint_policy, clusters, objective, pseudo_word
from jax_aug.finetune.data import BatchReader, Example, epoch_order
from jax_aug.finetune.methods import MethodSpec, conditioning_index, encoder_hidden_states, initial_trainable
from jax_aug.io import JsonlManifest, atomic_write_json, read_json

log = logging.getLogger(__name__)

INFO_FILE = "finetune.json"
PROGRESS_FILE = "progress.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
TRAIN_KEY, VALIDATION_KEY = 0, 1  # folded into the seed: training and validation noise never coincide


# --- model and data --------------------------------------------------------------------------------------

def load_model(config: Any, workdir: Path) -> tuple[Any, dict]:
  """The method config's base SD (the sampling engine's loader: an empty path builds the tiny random SD
  into <workdir>/tiny_sd), and the arguments that load it again (for finetune.json)."""
  from jax_aug.diffusion.loading import load_configured
  model = config.model
  path = model.path or str(workdir / "tiny_sd")
  source = {"path": path, "dtype": model.dtype, "revision": model.revision or None, "from_pt": bool(model.from_pt)}
  return load_configured(model, workdir), source


def split_records(data_config: Any, splits_dir: str, workdir: Path
                   ) -> tuple[list[str], list[dict], list[dict], ImageReader]:
  """The study's classes, subset and validation records (prepared into <workdir>/data when no
  splits_dir is given), and the reader of their images."""
  if splits_dir:
    splits_dir = Path(splits_dir)
  else:
    splits_dir = subsets.prepare_splits(data_config, workdir / "data")["subset"].parent
  info = read_json(splits_dir / "info.json")
  wnids = list(info["wnids"])
  train = subsets.read_manifest(splits_dir / "subset.jsonl")
  validation = subsets.read_manifest(splits_dir / "validation.jsonl")
  if not validation:
    raise ValueError(f"{splits_dir / 'validation.jsonl'} lists no images: fine-tuning stops on the validation"
                     " loss (and keeps the best-validation checkpoint), so it needs a non-empty validation split")
  _, tfds_dir = subsets.dataset_dirs(data_config, workdir / "data")
  return wnids, train, validation, ImageReader(tfds_dir)


def make_examples(records: list[dict], wnids: list[str], cluster_of: dict[str, int] | None, k: int) -> list[Example]:
  label_of = {w: i for i, w in enumerate(wnids)}
  examples = []
  for i, r in enumerate(records):
    if r["wnid"] not in label_of:
      raise ValueError(f"record {r['path']} has class {r['wnid']}, which is not among the study's classes")
    label = label_of[r["wnid"]]
    cluster = cluster_of[r["path"]] if cluster_of is not None else 0
    examples.append(Example(r["path"], label, i, conditioning_index(label, cluster, k)))
  return examples


# --- the step --------------------------------------------------------------------------------------------

def learning_rates(config: Any) -> dict[str, float]:
  """Per trainable group: the config's learning rates, already scaled by sqrt(batch / base batch)."""
  return {"conditioning": config.learning_rate.conditioning, "pseudo_words": config.learning_rate.pseudo_words,
          "unet": config.learning_rate.unet}


def make_optimizer(config: Any, trainable: dict) -> optax.GradientTransformation:
  """AdamW per trainable group (own learning rate), after global-norm gradient clipping. The rates live in
  the optimizer state, not in the compiled step, so the runs of a learning-rate grid share one compilation
  (jax_aug/finetune/lr_search.py)."""
  rates = learning_rates(config)
  unknown = sorted(set(trainable) - set(rates))
  if unknown:
    raise ValueError(f"trainable group(s) {unknown} have no learning rate: expected groups among {sorted(rates)}"
                     " (config.learning_rate.<group>)")
  opt = config.optimizer
  groups = {name: optax.inject_hyperparams(optax.adamw)(learning_rate=rates[name], b1=opt.b1, b2=opt.b2, eps=opt.eps,
                                                        weight_decay=opt.weight_decay) for name in trainable}
  labels = {name: jax.tree.map(lambda _, n=name: n, subtree) for name, subtree in trainable.items()}
  return optax.chain(optax.clip_by_global_norm(opt.max_grad_norm), optax.multi_transform(groups, labels))


def train_step_key(seed: int, epoch: int, step_in_epoch: int) -> jax.Array:
  """The key of one train step; every example's noise then comes from fold_in(it, the example's index)."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), TRAIN_KEY), epoch),
                            step_in_epoch)


def validation_key(seed: int) -> jax.Array:
  return jax.random.fold_in(jax.random.key(seed), VALIDATION_KEY)


def example_draws(key: jax.Array, indices: jax.Array, latent_shape: tuple[int, int, int],
                  num_timesteps: int) -> dict[str, jax.Array]:
  """`objective.draw_noise` of each example from fold_in(key, its index), stacked [B, ...]: an example's
  noise does not depend on the batch it is in (the PyTorch twin draws the same from the same keys)."""
  draws = jax.vmap(lambda i: objective.draw_noise(jax.random.fold_in(key, i), 1, latent_shape, num_timesteps))(
      indices)
  return jax.tree.map(lambda x: x[:, 0], draws)


def make_loss_fn(spec: MethodSpec, sd: Any, text_module: Any, abar: jax.Array, *,
                 gradient_checkpointing: str = "") -> Any:
  """per_example_loss(trainable, frozen, batch, key) -> [B] noise-prediction MSE of each example,
  with each example's noise drawn from fold_in(key, its index)."""
  scaling = sd.vae.config.scaling_factor
  factor = sd.vae_scale_factor
  num_timesteps = len(abar)

  def unet_apply(params, x, t, c):
    return sd.unet.apply({"params": params}, x, t, c).sample

  if gradient_checkpointing:
    policy = getattr(jax.checkpoint_policies, gradient_checkpointing)
    unet_apply = jax.checkpoint(unet_apply, policy=policy)

  def per_example_loss(trainable, frozen, batch, key):
    images = batch["image"].astype(sd.unet.dtype)
    res = images.shape[-1] // factor
    shape = (sd.unet.config.in_channels, res, res)
    draws = example_draws(key, batch["index"], shape, num_timesteps)
    latents = objective.encode_latents(sd.vae, frozen["vae"], images, draws["latent_eps"], scaling)
    hidden = encoder_hidden_states(spec, trainable, frozen, batch, text_module)
    unet_params = trainable.get("unet", frozen.get("unet"))
    noisy = objective.add_noise(abar, latents, draws["noise"].astype(latents.dtype), draws["timesteps"])
    prediction = unet_apply(unet_params, noisy, draws["timesteps"], hidden.astype(sd.unet.dtype))
    error = jnp.square(prediction.astype(jnp.float32) - draws["noise"])
    return error.mean(axis=(1, 2, 3))

  return per_example_loss


def make_steps(per_example_loss: Any, tx: optax.GradientTransformation, mesh: Any):
  """jit-compiled train and eval steps; parameters replicated, batches split over the data axis."""
  replicated = sharding.replicated_sharding(mesh)

  def weighted_mean(losses, weight):
    return (losses * weight).sum() / jnp.maximum(weight.sum(), 1.0)

  @functools.partial(jax.jit, out_shardings=(replicated, replicated, replicated), donate_argnums=(0, 1))
  def train_step(trainable, opt_state, frozen, batch, key):
    def loss(t):
      return weighted_mean(per_example_loss(t, frozen, batch, key), batch["weight"])
    value, grads = jax.value_and_grad(loss)(trainable)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, value

  @functools.partial(jax.jit, out_shardings=replicated)
  def eval_sums(trainable, frozen, batch, key):
    losses = per_example_loss(trainable, frozen, batch, key)
    return jnp.stack([(losses * batch["weight"]).sum(), batch["weight"].sum()])

  return train_step, eval_sums


def evaluate(eval_sums, trainable, frozen, reader: BatchReader, mesh, *, batch_size: int, key) -> float:
  """Mean loss over all examples of `reader`, each with the noise of its own fixed key."""
  total = np.zeros(2)
  for positions in epoch_order(len(reader.examples), batch_size, seed=0, epoch=0, shuffle=False):
    batch = sharding.global_batch(reader.batch(positions, epoch=0), mesh)
    total += np.asarray(eval_sums(trainable, frozen, batch, key))
  return float(total[0] / total[1])


# --- checkpoints ---------------------------------------------------------------------------------------

def _checkpointer() -> ocp.StandardCheckpointer:
  return ocp.StandardCheckpointer()


def _save(path: Path, tree: Any) -> None:
  checkpointer = _checkpointer()
  checkpointer.save(path.absolute(), tree, force=True)
  checkpointer.wait_until_finished()


def restore_tree(path: Path, target: Any | None = None) -> Any:
  """The tree saved at `path`, laid out as `target`; without one, on this process's first device (as the
  base model is), whatever devices saved it: a run trained on N devices samples on any machine."""
  checkpointer, path = _checkpointer(), Path(path).absolute()
  if target is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                          checkpointer.metadata(path).item_metadata)
  return checkpointer.restore(path, target)


def kept_checkpoints(workdir: str | Path) -> dict[str, Path]:
  """Role ("best_train", "best_val", "epoch_<e>") -> checkpoint directory of a fine-tuning run."""
  workdir = Path(workdir)
  progress = read_json(workdir / PROGRESS_FILE) if (workdir / PROGRESS_FILE).exists() else None
  if progress is None:
    return {}
  return {role: workdir / CHECKPOINT_DIR / f"epoch_{epoch}" for role, epoch in progress["kept"].items()}


# --- the loop --------------------------------------------------------------------------------------------

def finetune(config: Any, workdir: str | Path) -> dict:
  """Fine-tunes SD with the method config `config` (configs/methods/<method>.py: `model`, `data`,
  `splits_dir`, and the fine-tuning block `finetune`) in `workdir`; returns the final progress record
  (epochs run, loss history, kept checkpoints, why it stopped)."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  method_name, data_config, splits_dir = config.method.name, config.data, config.splits_dir
  sd, model_source = load_model(config, workdir)
  config = config.finetune
  spec = MethodSpec.from_config(config.trainables)
  mesh = sharding.make_mesh()
  batch_size = config.batch_size
  sharding.local_batch_size(batch_size, mesh)  # refuses a batch the devices cannot split

  wnids, train_records, val_records, read_image = split_records(data_config, splits_dir, workdir)
  classes = [class_by_wnid(w) for w in wnids]
  k = spec.clusters_per_class
  cluster_of = None
  if k > 1:
    cluster_of = clusters.class_clusters(config.clusters, train_records, val_records, wnids, k,
                                         workdir / clusters.CLUSTERS_FILE, read_image)
  train_examples = make_examples(train_records, wnids, cluster_of, k)
  val_examples = make_examples(val_records, wnids, cluster_of, k)

  tokenizer = text_module = placeholders = None
  if spec.conditioning == "pseudo_word":
    placeholders = [pseudo_word.placeholder(w) for w in wnids]
    tokenizer, _ = pseudo_word.extend_tokenizer(sd.tokenizer, wnids)
    text_module = pseudo_word.extended_text_encoder(sd.text_encoder, len(wnids)).module
  is_writer = jax.process_index() == 0  # files are written by one process; orbax coordinates all of them
  if is_writer:
    atomic_write_json(workdir / INFO_FILE, {
        "method": method_name, "conditioning": spec.conditioning, "clusters_per_class": k,
        "train_unet": spec.train_unet, "wnids": wnids, "placeholders": placeholders,
        "model": model_source, "resolution": sd.resolution, "seed": config.seed})

  reader_args = dict(read_image=read_image, resolution=sd.resolution, tokenizer=tokenizer,
                     placeholders=placeholders, seed=config.seed)
  train_reader = BatchReader(train_examples, classes, **reader_args)
  val_reader = BatchReader(val_examples, classes, **reader_args)

  trainable = initial_trainable(spec, classes, text_encoder=sd.text_encoder,
                                text_params=sd.params["text_encoder"], tokenizer=sd.tokenizer,
                                unet_params=sd.params["unet"])
  frozen = {"vae": sd.params["vae"], "text_encoder": sd.params["text_encoder"]}
  if not spec.train_unet:
    frozen["unet"] = sd.params["unet"]
  tx = make_optimizer(config, trainable)
  opt_state = tx.init(trainable)

  progress = {"step": 0, "epoch": 0, "step_in_epoch": 0, "history": [], "kept": {}, "stopped": None,
              "state": None, "epoch_train_losses": []}
  if (workdir / PROGRESS_FILE).exists():
    progress = read_json(workdir / PROGRESS_FILE)
    if progress["state"] is not None:
      state = restore_tree(workdir / progress["state"], {"trainable": trainable, "opt_state": opt_state})
      trainable, opt_state = state["trainable"], state["opt_state"]
      log.info("resuming %s at epoch %d step %d", workdir, progress["epoch"], progress["step"])
  if progress["stopped"] is not None:
    return progress

  trainable, opt_state, frozen = (sharding.replicate(t, mesh) for t in (trainable, opt_state, frozen))
  abar = jnp.asarray(objective.schedule_from_scheduler_config(sd.scheduler.config))
  per_example_loss = make_loss_fn(spec, sd, text_module, abar,
                                  gradient_checkpointing=config.gradient_checkpointing)
  train_step, eval_sums = make_steps(per_example_loss, tx, mesh)
  val_key = validation_key(config.seed)
  metrics = JsonlManifest(workdir / METRICS_FILE)
  checkpoints = workdir / CHECKPOINT_DIR

  def save_progress(new_state: str | None):
    old_state = progress["state"]
    if new_state is not None:
      _save(workdir / new_state, {"trainable": trainable, "opt_state": opt_state})
      progress["state"] = new_state
    if is_writer:
      atomic_write_json(workdir / PROGRESS_FILE, progress)
      if new_state is not None and old_state not in (None, new_state):
        shutil.rmtree(workdir / old_state, ignore_errors=True)

  while progress["stopped"] is None:
    epoch = progress["epoch"] + 1
    order = epoch_order(len(train_examples), batch_size, seed=config.seed, epoch=epoch, shuffle=True)
    bar = tqdm(train_reader.batches(order, epoch, start=progress["step_in_epoch"]), total=len(order),
               initial=progress["step_in_epoch"], desc=f"{method_name} epoch {epoch}",
               disable=not is_writer)
    for batch in bar:
      batch = sharding.global_batch(batch, mesh)
      trainable, opt_state, loss = train_step(trainable, opt_state, frozen, batch,
                                              train_step_key(config.seed, epoch, progress["step_in_epoch"]))
      loss = float(loss)
      progress["step"] += 1
      progress["step_in_epoch"] += 1
      progress["epoch_train_losses"].append(loss)
      bar.set_postfix(loss=f"{loss:.4f}")
      if is_writer:
        metrics.append({"step": progress["step"], "epoch": epoch, "train_loss": loss,
                        "skipped_images": train_reader.skipped})
      every = config.checkpoint_every_steps
      if every and progress["step"] % every == 0 and progress["step_in_epoch"] < len(order):
        save_progress(f"{CHECKPOINT_DIR}/state_{progress['step']}")

    val_loss = evaluate(eval_sums, trainable, frozen, val_reader, mesh, batch_size=batch_size, key=val_key)
    train_loss = float(np.mean(progress["epoch_train_losses"]))
    progress["history"].append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
    history = [checkpoint_policy.EpochLosses(**h) for h in progress["history"]]
    kept = checkpoint_policy.checkpoints_to_keep(history, config.policy.keep_epochs, config.policy.keep_best)
    if epoch in kept.values():
      _save(checkpoints / f"epoch_{epoch}", {"trainable": trainable})
    stop = checkpoint_policy.should_stop(
        [h.val_loss for h in history], patience=config.policy.patience, max_epochs=config.policy.max_epochs,
        min_relative_improvement=config.policy.min_relative_improvement)
    progress.update(epoch=epoch, step_in_epoch=0, epoch_train_losses=[], kept=kept,
                    stopped=("max_epochs" if epoch >= config.policy.max_epochs else "validation_loss")
                    if stop else None)
    if is_writer:
      metrics.append({"epoch": epoch, "step": progress["step"], "epoch_train_loss": train_loss,
                      "val_loss": val_loss, "kept": kept, "stopped": progress["stopped"],
                      "val_skipped_images": val_reader.skipped})
    save_progress(None if stop else f"{CHECKPOINT_DIR}/state_{progress['step']}")
    for stale in checkpoints.glob("epoch_*") if is_writer else ():
      # Also clears orbax's `epoch_<e>.orbax-checkpoint-tmp` left by a save that a crash cut short.
      match = re.fullmatch(r"epoch_(\d+)", stale.name)
      if match is None or int(match.group(1)) not in kept.values():
        shutil.rmtree(stale, ignore_errors=True)
  if progress["state"] is not None and is_writer:
    shutil.rmtree(workdir / progress["state"], ignore_errors=True)
    progress["state"] = None
    atomic_write_json(workdir / PROGRESS_FILE, progress)
  return progress
