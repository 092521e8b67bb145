"""Privacy masks in the config: polygons in 0..1, checked before anything uses them."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config.config import ConfigError, parse_config

BASE = """[device]
id = "gw"
hw_profile = "generic-linux"
[storage]
root = "/tmp/masks/rec"
catalog = "/tmp/masks/catalog.db"
[[locations]]
id = "gate"
kind = "premises"
signage = true
[[sources]]
id = "cam"
url = "testsrc://"
location = "gate"
purpose = "security"
"""


def test_masks_parse_as_normalised_polygons() -> None:
    extra = "privacy_masks = [[[0, 0], [0.5, 0], [0.5, 0.5]]]\nmask_at_recording = true\n"
    src = parse_config(BASE + extra, Path("/tmp")).sources[0]
    assert src.privacy_masks == (((0.0, 0.0), (0.5, 0.0), (0.5, 0.5)),)
    assert src.mask_at_recording is True
    assert parse_config(BASE, Path("/tmp")).sources[0].privacy_masks == ()


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ("mask_at_recording = true", "needs privacy_masks"),
        ("privacy_masks = [[[0, 0], [2, 0], [0.5, 0.5]]]", "fractions of the frame in 0..1"),
        ("privacy_masks = [[[0, 0], [1, 0]]]", "needs 3..64 points"),
        ("privacy_masks = [[[0, 0, 1], [1, 0], [1, 1]]]", "privacy_masks"),
        ("privacy_masks = [[['a', 0], [1, 0], [1, 1]]]", "privacy_masks"),
    ],
)
def test_bad_masks_are_config_errors(extra: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + extra + "\n", Path("/tmp"))
    assert why in str(info.value)
