"""Metrics that need learned weights we cannot ship: FVD (I3D), LPIPS (AlexNet), CLIP score.

Each takes a local weights path and fails with a clear error when it is missing or does not
fit. Nothing here downloads anything.

- FVD: the Fréchet distance between I3D features of real and generated videos. The detector is
  the TorchScript I3D that the FVD literature shares as `i3d_torchscript.pt` (StyleGAN-V and
  fvd-comparison), called as `detector(videos, rescale=False, resize=False,
  return_features=True)` on (N, 3, T, 224, 224) videos in [-1, 1].
- LPIPS (v0.1, AlexNet): torchvision's AlexNet weights for the backbone (`features.*` keys)
  and the LPIPS linear heads (`lin{0..4}.model.1.weight`, the `alex.pth` of the LPIPS release).
  The network is written out here (torchvision is not a dependency); the keys are the same.
- CLIP score: 100 * max(cos(image, text), 0) with a transformers `CLIPModel` folder (e.g.
  openai/clip-vit-large-patch14 downloaded to disk).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
import transformers
from safetensors.torch import load_file

from .metrics import as_image_tensor

I3D_SIZE = 224
# LPIPS v0.1 input scaling (from [-1, 1] inputs) and AlexNet feature widths.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
ALEX_CHANNELS = (64, 192, 384, 256, 256)


def _existing(path, what: str, hint: str) -> Path:
    if path is None:
        raise FileNotFoundError(f"{what}: no weights path given; {hint}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} weights not found; {hint}")
    return path


# ---------------------------------------------------------------------- FVD
def load_i3d(path, device="cpu"):
    """The TorchScript I3D detector used for FVD."""
    path = _existing(path, "I3D detector for FVD", "download i3d_torchscript.pt to a folder and pass its path (--fvd-detector)")
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:  # TorchScript raises RuntimeError and others for a wrong file
        raise ValueError(f"{path}: not a TorchScript I3D detector ({str(exc).splitlines()[0]})") from None


def i3d_features(detector, videos, batch: int = 8) -> np.ndarray:
    """videos (N, T, H, W, 3) in [0, 1] -> (N, F) features (T >= 10 for the real I3D)."""
    x = torch.as_tensor(np.asarray(videos, dtype=np.float32))
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"videos must have shape (N, T, H, W, 3), got {tuple(x.shape)}")
    device = next(iter(detector.parameters())).device if list(detector.parameters()) else torch.device("cpu")
    feats = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            v = x[i : i + batch]
            n, t, h, w, _ = v.shape
            frames = v.reshape(n * t, h, w, 3).permute(0, 3, 1, 2)
            frames = F.interpolate(frames, size=(I3D_SIZE, I3D_SIZE), mode="bilinear", align_corners=False)
            v = frames.reshape(n, t, 3, I3D_SIZE, I3D_SIZE).permute(0, 2, 1, 3, 4) * 2.0 - 1.0
            feats.append(detector(v.to(device), rescale=False, resize=False, return_features=True).float().cpu())
    return torch.cat(feats).numpy().astype(np.float64)


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((a + a.T) / 2.0)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, F) and b (M, F).

    tr(sqrt(S_a S_b)) is computed as tr(sqrt(sqrt(S_a) S_b sqrt(S_a))), a symmetric PSD matrix,
    so no general matrix square root is needed."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, F) and (M, F), got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs at least two samples per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = _sqrtm_psd(s_a)
    cross = np.linalg.eigvalsh(root @ s_b @ root)
    trace_sqrt = float(np.sqrt(np.clip(cross, 0.0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * trace_sqrt)


def fvd(real_videos, fake_videos, detector) -> float:
    """FVD between real and generated videos (N, T, H, W, 3) in [0, 1]."""
    return frechet_distance(i3d_features(detector, real_videos), i3d_features(detector, fake_videos))


# ---------------------------------------------------------------------- LPIPS
class AlexFeatures(nn.Module):
    """torchvision's AlexNet `features` stack (same module indices, so the same keys)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=False), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=False), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=False),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=False),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=False),
        )  # fmt: skip
        self.taps = (1, 4, 7, 9, 11)  # the five ReLU outputs LPIPS compares

    def forward(self, x):
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


class LPIPS(nn.Module):
    """LPIPS v0.1 with the AlexNet backbone: per-image perceptual distance (lower is closer)."""

    def __init__(self):
        super().__init__()
        self.net = AlexFeatures()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in ALEX_CHANNELS)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))

    @classmethod
    def from_files(cls, backbone, linear) -> "LPIPS":
        hint = "pass torchvision's AlexNet weights (--lpips-backbone) and the LPIPS v0.1 alex.pth (--lpips-linear)"
        backbone = _existing(backbone, "AlexNet backbone for LPIPS", hint)
        linear = _existing(linear, "LPIPS linear layers", hint)
        model = cls()
        feats = {k: v for k, v in _load_state(backbone).items() if k.startswith("features.")}
        missing = set(model.net.state_dict()) - set(feats)
        if missing:
            raise ValueError(f"{backbone}: not AlexNet weights (missing {sorted(missing)[:3]})")
        model.net.load_state_dict(feats)
        lin_state = _load_state(linear)
        for i, conv in enumerate(model.lins):
            key = f"lin{i}.model.1.weight"
            if key not in lin_state:
                raise ValueError(f"{linear}: not LPIPS linear weights (missing {key!r})")
            if tuple(lin_state[key].shape) != tuple(conv.weight.shape):
                raise ValueError(f"{linear}: {key} has shape {tuple(lin_state[key].shape)}, expected {tuple(conv.weight.shape)}")
            conv.weight.data.copy_(lin_state[key])
        return model.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y (B, 3, H, W) in [0, 1] -> (B,)."""
        fx = self.net((x * 2.0 - 1.0 - self.shift) / self.scale)
        fy = self.net((y * 2.0 - 1.0 - self.shift) / self.scale)
        total = 0.0
        for a, b, lin in zip(fx, fy, self.lins):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((a - b) ** 2).mean(dim=(2, 3))
        return total.reshape(-1)


def _load_state(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read weights ({str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def lpips_distance(model: LPIPS, a, b, batch: int = 32) -> np.ndarray:
    """Per-image LPIPS of (N, H, W, 3) arrays in [0, 1] (resized up to 64 px at least)."""
    x, y = as_image_tensor(a), as_image_tensor(b)
    if x.shape != y.shape:
        raise ValueError(f"LPIPS compares images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[-1] < 64:  # AlexNet's stride-4 stem and pools need some room
        x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
        y = F.interpolate(y, size=(64, 64), mode="bilinear", align_corners=False)
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(model(x[i : i + batch], y[i : i + batch]))
    return torch.cat(out).numpy().astype(np.float64)


# ---------------------------------------------------------------------- CLIP score
class ClipScorer:
    """CLIP score 100 * max(cos(image, text), 0) with a local transformers CLIP folder."""

    def __init__(self, folder):
        folder = _existing(folder, "CLIP model for the CLIP score", "download a CLIP model (e.g. openai/clip-vit-large-patch14) to a folder and pass it (--clip-model)")
        try:
            # transformers resolves its classes on first use (the image processor warns then when torchvision is missing)
            self.model = transformers.CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.processor = transformers.CLIPImageProcessor.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{folder}: not a CLIP model folder ({str(exc).splitlines()[0]})") from None

    def __call__(self, images, captions: list[str]) -> np.ndarray:
        """Per-image scores for (N, H, W, 3) arrays in [0, 1] and N captions."""
        images = np.asarray(images, dtype=np.float32)
        if len(images) != len(captions):
            raise ValueError(f"CLIP score needs one caption per image, got {len(images)} images and {len(captions)} captions")
        pixels = self.processor(images=[(im * 255).round().astype(np.uint8) for im in images], return_tensors="pt").pixel_values
        ids = self.tokenizer(list(captions), padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length, return_tensors="pt")
        with torch.no_grad():
            img = self.model.get_image_features(pixel_values=pixels)
            txt = self.model.get_text_features(input_ids=ids.input_ids, attention_mask=ids.attention_mask)
        img = getattr(img, "pooler_output", img)
        txt = getattr(txt, "pooler_output", txt)
        cos = F.cosine_similarity(img, txt, dim=-1)
        return (100.0 * cos.clamp_min(0.0)).numpy().astype(np.float64)
