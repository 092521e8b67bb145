"""``export verify`` on hostile input: a verdict or "not an export", never an exception."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.export.manifest import FORMAT, NotAnExport, Verdict, verify_export
from tests.support.cli import CliRunner
from tests.support.exportenv import at, make_device

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_entry = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["files/a", "../x", "/etc/passwd", "files/", "a/b/c"]) | _json,
        "size": _json,
        "sha256": _json,
    },
)
_manifest = st.fixed_dictionaries(
    {"format": st.just(FORMAT) | _json},
    optional={
        "files": st.lists(_entry, max_size=4) | _json,
        "signing_key": st.fixed_dictionaries({"public_pem": st.text(max_size=60)}) | _json,
        "device": _json,
    },
)


def _check(path: Path) -> None:
    try:
        verdict = verify_export(path)
    except NotAnExport:
        return
    assert isinstance(verdict, Verdict)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_manifest, sig=st.binary(max_size=100), raw=st.booleans())
def test_hostile_manifests_get_a_failing_verdict(
    doc: dict[str, object], sig: bytes, raw: bool
) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "files").mkdir()
        (root / "files" / "a").write_bytes(b"abc")
        text = json.dumps(doc).encode() if not raw else sig + b"{"
        (root / "manifest.json").write_bytes(text)
        (root / "manifest.sig").write_bytes(sig)
        verdict = verify_export(root)  # a manifest is there: never "not an export"
        # Nothing hypothesis makes carries a good signature.
        assert not verdict.ok


def test_every_truncation_of_a_tar_export_gets_a_verdict(tmp_path: Path, cli: CliRunner) -> None:
    dev = make_device(tmp_path / "dev")
    dev.adopt("a", minute=0)
    out = tmp_path / "out.tar"
    res = cli(
        "export", "--config", str(dev.config), "--location", "gate", "--from", at(-1),
        "--to", at(5), "--request-ref", "R", "--reason", "test", "--out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    data = out.read_bytes()
    cut = tmp_path / "cut.tar"
    for n in range(0, len(data), max(1, len(data) // 97)):
        cut.write_bytes(data[:n])
        _check(cut)
    assert verify_export(out).ok
