"""Speed of the JAX model against the PyTorch reference, side by side.

  python -m launch.benchmark [--batch_size=8] [--image_size=256] [--format=json]

Measures, in one run and on the same inputs: the training step (forward in
train mode with batch statistics, BCE + Dice, backward, AdamW) -- for JAX
the library's own pmapped ``train.train_step``, as ``launch.train`` runs it;
inference throughput at ``--batch_size``; single-image latency; and the
compile time of the JAX training step. PyTorch (the reference model of
``aulunet_jax.torch_reference``, with ``torch.set_num_threads``) is measured
when it is installed. Each side runs in a freshly spawned process of its own
(with both in one process, JAX inference ran 30 % slower); the two are timed
in alternation, round by round, so that both see the same machine load;
warm-up steps are excluded and the figures are medians over the rounds.

Alongside, a memory-bandwidth bound: the bytes XLA's cost analysis says the
compiled program accesses, over the bandwidth measured on this machine (an
element-wise pass over a large array, probed four times across the run; the
highest probe counts, and all are reported), is the shortest time the
program could take if it only moved data; the ratio to the measured time is
the fraction of that limit reached.

Like the other launch scripts, it runs with the allocator of
``aulunet_jax.allocator`` (mimalloc where installed), which both sides
profit from; the machine description records it.
"""

import json
import multiprocessing
import os
import platform
import statistics
import time

from absl import app, flags

from aulunet_jax import allocator

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per training step and per inference batch.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Square input size in pixels.")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Timed rounds (each side runs --steps_per_round steps per round).")
_STEPS_PER_ROUND = flags.DEFINE_integer("steps_per_round", 3, "Steps timed per side in each round.")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads for the PyTorch side.")
_SKIP_TORCH = flags.DEFINE_bool("skip_torch", False, "Measure the JAX side only.")
_FORMAT = flags.DEFINE_enum("format", "table", ["table", "json"], "Output format.")


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


_BANDWIDTH_PASSES = 9


class _JaxSide:
  """The library's pmapped training step (as ``launch.train`` compiles it)
  and its inference pass, ``predict.forward``."""

  def __init__(self, images, masks):
    import jax
    import jax.numpy as jnp
    from flax import jax_utils

    from aulunet_jax import flops, predict, train

    self.jax = jax
    config = train.TrainConfig(global_batch_size=images.shape[0])
    model = train.create_model(config)
    state = train.create_train_state(jax.random.PRNGKey(0), model, images.shape[1:], train.create_optimizer(config))
    devices = jax.local_device_count()
    per_device = train.per_device_batch_size(images.shape[0])
    shard = lambda a: jnp.asarray(a).reshape(devices, per_device, *a.shape[1:])
    self.batch = {"image": shard(images), "mask": shard(masks)}
    self.state = jax_utils.replicate(state)
    p_train_step = jax.pmap(train.train_step, axis_name="batch", in_axes=(0, 0, None), donate_argnums=(0,))
    start = time.perf_counter()
    self.train_step = p_train_step.lower(self.state, self.batch, config.learning_rate).compile()
    self.compile_s = time.perf_counter() - start
    self.learning_rate = config.learning_rate
    self.train_bytes = float(flops.compiled_cost(self.train_step).get("bytes accessed", 0.0)) / devices

    inference_model = train.create_model(config, axis_name=None)
    self.variables = {"params": state.params, "batch_stats": state.batch_stats}
    self.images = jnp.asarray(images)
    self.image = self.images[:1]
    self.infer = predict.forward.lower(inference_model, self.variables, self.images).compile()
    self.infer_one = predict.forward.lower(inference_model, self.variables, self.image).compile()
    self.infer_bytes = float(flops.compiled_cost(self.infer).get("bytes accessed", 0.0))
    self._bandwidth_step = jax.jit(lambda v: v * 1.000001, donate_argnums=0)
    self._bandwidth_array = jax.block_until_ready(self._bandwidth_step(jnp.ones((64 * 2**20,), jnp.float32)))

  def info(self):
    jax = self.jax
    return {
        "compile_s": self.compile_s,
        "train_bytes": self.train_bytes,
        "infer_bytes": self.infer_bytes,
        "bandwidth_bytes_per_pass": 2 * self._bandwidth_array.nbytes,
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
        "jax_devices": [str(d) for d in jax.local_devices()],
    }

  def train(self):
    self.state, metrics = self.train_step(self.state, self.batch, self.learning_rate)
    self.jax.block_until_ready(metrics)

  def infer_batch(self):
    self.jax.block_until_ready(self.infer(self.variables, self.images))

  def infer_single(self):
    self.jax.block_until_ready(self.infer_one(self.variables, self.image))

  def bandwidth_pass(self):
    """The memory-bandwidth probe: an element-wise pass over a 256 MiB array
    (both cores), reading and writing it. The array is donated, so that each
    pass writes over the last one's memory: a fresh output buffer would time
    the kernel's page faults, not the memory."""
    self._bandwidth_array = self.jax.block_until_ready(self._bandwidth_step(self._bandwidth_array))


class _TorchSide:
  """The reference model with torch.optim.AdamW and the same loss."""

  def __init__(self, images, masks, threads):
    import torch

    from aulunet_jax.torch_reference import TorchAULUNet, randomize

    torch.set_num_threads(threads)
    self.torch = torch
    self.model = randomize(TorchAULUNet(), seed=0)
    self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                                       weight_decay=1e-2)
    self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    self.masks = torch.from_numpy(masks).permute(0, 3, 1, 2).contiguous()
    self.image = self.images[:1].contiguous()

  def info(self):
    return {"torch": self.torch.__version__, "torch_threads": self.torch.get_num_threads()}

  def train(self):
    torch = self.torch
    self.model.train()
    self.optimizer.zero_grad(set_to_none=True)
    probs = self.model(self.images)
    bce = torch.nn.functional.binary_cross_entropy(probs, self.masks)
    intersection = (probs * self.masks).sum((1, 2, 3))
    dice = (2 * intersection + 1) / (probs.sum((1, 2, 3)) + self.masks.sum((1, 2, 3)) + 1)
    (bce + (1 - dice.mean())).backward()
    self.optimizer.step()

  def infer_batch(self):
    self.model.eval()
    with self.torch.inference_mode():
      self.model(self.images)

  def infer_single(self):
    self.model.eval()
    with self.torch.inference_mode():
      self.model(self.image)


def _serve_side(kind: str, images, masks, torch_threads: int, conn):
  """A side's own process: builds the side, reports its info, then times the
  requested method (``(name, steps)``) until it receives None."""
  try:
    side = _JaxSide(images, masks) if kind == "jax" else _TorchSide(images, masks, torch_threads)
  except ImportError as e:
    conn.send({"unavailable": str(e)})
    return
  conn.send(side.info())
  for request in iter(conn.recv, None):
    method, steps = request
    fn = getattr(side, method)
    conn.send([_timed(fn) for _ in range(steps)])


class _SideProcess:
  """Handle on a side running in a freshly spawned interpreter."""

  def __init__(self, kind: str, images, masks, torch_threads: int):
    ctx = multiprocessing.get_context("spawn")
    self._conn, child = ctx.Pipe()
    self._process = ctx.Process(target=_serve_side, args=(kind, images, masks, torch_threads, child), daemon=True)
    self._process.start()
    child.close()
    try:
      self.info = self._conn.recv()
    except EOFError:
      self._process.join()
      raise RuntimeError(f"the {kind} side of the benchmark exited while setting up "
                         f"(exit code {self._process.exitcode})") from None

  @property
  def available(self) -> bool:
    return "unavailable" not in self.info

  def time(self, method: str, steps: int):
    self._conn.send((method, steps))
    return self._conn.recv()

  def close(self):
    self._conn.send(None)
    self._process.join()


def _alternating_medians(sides, method: str, rounds: int, steps: int):
  """Median seconds per call of ``method`` for each side, timed in turns."""
  for side in sides:  # warm-up
    side.time(method, 1)
  times = [[] for _ in sides]
  for _ in range(rounds):
    for side, record in zip(sides, times):
      record.extend(side.time(method, steps))
  return [statistics.median(t) for t in times]


def run(batch_size: int, image_size: int, rounds: int, steps: int, torch_threads: int, skip_torch: bool):
  import numpy as np

  rng = np.random.RandomState(0)
  images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype(np.float32)
  masks = (rng.uniform(0, 1, (batch_size, image_size, image_size, 1)) > 0.5).astype(np.float32)

  # One after the other, so that compilation does not compete with set-up.
  jax_side = _SideProcess("jax", images, masks, torch_threads)
  sides = [jax_side]
  if not skip_torch:
    torch_side = _SideProcess("torch", images, masks, torch_threads)
    if torch_side.available:
      sides.append(torch_side)
  info = jax_side.info
  # The machine's bandwidth drifts by up to 2x over seconds to minutes: it is
  # probed (the median of _BANDWIDTH_PASSES passes) before, between and
  # after the timings, and the bound uses the highest probe, the fastest the
  # memory was seen to run: a single probe could land in a slow phase that
  # the timed steps missed.
  probe_gbs = []

  def probe():
    seconds = statistics.median(jax_side.time("bandwidth_pass", _BANDWIDTH_PASSES))
    probe_gbs.append(info["bandwidth_bytes_per_pass"] / seconds / 1e9)

  try:
    probe()
    train_s = _alternating_medians(sides, "train", rounds, steps)
    probe()
    infer_s = _alternating_medians(sides, "infer_batch", rounds, steps)
    probe()
    latency_s = _alternating_medians(sides, "infer_single", rounds, 3 * steps)
    probe()
  finally:
    for side in sides:
      side.close()
  bandwidth = max(probe_gbs)

  result = {
      "batch_size": batch_size,
      "image_size": image_size,
      "jax_train_ips": batch_size / train_s[0],
      "jax_infer_ips": batch_size / infer_s[0],
      "jax_latency_ms": 1e3 * latency_s[0],
      "jax_train_compile_s": info["compile_s"],
      "jax_train_step_ms": 1e3 * train_s[0],
      "jax_infer_batch_ms": 1e3 * infer_s[0],
      "memory_bandwidth_gbs": bandwidth,
      "memory_bandwidth_probes_gbs": probe_gbs,
      "jax_train_bytes_per_step": info["train_bytes"],
      "jax_infer_bytes_per_batch": info["infer_bytes"],
      "train_bandwidth_bound_ms": 1e3 * info["train_bytes"] / (bandwidth * 1e9),
      "infer_bandwidth_bound_ms": 1e3 * info["infer_bytes"] / (bandwidth * 1e9),
  }
  result["train_fraction_of_bound"] = result["train_bandwidth_bound_ms"] / result["jax_train_step_ms"]
  result["infer_fraction_of_bound"] = result["infer_bandwidth_bound_ms"] / result["jax_infer_batch_ms"]
  torch_measured = len(sides) > 1
  result.update({
      "torch_train_ips": batch_size / train_s[1] if torch_measured else None,
      "torch_infer_ips": batch_size / infer_s[1] if torch_measured else None,
      "torch_latency_ms": 1e3 * latency_s[1] if torch_measured else None,
      "train_speedup": train_s[1] / train_s[0] if torch_measured else None,
      "infer_speedup": infer_s[1] / infer_s[0] if torch_measured else None,
      "latency_ratio": latency_s[0] / latency_s[1] if torch_measured else None,
  })
  result["machine"] = {
      "cpu": _cpu_model(),
      "logical_cpus": os.cpu_count(),
      "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
      "python": platform.python_version(),
      "jax": info["jax"],
      "jaxlib": info["jaxlib"],
      "jax_devices": info["jax_devices"],
      "torch": sides[1].info["torch"] if torch_measured else None,
      "torch_threads": sides[1].info["torch_threads"] if torch_measured else None,
      "allocator": allocator.describe(),  # both sides run with it
  }
  return result


def _table(r) -> str:
  def cell(value, fmt):
    return "-" if value is None else format(value, fmt)

  m = r["machine"]
  lines = [
      f"{m['cpu']}, {m['usable_cpus']} usable of {m['logical_cpus']} CPUs; jax {m['jax']}, torch {m['torch'] or '-'}"
      f" ({m['torch_threads'] or '-'} threads); batch {r['batch_size']}, {r['image_size']}x{r['image_size']}, float32;"
      f" allocator: {m['allocator']}",
      "",
      f"{'':28}{'JAX':>12}{'PyTorch':>12}{'ratio':>10}",
      f"{'training (images/s)':28}{r['jax_train_ips']:>12.2f}{cell(r['torch_train_ips'], '.2f'):>12}"
      f"{cell(r['train_speedup'], '.2f') + 'x':>10}",
      f"{'inference (images/s)':28}{r['jax_infer_ips']:>12.1f}{cell(r['torch_infer_ips'], '.1f'):>12}"
      f"{cell(r['infer_speedup'], '.2f') + 'x':>10}",
      f"{'single-image latency (ms)':28}{r['jax_latency_ms']:>12.2f}{cell(r['torch_latency_ms'], '.2f'):>12}"
      f"{cell(r['latency_ratio'], '.2f') + 'x':>10}",
      "",
      f"JAX training-step compile: {r['jax_train_compile_s']:.1f} s",
      f"memory bandwidth (measured): {r['memory_bandwidth_gbs']:.1f} GB/s, the highest of "
      f"{', '.join(f'{g:.0f}' for g in r['memory_bandwidth_probes_gbs'])}",
      f"training step: {r['jax_train_bytes_per_step'] / 1e6:.0f} MB accessed (XLA) -> bound "
      f"{r['train_bandwidth_bound_ms']:.1f} ms vs {r['jax_train_step_ms']:.1f} ms measured "
      f"({100 * r['train_fraction_of_bound']:.0f}% of the bandwidth limit)",
      f"inference batch: {r['jax_infer_bytes_per_batch'] / 1e6:.0f} MB accessed (XLA) -> bound "
      f"{r['infer_bandwidth_bound_ms']:.1f} ms vs {r['jax_infer_batch_ms']:.1f} ms measured "
      f"({100 * r['infer_fraction_of_bound']:.0f}% of the bandwidth limit)",
  ]
  return "\n".join(lines)


def main(argv):
  del argv
  result = run(_BATCH_SIZE.value, _IMAGE_SIZE.value, _ROUNDS.value, _STEPS_PER_ROUND.value, _TORCH_THREADS.value,
               _SKIP_TORCH.value)
  print(json.dumps(result) if _FORMAT.value == "json" else _table(result))


if __name__ == "__main__":
  allocator.relaunch_with_fast_allocator()
  app.run(main)
