"""A real RTSP server on loopback for the recorder tests: GStreamer's gst-rtsp-server.

Run with the *system* python3 (it needs ``python3-gi`` and the GStreamer
typelibs from Debian, which a virtualenv does not see)::

    /usr/bin/python3 tests/support/rtsp_server.py --port 8554 --path /cam --file clip.mkv

It serves the Matroska file's H.264 video (and its audio, if any) as RTP at the
file's own pace; ``--audio aac`` sends the file's AAC as is, ``pcmu`` and
``pcma`` send the file's PCM audio as G.711 at 8 kHz like most IP cameras (the
file must then carry ``pcm_s16le``, see ``mediagen.make_video(audio="pcm")``).
An MPEG-TS file (``.ts``) is served video only: its H.264 may change resolution
mid-stream (``mediagen.make_resolution_switch``), which the payloader follows
with in-band SPS/PPS like a camera whose settings are edited. The RTP sinks
sync to the pipeline clock, like a camera. Clients connect over
UDP or TCP-interleaved as the client asks (``--protocols udp`` or ``tcp``
offers only that one: a client asking for the other gets "461 Unsupported
transport", which proves which transport a client really used). One shared
pipeline feeds every client. Prints ``READY <url>`` on stdout once it listens.

Debian packages: ``python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
gstreamer1.0-plugins-good`` (``--no-install-recommends`` is enough).

The helpers at the bottom (``available``, ``start``) are imported by the tests
under the project's interpreter and only spawn the server as a subprocess.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
PROTOCOLS = ("any", "udp", "tcp")
APT_PACKAGES = (
    "python3-gi",
    "gir1.2-gst-rtsp-server-1.0",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
)


AUDIO = ("aac", "pcmu", "pcma", "none")
_G711 = "audioconvert ! audioresample ! audio/x-raw,rate=8000,channels=1"
_AUDIO_PAY = {
    "aac": "aacparse ! rtpmp4gpay name=pay1 pt=97",
    "pcmu": f"{_G711} ! mulawenc ! rtppcmupay name=pay1 max-ptime=20000000",
    "pcma": f"{_G711} ! alawenc ! rtppcmapay name=pay1 max-ptime=20000000",
}


def _launch_line(path: Path, audio: str) -> str:
    pay = "h264parse ! rtph264pay name=pay0 pt=96 config-interval=1"
    if path.suffix == ".ts":
        return f'( filesrc location="{path}" ! tsdemux ! queue ! {pay} )'
    line = f'filesrc location="{path}" ! matroskademux name=d d.video_0 ! queue ! {pay}'
    if audio != "none":
        line += f" d.audio_0 ! queue ! {_AUDIO_PAY[audio]}"
    return f"( {line} )"


def serve(
    port: int, mount: str, path: Path, audio: str, protocols: str = "any", user: str = ""
) -> None:  # pragma: no cover
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(_launch_line(path, audio))
    factory.set_shared(True)
    if protocols != "any":
        lower = GstRtsp.RTSPLowerTrans
        factory.set_protocols(lower.UDP if protocols == "udp" else lower.TCP)
    if user:
        # Basic auth like a camera with a password: a wrong one gets 401.
        name, _, password = user.partition(":")
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        # set_string, not writable_structure(): PyGObject hands back a copy of that.
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(name, password), token)
        server.set_auth(auth)
        factory.add_role_from_structure(
            Gst.Structure.new_from_string(
                "viewer, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
            )
        )
    server.get_mount_points().add_factory(mount, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        sys.exit(1)
    print(f"READY rtsp://127.0.0.1:{port}{mount}", flush=True)
    GLib.MainLoop().run()


def available() -> str | None:
    """None when the server can run here, else why not (names the packages)."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} not found"
    probe = (
        "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "import sys; sys.exit(0 if all(Gst.ElementFactory.find(n) for n in "
        "('matroskademux','h264parse','rtph264pay','aacparse','rtpmp4gpay','tsdemux',"
        "'mulawenc','alawenc','rtppcmupay','rtppcmapay','audioconvert','audioresample'))"
        " else 3)"
    )
    rc = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30).returncode
    if rc != 0:
        return "GStreamer RTSP server missing: apt-get install " + " ".join(APT_PACKAGES)
    return None


def start(
    port: int,
    path: Path,
    *,
    mount: str = "/cam",
    audio: bool | str = True,
    protocols: str = "any",
    user: str = "",
) -> subprocess.Popen[str]:
    """Spawn the server and wait until it listens; the caller kills it.

    ``protocols`` is ``any``, ``udp`` (plain unicast UDP only) or ``tcp`` (interleaved only);
    ``audio`` is one of :data:`AUDIO` (True: ``aac``, False: ``none``); ``user``
    (``name:password``) makes the server ask for Basic authentication.
    """
    kind = audio if isinstance(audio, str) else ("aac" if audio else "none")
    if kind not in AUDIO:
        raise ValueError(f"audio must be one of {AUDIO}, got {audio!r}")
    if protocols not in PROTOCOLS:
        raise ValueError(f"protocols must be one of {PROTOCOLS}, got {protocols!r}")
    proc = subprocess.Popen(
        [
            SYSTEM_PYTHON,
            str(Path(__file__).resolve()),
            "--port",
            str(port),
            "--path",
            mount,
            "--file",
            str(path),
            *("--audio", kind),
            *("--protocols", protocols),
            *(("--user", user) if user else ()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise RuntimeError(f"RTSP server did not start: {line!r} {err}")
    return proc


def main() -> None:  # pragma: no cover
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/cam")
    ap.add_argument("--file", type=Path, required=True)
    ap.add_argument("--audio", choices=AUDIO, default="aac")
    ap.add_argument("--protocols", choices=PROTOCOLS, default="any")
    ap.add_argument("--user", default="", help="name:password for Basic authentication")
    args = ap.parse_args()
    serve(args.port, args.path, args.file.resolve(), args.audio, args.protocols, args.user)


if __name__ == "__main__":
    main()
