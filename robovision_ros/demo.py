"""The main job. Until the perception nodes exist: a smoke run that builds a PatchFeatures message."""
import numpy as np


def main() -> int:
    from robovision_ros.message_conversions import fill_patch_features, patch_features_to_numpy
    from robovision_ros.msg import PatchFeatures

    features = np.random.default_rng(0).standard_normal((196, 768)).astype(np.float16)
    msg = fill_patch_features(PatchFeatures(), features, 14, 14)
    back = patch_features_to_numpy(msg)
    print(f'PatchFeatures {back.grid.shape} {msg.dtype}: {len(msg.data)} bytes, round trip exact: '
          f'{bool(np.array_equal(back.features, features))}')
    return 0
