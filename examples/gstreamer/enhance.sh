#!/usr/bin/env bash
# Enhance an MP4 file through GStreamer with the cliplitenhance element:
#     examples/gstreamer/enhance.sh MODEL IN.mp4 OUT.mp4
# MODEL is anything `cliplit enhance --model` takes (clip-lit-rt, clip-lit, model.onnx, ...). Run it with the virtual
# environment cliplit is installed in activated (docs/gstreamer.md); GStreamer's packages: examples/gstreamer/apt.txt.
# The decoder's YUV goes to the element as it is (videoconvert passes it through; it converts only what the element
# does not take, such as 10-bit video), so frames are converted to BGR and back as `cliplit enhance` converts them.
# Extra element properties go in CLIPLIT_GST_OPTIONS, e.g. CLIPLIT_GST_OPTIONS="backend=onnxruntime threads=4"; the
# x264 settings in X264_OPTIONS. The audio track, if any, is copied as it is.
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 MODEL IN.mp4 OUT.mp4" >&2
    exit 2
fi
model=$1 in=$2 out=$3
# The environment's Python (GStreamer's own does not know it) says where the plugin file is installed.
python="${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/}python3"
plugin_path="$("$python" -m cliplit.runtime.gst_element)"
export GST_PLUGIN_PATH="$plugin_path${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
# The first audio track is copied as it is; gst-launch cannot make that link optional (a mux waiting for an audio pad
# that never comes waits forever), so ask PyAV, which cliplit installs, whether there is one.
audio=()
if "$python" -c 'import av, sys; sys.exit(not av.open(sys.argv[1]).streams.audio)' "$in"; then
    audio=(demux.audio_0 ! queue ! mux.)
fi
# Word splitting of the two option variables is intended: each holds element properties.
# shellcheck disable=SC2086
exec gst-launch-1.0 -e \
    filesrc location="$in" ! qtdemux name=demux \
    demux.video_0 ! queue ! decodebin ! videoconvert \
    ! cliplitenhance model="$model" ${CLIPLIT_GST_OPTIONS:-} \
    ! videoconvert ! x264enc ${X264_OPTIONS:-speed-preset=medium pass=qual quantizer=18} \
    ! mp4mux name=mux ! filesink location="$out" \
    "${audio[@]}"
