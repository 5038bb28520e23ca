"""Score distillation: one guidance per teacher, each turning renders into a loss whose gradient
at the latents is the teacher's score-distillation gradient.

    core.py       the loss form 0.5 ||z - sg(z - grad)||^2 / N and its normalisation, w(t),
                  the annealed timesteps, cached text states (PromptStates), input checks
    image.py      SDS (DreamFusion) and VSD with a camera-conditioned PEFT LoRA (ProlificDreamer)
    multiview.py  MVDream's x0-reconstruction loss, one t per group of views, std rescale
    video.py      4D-fy's video SDS: its CFG form, motion amplification, a negative prompt,
                  frames back-propagated through the VAE as a subset

Each guidance returns {"loss", "t", "w", "grad_norm"}. The modules import torch and diffusers at
their top; this file imports nothing, so `import fourdistill` stays light.
"""
