"""Parameters and FLOPs of registered models, from XLA's cost analysis.

  python -m launch.flops --model=aulunet_v3 [--input_size=256] [--format=json]
  python -m launch.flops --model=all
"""

import json

from absl import app, flags

_MODEL = flags.DEFINE_string("model", "aulunet_v3", "Registered model name, or 'all'.")
_INPUT_SIZE = flags.DEFINE_integer("input_size", 256, "Square input size in pixels.")
_FORMAT = flags.DEFINE_enum("format", "table", ["table", "json"], "Output format.")


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp

  import aulunet_jax

  names = aulunet_jax.list_models() if _MODEL.value == "all" else [_MODEL.value]
  rows = []
  for name in names:
    model = aulunet_jax.build_model(name)
    shape = (_INPUT_SIZE.value, _INPUT_SIZE.value, 3)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)), train=False))
    cost = aulunet_jax.count_flops(model, variables, shape)
    rows.append({"model": name, "params": cost["params"], "xla_gflops": cost["xla_flops"] / 1e9,
                 "gmacs": cost["gmacs"], "bytes_accessed": cost["bytes_accessed"]})
  if _FORMAT.value == "json":
    for row in rows:
      print(json.dumps(row))
    return
  print(f"{'model':<22}{'params':>12}{'XLA GFLOPs':>12}{'GMACs':>10}{'MB accessed':>13}")
  for r in rows:
    print(f"{r['model']:<22}{r['params']:>12,}{r['xla_gflops']:>12.4f}{r['gmacs']:>10.4f}"
          f"{r['bytes_accessed'] / 1e6:>13.1f}")


if __name__ == "__main__":
  app.run(main)
