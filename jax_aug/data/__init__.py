"""The foundation data layer: class metadata, prompts, subsets, augmentation sets, sources, pipelines."""
