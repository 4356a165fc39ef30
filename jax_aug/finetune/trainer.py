"""THE fine-tuning loop shared by the five personalization methods (trainables/ says what differs).

finetune(config, workdir) = setup, restore, then per epoch train_epoch and end_epoch:
  setup       loads SD (or builds the tiny random one), the study's subset / validation splits, for FT cluster
              conditioning the k-means clusters of each class (clusters.py), the method's conditioning kind
              (jax_aug.finetune.trainables), and jit-compiles the steps: data-parallel over all devices
              (jax_aug.sharding: batches split; the trainable tree and its optimizer state replicated or
              split FSDP-style by config.parameter_sharding, the frozen weights replicated);
  restore     the latest resume point of the workdir's orbax managers (checkpoints.py), if any: a resumed run
              repeats exactly the same batches and noise (both are functions of (seed, epoch, example index));
  train_epoch the latent-diffusion objective over the epoch's batches; each step's loss and global norms
              (gradient, update, parameters) stay on the device and are read every LOSS_READ_EVERY_STEPS steps
              (and before a resume point), one metrics.jsonl line per step; an optional jax.profiler trace of
              config.profile_steps steps from config.profile_first_step;
  end_epoch   validation loss, checkpoint policy (best train, best val, fixed epochs), stopping rule, the
              resume point; one metrics.jsonl line per epoch.
Metrics leave through jax_aug.metrics (write_metrics): metrics.jsonl plus TensorBoard events, and a NaN/inf
value stops the run (NonFiniteMetricError naming the step and the metric) before a checkpoint is written.

Workdir layout: finetune.json (what the checkpoints mean), clusters.json, metrics.jsonl, tensorboard/ (events,
the profiler's traces under plugins/profile), resume/<step>/
(trainable + optimizer state and the progress record), checkpoints/epoch_<e>/ (trainable only, the checkpoints
the policy keeps; `checkpoints.kept_checkpoints` lists them by role).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from jax_aug import metrics as metrics_lib
from jax_aug import sharding
from jax_aug.data import classes as classes_lib
from jax_aug.data import subsets
from jax_aug.data.imagenet_classes import ClassInfo
from jax_aug.data.sources import ImageReader
from jax_aug.finetune import checkpoint_policy, clusters, objective, remat
from jax_aug.finetune.checkpoint_policy import EpochLosses
from jax_aug.finetune.checkpoints import RunCheckpoints
from jax_aug.finetune.data import BatchReader, Example, epoch_order
from jax_aug.finetune.trainables import ConditioningKind, Trainables, frozen_params, initial_trainable
from jax_aug.io import atomic_write_json, read_json

log = logging.getLogger(__name__)

INFO_FILE = "finetune.json"
METRICS_FILE = "metrics.jsonl"
# The train loss and norms stay on the device between reads: reading them every step would make the host wait
# for each step to finish before it dispatches the next.
LOSS_READ_EVERY_STEPS = 20
STEP_PREFIX = "train_step/"  # TensorBoard tags of the per-step norms (as the classifier's)
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


def split_records(data_config: Any, splits_dir: str, workdir: Path) -> tuple[list[str], list[dict], list[dict], ImageReader]:
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
    raise ValueError(
      f"{splits_dir / 'validation.jsonl'} lists no images: fine-tuning stops on the validation"
      " loss (and keeps the best-validation checkpoint), so it needs a non-empty validation split"
    )
  return wnids, train, validation, subsets.image_reader(data_config, workdir / "data")


def split_classes(splits_dir: str, workdir: Path, wnids: list[str]) -> tuple[classes_lib.DatasetClasses, list[ClassInfo]]:
  """(the dataset's classes stored beside the splits (`split_records`' folder: `splits_dir`, or the one it
  prepared in `workdir`), the ClassInfo of each class id in `wnids`)."""
  dataset = classes_lib.read_split_classes(Path(splits_dir) if splits_dir else workdir / "data" / "splits")
  return dataset, [dataset[w] for w in wnids]


def make_examples(records: list[dict], wnids: list[str], cluster_of: dict[str, int] | None) -> list[Example]:
  label_of = {w: i for i, w in enumerate(wnids)}
  examples = []
  for i, r in enumerate(records):
    if r["wnid"] not in label_of:
      raise ValueError(f"record {r['path']} has class {r['wnid']}, which is not among the study's classes")
    cluster = cluster_of[r["path"]] if cluster_of is not None else 0
    examples.append(Example(r["path"], label_of[r["wnid"]], i, cluster))
  return examples


# --- the step --------------------------------------------------------------------------------------------


def make_optimizer(config: Any, trainable: dict) -> optax.GradientTransformation:
  """AdamW per trainable group with its own learning rate (config.learning_rate.<group>, already scaled by
  sqrt(batch / base batch)), after global-norm gradient clipping. The rates live in the optimizer state, not
  in the compiled step, so the runs of a learning-rate grid share one compilation (jax_aug/finetune/lr_search.py)."""
  rates = config.learning_rate
  unknown = sorted(set(trainable) - set(rates.keys()))
  if unknown:
    raise ValueError(
      f"trainable group(s) {unknown} have no learning rate: expected groups among"
      f" {sorted(rates.keys())} (config.learning_rate.<group>)"
    )
  opt = config.optimizer
  groups = {
    name: optax.inject_hyperparams(optax.adamw)(
      learning_rate=rates[name], b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay
    )
    for name in trainable
  }
  labels = {name: jax.tree.map(lambda _, n=name: n, subtree) for name, subtree in trainable.items()}
  return optax.chain(optax.clip_by_global_norm(opt.max_grad_norm), optax.multi_transform(groups, labels))


def train_step_key(seed: int, epoch: int, step_in_epoch: int) -> jax.Array:
  """The key of one train step; every example's noise then comes from fold_in(it, the example's index)."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), TRAIN_KEY), epoch), step_in_epoch)


def validation_key(seed: int) -> jax.Array:
  return jax.random.fold_in(jax.random.key(seed), VALIDATION_KEY)


def example_draws(
  key: jax.Array, indices: jax.Array, latent_shape: tuple[int, int, int], num_timesteps: int
) -> dict[str, jax.Array]:
  """`objective.draw_noise` of each example from fold_in(key, its index), stacked [B, ...]: an example's
  noise does not depend on the batch it is in (the PyTorch twin draws the same from the same keys)."""
  draws = jax.vmap(lambda i: objective.draw_noise(jax.random.fold_in(key, i), 1, latent_shape, num_timesteps))(indices)
  return jax.tree.map(lambda x: x[:, 0], draws)


def make_loss_fn(conditioning: ConditioningKind, sd: Any, abar: jax.Array, *, gradient_checkpointing: str = "") -> Any:
  """per_example_loss(trainable, frozen, batch, key) -> [B] noise-prediction MSE of each example,
  with each example's noise drawn from fold_in(key, its index). `gradient_checkpointing`: "" or a policy of
  jax_aug.finetune.remat, applied to each of the U-Net's blocks."""
  remat.check_policy(gradient_checkpointing)
  hidden_states = conditioning.hidden_states_fn(sd)
  scaling = sd.vae.config.scaling_factor
  factor = sd.vae_scale_factor
  num_timesteps = len(abar)

  def unet_apply(params, x, t, c):
    with remat.rematerialized_blocks(gradient_checkpointing):
      return sd.unet.apply({"params": params}, x, t, c).sample

  def per_example_loss(trainable, frozen, batch, key):
    images = batch["image"].astype(sd.unet.dtype)
    res = images.shape[-1] // factor
    shape = (sd.unet.config.in_channels, res, res)
    draws = example_draws(key, batch["index"], shape, num_timesteps)
    latents = objective.encode_latents(sd.vae, frozen["vae"], images, draws["latent_eps"], scaling)
    hidden = hidden_states(trainable[conditioning.group], frozen["text_encoder"], batch)
    unet_params = trainable.get("unet", frozen.get("unet"))
    noisy = objective.add_noise(abar, latents, draws["noise"].astype(latents.dtype), draws["timesteps"])
    prediction = unet_apply(unet_params, noisy, draws["timesteps"], hidden.astype(sd.unet.dtype))
    error = jnp.square(prediction.astype(jnp.float32) - draws["noise"])
    return error.mean(axis=(1, 2, 3))

  return per_example_loss


def make_steps(per_example_loss: Any, tx: optax.GradientTransformation, mesh: Any, state_sharding: Any = None):
  """jit-compiled train and eval steps; batches split over the data axis, the trainable tree and its
  optimizer state laid out by `state_sharding` (a TrainState of shardings, `state_shardings`; None:
  replicated). train_step(trainable, opt_state, frozen, batch, key) -> (trainable, opt_state, {"loss",
  "grad_norm", "update_norm", "param_norm"}): the norms are extra outputs that change no other value. The
  state keeps its layout from step to step (its arguments are donated to the outputs laid out the same)."""
  replicated = sharding.replicated_sharding(mesh)
  layout = TrainState(replicated, replicated) if state_sharding is None else state_sharding

  def weighted_mean(losses, weight):
    return (losses * weight).sum() / jnp.maximum(weight.sum(), 1.0)

  @functools.partial(jax.jit, out_shardings=(layout.trainable, layout.opt_state, replicated), donate_argnums=(0, 1))
  def train_step(trainable, opt_state, frozen, batch, key):
    def loss(t):
      return weighted_mean(per_example_loss(t, frozen, batch, key), batch["weight"])

    value, grads = jax.value_and_grad(loss)(trainable)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    new_trainable = optax.apply_updates(trainable, updates)
    return new_trainable, opt_state, {"loss": value, **metrics_lib.global_norms(grads, updates, new_trainable)}

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


# --- state ---------------------------------------------------------------------------------------------


@flax.struct.dataclass
class TrainState:
  """The arrays a run updates (saved at every resume point)."""

  trainable: Any
  opt_state: Any


def state_shardings(trainable: Any, tx: optax.GradientTransformation, mesh: Any, parameter_sharding: str) -> TrainState:
  """Where the train state lives (a TrainState of NamedShardings): config.parameter_sharding's rule of
  jax_aug.sharding ("replicated", or "fsdp": each large leaf of the trainable tree and of its optimizer
  state split over the data axis) applied to `trainable` (arrays or shapes) and `tx.init` of it."""
  return sharding.state_shardings(jax.eval_shape(lambda t: TrainState(t, tx.init(t)), trainable), mesh, parameter_sharding)


def initial_state(trainable: Any, tx: optax.GradientTransformation, layout: TrainState) -> TrainState:
  """The train state at step 0 laid out by `layout`: `trainable` moved there, its optimizer state created
  there (already split, never whole on one device)."""
  return jax.jit(lambda t: TrainState(t, tx.init(t)), out_shardings=layout)(jax.device_put(trainable, layout.trainable))


@dataclasses.dataclass(frozen=True)
class Progress:
  """Where a run stands (host values; the resume point's JSON record, and what `finetune` returns)."""

  step: int = 0  # train steps done
  epoch: int = 0  # epochs finished
  step_in_epoch: int = 0  # steps done of epoch + 1
  epoch_train_losses: tuple[float, ...] = ()  # their losses (the epoch's train loss is their mean)
  history: tuple[EpochLosses, ...] = ()
  kept: dict[str, int] = dataclasses.field(default_factory=dict)  # role -> epoch (checkpoint_policy)
  stopped: str | None = None  # "max_epochs" | "validation_loss" once training stopped
  # The validation loss of the initial trainables (before any step), by the same evaluation as every epoch's:
  # what fine-tuning improves on (the mini world's personalization bar).
  initial_val_loss: float | None = None

  def to_json(self) -> dict:
    return {
      "initial_val_loss": self.initial_val_loss,
      "step": self.step,
      "epoch": self.epoch,
      "step_in_epoch": self.step_in_epoch,
      "history": [dataclasses.asdict(h) for h in self.history],
      "kept": dict(self.kept),
      "stopped": self.stopped,
      "epoch_train_losses": list(self.epoch_train_losses),
    }

  @classmethod
  def from_json(cls, data: dict) -> Progress:
    return cls(
      step=data["step"],
      epoch=data["epoch"],
      step_in_epoch=data["step_in_epoch"],
      epoch_train_losses=tuple(data["epoch_train_losses"]),
      history=tuple(EpochLosses(**h) for h in data["history"]),
      kept=dict(data["kept"]),
      stopped=data["stopped"],
      initial_val_loss=data.get("initial_val_loss"),  # absent from resume points written before it existed
    )


@dataclasses.dataclass(frozen=True)
class Run:
  """What stays fixed over a run (`setup`'s result)."""

  name: str  # the method
  config: Any  # its fine-tuning block
  mesh: Any
  train_reader: BatchReader
  val_reader: BatchReader
  frozen: dict  # replicated on the mesh
  layout: TrainState  # the train state's shardings (config.parameter_sharding)
  train_step: Any
  eval_sums: Any
  val_key: jax.Array
  checkpoints: RunCheckpoints
  writer: metrics_lib.MetricsWriter  # metrics.jsonl + tensorboard/ (writes on one process, checks on all)
  profiler: metrics_lib.StepProfiler
  is_writer: bool  # files are written by one process; orbax coordinates all of them


def write_metrics(run: Run, rows: list[dict]) -> None:
  """THE place rows leave the trainer: metrics.jsonl (one per step, one per epoch) and their numbers as
  TensorBoard scalars at the row's step; a NaN/inf raises NonFiniteMetricError before the row is written."""
  for row in rows:
    run.writer.write_row(row, step=row["step"])


# --- the run ---------------------------------------------------------------------------------------------


def setup(config: Any, workdir: Path) -> tuple[Run, TrainState]:
  """The run of method config `config` in `workdir` and its state at step 0 (laid out by `Run.layout`)."""
  # The memory settings are checked before anything is loaded.
  sharding.check_parameter_sharding(config.finetune.parameter_sharding, "config.finetune.parameter_sharding")
  remat.check_policy(config.finetune.gradient_checkpointing)
  spec = Trainables.from_config(config.finetune.trainables)
  if spec.clusters_per_class > 1:
    clusters.check_features(config.finetune.clusters)
  workdir.mkdir(parents=True, exist_ok=True)
  method_name, data_config, splits_dir = config.method.name, config.data, config.splits_dir
  sd, model_source = load_model(config, workdir)
  config = config.finetune
  mesh = sharding.make_mesh(sharding.run_devices(config.num_devices, field="config.finetune.num_devices"))
  sharding.local_batch_size(config.batch_size, mesh)  # refuses a batch the devices cannot split

  wnids, train_records, val_records, read_image = split_records(data_config, splits_dir, workdir)
  dataset, classes = split_classes(splits_dir, workdir, wnids)
  cluster_of = None
  if spec.clusters_per_class > 1:
    cluster_of = clusters.class_clusters(
      config.clusters,
      train_records,
      val_records,
      wnids,
      spec.clusters_per_class,
      workdir / clusters.CLUSTERS_FILE,
      read_image,
    )
  conditioning = spec.build(classes, sd.tokenizer)
  is_writer = jax.process_index() == 0
  if is_writer:
    atomic_write_json(
      workdir / INFO_FILE,
      {
        "method": method_name,
        "conditioning": spec.conditioning,
        "clusters_per_class": spec.clusters_per_class,
        "train_unet": spec.train_unet,
        "wnids": wnids,
        "dataset_classes": dataset.to_json(),
        **conditioning.info(),
        "model": model_source,
        "resolution": sd.resolution,
        "seed": config.seed,
      },
    )

  reader_args = dict(read_image=read_image, resolution=sd.resolution, conditioning=conditioning, seed=config.seed)
  trainable = initial_trainable(spec, conditioning, sd)
  tx = make_optimizer(config, trainable)
  abar = jnp.asarray(objective.schedule_from_scheduler_config(sd.scheduler.config))
  per_example_loss = make_loss_fn(conditioning, sd, abar, gradient_checkpointing=config.gradient_checkpointing)
  layout = state_shardings(trainable, tx, mesh, config.parameter_sharding)
  train_step, eval_sums = make_steps(per_example_loss, tx, mesh, layout)
  checkpoints = RunCheckpoints(workdir)
  saved = checkpoints.progress()
  # A resumed run starts after its resume point: metrics.jsonl and TensorBoard drop what a killed run wrote from there.
  if saved and is_writer:
    metrics_lib.drop_rows_from(workdir / METRICS_FILE, saved["step"] + 1)
  writer = metrics_lib.MetricsWriter(
    workdir / METRICS_FILE,
    workdir / metrics_lib.TENSORBOARD_DIR,
    purge_step=saved["step"] + 1 if saved else None,
    enabled=is_writer,
  )
  run = Run(
    name=method_name,
    config=config,
    mesh=mesh,
    train_reader=BatchReader(make_examples(train_records, wnids, cluster_of), **reader_args),
    val_reader=BatchReader(make_examples(val_records, wnids, cluster_of), **reader_args),
    frozen=sharding.replicate(frozen_params(spec, sd), mesh),
    layout=layout,
    train_step=train_step,
    eval_sums=eval_sums,
    val_key=validation_key(config.seed),
    checkpoints=checkpoints,
    writer=writer,
    profiler=metrics_lib.StepProfiler(writer.logdir, config.profile_first_step, config.profile_steps, enabled=is_writer),
    is_writer=is_writer,
  )
  return run, initial_state(trainable, tx, layout)


def restore(run: Run, initial: TrainState) -> tuple[TrainState, Progress]:
  """The latest resume point (or `initial` and no progress). Kept checkpoints written after it (an epoch a
  crash cut short, which is redone) are dropped."""
  saved = run.checkpoints.progress()
  if saved is None:
    return initial, Progress(initial_val_loss=validation_loss(run, initial))
  progress = Progress.from_json(saved)
  run.checkpoints.keep_only(set(progress.kept.values()))
  # Restored straight into the run's layout: a split state is never assembled whole on one device.
  state = run.checkpoints.restore_state(sharding.with_sharding(initial, run.layout))
  if state is None:
    if progress.stopped is None:
      raise RuntimeError(
        f"{run.checkpoints.resume.directory}: the latest resume point (step {progress.step}) has no"
        " state, but the run has not stopped"
      )
    return initial, progress
  log.info("resuming %s at epoch %d step %d", run.name, progress.epoch + 1, progress.step)
  return state, progress


def _read_losses(
  run: Run, pending: list[tuple[int, jax.Array, int]], norms: metrics_lib.StepMetrics, epoch: int, bar: tqdm
) -> tuple[float, ...]:
  """The losses of the pending (step, loss on the device, skipped images) in one transfer; writes the norms of
  the same steps (TensorBoard; the first NaN/inf of them stops the run), then the losses' rows."""
  if not pending:
    return ()
  norms.flush(run.writer, STEP_PREFIX)
  losses = tuple(float(loss) for loss in jax.device_get([loss for _, loss, _ in pending]))
  write_metrics(
    run,
    [
      {"step": step, "epoch": epoch, "train_loss": loss, "skipped_images": skipped}
      for (step, _, skipped), loss in zip(pending, losses)
    ],
  )
  bar.set_postfix(loss=f"{losses[-1]:.4f}")
  pending.clear()
  return losses


def train_epoch(run: Run, state: TrainState, progress: Progress) -> tuple[TrainState, Progress]:
  """The rest of epoch progress.epoch + 1: its steps from progress.step_in_epoch on, with a resume point every
  config.checkpoint_every_steps steps."""
  config = run.config
  epoch = progress.epoch + 1
  order = epoch_order(len(run.train_reader.examples), config.batch_size, seed=config.seed, epoch=epoch, shuffle=True)
  bar = tqdm(
    run.train_reader.batches(order, epoch, start=progress.step_in_epoch),
    total=len(order),
    initial=progress.step_in_epoch,
    desc=f"{run.name} epoch {epoch}",
    disable=not run.is_writer,
  )
  pending, norms = [], metrics_lib.StepMetrics()
  for batch in bar:
    # The lambda reads `state` when the block exits, i.e. the step's new state: late binding is intended.
    with run.profiler.step(progress.step + 1, lambda: state):  # noqa: B023
      trainable, opt_state, metrics = run.train_step(
        state.trainable,
        state.opt_state,
        run.frozen,
        sharding.global_batch(batch, run.mesh),
        train_step_key(config.seed, epoch, progress.step_in_epoch),
      )
      state = TrainState(trainable, opt_state)
    progress = dataclasses.replace(progress, step=progress.step + 1, step_in_epoch=progress.step_in_epoch + 1)
    pending.append((progress.step, metrics["loss"], run.train_reader.skipped))
    norms.add(progress.step, {k: v for k, v in metrics.items() if k != "loss"})
    every = config.checkpoint_every_steps
    resume_point = every and progress.step % every == 0 and progress.step_in_epoch < len(order)
    if resume_point or len(pending) >= LOSS_READ_EVERY_STEPS:
      progress = dataclasses.replace(
        progress, epoch_train_losses=progress.epoch_train_losses + _read_losses(run, pending, norms, epoch, bar)
      )
    if resume_point:
      run.checkpoints.save_resume(progress.step, state, progress.to_json())
  progress = dataclasses.replace(
    progress, epoch_train_losses=progress.epoch_train_losses + _read_losses(run, pending, norms, epoch, bar)
  )
  return state, progress


def validation_loss(run: Run, state: TrainState) -> float:
  """The loss of `state`'s trainables on the validation split, with the run's fixed noise (comparable over
  epochs and with the initial trainables)."""
  return evaluate(
    run.eval_sums, state.trainable, run.frozen, run.val_reader, run.mesh, batch_size=run.config.batch_size, key=run.val_key
  )


def end_epoch(run: Run, state: TrainState, progress: Progress) -> Progress:
  """After an epoch's last step: validation loss, the checkpoint policy (saves the epoch if a role names it,
  deletes the checkpoints no role names any more), the stopping rule, and the resume point (the state too
  unless training stops)."""
  policy = run.config.policy
  epoch = progress.epoch + 1
  val_loss = validation_loss(run, state)
  train_loss = float(np.mean(progress.epoch_train_losses))
  history = progress.history + (EpochLosses(epoch, train_loss, val_loss),)
  kept = checkpoint_policy.checkpoints_to_keep(history, policy.keep_epochs, policy.keep_best)
  stop = checkpoint_policy.should_stop(
    [h.val_loss for h in history],
    patience=policy.patience,
    max_epochs=policy.max_epochs,
    min_relative_improvement=policy.min_relative_improvement,
  )
  stopped = ("max_epochs" if epoch >= policy.max_epochs else "validation_loss") if stop else None
  progress = Progress(
    step=progress.step,
    epoch=epoch,
    history=history,
    kept=kept,
    stopped=stopped,
    initial_val_loss=progress.initial_val_loss,
  )
  write_metrics(
    run,
    [
      {
        "epoch": epoch,
        "step": progress.step,
        "epoch_train_loss": train_loss,
        "val_loss": val_loss,
        "kept": kept,
        "stopped": stopped,
        "val_skipped_images": run.val_reader.skipped,
      }
    ],
  )
  # After the row: a NaN/inf in it stops the run before this epoch writes any checkpoint.
  if epoch in kept.values():
    run.checkpoints.save_epoch(epoch, state.trainable)
  # The progress naming the new kept set is saved before the checkpoints it no longer names are deleted.
  run.checkpoints.save_resume(progress.step, None if stop else state, progress.to_json())
  run.checkpoints.keep_only(set(kept.values()))
  return progress


def finetune(config: Any, workdir: str | Path) -> dict:
  """Fine-tunes SD with the method config `config` (configs/methods/<method>.py: `model`, `data`,
  `splits_dir`, and the fine-tuning block `finetune`) in `workdir`, resuming what is there; returns the final
  progress record (Progress.to_json: epochs run, loss history, kept checkpoints, why it stopped)."""
  run, state = setup(config, Path(workdir))
  try:
    state, progress = restore(run, state)
    while progress.stopped is None:
      state, progress = train_epoch(run, state, progress)
      progress = end_epoch(run, state, progress)
  finally:
    run.profiler.close()
    run.writer.close()
    run.checkpoints.close()
  return progress.to_json()
