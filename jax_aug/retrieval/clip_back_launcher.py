"""Starts clip-retrieval's `clip back` (2.45.0) for embedding queries only, bound to 127.0.0.1.

Run by the python of clip-retrieval's own virtual environment (it needs numpy<2; ours needs numpy>=2),
never imported by jax_aug:

  .venv-clip-back/bin/python jax_aug/retrieval/clip_back_launcher.py --indices_paths=indices.json --port=1234

`clip back` always loads a CLIP model with an index (a download; CLIP is only needed for text/image
queries, which we never send) and binds 0.0.0.0. This launcher replaces `all_clip.load_clip` with a
placeholder, turns off the M-CLIP and aesthetic-embedding downloads, and binds Flask to 127.0.0.1. Text
or image queries to this server fail; embedding queries (`embedding_input`) work.
"""

import argparse


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--indices_paths", required=True, help="clip back's indices JSON {name: folder or options}")
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument(
    "--columns", default="url,caption,image_path,aesthetic,NSFW", help="comma-separated metadata columns to return"
  )
  parser.add_argument("--memory_map", type=int, default=1, help="1: memory-map the faiss index")
  args = parser.parse_args()

  import importlib

  import all_clip
  import flask

  # The module, not the function of the same name that clip_retrieval/__init__ re-exports.
  clip_back = importlib.import_module("clip_retrieval.clip_back")

  def no_clip_model(*args, **kwargs):
    del args, kwargs
    return None, None, None  # (model, preprocess, tokenizer): unused by embedding queries

  all_clip.load_clip = no_clip_model
  flask_run = flask.Flask.run

  def run_on_loopback(self, host=None, port=None, **kwargs):
    del host
    return flask_run(self, host="127.0.0.1", port=port, **kwargs)

  flask.Flask.run = run_on_loopback
  clip_back.clip_back(
    indices_paths=args.indices_paths,
    port=args.port,
    enable_faiss_memory_mapping=bool(args.memory_map),
    columns_to_return=args.columns.split(","),
    enable_mclip_option=False,
    use_jit=False,
    provide_safety_model=False,
    provide_violence_detector=False,
    provide_aesthetic_embeddings=False,
  )


if __name__ == "__main__":
  main()
