"""maskdepth: foreground mask and depth from a background and a composite image.

One shared encoder over (bg, fg_bg), two decoders (mask, depth) with U-Net skips.
Importing the package is cheap and side-effect free: no torch import, no printing, no seeding.
"""

__version__ = "0.1.0"
