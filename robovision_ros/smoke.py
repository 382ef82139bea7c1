"""Placeholder main job until the perception nodes exist."""


def main() -> int:
    from robovision_ros.msg import PatchFeatures
    print(PatchFeatures())
    return 0
