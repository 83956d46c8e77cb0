"""AULUNet in PyTorch, with the official module names, so that its
state_dict has the official keys and shapes.

It is the reference that the parity and gradient tests and the speed
benchmark compare against. Needs torch (the ``test`` extra); importing
``aulunet_jax`` does not import this module.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

WIDTHS = (5, 10, 15, 25, 35, 60)


class PointConv(nn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, 1, bias=False)
    self.bn = nn.BatchNorm2d(cout)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


class AKFBlock(nn.Module):
  def __init__(self, c, dilation=2):
    super().__init__()
    self.dw_local = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
    self.dw_dilated = nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, groups=c, bias=False)
    self.gate_conv = nn.Conv2d(c, c, 1, bias=True)
    self.fuse_conv = PointConv(c, c)

  def forward(self, x):
    alpha = torch.sigmoid(self.gate_conv(F.adaptive_avg_pool2d(x, 1)))
    fused = alpha * self.dw_local(x) + (1 - alpha) * self.dw_dilated(x)
    return self.fuse_conv(fused)


class RGFBlock(nn.Module):
  def __init__(self, c):
    super().__init__()
    self.conv = nn.Conv2d(c, c, 1, bias=False)

  def forward(self, x):
    g = torch.tanh(self.conv(F.adaptive_avg_pool2d(x, 1)))
    return x + x * g


class SkipGate(nn.Module):
  def __init__(self, c):
    super().__init__()
    self.conv = nn.Conv2d(2 * c, c, 1, bias=False)
    self.bn = nn.BatchNorm2d(c)

  def forward(self, dec, enc):
    gate = torch.sigmoid(self.bn(self.conv(torch.cat([dec, enc], 1))))
    return dec + gate * enc


class UpBlock(nn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
    self.proj = PointConv(cin, cout)

  def forward(self, x):
    return self.proj(self.up(x))


class TorchAULUNet(nn.Module):
  def __init__(self, num_classes=1, widths=WIDTHS):
    super().__init__()
    c = widths
    self.enc0_conv = nn.Sequential(nn.Conv2d(3, c[0], 3, padding=1, bias=False), nn.BatchNorm2d(c[0]),
                                   nn.ReLU(inplace=True))
    self.enc0_akfb = AKFBlock(c[0])
    for i in range(1, 6):
      setattr(self, f"enc{i}_akfb", AKFBlock(c[i - 1]))
      setattr(self, f"enc{i}_proj", PointConv(c[i - 1], c[i]))
    self.pool = nn.AvgPool2d(2, 2)
    self.bottleneck_rgfb = RGFBlock(c[5])
    for i in range(4, -1, -1):
      setattr(self, f"up{i + 1}", UpBlock(c[i + 1], c[i]))
      setattr(self, f"skip{i}", SkipGate(c[i]))
      setattr(self, f"dec{i}_akfb", AKFBlock(c[i]))
    self.head = nn.Sequential(nn.Conv2d(c[0], num_classes, 1), nn.Sigmoid())

  def forward(self, x):
    e = [self.enc0_akfb(self.enc0_conv(x))]
    for i in range(1, 6):
      e.append(getattr(self, f"enc{i}_proj")(getattr(self, f"enc{i}_akfb")(self.pool(e[-1]))))
    x = self.bottleneck_rgfb(e[5])
    for i in range(4, -1, -1):
      x = getattr(self, f"up{i + 1}")(x)
      x = getattr(self, f"skip{i}")(x, e[i])
      x = getattr(self, f"dec{i}_akfb")(x)
    return self.head(x)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random weights (PyTorch's default init, seeded) and non-trivial
  BatchNorm statistics and affine terms."""
  torch.manual_seed(seed)
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.Conv2d):
        m.reset_parameters()
      elif isinstance(m, nn.BatchNorm2d):
        m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
        m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
        m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
  return model
