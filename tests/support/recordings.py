"""Real recordings for tests: the intake settings of a test device and the factory's type."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Protocol

from edge_agent.core.model import NOTICE_PERIODS, Purpose, Recording
from edge_agent.intake.intake import IntakeSettings


def intake_settings(tmp_path: Path) -> IntakeSettings:
    """The device gw-test: footage in tmp_path/rec, quarantine beside it, the notice's periods."""
    return IntakeSettings(
        device_id="gw-test",
        storage_root=tmp_path / "rec",
        quarantine_dir=tmp_path / "quarantine",
        periods=NOTICE_PERIODS,
        fsync=False,
    )


class MakeRecording(Protocol):
    """The `make_recording` fixture: adopt a real clip, return its catalog row."""

    def __call__(
        self,
        name: str,
        *,
        start: datetime = ...,
        purpose: Purpose = ...,
        location: str = ...,
        anonymized: bool = ...,
    ) -> Recording: ...
