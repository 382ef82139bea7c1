"""robovision_ros: camera images to ViT patch features, CLIP zero-shot labels and CLIP object presence."""

__version__ = '0.1.0'
