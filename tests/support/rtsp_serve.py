"""GStreamer's RTSP server for the camera tests; run by the system python3 (gi is not in the venv).

    /usr/bin/python3 tests/support/rtsp_serve.py serve --file clip.mp4 [--port 0] [--mount /cam]
    /usr/bin/python3 tests/support/rtsp_serve.py encode --src clip.avi --dst clip.mp4
    /usr/bin/python3 tests/support/rtsp_serve.py probe

``serve`` prints ``ready PORT`` once it listens on 127.0.0.1 (port 0 takes a free one) and
streams the H.264 MP4 as RTP (one shared pipeline for every client, as a camera has) until
it is killed. ``encode`` turns an MJPG AVI into that MP4 with x264 (a key frame a second,
so a client that joins late decodes within a second). ``probe`` exits 0 when every element
the other two need is installed, else prints what is missing and exits 1.
"""

from __future__ import annotations

import argparse
import sys

NEEDED = (
    *("filesrc", "qtdemux", "h264parse", "rtph264pay"),  # serve
    *("avidemux", "jpegdec", "videoconvert", "x264enc", "mp4mux", "filesink"),  # encode
)


def _gst():  # gi has no type hints: its modules are Any
    import gi  # type: ignore[import-not-found]

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer  # type: ignore[import-not-found]

    Gst.init(None)
    return GLib, Gst, GstRtspServer


def probe() -> int:
    try:
        _glib, gst, _server = _gst()
    except (ImportError, ValueError) as e:
        print(f"cannot load GStreamer's RTSP server through gi: {e}")
        return 1
    missing = [name for name in NEEDED if gst.ElementFactory.find(name) is None]
    if missing:
        print(f"GStreamer elements missing: {', '.join(missing)}")
        return 1
    return 0


def encode(src: str, dst: str, fps: int) -> int:
    _glib, gst, _server = _gst()
    pipeline = gst.parse_launch(
        f'filesrc location="{src}" ! avidemux ! jpegdec ! videoconvert ! video/x-raw,format=I420 '
        f"! x264enc speed-preset=ultrafast tune=zerolatency key-int-max={fps} bframes=0 "
        f'! video/x-h264,profile=baseline ! h264parse ! mp4mux ! filesink location="{dst}"'
    )
    pipeline.set_state(gst.State.PLAYING)
    bus = pipeline.get_bus()
    message = bus.timed_pop_filtered(120 * gst.SECOND, gst.MessageType.EOS | gst.MessageType.ERROR)
    pipeline.set_state(gst.State.NULL)
    if message is None or message.type != gst.MessageType.EOS:
        detail = message.parse_error()[0].message if message is not None else "timed out"
        print(f"encoding {src} failed: {detail}", file=sys.stderr)
        return 1
    return 0


def serve(path: str, port: int, mount: str) -> int:
    glib, _gst_mod, rtsp = _gst()
    server = rtsp.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = rtsp.RTSPMediaFactory()
    factory.set_launch(
        f'( filesrc location="{path}" ! qtdemux ! h264parse config-interval=1 '
        "! rtph264pay name=pay0 pt=96 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory(mount, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        return 1
    print(f"ready {server.get_bound_port()}", flush=True)
    glib.MainLoop().run()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("serve")
    run.add_argument("--file", required=True)
    run.add_argument("--port", type=int, default=0)
    run.add_argument("--mount", default="/cam")
    enc = verbs.add_parser("encode")
    enc.add_argument("--src", required=True)
    enc.add_argument("--dst", required=True)
    enc.add_argument("--fps", type=int, default=15)
    verbs.add_parser("probe")
    args = parser.parse_args()
    if args.verb == "serve":
        return serve(args.file, args.port, args.mount)
    if args.verb == "encode":
        return encode(args.src, args.dst, args.fps)
    return probe()


if __name__ == "__main__":
    raise SystemExit(main())
