"""Training of the mini world's models (docs/mini_world.md, "Models"):

  python scripts/train_mini_world.py --config=configs/mini_world_train.py --data=mini_world_runs/data \
      --out=mini_world_runs/train [--stages=clip,vae,unet,aesthetic,safety]

Every stage resumes from its last checkpoint; `--config.<stage>.steps=N` shortens a stage (a smoke run).
"""

import ml_collections


def get_config(arg: str | None = None):
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.stages = "clip,vae,unet,aesthetic,safety"
  # CLIP: symmetric InfoNCE on corpus (image, caption) pairs, AdamW with warm-up and cosine decay; flips, shifts
  # and a generic photometric jitter (brightness, per-channel gain, gamma) on the images. 20,000 steps and the
  # jitter since 2026-11-26 (8,000 steps without it: zero-shot 0.546; 20,000 without it: 0.699, docs/mini_world.md).
  config.clip = dict(
    steps=20000,
    batch_size=128,
    lr=1e-3,
    warmup=300,
    weight_decay=0.1,
    eval_every=500,
    eval_per_class=20,
    max_shift=2,
    photometric=dict(brightness=(0.6, 1.2), channel_gain=0.1, gamma=(0.8, 1.25)),
    log_every=25,
    checkpoint_every=100,
  )
  # VAE: L1 reconstruction + KL; small and fast.
  config.vae = dict(
    steps=3000, batch_size=64, lr=1e-3, warmup=100, kl_weight=1e-6, eval_every=250, log_every=25, checkpoint_every=100
  )
  # U-Net: SD's epsilon objective on VAE latents of corpus images, captions through the frozen tiny CLIP
  # text encoder, `uncond_p` of captions dropped to "" (classifier-free guidance).
  config.unet = dict(
    steps=20000, batch_size=64, lr=5e-4, warmup=500, uncond_p=0.1, eval_every=1000, log_every=25, checkpoint_every=100
  )
  # Aesthetic head: ridge regression of the corpus's aesthetic score on tiny-CLIP image embeddings.
  config.aesthetic = dict(ridge=1e-3, holdout=5000)
  # Safety checker: threshold on cosine to the NSFW concept's mean embedding, chosen on the training part
  # for at most `false_alarm` flagged non-NSFW images.
  config.safety = dict(holdout=5000, false_alarm=0.01)
  return config
