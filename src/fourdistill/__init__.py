"""fourdistill: distillation between 4D and 2D generative models, in both directions.

4D -> 2D: distil a 4D source (videos, posed captures, the procedural world, a fitted field)
into a Time Mapper and a View Mapper that give a Stable-Diffusion-layout model time and view
control. 2D -> 4D: generate a 4D hash-grid field from text by hybrid score distillation.

Importing the package is cheap: heavy libraries load inside the functions that need them.
"""

__version__ = "0.1.0"
