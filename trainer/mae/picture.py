"""What the MAE learned, as a picture: per image, the original, what the encoder saw (masked
patches grey), the decoder's prediction of every patch, and the prediction with the visible
patches pasted back (He et al., figure 2). With the normalized-pixel loss the decoder predicts
each patch up to its mean and scale, so, as in the MAE paper's figures, a prediction is drawn
with the true patch's mean and standard deviation: the picture shows structure, not colour."""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline.atomic import atomic_path
from trainer.mae.model import MaskedAutoencoder, patchify, unpatchify

COLUMNS = ("original", "masked input", "reconstruction", "reconstruction + visible")


@torch.no_grad()
def reconstruct(mae: MaskedAutoencoder, images: torch.Tensor, mean, std, noise: torch.Tensor) -> dict:
    """images: uint8 [K, 3, H, W]. Returns the four columns as float [K, 3, H, W] in [0, 1] and the loss."""
    was_training = mae.training
    mae.eval()
    dev = next(mae.parameters()).device
    m = torch.tensor(mean, device=dev).view(1, 3, 1, 1)
    s = torch.tensor(std, device=dev).view(1, 3, 1, 1)
    x = (images.to(dev).float() / 255 - m) / s
    loss, pred, mask = mae(x, noise.to(dev))
    mae.train(was_training)
    p, (h, w) = mae.patch, x.shape[-2:]
    patches = patchify(x, p)
    pred = pred.float()
    if mae.norm_pix_loss:  # the prediction is in per-patch normalized units: use each patch's own statistics
        pred = pred * (patches.var(dim=-1, keepdim=True) + 1e-6) ** 0.5 + patches.mean(dim=-1, keepdim=True)
    keep = (1 - mask).unsqueeze(-1)
    grey = ((0.5 - m) / s).expand_as(x)
    cols = [x, unpatchify(patches * keep + patchify(grey, p) * (1 - keep), p, h, w), unpatchify(pred, p, h, w),
            unpatchify(patches * keep + pred * (1 - keep), p, h, w)]
    return {"columns": [(c * s + m).clamp(0, 1).cpu() for c in cols], "loss": float(loss)}


def save_grid(mae: MaskedAutoencoder, images: torch.Tensor, mean, std, noise: torch.Tensor, out_png: Path,
              title: str = "") -> float:
    """Writes the grid (one row per image) to out_png via a temporary file; returns the images' loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = reconstruct(mae, images, mean, std, noise)
    k = images.shape[0]
    fig, axes = plt.subplots(k, len(COLUMNS), figsize=(2.2 * len(COLUMNS), 2.2 * k + 0.6), squeeze=False)
    for i in range(k):
        for j, col in enumerate(r["columns"]):
            ax = axes[i][j]
            ax.imshow(col[i].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(COLUMNS[j], fontsize=9)
    note = "\npredicted patches shown at their true mean and std (normalized-pixel loss)" if mae.norm_pix_loss else ""
    fig.suptitle(f"{title}  loss on these images {r['loss']:.3f}".strip() + note, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / (2.2 * k + 0.6)))  # 0.6 in for the title
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return r["loss"]
