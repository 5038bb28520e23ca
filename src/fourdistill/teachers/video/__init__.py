"""The video teacher: an AnimateDiff motion adapter (Guo et al. 2024) on the image stack's
frozen U-Net, trained on world clips; the loader also takes Zeroscope / ModelScope folders.

model.py (the adapter sized for a stack, the video U-Net, its output on (B, C, F, H, W)
latents), load.py (`load_video_teacher`: an adapter folder or hub id on a base stack, or a
Zeroscope folder; `predict`), sample.py (clips from captions, written as mp4 / gif).
"""
