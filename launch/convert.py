"""Converts an official PyTorch AULUNet checkpoint to an orbax checkpoint.

  python -m launch.convert --torch_checkpoint=best.pth --output=DIR

Accepts best.pth (a bare state_dict), latest.pth (a dict with
'model_state_dict') and DataParallel 'module.' prefixes. Needs torch to read
the .pth file (pip install torch==2.13.0).
"""

from absl import app, flags

_TORCH_CHECKPOINT = flags.DEFINE_string("torch_checkpoint", None, "Official .pth checkpoint.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Directory for the orbax checkpoint.", required=True)
_FORCE = flags.DEFINE_bool("force", False, "Overwrite --output if it exists.")


def main(argv):
  del argv
  import os

  try:
    import torch
  except ImportError:
    raise app.UsageError("reading a .pth checkpoint needs PyTorch: pip install torch==2.13.0") from None

  import aulunet_jax
  from aulunet_jax import checkpoints, convert

  if not os.path.isfile(_TORCH_CHECKPOINT.value):
    raise app.UsageError(f"--torch_checkpoint {_TORCH_CHECKPOINT.value!r} is not a file")
  if os.path.exists(_OUTPUT.value) and not _FORCE.value:
    raise app.UsageError(f"--output {_OUTPUT.value!r} exists; pass --force to overwrite it")
  state = torch.load(_TORCH_CHECKPOINT.value, map_location="cpu", weights_only=True)
  variables = convert.from_torch_state_dict(state)
  path = checkpoints.save_inference_checkpoint(_OUTPUT.value, variables, checkpoints.model_spec("aulunet_v3"),
                                               force=_FORCE.value)
  print(f"wrote {path}: aulunet_v3, {aulunet_jax.count_params(variables):,} parameters")


if __name__ == "__main__":
  app.run(main)
