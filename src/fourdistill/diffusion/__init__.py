"""The diffusion math, once: noise schedules and prediction conversions (`schedule`), and
classifier-free guidance (`guidance`). Everything takes components (a diffusers scheduler, a
U-Net, tensors), never a pipeline, so teacher training, mapper distillation, generation and
score distillation share it.

The sampler defaults live here too: DPM-Solver multistep (`schedule.inference_scheduler`),
DEFAULT_STEPS steps at guidance DEFAULT_GUIDANCE, the reference implementation's inference
settings. This file holds only those constants, because the command parsers read them;
schedule.py and guidance.py import torch and diffusers at their top.
"""

DEFAULT_STEPS = 30  # DPM-Solver multistep steps (the reference implementation's inference settings)
DEFAULT_GUIDANCE = 5.0  # classifier-free guidance scale (the same)
