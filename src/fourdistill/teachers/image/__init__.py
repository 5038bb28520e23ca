"""The image teacher: a tiny Stable Diffusion 1.x-layout stack (CLIP text encoder, AutoencoderKL,
UNet2DConditionModel) with an IP-Adapter-Plus (Ye et al. 2023) in the h94 file layout.

stack.py (sizes, construction, the folder layout), tokenizer.py (the offline CLIP BPE),
ip_adapter.py (the Resampler and its file), load.py (`load_stack`: any stack folder or hub id),
train.py (training on world renders), card.py (the model card).
"""
