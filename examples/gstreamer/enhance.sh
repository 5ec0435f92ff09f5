#!/usr/bin/env bash
# Enhance an MP4 file through GStreamer with the cliplitenhance element:
#     examples/gstreamer/enhance.sh MODEL IN.mp4 OUT.mp4
# MODEL is anything `cliplit enhance --model` takes (clip-lit-rt, clip-lit, model.onnx, ...). Run it with the virtual
# environment cliplit is installed in activated (docs/gstreamer.md); GStreamer's packages: examples/gstreamer/apt.txt.
# Video only (the audio track is not copied). Extra element properties go in CLIPLIT_GST_OPTIONS, e.g.
# CLIPLIT_GST_OPTIONS="backend=onnxruntime threads=4"; the x264 settings in X264_OPTIONS.
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 MODEL IN.mp4 OUT.mp4" >&2
    exit 2
fi
model=$1 in=$2 out=$3
here="$(cd "$(dirname "$0")" && pwd)"
export GST_PLUGIN_PATH="$here${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
# Word splitting of the two option variables is intended: each holds element properties.
# shellcheck disable=SC2086
exec gst-launch-1.0 -e \
    filesrc location="$in" ! qtdemux name=demux \
    demux.video_0 ! queue ! decodebin ! videoconvert ! video/x-raw,format=BGR \
    ! cliplitenhance model="$model" ${CLIPLIT_GST_OPTIONS:-} \
    ! videoconvert ! video/x-raw,format=I420 \
    ! x264enc ${X264_OPTIONS:-speed-preset=medium pass=qual quantizer=18} \
    ! mp4mux ! filesink location="$out"
