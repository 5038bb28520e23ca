"""fourdistill: distillation between 4D and 2D generative models, in both directions.

4D -> 2D: distil a 4D source (videos, posed captures, the procedural world, a fitted field)
into a Time Mapper and a View Mapper that give a Stable-Diffusion-layout model time and view
control. 2D -> 4D: generate a 4D hash-grid field from text by hybrid score distillation.

Importing the package is cheap: this file holds only the version, which the command line
reads. The modules import what they use at their top; the command layer
(fourdistill.commands) is the one place where imports wait until a command runs.
"""

__version__ = "0.1.0"
