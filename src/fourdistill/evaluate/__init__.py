"""Evaluation: image metrics (PSNR, SSIM, masked variants, Spearman) and the world's judge.

Importing this package is cheap because the `evaluate` command's parser imports
evaluate/config.py, which runs this file first: torch loads when a name below is first used.
The modules import what they use at their top.
"""

_METRICS = ("as_image_tensor", "psnr", "masked_psnr", "ssim", "masked_ssim", "spearman")
_JUDGE = ("Judge", "JudgeConfig", "JudgeScore", "JudgeTrainConfig", "attribute_accuracy", "load_judge", "train_judge")


def __getattr__(name):
    if name in _METRICS:
        from . import metrics

        return getattr(metrics, name)
    if name in _JUDGE:
        from . import judge

        return getattr(judge, name)
    raise AttributeError(name)


__all__ = [*_METRICS, *_JUDGE]
