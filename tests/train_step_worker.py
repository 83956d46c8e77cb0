"""Runs a few pmapped training steps on a fixed in-memory global batch and
prints the losses and a digest of the final parameters as JSON.

  XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/train_step_worker.py
  python tests/train_step_worker.py --num_processes=2 --process_id=0 --coordinator=127.0.0.1:PORT

Each process feeds its contiguous share of the global batch, so every
configuration trains on the same examples. The run is in float64 (parameters,
activations, loss; the BatchNorm running statistics and the head's logits
are float32 by design): splitting a batch over devices changes the order of
the sums, and in float32 that alone moves some parameter updates by percents
where terms cancel (a BatchNorm bias followed by more normalisation), which
would hide a real difference; in float64 they agree to about 1e-7 (the
float32 rounding of the logits). The optimizer is
plain SGD, whose update is proportional to the gradient (Adam's first
updates are about lr * sign(gradient), which turns round-off in a near-zero
gradient into a difference of 2 lr).
"""

import argparse
import json
import sys


def _leaves(state):
  """{'params/...' or 'batch_stats/...': flat float64 values} of a train state."""
  import jax
  import numpy as np
  flat = jax.tree_util.tree_flatten_with_path({"params": state.params, "batch_stats": state.batch_stats})[0]
  return {jax.tree_util.keystr(path): np.ravel(np.asarray(x, np.float64)) for path, x in flat}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--coordinator", default=None)
  parser.add_argument("--global_batch", type=int, default=4)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()

  import jax
  jax.config.update("jax_enable_x64", True)
  from aulunet_jax import distributed
  distributed.initialize(args.coordinator, args.num_processes if args.coordinator else None,
                         args.process_id if args.coordinator else None)
  import jax.numpy as jnp
  import numpy as np
  import optax
  from flax import jax_utils
  from aulunet_jax import build_model, train

  config = train.TrainConfig(global_batch_size=args.global_batch)
  per_device = train.per_device_batch_size(config.global_batch_size)
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 255, (args.steps, args.global_batch, args.size, args.size, 3))
  yy, xx = np.mgrid[:args.size, :args.size]
  masks = np.stack([np.stack([((yy - c) ** 2 + (xx - c) ** 2 < r ** 2) for c, r in zip(
      rng.integers(8, args.size - 8, args.global_batch), rng.integers(4, 10, args.global_batch))])
                    for _ in range(args.steps)]).astype(np.float64)[..., None]
  model = build_model(config.model, axis_name="batch", dtype=jnp.float64)
  state = train.create_train_state(jax.random.PRNGKey(0), model, (args.size, args.size, 3),
                                   optax.inject_hyperparams(optax.sgd)(learning_rate=1e-3))
  state = state.replace(params=jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), state.params))
  state = state.replace(opt_state=state.tx.init(state.params))
  initial = _leaves(state)
  state = jax_utils.replicate(state)
  p_step = jax.pmap(train.train_step, axis_name="batch", in_axes=(0, 0, None), donate_argnums=(0,))
  local = jax.local_device_count()
  start = jax.process_index() * local * per_device
  losses = []
  for s in range(args.steps):
    shard = slice(start, start + local * per_device)
    batch = {"image": images[s, shard].reshape(local, per_device, *images.shape[2:]),
             "mask": masks[s, shard].reshape(local, per_device, *masks.shape[2:])}
    state, metrics = p_step(state, batch, np.float32(1e-3))
    losses.append(float(train._unreplicate(metrics)["loss"]))
  final = _leaves(train._unreplicate(state))
  replicas_equal = all(
      np.array_equal(np.asarray(x.addressable_data(0)), np.asarray(x.addressable_data(i)))
      for x in jax.tree_util.tree_leaves(state.params) for i in range(local))
  print(json.dumps({"losses": losses, "updates": {k: (final[k] - initial[k]).tolist() for k in final},
                    "replicas_equal": replicas_equal, "process": jax.process_index(),
                    "devices": jax.device_count()}))
  sys.stdout.flush()


if __name__ == "__main__":
  main()
