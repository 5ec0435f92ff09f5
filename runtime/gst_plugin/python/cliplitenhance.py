"""GStreamer's Python plugin loader imports every ``python/*.py`` on ``GST_PLUGIN_PATH``: this file makes the
``cliplitenhance`` element of :mod:`cliplit.runtime.gst_element` visible (docs/gstreamer.md). It ships inside the
package, so a pip-installed cliplit has it too: ``python -m cliplit.runtime.gst_element`` prints the folder to put on
``GST_PLUGIN_PATH``.

GStreamer runs its own embedded Python (Debian's python3), which does not know the virtual environment cliplit is
installed in. An activated environment (``VIRTUAL_ENV``) of the same Python version is put first on its path, with
its ``.pth`` files (an editable install needs them). If cliplit still cannot be imported, a stand-in element with the
same name is registered that fails at start with the reason: GStreamer caches which elements a plugin file provides,
and a file that registered nothing would stay invisible after the environment is fixed, until the cache is cleared.
"""

from __future__ import annotations

import os
import site
import sys

_venv = os.environ.get("VIRTUAL_ENV")
if _venv:
    _site = os.path.join(_venv, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")
    if os.path.isdir(_site) and _site not in sys.path:
        _before = list(sys.path)
        site.addsitedir(_site)  # appends it and whatever its .pth files add; they must come before Debian's packages
        sys.path[:] = [p for p in sys.path if p not in _before] + _before

try:
    from cliplit.runtime.gst_element import element_factory

    __gstelementfactory__ = element_factory()
except ImportError as _error:  # register a stand-in that explains, rather than nothing (see above)
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstBase", "1.0")
    from gi.repository import GLib, Gst, GstBase

    Gst.init(None)
    _reason = (
        f"cannot import cliplit in GStreamer's Python {sys.version.split()[0]} ({_error}); activate the virtual "
        "environment cliplit is installed in (same Python minor version) before running GStreamer"
    )
    _caps = Gst.Caps.from_string("video/x-raw, format=(string){ BGR, RGB }")

    class CliplitEnhanceUnavailable(GstBase.BaseTransform):
        __gstmetadata__ = (
            "CLIP-LIT backlit image enhancement (unavailable)",
            "Filter/Effect/Video",
            _reason,
            "cliplit",
        )
        __gsttemplates__ = (
            Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, _caps),
            Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, _caps),
        )

        def do_start(self) -> bool:
            error = GLib.Error.new_literal(Gst.CoreError.quark(), _reason, Gst.CoreError.FAILED)
            self.post_message(Gst.Message.new_error(self, error, _reason))
            return False

    __gstelementfactory__ = ("cliplitenhance", Gst.Rank.NONE, CliplitEnhanceUnavailable)
