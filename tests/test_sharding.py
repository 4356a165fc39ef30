"""The mesh and batch placement on several forced CPU devices and on two processes."""


def test_global_batch_is_split_along_the_data_axis(run_jax):
  result = run_jax(
    """
    import jax, numpy as np
    from jax_aug import sharding
    mesh = sharding.make_mesh()
    batch = sharding.global_batch({"x": np.arange(8 * 3, dtype=np.float32).reshape(8, 3)}, mesh)
    shards = sorted((s.index[0].start, s.data.shape[0]) for s in batch["x"].addressable_shards)
    params = sharding.replicate({"w": np.ones(3, np.float32)}, mesh)
    total = jax.jit(lambda b, p: (b["x"] @ p["w"]).sum())(batch, params)
    emit({"devices": mesh.size, "shards": shards, "total": float(total),
          "local_batch": sharding.local_batch_size(8, mesh),
          "host_slice": sharding.host_slice(list(range(5)))})
  """,
    devices=4,
  )
  assert result["devices"] == 4
  assert result["shards"] == [[0, 2], [2, 2], [4, 2], [6, 2]]
  assert result["total"] == sum(range(24))
  assert result["local_batch"] == 8
  assert result["host_slice"] == [0, 1, 2, 3, 4]


def test_local_batch_size_refuses_uneven_split(run_jax):
  result = run_jax(
    """
    from jax_aug import sharding
    try:
      sharding.local_batch_size(6, sharding.make_mesh())
    except ValueError as e:
      emit(str(e))
  """,
    devices=4,
  )
  assert "6 is not divisible by the 4 devices" in result


def test_two_processes_build_one_global_batch(run_multihost):
  results = run_multihost(
    """
    import jax, numpy as np
    from jax_aug import sharding
    sharding.initialize_distributed(COORDINATOR, NUM_PROCESSES, PROCESS_ID)
    mesh = sharding.make_mesh()
    local = np.full((sharding.local_batch_size(8, mesh), 1), PROCESS_ID + 1, np.float32)
    batch = sharding.global_batch(local, mesh)
    total = jax.jit(lambda x: x.sum(), out_shardings=sharding.replicated_sharding(mesh))(batch)
    emit({"total": float(total), "mine": sharding.host_slice(list(range(5))), "global": mesh.size})
  """,
    processes=2,
    devices_per_process=2,
  )
  # Process 0 contributes 4 ones, process 1 four twos.
  assert [r["total"] for r in results] == [12.0, 12.0]
  assert [r["mine"] for r in results] == [[0, 2, 4], [1, 3]]
  assert [r["global"] for r in results] == [4, 4]
